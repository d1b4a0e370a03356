"""Locustfile: Meridian's dispatch wave (or any scenario named by SURGESIM_SCENARIO).

    COMMAND_URL=http://127.0.0.1:8081 PUBSUB_EMULATOR_HOST=127.0.0.1:8085 \\
        locust -f loadtests/meridian.py            # web UI on :8089
    ... locust -f loadtests/meridian.py --headless  # runs the compressed scenario, then stops

See surgesim.loadtests.locust_users for every setting.
"""

import os

from surgesim.loadtests.plan import default_scenario

os.environ.setdefault("SURGESIM_SCENARIO", str(default_scenario()))

from surgesim.loadtests.locust_users import (  # noqa: E402,F401  (Locust collects these)
    AnyGroupUser,
    DriverAppUser,
    ScenarioShape,
    TelemetryUser,
)
