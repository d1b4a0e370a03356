"""Run a parsed Workflows definition: one execution at a time per call, synchronous
(a caller runs executions on threads), each recorded as Google's console shows it: state,
steps with durations, result or error.

HTTP errors are Google's error maps: `{code, message, body, headers, tags: ["HttpError"]}`;
a timeout `{message, tags: ["TimeoutError"]}`; no connection `{message, tags:
["ConnectionFailedError"]}`. Retry policies and `http.default_retry*` follow Google's
documented defaults (see docs/workflows.md).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from .expressions import Builtin, Evaluator, SubworkflowRef, WorkflowError, error, parse as parse_expression
from .parse import HTTP_CALLS, MISSING, RUN_JOB, Definition, Step

log = logging.getLogger("surgesim.workflows")

# Google's documented defaults: http.default_retry retries 429, 502, 503, 504 and connection /
# timeout errors, at most 5 times, backoff initial 1 s, max 60 s, multiplier 1.25.
_DEFAULT_RETRY_CODES = {429, 502, 503, 504}
_NON_IDEMPOTENT_CODES = {429, 503}
_TRANSPORT_TAGS = {"ConnectionError", "ConnectionFailedError", "TimeoutError"}


def _builtin_predicate(name: str, e: Any) -> bool:
    if name == "retry.always":
        return True
    if name == "retry.never":
        return False
    codes = _NON_IDEMPOTENT_CODES if name.endswith("non_idempotent") else _DEFAULT_RETRY_CODES
    if not isinstance(e, dict):
        return False
    tags = set(e.get("tags") or [])
    if name.endswith("non_idempotent"):
        # a request that may have reached the server is not repeated, only refused connections
        return e.get("code") in codes or "ConnectionFailedError" in tags
    return e.get("code") in codes or bool(tags & _TRANSPORT_TAGS)


@dataclass
class Policy:
    predicate: Callable[[Any], bool]
    max_retries: int
    initial_delay: float
    max_delay: float
    multiplier: float


class _Jump(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


@dataclass
class Execution:
    workflow: str
    argument: Any
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = "ACTIVE"
    result: Any = None
    error: Any = None
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())
    duration_s: float = 0.0
    steps: list[dict] = field(default_factory=list)

    def as_record(self) -> dict:
        return {"execution_id": self.id, "workflow": self.workflow, "state": self.state,
                "argument": self.argument, "result": self.result, "error": self.error,
                "started_at": self.started_at, "duration_s": round(self.duration_s, 6), "steps": self.steps}


class Executor:
    """Runs executions of one definition.

    identity_token(audience) -> str | None gives the `auth: {type: OIDC}` token (None: no
    Authorization header). sleep is injectable so a test can observe backoff delays.
    record_path: a JSON-lines file, one line per finished execution.
    env: what `sys.get_env` answers (Google's user_env_vars of the deployed workflow).
    """

    def __init__(self, definition: Definition, *, name: str = "workflow",
                 identity_token: Callable[[str], str | None] | None = None,
                 record_path: str | Path | None = None, sleep: Callable[[float], None] = time.sleep,
                 http: httpx.Client | None = None, max_steps: int = 100_000,
                 env: dict[str, str] | None = None) -> None:
        self.d, self.name = definition, name
        self.identity_token = identity_token
        self.record_path = Path(record_path) if record_path else None
        self.sleep = sleep
        self.http = http or httpx.Client(trust_env=False)
        self.max_steps = max_steps
        # sys.get_env: Google's user_env_vars (the deployed workflow's env), nothing from this process
        self.env = dict(env or {})
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # -- executions -----------------------------------------------------------------------
    def run(self, argument: Any = None) -> Execution:
        ex = Execution(self.name, argument)
        t0 = time.monotonic()
        try:
            params = self.d.main.params
            args = {params[0][0]: argument} if params else {}
            ex.result = self._call_sub("main", args, ex)
            ex.state = "SUCCEEDED"
        except WorkflowError as exc:
            ex.state, ex.error = "FAILED", exc.value
        ex.duration_s = time.monotonic() - t0
        self._write(ex)
        return ex

    def _write(self, ex: Execution) -> None:
        if self.record_path is None:
            return
        line = json.dumps(ex.as_record(), default=_jsonable)
        with self._lock:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            with self.record_path.open("a") as f:
                f.write(line + "\n")

    def _call_sub(self, name: str, args: dict, ex: Execution) -> Any:
        sub = self.d.subworkflows[name]
        variables: dict[str, Any] = {}
        for pname, default in sub.params:
            if pname in args:
                variables[pname] = args[pname]
            elif default is not MISSING:
                variables[pname] = default
            elif name != "main":
                raise error("TypeError", f"subworkflow {name}: missing argument {pname!r}")
            else:
                variables[pname] = None
        unknown = set(args) - {p for p, _ in sub.params}
        if unknown:
            raise error("TypeError", f"subworkflow {name}: unexpected argument(s) {sorted(unknown)}")
        ev = Evaluator(variables, frozenset(self.d.subworkflows), self.env)
        try:
            self._block(sub.steps, ev, ex)
        except _Return as r:
            return r.value
        except _Jump as j:
            raise error("SyntaxError", f"next: {j.target!r}: no such step in {name}") from None
        return None

    # -- steps ----------------------------------------------------------------------------
    def _block(self, steps: list[Step], ev: Evaluator, ex: Execution) -> None:
        index = {s.name: i for i, s in enumerate(steps)}
        i = 0
        while i < len(steps):
            step = steps[i]
            try:
                nxt = self._step(step, ev, ex)
            except _Jump as j:  # a jump from a nested block to a step of this one
                if j.target not in index:
                    raise
                nxt = j.target
            if nxt is None:
                i += 1
            elif nxt == "end":
                raise _Return(None)
            elif nxt == "break":
                raise _Break()
            elif nxt == "continue":
                raise _Continue()
            elif nxt in index:
                i = index[nxt]
            else:
                raise _Jump(nxt)

    def _step(self, step: Step, ev: Evaluator, ex: Execution) -> str | None:
        if len(ex.steps) >= self.max_steps:
            raise error("ResourceLimitError", f"more than {self.max_steps} steps")
        rec = {"step": step.path, "started_s": None, "duration_s": None, "state": "SUCCEEDED"}
        ex.steps.append(rec)
        t0 = time.monotonic()
        rec["started_s"] = round(t0, 6)
        try:
            return self._body(step.body, ev, ex, step.path)
        except WorkflowError as exc:
            rec["state"] = "FAILED"
            rec["error"] = exc.value
            raise
        finally:
            rec["duration_s"] = round(time.monotonic() - t0, 6)
            del rec["started_s"]

    def _body(self, body: dict, ev: Evaluator, ex: Execution, path: str) -> str | None:
        if "assign" in body:
            for a in body["assign"]:
                (target, value), = a.items()
                self._assign(str(target), ev.resolve(value), ev)
        if "call" in body:
            result = self._call(body["call"], body.get("args") or {}, ev, ex, path)
            if "result" in body:
                ev.vars[body["result"]] = result
        if "switch" in body:
            for case in body["switch"]:
                cond = ev.resolve(case["condition"])
                if not isinstance(cond, bool):
                    raise error("TypeError", f"{path}: switch condition is {type(cond).__name__}, not boolean")
                if cond:
                    nxt = self._body(case["body"], ev, ex, path)
                    return nxt if nxt is not None else body.get("next")
        if "steps" in body:
            self._block(body["steps"], ev, ex)
        if "try" in body:
            self._try(body, ev, ex, path)
        if "for" in body:
            self._for(body["for"], ev, ex, path)
        if "raise" in body:
            raise WorkflowError(ev.resolve(body["raise"]))
        if "return" in body:
            raise _Return(ev.resolve(body["return"]))
        return body.get("next")

    def _assign(self, target: str, value: Any, ev: Evaluator) -> None:
        import ast
        node = parse_expression(target)
        if isinstance(node, ast.Name):
            ev.vars[node.id] = value
            return
        if isinstance(node, ast.Attribute):
            container, key = ev.node(node.value), node.attr
        elif isinstance(node, ast.Subscript):
            container, key = ev.node(node.value), ev.node(node.slice)
        else:
            raise error("SyntaxError", f"cannot assign to {target!r}")
        if isinstance(container, dict):
            container[key] = value
        elif isinstance(container, list) and isinstance(key, int) and 0 <= key < len(container):
            container[key] = value
        else:
            raise error("TypeError", f"cannot assign {target!r}")

    def _for(self, f: dict, ev: Evaluator, ex: Execution, path: str) -> None:
        if "in" in f:
            items = ev.resolve(f["in"])
            if isinstance(items, dict):
                items = list(items)
            if not isinstance(items, list):
                raise error("TypeError", f"{path}.for.in: a list or map")
        else:
            lo, hi = ev.resolve(f["range"])
            items = list(range(int(lo), int(hi) + 1))  # Workflows' range is inclusive
        for i, v in enumerate(items):
            ev.vars[f["value"]] = v
            if "index" in f:
                ev.vars[f["index"]] = i
            try:
                self._block(f["steps"], ev, ex)
            except _Break:
                break
            except _Continue:
                continue

    def _try(self, body: dict, ev: Evaluator, ex: Execution, path: str) -> None:
        policy = self._policy(body.get("retry"), ev, ex) if "retry" in body else None
        attempt, delay = 0, policy.initial_delay if policy else 0.0
        while True:
            try:
                nxt = self._body(body["try"], ev, ex, path + ".try")
                if nxt is not None:
                    raise _Jump(nxt)
                return
            except WorkflowError as exc:
                if policy and attempt < policy.max_retries and policy.predicate(exc.value):
                    attempt += 1
                    ex.steps.append({"step": path + ".retry", "attempt": attempt, "delay_s": round(delay, 6),
                                     "error": exc.value})
                    self.sleep(delay)
                    delay = min(delay * policy.multiplier, policy.max_delay)
                    continue
                if "except" not in body:
                    raise
                if body["except"]["as"]:
                    ev.vars[body["except"]["as"]] = exc.value
                self._block(body["except"]["steps"], ev, ex)
                return

    def _policy(self, raw: Any, ev: Evaluator, ex: Execution) -> Policy:
        if isinstance(raw, str):
            name = ev.resolve(raw).name  # http.default_retry[_non_idempotent]: Google's documented policy
            return Policy(lambda e: _builtin_predicate(name, e), 5, 1.0, 60.0, 1.25)
        p = ev.resolve(raw["predicate"])
        if isinstance(p, Builtin):
            predicate = lambda e, n=p.name: _builtin_predicate(n, e)  # noqa: E731
        elif isinstance(p, SubworkflowRef):
            def predicate(e, n=p.name):
                sub = self.d.subworkflows[n]
                verdict = self._call_sub(n, {sub.params[0][0]: e} if sub.params else {}, ex)
                if not isinstance(verdict, bool):
                    raise error("TypeError", f"retry predicate {n} returned {verdict!r}, not a boolean")
                return verdict
        else:
            raise error("TypeError", f"retry predicate: a subworkflow or built-in, got {p!r}")
        b = ev.resolve(raw.get("backoff") or {})
        return Policy(predicate, int(ev.resolve(raw.get("max_retries", 0))), float(b.get("initial_delay", 1.0)),
                      float(b.get("max_delay", 60.0)), float(b.get("multiplier", 1.25)))

    # -- calls ----------------------------------------------------------------------------
    def _call(self, name: str, raw_args: Any, ev: Evaluator, ex: Execution, path: str) -> Any:
        args = ev.resolve(raw_args)
        if name in HTTP_CALLS:
            return self._http(name, args, path)
        if name == RUN_JOB:
            return self._run_job(args, ex, path)
        if name == "sys.sleep":
            seconds = args.get("seconds")
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
                raise error("TypeError", f"{path}: sys.sleep needs seconds >= 0, got {seconds!r}")
            self.sleep(float(seconds))
            return None
        if name == "sys.log":
            data = args.get("data", args.get("text", args.get("json")))
            level = str(args.get("severity", "DEFAULT")).upper()
            log.log(logging.WARNING if level in ("WARNING", "ERROR", "CRITICAL") else logging.INFO,
                    "%s: %s", self.name, json.dumps(data, default=_jsonable))
            ex.steps.append({"step": path + ".log", "severity": level, "data": data})
            return None
        return self._call_sub(name, args or {}, ex)

    def _http(self, name: str, args: dict, path: str) -> dict:
        method = (args.get("method") or name.split(".")[1]).upper() if name == "http.request" else name.split(".")[1].upper()
        url = args["url"]
        headers = {str(k): str(v) for k, v in (args.get("headers") or {}).items()}
        auth = args.get("auth")
        if auth and auth.get("type") == "OIDC" and self.identity_token is not None:
            token = self.identity_token(auth.get("audience") or url.split("?")[0])
            if token:
                headers["Authorization"] = f"Bearer {token}"
        timeout = float(args.get("timeout", 300))
        kw: dict[str, Any] = {"headers": headers, "params": args.get("query"), "timeout": timeout}
        if "body" in args and method not in ("GET", "DELETE"):
            body = args["body"]
            if isinstance(body, (bytes, str)) and not headers.get("Content-Type", "").startswith("application/json"):
                kw["content"] = body
            else:
                kw["content"] = json.dumps(body, default=_jsonable).encode()
                headers.setdefault("Content-Type", "application/json")
        try:
            resp = self.http.request(method, url, **kw)
        except httpx.TimeoutException as exc:
            raise error("TimeoutError", f"{method} {url}: timed out after {timeout}s ({type(exc).__name__})") from None
        except httpx.ConnectError as exc:
            raise error("ConnectionFailedError", f"{method} {url}: cannot connect: {exc}") from None
        except httpx.TransportError as exc:
            raise error("ConnectionError", f"{method} {url}: connection broken: {exc}") from None
        got: Any = resp.content
        if "json" in resp.headers.get("content-type", ""):
            try:
                got = resp.json()
            except ValueError:
                got = resp.text
        elif resp.headers.get("content-type", "").startswith("text/"):
            got = resp.text
        out = {"code": resp.status_code, "headers": dict(resp.headers), "body": got}
        if resp.status_code >= 400:
            raise WorkflowError({"code": resp.status_code, "message": f"HTTP server responded with error code "
                                 f"{resp.status_code}", "body": got, "headers": dict(resp.headers),
                                 "tags": ["HttpError"]})
        return out


    # -- the Cloud Run jobs.run connector ---------------------------------------------------
    def _run_job(self, args: dict, ex: Execution, path: str) -> Any:
        """Start a job's execution through the live run's Cloud Run Admin API stand-in
        (SURGESIM_RUN_API_URL, surgesim/live/run_api.py) and, unless skip_polling, poll its
        operation until it ends: the Execution resource, or OperationError when it failed.
        Only this execution's thread waits (sleep between polls), so other executions go on."""
        base = self.env.get("SURGESIM_RUN_API_URL")
        if not base:
            raise error("ConnectionFailedError", f"{path}: {RUN_JOB}: no Cloud Run Admin API here; jobs start "
                        "from workflows in a `surgesim live` run of a system with jobs")
        name = args.get("name")
        if not isinstance(name, str) or not name.startswith("projects/"):
            raise error("TypeError", f"{path}: {RUN_JOB}: name is projects/PROJECT/locations/LOCATION/jobs/JOB, "
                        f"got {name!r}")
        params = args.get("connector_params") or {}
        timeout = float(params.get("timeout", 1800))  # Google's default for a long-running connector call
        headers = {"X-Surgesim-Workflow": self.name, "X-Surgesim-Step": path}
        op = self._run_api("POST", f"{base.rstrip('/')}/v2/{name}:run", path, args.get("body") or {}, headers)
        ex.steps.append({"step": path + ".jobs.run", "operation": op.get("name")})
        if params.get("skip_polling"):
            return op
        policy = params.get("polling_policy") or {}
        # Google's connectors poll from 1 s (x1.25, up to 60 s); locally a job is seconds long,
        # so 0.25 s unless the workflow says otherwise
        delay = float(policy.get("initial_delay", 0.25))
        multiplier, max_delay = float(policy.get("multiplier", 1.0)), float(policy.get("max_delay", 60.0))
        deadline = time.monotonic() + timeout
        while not op.get("done"):
            if time.monotonic() + delay > deadline:
                raise error("TimeoutError", f"{path}: {RUN_JOB}: {op.get('name')} not done after {timeout:g} s")
            self.sleep(delay)
            delay = min(delay * multiplier, max_delay)
            op = self._run_api("GET", f"{base.rstrip('/')}/v2/{op['name']}", path, None, headers)
        if "error" in op:
            raise WorkflowError({"message": op["error"].get("message", "the operation failed"),
                                 "operation": op, "tags": ["OperationError"]})
        return op.get("response")

    def _run_api(self, method: str, url: str, path: str, body: Any, headers: dict) -> dict:
        try:
            resp = self.http.request(method, url, json=body if method == "POST" else None, headers=headers,
                                     timeout=30.0)
        except httpx.ConnectError as exc:
            raise error("ConnectionFailedError", f"{path}: {method} {url}: cannot connect: {exc}") from None
        except httpx.TransportError as exc:
            raise error("ConnectionError", f"{path}: {method} {url}: {type(exc).__name__}: {exc}") from None
        try:
            payload = resp.json()
        except ValueError:
            payload = {"error": {"message": resp.text}}
        if resp.status_code >= 400:
            message = (payload.get("error") or {}).get("message") if isinstance(payload, dict) else None
            raise WorkflowError({"code": resp.status_code, "message": message or f"HTTP {resp.status_code}",
                                 "body": payload, "headers": dict(resp.headers), "tags": ["HttpError"]})
        return payload


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return repr(v)
    if isinstance(v, (Builtin, SubworkflowRef)):
        return f"${{{v.name}}}"
    return str(v)
