"""Locustfile: any scenario (SURGESIM_SCENARIO; default the built-in dispatch_wave.yaml).

    COMMAND_URL=http://127.0.0.1:8081 PUBSUB_EMULATOR_HOST=127.0.0.1:8085 \\
        locust -f loadtests/locustfile.py            # web UI on :8089
    SURGESIM_SCENARIO=scenarios/dogfinder_viral.yaml APP_URL=http://127.0.0.1:8082 \\
        locust -f loadtests/locustfile.py --headless  # runs the compressed scenario, then stops

Every service a scenario sends to needs its <SERVICE>_URL (or Locust's --host). See
surgesim.loadtests.locust_users for every setting.
"""

import os

from surgesim.loadtests.plan import default_scenario

os.environ.setdefault("SURGESIM_SCENARIO", str(default_scenario()))

from surgesim.loadtests.locust_users import (  # noqa: E402,F401  (Locust collects these)
    AnyGroupUser,
    PublishUser,
    RequestUser,
    ScenarioShape,
)
