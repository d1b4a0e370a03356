"""Locustfile: Dog Finder's viral evening (dogfinder_viral.yaml, or SURGESIM_SCENARIO).

    APP_URL=http://127.0.0.1:8082 locust -f loadtests/dogfinder.py

See surgesim.loadtests.locust_users for every setting.
"""

import os
from importlib import resources

os.environ.setdefault("SURGESIM_SCENARIO", str(resources.files("surgesim.scenarios").joinpath("dogfinder_viral.yaml")))

from surgesim.loadtests.locust_users import (  # noqa: E402,F401  (Locust collects these)
    AnyGroupUser,
    DriverAppUser,
    ScenarioShape,
    TelemetryUser,
)
