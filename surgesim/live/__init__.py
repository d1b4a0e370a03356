"""Live mode: the real services on the emulators, driven by real traffic.

    from surgesim.live import SystemRunner            # run a system file (surgesim up)
    from surgesim.live.session import run_live        # run a scenario (surgesim live)

See docs/live.md.
"""

from surgesim.live import interrupts
from surgesim.live.runner import LiveSetupError, SystemRunner

__all__ = ["LiveSetupError", "SystemRunner", "interrupts"]
