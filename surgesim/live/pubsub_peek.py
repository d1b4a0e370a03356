"""Backlog and oldest-unacked age of subscriptions on a Pub/Sub emulator that surgesim did
not start (a load-only run, surgesim/live/target_run.py), where no bridge of ours sits in
the messages' path and the emulator keeps no backlog metrics; and the harness's own count of
what a subscription still holds at the end of a run (session.count_remaining).

A peek pulls what the subscription would deliver now (without acking) and hands it straight
back (ack deadline 0): the number of distinct messages is the backlog, the oldest
publishTime gives the age. What a peek cannot see, and why it is only done where asked:

- messages a consumer holds leased at that moment are invisible to it (Cloud Monitoring's
  num_undelivered_messages counts them): the figure is a lower bound while consumers work;
- every peek is a delivery the emulator counts: on a subscription with a dead-letter policy
  each sample would spend one of a message's delivery attempts and could dead-letter it,
  so such subscriptions are refused (not measured);
- for the few milliseconds of a sweep the peeked messages are leased to us, not to the
  subscription's consumer.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx

from surgesim.emulators.metrics import rfc3339_epoch
from surgesim.rundir import METRICS

log = logging.getLogger(__name__)

PEEK_CAP = 10_000
"""Messages one sweep looks at at most; a bigger backlog is recorded as at least this."""


class PeekRefused(ValueError):
    """The subscription cannot be peeked without harm, or does not exist."""


class Peeker:
    """Peeks subscriptions of one project on one emulator (host:port, REST)."""

    def __init__(self, host: str, project: str, timeout: float = 10.0) -> None:
        self.base = f"http://{host.removeprefix('http://').rstrip('/')}/v1/projects/{project}/subscriptions"
        self.http = httpx.Client(trust_env=False, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def check(self, sub: str) -> None:
        """PeekRefused when `sub` does not exist or has a dead-letter policy."""
        try:
            r = self.http.get(f"{self.base}/{sub}")
        except httpx.HTTPError as exc:
            raise PeekRefused(f"the Pub/Sub endpoint {self.base.split('/v1/')[0]} does not answer ({exc})") from None
        if r.status_code == 404:
            raise PeekRefused(f"no subscription {sub} in the target's project")
        if r.status_code != 200:
            raise PeekRefused(f"subscription {sub}: {r.status_code} {r.text[:200]}")
        if r.json().get("deadLetterPolicy"):
            raise PeekRefused(f"{sub} has a dead-letter policy: each sample would spend a delivery attempt "
                              "of every message it sees")

    def peek(self, sub: str, now: float | None = None, cap: int = PEEK_CAP) -> tuple[int, float, bool]:
        """(backlog, oldest unacked age in seconds, capped) of `sub` right now: at most `cap`
        messages are looked at. httpx errors of the pulls propagate (404: no such subscription)."""
        seen: dict[str, float] = {}
        ack_ids: list[str] = []
        capped = False
        try:
            while True:
                r = self.http.post(f"{self.base}/{sub}:pull", json={"maxMessages": 1000, "returnImmediately": True})
                r.raise_for_status()
                got = r.json().get("receivedMessages", [])
                if not got:
                    break
                for m in got:
                    ack_ids.append(m["ackId"])
                    msg = m["message"]
                    seen[msg["messageId"]] = rfc3339_epoch(msg["publishTime"]) if msg.get("publishTime") else time.time()
                if len(seen) >= cap:
                    capped = True
                    break
        finally:
            for i in range(0, len(ack_ids), 1000):  # hand everything back at once
                try:
                    self.http.post(f"{self.base}/{sub}:modifyAckDeadline",
                                   json={"ackIds": ack_ids[i:i + 1000], "ackDeadlineSeconds": 0})
                except httpx.HTTPError as exc:  # their leases run out by themselves
                    log.warning("peek %s: hand back: %s", sub, exc)
        now = time.time() if now is None else now
        oldest = max(0.0, now - min(seen.values())) if seen else 0.0
        return len(seen), oldest, capped


class PeekSampler:
    """Peeks the given subscriptions every `interval` wall seconds in a thread; rows in the
    run directory's timeseries shape (time_s: wall seconds since start(); the caller
    multiplies by time_scale), the last figures in `latest`."""

    def __init__(self, peeker: Peeker, subscriptions: list[str], interval: float) -> None:
        self.peeker, self.subscriptions, self.interval = peeker, list(subscriptions), interval
        self.rows: list[dict] = []
        self.latest: dict[str, dict] = {}
        self.errors: dict[str, str] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def start(self) -> "PeekSampler":
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="surgesim-peek", daemon=True)
        self._thread.start()
        return self

    def sample(self) -> None:
        t = round(time.monotonic() - self._t0, 3)
        for sub in self.subscriptions:
            try:
                n, age, capped = self.peeker.peek(sub)
            except httpx.HTTPError as exc:
                self.errors[sub] = str(exc)
                continue
            self.latest[sub] = {"backlog": n, "oldest_unacked_s": round(age, 3), "capped": capped}
            self.rows.append({"time_s": t, "metric": METRICS["backlog"], "entity": sub, "value": float(n)})
            self.rows.append({"time_s": t, "metric": METRICS["oldest_unacked"], "entity": sub, "value": age})
        self.samples += 1

    def backlog(self) -> int:
        return sum(v["backlog"] for v in self.latest.values())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
