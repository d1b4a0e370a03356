"""The live stand-in for a deployed workflow: an HTTP service that starts one execution
of a Workflows YAML per message its trigger delivers (Eventarc -> Workflows), and writes
each execution's record as a JSON line.

    POST /, /pubsub    a Pub/Sub push envelope -> an execution whose argument is the
                       CloudEvent Eventarc gives a workflow ({type, source, data: envelope})
    POST /executions   a JSON argument -> an execution (Google's executions.create)

It answers 200 with the execution once it has ended, whatever its state: as with Eventarc,
a failed execution is not redelivered (the record says FAILED). 400 for a body that is not
JSON. The harness starts it per workflow that gives `source:` (surgesim/live/runner.py).

Env: WORKFLOW_NAME, WORKFLOW_SOURCE (the YAML), WORKFLOW_RECORDS (JSON-lines file),
WORKFLOW_CONCURRENCY (executions at once, 64). The workflow's `sys.get_env` sees this
process's environment: every service's and API's `<NAME>_URL` as the harness sets them,
GOOGLE_CLOUD_PROJECT_ID, and PUBSUB_URL (the emulator's REST address).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from surgesim.services.common.runtime import create_app

from surgesim.workflows import Executor, load


def workflow_env() -> dict[str, str]:
    env = dict(os.environ)
    project = env.get("GOOGLE_CLOUD_PROJECT", "")
    env.setdefault("GOOGLE_CLOUD_PROJECT_ID", project)
    env.setdefault("GOOGLE_CLOUD_WORKFLOW_ID", env.get("WORKFLOW_NAME", "workflow"))
    if "PUBSUB_EMULATOR_HOST" in env:
        env.setdefault("PUBSUB_URL", "http://" + env["PUBSUB_EMULATOR_HOST"])
    return env


def build_app() -> FastAPI:
    name = os.environ.get("WORKFLOW_NAME", "workflow")
    deps: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        deps["executor"] = Executor(load(os.environ["WORKFLOW_SOURCE"]), name=name, env=workflow_env(),
                                    record_path=os.environ.get("WORKFLOW_RECORDS"))
        deps["pool"] = ThreadPoolExecutor(int(os.environ.get("WORKFLOW_CONCURRENCY", "64")),
                                          thread_name_prefix=f"workflow-{name}")
        yield
        deps["pool"].shutdown(wait=False, cancel_futures=True)
        deps["executor"].close()

    app = create_app(name, lifespan=lifespan, title=f"workflow {name}", description=__doc__.split("\n\n")[0])

    async def execute(argument) -> JSONResponse:
        loop = asyncio.get_running_loop()
        ex = await loop.run_in_executor(deps["pool"], deps["executor"].run, argument)
        return JSONResponse(json.loads(json.dumps(ex.as_record(), default=str)))

    async def body_json(request: Request):
        try:
            return json.loads(await request.body() or b"null")
        except ValueError:
            return None

    @app.post("/executions")
    async def executions(request: Request):
        return await execute(await body_json(request))

    async def push(request: Request):
        envelope = await body_json(request)
        if not isinstance(envelope, dict) or "message" not in envelope:
            return JSONResponse({"status": "poison", "reason": "not a Pub/Sub push envelope"}, status_code=400)
        return await execute({"type": "google.cloud.pubsub.topic.v1.messagePublished",
                              "source": envelope.get("subscription", ""), "data": envelope})

    app.post("/", include_in_schema=False)(push)
    app.post("/pubsub", include_in_schema=False)(push)
    return app


app = build_app()
