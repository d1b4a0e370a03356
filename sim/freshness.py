"""Freshness of keyed Firestore documents (a live map): how old the newest source message a
reader sees for each key is, looked at every step.

A write applies at its time: from then on the document shows that message (the newest by
publish time wins; an older one arriving late does not roll it back). A reader with a
real-time listener sees each write at once; a polling reader (`read_every`) sees the
documents as of its last poll, at multiples of the interval. Every step, every key that
has a document gives one sample: age = now - publish time of the message it shows. So the
histogram `freshness/<collection>` is the age a look at a random moment finds."""

from __future__ import annotations

import math

import numpy as np


class Freshness:
    def __init__(self, collection: str, read_every: float | None):
        self.path = f"freshness/{collection}"
        self.read_every = read_every
        self.shown = np.full(0, -np.inf)  # per key: publish time of the message the document shows
        self.seen = self.shown  # what the reader sees (the last poll's copy when polling)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def write(self, times: np.ndarray, keys: np.ndarray, pub: np.ndarray) -> None:
        ok = keys >= 0
        if not ok.all():
            times, keys, pub = times[ok], keys[ok], pub[ok]
        if times.shape[0]:
            self.pending.append((times, keys, pub))

    def _apply(self, until: float) -> None:
        if not self.pending:
            return
        t = np.concatenate([p[0] for p in self.pending])
        k = np.concatenate([p[1] for p in self.pending])
        p = np.concatenate([p[2] for p in self.pending])
        due = t <= until
        self.pending = [] if due.all() else [(t[~due], k[~due], p[~due])]
        if not due.any():
            return
        k, p = k[due], p[due]
        top = int(k.max()) + 1
        if top > self.shown.shape[0]:
            grown = np.full(max(top, 2 * self.shown.shape[0], 1024), -np.inf)
            grown[: self.shown.shape[0]] = self.shown
            self.shown = grown
        np.maximum.at(self.shown, k, p)

    def read(self, metrics, t0: float, t1: float) -> None:
        if self.read_every is None:
            self._apply(t1)
            self.seen = self.shown
        else:
            q = self.read_every
            poll = math.floor(t1 / q) * q
            if poll > t0 or (poll == t0 and t0 == 0):
                self._apply(poll)
                self.seen = self.shown.copy()
            self._apply(t1)
        if self.seen.shape[0] == 0:
            return
        has = self.seen[np.isfinite(self.seen)]
        if has.shape[0]:
            metrics.record(self.path, t0, t1 - has)
