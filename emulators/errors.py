"""Errors raised by the emulator layer. Every message says what to do next."""

from __future__ import annotations


class EmulatorError(RuntimeError):
    """Base class for everything that goes wrong starting or stopping emulators."""


class MissingToolError(EmulatorError):
    """A program an emulator needs is not installed; the message says how to install it."""


class StartupError(EmulatorError):
    """An emulator did not become healthy in time; the message carries its log tail."""


class PortConflictError(EmulatorError):
    """A port we need is taken by something that is not the emulator we expect."""
