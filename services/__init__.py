"""The reference system under test: Meridian Freight's services, the Dog Finder app, and
fake external APIs (SMS gateway, billing API) whose latency and failures change at run time.

Each service is a standalone ASGI app (FastAPI) configured by environment variables, as a
Cloud Run container is. Run one by hand with::

    PORT=8080 python -m surgesim.services surgesim.services.meridian.command:app

See docs/services.md for every service's endpoints, variables and contracts.
"""
