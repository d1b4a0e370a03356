"""Importers: build a system file (and a plan) from a description the user already keeps."""
