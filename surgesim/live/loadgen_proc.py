"""The fleet driver as its own process, on uvloop: `python -m surgesim.live.loadgen_proc
--scenario S --out DIR --no-preload` (the arguments of surgesim.loadtests.fleet_driver).

Why a process: in the harness's process the driver's httpx client competed for the GIL
with the fronts and the bridges, and every millisecond it spent there was added to the
latency it measured (docs/benchmarks/live.md). Endpoints come from the environment
(COMMAND_URL, PUBSUB_EMULATOR_HOST, ...; surgesim.loadtests.runner.host_env)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio still works, only slower
        pass
    from surgesim.loadtests.fleet_driver import main as driver_main

    # Imports take a second or two of CPU: do them before the harness starts its clocks,
    # then wait for its "go" (stdin) so the traffic and the fault timeline start together.
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1  # the harness went away before the start
    return driver_main(argv)


if __name__ == "__main__":
    sys.exit(main())
