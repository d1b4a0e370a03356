"""Run a system file for real on this machine: emulators, fake external APIs, every
service as its own process behind a Cloud Run front, and the bridges.

    from surgesim.live import SystemRunner
    with SystemRunner(system, plan) as run:          # or SystemRunner(...).start() / .stop()
        run.urls["command"]          # the command service's Cloud Run front
        run.raw_urls["command"]      # the process itself
        run.fakes["sms-gateway"]     # a fake's base URL (admin API under /admin, run.fake_admin)
        run.bridges.metrics          # the MetricsSampler (backlog, acked, dead-lettered...)
        run.restart_service("eta", extra_env={"BAD_PATTERN": "..."})

Start order: emulators (started or reused) -> stores provisioned -> fakes -> fronts (on
ports picked for the services in advance, so every process can be given every other
service's URL) -> HTTP and push services -> bridges (topics, subscriptions, push,
filters, BigQuery, triggers, metrics) -> pull workers (their subscriptions now exist).
Each is a phase method of its own (`_start_emulators`, `_start_fakes`, `_plan_processes`
-> ProcessPlan, `_start_fronts`, `_start_services`, `_start_bridges`, `_start_pull_workers`,
`_start_watching`). Stop is the reverse, and kills each process group; SIGTERM is turned
into a clean stop.

Who may call whom (docs/bridges.md): the run has its own token issuer (a fresh RSA key);
pushes and trigger events carry ID tokens for their service accounts; each front checks
them against the service's invokers (emulators.identity.invokers_of); every front adds
the run's front secret, without which a reference service's own port answers 403; and
the fakes' admin APIs take only the run's admin token.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import secrets
import tempfile
import threading
import time
from pathlib import Path

import httpx

from surgesim.emulators.front import FRONT_SECRET_HEADER, FrontSettings
from surgesim.emulators.identity import Issuer, invokers_of
from surgesim.pubsub_push import PushWindow
from surgesim.rundir import METRICS
from surgesim.schema import Plan, System
from surgesim.services.common.devserver import free_port

from . import functions, job_clock
from .env import FAKE_APPS, fake_env, process_env, pull_subscriptions
from .fronts import FrontSet
from .procs import Proc, start_all

log = logging.getLogger(__name__)

class LiveSetupError(RuntimeError):
    pass


class ScaledPushWindow(PushWindow):
    """Pub/Sub's push window with its push backoff (the pause after failed pushes, 100 ms
    doubling to 60 s) divided by time_scale, like the retry backoffs: unscaled, a 12.8 s
    pause at time_scale 60 stops a subscription for 13 scenario minutes."""

    def __init__(self, time_scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.time_scale = time_scale
        self.held = False
        """While held, no new push starts (runner.hold_push: a consumer that is down)."""

    @property
    def limit(self) -> int:
        return 0 if self.held else super().limit

    def on_failure(self) -> float:
        return super().on_failure() / self.time_scale


def scaled_retry(system: System, time_scale: float) -> System:
    """The system with every subscription's retry backoff divided by time_scale.

    A retry backoff (10 s doubling to 600 s) spaces the delivery attempts of one message
    over the scenario's clock: at time_scale 60 a 30-minute bad deploy lasts 30 wall
    seconds, and unscaled backoffs would put a message's 5th attempt 150 wall seconds
    (2.5 scenario hours) after its first, long after the fix. Divided, the attempts fall
    where they fall in production relative to the faults; the push request itself, its
    ack deadline and every handler latency stay in real time (docs/live.md)."""
    if time_scale == 1.0:
        return system
    subs = [s.model_copy(update={"retry": s.retry.model_copy(update={
                "min_backoff": s.retry.min_backoff / time_scale, "max_backoff": s.retry.max_backoff / time_scale})})
            if s.retry is not None else s for s in system.subscriptions]
    # Eventarc's retry backoff of every trigger (a Pub/Sub trigger's: its subscription's)
    trigs = [t.model_copy(update={"retry": t.retry.model_copy(update={
                 "min_backoff": t.retry.min_backoff / time_scale, "max_backoff": t.retry.max_backoff / time_scale})})
             for t in system.triggers]
    return system.model_copy(update={"subscriptions": subs, "triggers": trigs})


@dataclasses.dataclass
class ProcessPlan:
    """What the processes phase decided: the services that run (workflow executors
    included), the argv of each command: or function: service, which are pull workers (no
    front; started after the bridges), and the port picked for each."""

    runnable: list
    commands: dict[str, list[str]]
    pull_workers: set[str]
    ports: dict[str, int]


class SystemRunner:
    def __init__(self, system: System, plan: Plan | None = None, state_dir: str | Path | None = None, *,
                 rate_scale: float = 1.0, sample_interval: float = 1.0,
                 log_dir: str | Path | None = None, log_level: str = "INFO", purge: bool = False,
                 count_pull_acks: bool = True, keep_emulators: bool = False, seed: int = 1,
                 service_env: dict[str, dict[str, str]] | None = None, on_message=None,
                 time_scale: float = 1.0, before_bridges=None, base_dir: str | Path | None = None,
                 bind: str = "127.0.0.1") -> None:
        """rate_scale: the live run's volume fraction (scales the fakes' rate limits).
        purge: seek every subscription of the system to now before starting, so a reused
        emulator's leftovers are not delivered into this run. count_pull_acks: put the
        counting gRPC proxy (emulators/grpc_proxy.py) between pull workers and the emulator,
        so their subscriptions get backlog and acked metrics too. service_env: extra
        variables per service name. time_scale: a live run's scenario seconds per wall
        second; Pub/Sub's retry backoffs, timers on the scenario's clock, are divided by it
        (retry_policy_for), while request latencies and ack deadlines stay real.
        before_bridges: called with the stack's Clients (system project) once the stores are
        provisioned and before any bridge reads them: what it writes is the triggers'
        baseline, not a change (the `prepare:` phase's Firestore entries, loadtests/prepare.py).
        base_dir: the system file's folder, where `command:` services run.
        bind: the address the Cloud Run fronts listen on (`surgesim live --bind`; the
        default keeps them to this machine; the services' own ports stay on 127.0.0.1)."""
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.system = system
        self.plan = plan or Plan(name="default")
        self.state_dir = state_dir
        self.rate_scale = rate_scale
        self.sample_interval = sample_interval
        self.issuer = Issuer()
        """Signs this run's push and trigger identities (a key made for the run)."""
        self.front_secret = secrets.token_urlsafe(24)
        """Only the run's fronts (and the harness) send it; the services refuse requests without it."""
        self.admin_token = secrets.token_urlsafe(24)
        """The fakes' admin APIs answer only this bearer token."""
        self.certs_url: str | None = None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"surgesim-{system.name}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_level = log_level
        self.purge = purge
        self.count_pull_acks = count_pull_acks
        self.keep_emulators = keep_emulators
        self.seed = seed
        self.service_env = dict(service_env or {})
        self.workflow_records: dict[str, Path] = {}
        """Workflow name -> its executions' JSON-lines file (workflows with `source:`)."""
        self.time_scale = float(time_scale)
        self.say = on_message or (lambda msg: log.info("%s", msg))
        self.before_bridges = before_bridges
        self.run_api = None
        """surgesim.live.run_api.RunApi when a workflow with `source:` and a job may meet: the
        jobs.run connector's endpoint (a live run attaches its Launcher to it)."""
        self.job_table = None
        """emulators.bq_jobs.JobTable when the run has a BigQuery job clock (surgesim/live/job_clock.py)."""

        self.stack = None
        self.started_emulators: list[str] = []
        self.fakes: dict[str, str] = {}
        """external API name -> base URL (a fake's admin API is under /admin)."""
        self.api_urls: dict[str, str] = {}
        self.procs: dict[str, Proc] = {}
        self.fake_procs: dict[str, Proc] = {}
        self.fronts = FrontSet(bind)
        self.bridges = None
        self.skipped: dict[str, str] = {}
        """service -> why it is not run."""
        self.front_rows: list[dict] = []
        self.clock_zero = time.monotonic()
        self._sampling = threading.Event()
        self._sampler_thread: threading.Thread | None = None
        self._last_front: dict[tuple[str, str], int] = {}
        self._window_start = 0.0
        self._own_signals = False
        self.watchdog = None
        """surgesim.live.watchdog.Watchdog, from the end of start() to stop()."""
        self.stopped_report: list[str] = []
        """After stop(): what was still running when it returned ([] when everything went)."""
        self._stopping = False
        self._stopped = True
        self._lock = threading.RLock()

    # ---- what runs where ---------------------------------------------------------------------
    @property
    def urls(self) -> dict[str, str]:
        """service -> its front's URL (where users and Pub/Sub push reach it)."""
        return {name: self.fronts.url(name) for name in self.fronts.fronts}

    @property
    def raw_urls(self) -> dict[str, str]:
        return {name: p.url for name, p in self.procs.items()}

    @property
    def emulator_env(self) -> dict[str, str]:
        return self.stack.env_vars() if self.stack is not None else {}

    def job_env(self, job: str) -> dict[str, str]:
        """A Cloud Run Job task's environment: what a service gets, minus K_SERVICE (Cloud
        Run sets CLOUD_RUN_JOB instead; surgesim/live/jobs.py adds the CLOUD_RUN_* ones),
        plus SURGESIM_JOB_ITEMS / SURGESIM_JOB_BATCH_SIZE when the job declares `items`."""
        env = process_env(self.system, self.plan, job, emulators=self.emulator_env, api_urls=self.api_urls,
                          service_urls=self.urls, log_level=self.log_level, extra=self.service_env.get(job))
        env.pop("K_SERVICE", None)
        spec = next((j for j in self.system.jobs if j.name == job), None)
        if spec is not None and spec.items:
            # the job's volume at the run's scale, as for traffic: rate_scale of it, over
            # 1/time_scale of the scenario's time (the fakes' rate limits are × rate_scale,
            # so a job bound by them takes its scenario duration / time_scale in wall time)
            env["SURGESIM_JOB_ITEMS"] = str(max(1, round(spec.items * self.rate_scale / self.time_scale)))
            env["SURGESIM_JOB_BATCH_SIZE"] = str(spec.batch_size)
        return env

    def endpoints(self) -> dict[str, str]:
        """For the load generators: {service: front URL, "pubsub": host:port, "project": id}."""
        out = dict(self.urls)
        for name, p in self.procs.items():
            out.setdefault(name, p.url)
        out["pubsub"] = self.stack.endpoint("pubsub")
        out["project"] = self.system.project
        # firestore: / storage: sources write straight to these emulators
        from surgesim.loadtests.plan import emulator_endpoints

        out.update(emulator_endpoints(self.emulator_env))
        return out

    def listing(self) -> list[dict]:
        """One row per thing that listens: kind, name, url, pid, detail."""
        rows = []
        for name, st in self.stack.emulators.items():
            rows.append({"kind": "emulator", "name": name, "url": self.stack.endpoint(name),
                         "pid": st.pid, "detail": st.action or st.status})
        for name, url in self.fakes.items():
            p = self.fake_procs.get(name)
            rows.append({"kind": "fake", "name": name, "url": url, "pid": p.pid if p else None,
                         "detail": "admin: " + url + "/admin/behaviour" if p else "real endpoint"})
        for name, p in self.procs.items():
            front = name in self.fronts.fronts
            detail = f"front -> {p.url}" if front else "pull worker, no front"
            if front:
                invokers = self.fronts.fronts[name].invokers
                detail += ", public" if invokers is None else f", private: {len(invokers)} invoker(s)"
                if not isinstance(p.target, str):  # a command: it is not known to check the front secret
                    detail += "; its own port takes any local caller"
            rows.append({"kind": "service", "name": name, "url": self.fronts.url(name) if front else p.url,
                         "pid": p.pid, "detail": detail})
        for name, why in self.skipped.items():
            rows.append({"kind": "skipped", "name": name, "url": "", "pid": None, "detail": why})
        return rows

    # ---- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "SystemRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "SystemRunner":
        self._stopped = False
        self._install_signals()
        atexit.register(self._atexit)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        """The phases in their order (the module docstring says why this order)."""
        self._start_emulators()
        self._start_fakes()
        procs = self._plan_processes()
        self._start_fronts(procs)
        self._start_services(procs)
        self._start_bridges(self.urls)
        self._start_pull_workers(procs)
        self._start_watching()

    def _start_emulators(self) -> None:
        """Emulators started or reused; the stores provisioned; a reused emulator purged;
        the caller's before_bridges hook (what it writes is the triggers' baseline)."""
        from surgesim.emulators import Clients, up
        from surgesim.emulators.provision import needed_emulators, provision

        system = self.system
        self.stack = up(needed_emulators(system), project=system.project, state_dir=self.state_dir,
                        on_message=self.say)
        self.started_emulators = [n for n, st in self.stack.emulators.items() if st.action in ("started", "restarted")]
        # Stores only: the bridges create the topics and subscriptions themselves (push ones
        # as pull, and without the retry policy, which the push bridge applies).
        provision(system.model_copy(update={"topics": [], "subscriptions": []}), self.stack.clients)
        if self.purge:
            self._purge()
        if self.before_bridges is not None:
            self.before_bridges(Clients(self.stack.env_vars(), project=system.project))

    def _start_fakes(self) -> None:
        """A fake per external API that names one; a real `url:` is used as it is."""
        fake_list = []
        for api in self.system.external_apis:
            if api.url:
                self.api_urls[api.name] = self.fakes[api.name] = api.url.rstrip("/")
            elif api.fake:
                p = Proc(f"fake-{api.name}", FAKE_APPS[api.fake],
                         fake_env(api, self.rate_scale, self.seed, admin_token=self.admin_token),
                         free_port(), self.log_dir, kind="fake")
                self.fake_procs[api.name] = p
                fake_list.append(p)
                self.api_urls[api.name] = self.fakes[api.name] = p.url
        start_all(fake_list)
        self.say(f"started {len(fake_list)} fake APIs")

    def _plan_processes(self) -> "ProcessPlan":
        """Which services run (an app, a command, a function, or a workflow's executor), how,
        and on which ports; a service with none of them is listed as skipped."""
        system = self.system
        runnable = [s for s in system.services if s.app or s.command or s.function]
        for s in system.services:
            if not (s.app or s.command or s.function):
                self.skipped[s.name] = "no app:, command: or function: in the system file"
        # functions run in their own virtualenvs, built once from their requirements.txt
        commands = {s.name: list(s.command) for s in runnable if s.command}
        for s in runnable:
            if s.function is not None:
                source = (self.base_dir or Path.cwd()) / s.function.source  # an absolute source stays as it is
                framework = functions.ensure_env(source.resolve(), say=self.say)
                commands[s.name] = functions.command(s.function, framework, source.resolve())
        for wf in system.workflows:
            if wf.source is not None:  # its Workflows YAML runs on the local executor, as a service
                runnable.append(self._workflow_service(wf))
            elif wf.name not in {s.name for s in system.services}:
                self.skipped[wf.name] = "a workflow without source: (Workflows YAML) or a service to run it live"
        pull_workers = {s.name for s in runnable if pull_subscriptions(system, s.name) and not s.routes}
        return ProcessPlan(runnable, commands, pull_workers, {s.name: free_port() for s in runnable})

    def _start_fronts(self, procs: "ProcessPlan") -> None:
        """A Cloud Run front per HTTP service (not pull workers), on the port picked for it,
        before any process starts, so that every process gets every other one's URL; and
        the BigQuery job clock before the services it stands in front of."""
        self.certs_url = self.fronts.serve_certs(self.issuer)
        clock_hosts, self.job_table = job_clock.start(self.system, [s.name for s in procs.runnable], self.fronts,
                                                      self.emulator_env, time_scale=self.time_scale, seed=self.seed)
        for name, host in clock_hosts.items():
            self.service_env.setdefault(name, {})["BIGQUERY_EMULATOR_HOST"] = host
        executors = [wf.name for wf in self.system.workflows if wf.source is not None]
        if executors and self.system.jobs:
            from .run_api import RunApi

            self.run_api = RunApi(self.system.project)
            run_api_url = f"http://127.0.0.1:{self.fronts.serve_app(' run-api', self.run_api)}"
            for name in executors:  # googleapis.run.v2...jobs.run steps call it (surgesim/workflows/executor.py)
                self.service_env.setdefault(name, {})["SURGESIM_RUN_API_URL"] = run_api_url
        for s in procs.runnable:
            if s.name in procs.pull_workers:
                continue
            settings = FrontSettings.from_plan(self.plan.service(s.name))
            self.fronts.add(s.name, f"http://127.0.0.1:{procs.ports[s.name]}", settings, issuer=self.issuer,
                            invokers=invokers_of(self.system, s.name), secret=self.front_secret, seed=self.seed)

    def _make_proc(self, procs: "ProcessPlan", s, pull_host: str | None) -> Proc:
        env = process_env(self.system, self.plan, s.name, emulators=self.emulator_env, api_urls=self.api_urls,
                          service_urls=self.urls, pull_emulator_host=pull_host, log_level=self.log_level,
                          extra=self.service_env.get(s.name), front_secret=self.front_secret,
                          certs_url=self.certs_url, time_scale=self.time_scale)
        kind = "worker" if s.name in procs.pull_workers else "service"
        port = procs.ports[s.name]
        if s.app:
            self.procs[s.name] = Proc(s.name, s.app, env, port, self.log_dir, kind=kind)
        else:  # a user's own process or a function: ready on a TCP connect unless it names a health path
            self.procs[s.name] = Proc(s.name, procs.commands[s.name], env, port, self.log_dir,
                                      ready_path=s.health_path, cwd=self.base_dir, kind=kind)
        return self.procs[s.name]

    def _start_services(self, procs: "ProcessPlan") -> None:
        first = [self._make_proc(procs, s, None) for s in procs.runnable if s.name not in procs.pull_workers]
        start_all(first)
        self.say(f"started {len(first)} services behind Cloud Run fronts")

    def _start_pull_workers(self, procs: "ProcessPlan") -> None:
        """Last, on the address the bridges give: their counting proxy, which turns the
        workers' own acks into backlog figures (their subscriptions exist by now)."""
        pull_host = self.bridges.services_pubsub_host if self.count_pull_acks else None
        start_all([self._make_proc(procs, s, pull_host) for s in procs.runnable if s.name in procs.pull_workers])
        if procs.pull_workers:
            self.say(f"started {len(procs.pull_workers)} pull workers: {', '.join(sorted(procs.pull_workers))}")

    def _start_watching(self) -> None:
        """The run's clock starts here; the fronts' sampler and the watchdog from now on."""
        from .watchdog import Watchdog

        self.clock_zero = time.monotonic()
        self._sampling.clear()
        self._sampler_thread = threading.Thread(target=self._sample_fronts_loop, name="surgesim-front-sampler",
                                                daemon=True)
        self._sampler_thread.start()
        self.watchdog = Watchdog(self, say=self.say).start()

    def _workflow_service(self, wf):
        """A workflow with `source:` runs as services/workflow.py, named after the
        workflow so its trigger's push subscription reaches it; its executions are recorded
        in the log directory's workflows/<name>.jsonl."""
        from surgesim.schema import Service

        self.workflow_records[wf.name] = self.log_dir / "workflows" / f"{wf.name}.jsonl"
        self.service_env[wf.name] = {"WORKFLOW_NAME": wf.name, "WORKFLOW_SOURCE": wf.source,
                                     "WORKFLOW_RECORDS": str(self.workflow_records[wf.name]),
                                     **self.service_env.get(wf.name, {})}
        return Service(name=wf.name, app="surgesim.services.workflow:app")

    def _start_bridges(self, front_urls: dict[str, str]) -> None:
        from surgesim.emulators import load_fidelity
        from surgesim.emulators.bridges import Bridges

        from surgesim.emulators import Clients

        # clients in the system's project (a reused stack's default project may differ)
        clients = Clients(self.stack.env_vars(), project=self.system.project)
        bq = clients.bigquery() if "bigquery" in self.stack.emulators else None
        fs = clients.firestore() if "firestore" in self.stack.emulators else None
        self.bridges = Bridges(scaled_retry(self.system, self.time_scale), self.plan, pubsub_endpoint=self.stack.endpoint("pubsub"),
                               project=self.system.project, service_urls=front_urls, issuer=self.issuer,
                               firestore=fs, bigquery=bq, fidelity=load_fidelity(self.stack.state_dir),
                               metrics_interval=self.sample_interval, count_pull_acks=self.count_pull_acks,
                               firestore_events_port=(self.stack.ports("firestore").get("firestore_events")
                                                      if "firestore" in self.stack.emulators else None),
                               storage_endpoint=self.stack.env_vars().get("STORAGE_EMULATOR_HOST"))
        self.bridges.start()
        # the push backoff after failures is Pub/Sub's timer too (see scaled_retry)
        for bridge in self.bridges.push.values():
            bridge.window = ScaledPushWindow(self.time_scale, maximum=bridge.window.maximum)

    def _purge(self) -> None:
        """Start from an empty system on a reused emulator: seek each of the system's
        existing subscriptions to now (acks whatever an earlier run left) and delete the
        project's Firestore documents. Old documents are not only stale state: the
        emulator re-sends every listened document on each write, so a collection that
        grew over earlier runs slows the trigger bridge down run after run."""
        import datetime as dt

        base = f"http://{self.stack.endpoint('pubsub')}/v1/projects/{self.system.project}/subscriptions"
        now = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        with httpx.Client(trust_env=False, timeout=10) as http:
            for sub in self.system.subscriptions:
                r = http.post(f"{base}/{sub.name}:seek", json={"time": now})
                if r.status_code not in (200, 404):
                    log.warning("purge %s: %s %s", sub.name, r.status_code, r.text[:200])
            if "firestore" in self.stack.emulators and self.system.stores.firestore:
                url = (f"http://{self.stack.endpoint('firestore')}/emulator/v1/projects/{self.system.project}"
                       "/databases/(default)/documents")
                r = http.delete(url)
                if r.status_code != 200:
                    log.warning("purge Firestore %s: %s %s", self.system.project, r.status_code, r.text[:200])

    def stop(self) -> None:
        """Everything this runner started, in reverse order. A second Ctrl-C (interrupts)
        only shortens the waits; it never leaves a step out. Afterwards `stopped_report`
        lists whatever still runs (checked, not assumed)."""
        from . import interrupts

        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping = True
        if self.watchdog is not None:
            self.watchdog.stop()
        self._sampling.set()
        if self._sampler_thread is not None:
            self._sampler_thread.join(5)
        for p in reversed([p for p in self.procs.values() if pull_subscriptions(self.system, p.name)]):
            p.stop()
        if self.bridges is not None and self.bridges._loop is not None:  # noqa: SLF001
            try:
                self.bridges.stop(timeout=interrupts.stop_timeout(30.0, 2.0))
            except BaseException as exc:  # noqa: BLE001 -- keep stopping the rest (a dead emulator: a timeout)
                log.warning("bridges stop: %s: %s", type(exc).__name__, exc)
        for p in reversed(list(self.procs.values())):
            p.stop()
        try:
            self.fronts.stop(timeout=interrupts.stop_timeout(15.0, 2.0))
        except BaseException as exc:  # noqa: BLE001
            log.warning("fronts stop: %s: %s", type(exc).__name__, exc)
        for p in reversed(list(self.fake_procs.values())):
            p.stop()
        if self.started_emulators and not self.keep_emulators:
            from surgesim.emulators import down

            res = down(self.started_emulators, state_dir=self.stack.state_dir,
                       timeout=interrupts.stop_timeout(10.0, 1.0))
            for m in res.messages:
                self.say(m)
        self.stopped_report = self.leftovers()
        self._restore_signals()
        atexit.unregister(self._atexit)

    def leftovers(self) -> list[str]:
        """Processes this runner started that still run (after stop(): should be none)."""
        left = [f"{p.kind} {p.name} (pid {p.pid})" for p in [*self.procs.values(), *self.fake_procs.values()]
                if p.group_alive()]
        if self.started_emulators and not self.keep_emulators and self.stack is not None:
            from surgesim.emulators.process import marked_processes

            for name in self.started_emulators:
                left += [f"emulator {name} (pid {q.pid})"
                         for q in marked_processes(self.stack.state_dir, name)]
        return left

    def _atexit(self) -> None:
        # the interpreter is going away without stop(): at least leave no process behind
        for p in [*self.procs.values(), *self.fake_procs.values()]:
            p.stop(timeout=2)

    def _install_signals(self) -> None:
        # SIGINT and SIGTERM -> KeyboardInterrupt once, then only a faster stop
        # (surgesim/live/interrupts.py); left alone when the caller (a command) owns them
        from . import interrupts

        if not interrupts.installed():
            self._own_signals = interrupts.install()

    def _restore_signals(self) -> None:
        from . import interrupts

        if self._own_signals:
            interrupts.restore()
            self._own_signals = False

    # ---- operations used by the fault injector and tests ---------------------------------------
    def stop_service(self, name: str) -> None:
        self.procs[name].stop()

    def start_service(self, name: str, extra_env: dict[str, str] | None = None,
                      drop_env: tuple[str, ...] = ()) -> Proc:
        """(Re)start a service process with a changed environment; its front is pointed at
        the new process."""
        p = self.procs[name]
        env = {k: v for k, v in p.env.items() if k not in drop_env}
        env.update(extra_env or {})
        p.restart(env)
        if name in self.fronts.fronts:
            self.fronts.retarget(name, p.url)
        return p

    restart_service = start_service

    def hold_push(self, service: str, held: bool, settle_s: float = 10.0) -> list[str]:
        """Stop (held=True) or resume pushing to a service's push subscriptions; returns their
        names. Holding waits up to settle_s for the pushes in flight to finish, so stopping
        the service afterwards fails none of them: a consumer that is down takes no
        messages, they wait in the subscription (as the simulator's consumer_down does)."""
        bridges = [(name, b) for name, b in self.bridges.push.items()
                   if any(s.name == name and s.consumer == service for s in self.system.subscriptions)]
        for _, b in bridges:
            b.window.held = held
            if not held:  # wake the delivery loop, which waits for a free slot
                self.bridges._loop.call_soon_threadsafe(b._slot.set)  # noqa: SLF001 -- no public resume yet
        deadline = time.monotonic() + settle_s
        while held and any(b.counters.inflight for _, b in bridges) and time.monotonic() < deadline:
            time.sleep(0.05)
        return [name for name, _ in bridges]

    def roll_out(self, name: str, extra_env: dict[str, str] | None = None, drop_env: tuple[str, ...] = (),
                 before_stop=None) -> Proc:
        """A new revision, as Cloud Run deploys one: the new process starts on a port of its
        own, the front switches to it once it listens, the old one finishes the requests it
        has, then stops. No request meets a stopped service, so a deploy costs no delivery
        attempt (start_service, a stop-then-start, answers 503 while the process starts).
        before_stop(old Proc) is called once the old revision has no request left (to read
        its final counters)."""
        old = self.procs[name]
        env = {k: v for k, v in old.env.items() if k not in drop_env}
        env.update(extra_env or {})
        new = dataclasses.replace(old, env=env, port=free_port(), proc=None, restarts=old.restarts + 1)
        new.start()
        self.procs[name] = new
        if name in self.fronts.fronts:
            self.fronts.retarget(name, new.url)
            # Cloud Run lets the old revision finish what it accepted (up to the request
            # timeout) before it goes; stopping it earlier fails deliveries a deploy never fails.
            # (Bounded at 30 s so that a hung revision cannot stall the run's fault schedule.)
            grace = min(self.fronts.fronts[name].s.request_timeout, 30.0)
            if not self.fronts.wait_idle(name, old.url, grace):
                log.warning("roll-out of %s: requests to the old revision still open after %.0f s; stopping it",
                            name, grace)
        if before_stop is not None:
            before_stop(old)
        old.stop()
        return new

    def fake_admin(self, api: str, method: str, path: str, **kwargs) -> httpx.Response:
        if api not in self.fake_procs:
            raise KeyError(f"{api} is not a fake run here")
        headers = {**kwargs.pop("headers", {}), "authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(trust_env=False, timeout=10) as http:
            r = http.request(method, self.fakes[api] + path, headers=headers, **kwargs)
        r.raise_for_status()
        return r

    def fake_stats(self, api: str, keys: bool = True) -> dict:
        return self.fake_admin(api, "GET", "/admin/stats" + ("" if keys else "?keys=false")).json()

    def service_metrics(self, name: str) -> dict:
        """A reactor's /metrics counters (received, handled, duplicate, poison, ...)."""
        return self.service_get(self.procs[name], "/metrics").json()

    def service_get(self, proc: Proc, path: str) -> httpx.Response:
        """GET on a service process's own port, as the harness (with the front secret)."""
        with httpx.Client(trust_env=False, timeout=10) as http:
            return http.get(proc.url + path, headers={FRONT_SECRET_HEADER: self.front_secret})

    # ---- front metrics -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.clock_zero

    def mark_start(self) -> None:
        """Restart the front-metric clock (a live run calls it when traffic starts)."""
        with self._lock:
            self.clock_zero = time.monotonic()
            self._window_start = 0.0
            self.front_rows.clear()
            self._last_front = {(n, k): v[k] for n, v in self.fronts.stats().items()
                                for k in ("requests", "rejected", "errors")}

    def sample_fronts(self) -> list[dict]:
        """Rows (time_s in wall seconds since clock_zero, window start) of every front:
        instances (gauge), requests, rejected (429), errors (5xx) in the window."""
        with self._lock:
            now = round(self.elapsed(), 3)
            t, self._window_start = self._window_start, now
            rows = []
            for name, s in self.fronts.stats().items():
                rows.append({"time_s": t, "metric": METRICS["instances"], "entity": name, "value": float(s["instances"])})
                for key in ("requests", "rejected", "errors"):
                    last = self._last_front.get((name, key), 0)
                    self._last_front[(name, key)] = s[key]
                    rows.append({"time_s": t, "metric": METRICS[key], "entity": name, "value": float(s[key] - last)})
            self.front_rows += rows
            return rows

    def _sample_fronts_loop(self) -> None:
        while not self._sampling.wait(self.sample_interval):
            try:
                self.sample_fronts()
            except Exception as exc:  # noqa: BLE001 -- sampling must not kill the run
                log.warning("front sampling: %s", exc)

    def sampler_offset(self) -> float:
        """Seconds to add to the bridges' sampler row times to put them on clock_zero's clock."""
        return self.bridges.metrics.start - self.clock_zero if self.bridges and self.bridges.metrics else 0.0
