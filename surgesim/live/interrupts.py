"""Ctrl-C and SIGTERM for `surgesim live` and `surgesim up`: the first signal interrupts
the run (KeyboardInterrupt in the main thread), every later one only hurries the stop.

Why a handler of our own: a second KeyboardInterrupt raised inside the stop sequence
abandoned it half-way (the emulators it had started kept running while the console said
"everything stopped"), and a process started in the background (`nohup make test &`)
inherits an ignored SIGINT, so Ctrl-C did nothing. install() sets both handlers whatever
the inherited disposition was; `hurry` tells the stop sequence to use short timeouts.
"""

from __future__ import annotations

import signal
import sys
import threading

_lock = threading.Lock()
signals_seen = 0
"""Signals received since install() (0: not interrupted)."""
hurry = threading.Event()
"""Set by a second signal: the stop sequence should SIGKILL instead of waiting."""
_saved: dict[int, object] = {}


def _handler(signum, frame) -> None:
    global signals_seen
    with _lock:
        signals_seen += 1
        first = signals_seen == 1
    if first:
        raise KeyboardInterrupt(f"signal {signum}")
    hurry.set()
    # never raise again: a stop in progress must finish, only faster
    try:
        sys.stderr.write(f"signal {signum} again: stopping faster (processes are killed, not waited for)\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 -- a closed stderr must not break the stop
        pass


def install() -> bool:
    """Own SIGINT and SIGTERM (main thread only; False elsewhere). Idempotent."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current is not _handler:
            _saved.setdefault(sig, current)
            signal.signal(sig, _handler)
    return True


def restore() -> None:
    """Put back what install() replaced and forget the signals seen."""
    global signals_seen
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, old in list(_saved.items()):
        signal.signal(sig, old if old is not None else signal.SIG_DFL)
        _saved.pop(sig, None)
    with _lock:
        signals_seen = 0
    hurry.clear()


def installed() -> bool:
    return threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _handler


def interrupted() -> bool:
    return signals_seen > 0


def stop_timeout(normal: float, hurried: float = 0.5) -> float:
    """The timeout a stop step should use now."""
    return hurried if hurry.is_set() else normal
