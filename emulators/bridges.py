"""Start and stop every bridge a system file needs, in one asyncio loop in a thread.

    from surgesim.emulators.bridges import Bridges
    bridges = Bridges(system, plan, pubsub_endpoint="127.0.0.1:8085", project=system.project,
                      service_urls={"eta": "http://127.0.0.1:9101", ...}, issuer=Issuer(),
                      firestore=clients.firestore(), bigquery=clients.bigquery(), fidelity=stack.fidelity)
    bridges.start()            # provisions, then runs push, filter relays, BigQuery, triggers, metrics
    ...
    bridges.metrics.frame()    # rundir timeseries rows
    bridges.stop()             # clean shutdown: taps deleted, queued trigger events sent

``service_urls`` maps a service to where it listens (its Cloud Run front, if one runs).
Subscriptions whose consumer has no URL are left alone. With an ``issuer``
(emulators/identity.py) every push and trigger event carries an ID token for the
subscription's or trigger's service account. The emulator's own filter support
comes from ``fidelity`` (emulators.probe): filters are enforced here unless it says applied.
"""

from __future__ import annotations

import asyncio
import os
import logging
import threading

from surgesim.schema import Plan, System

from . import service_http
from .bq_subscription import BigQuerySubscriptionBridge
from .filtering import FilterRelay, emulator_applies_filters
from .identity import Issuer, push_service_account, trigger_service_account
from .metrics import MetricsSampler
from .pubsub_rest import PubSubRest
from .push import PushBridge, PushTarget
from .storage_triggers import StorageTriggerBridge
from .triggers import TriggerBridge, TriggerHook

log = logging.getLogger(__name__)


class Bridges:
    def __init__(self, system: System, plan: Plan | None, *, pubsub_endpoint: str, project: str | None = None,
                 service_urls: dict[str, str] | None = None, issuer: Issuer | None = None, firestore=None,
                 bigquery=None, fidelity=None, metrics_interval: float = 1.0, trigger_partitions: int = 4,
                 count_pull_acks: bool = True, trigger_source: str | None = None,
                 firestore_events_port: int | None = None, storage_endpoint: str | None = None) -> None:
        self.system = system
        self.plan = plan or Plan(name="default")
        self.endpoint = pubsub_endpoint
        self.project = project or system.project
        self.urls = dict(service_urls or {})
        self.issuer = issuer
        self.firestore = firestore
        self.bigquery = bigquery
        self.storage_endpoint = storage_endpoint  # the Storage emulator's URL (storage triggers)
        self.enforce = not emulator_applies_filters(fidelity)
        self.metrics_interval = metrics_interval
        self.trigger_partitions = trigger_partitions
        # "emulator" (the emulator posts each write; needs the port it was started with),
        # "listen" (listeners: one event per write, slow on big collections) or "poll" (coalesces)
        self.trigger_source = trigger_source or ("emulator" if firestore_events_port else "listen")
        self.firestore_events_port = firestore_events_port
        self.hook: TriggerHook | None = None
        self.push: dict[str, PushBridge] = {}
        self.relays: dict[str, FilterRelay] = {}
        self.bq: dict[str, BigQuerySubscriptionBridge] = {}
        self.triggers: dict[str, TriggerBridge] = {}
        self.storage_triggers: dict[str, StorageTriggerBridge] = {}
        self.metrics: MetricsSampler | None = None
        self.count_pull_acks = count_pull_acks
        self.proxy = None  # PubSubProxy: counts acks of pull subscriptions consumed by the services
        self.proxy_totals: dict | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Future | None = None
        self._ready: list[asyncio.Event] = []

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "Bridges":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="surgesim-bridges", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._provision(), self._loop).result(timeout)
            self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
            # triggers see only writes after they are ready (their baseline): wait for them
            asyncio.run_coroutine_threadsafe(self._triggers_ready(), self._loop).result(timeout)
        except BaseException:
            self.stop()  # nothing it started (the trigger hook's port, taps) outlives a failed start
            raise
        return self

    async def _triggers_ready(self) -> None:
        await asyncio.gather(*(e.wait() for e in self._ready))

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._stop_all)
        try:
            if self._main is not None:  # None when provisioning failed
                self._main.result(timeout)
        finally:
            if self.proxy is not None:
                self.proxy.stop()
                # kept for the summary: a conservation disagreement on a pull subscription
                # reads against what the proxy saw (unknown acks, bookkeeping errors)
                self.proxy_totals = {**self.proxy.totals(), "errors": self.proxy.errors}
                self.proxy = None
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> "Bridges":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- inside the loop --------------------------------------------------------------------
    async def _provision(self) -> None:
        self.rest = PubSubRest(self.endpoint, self.project, max_connections=128)
        self.http = service_http.session(30.0)
        for t in self.system.topics:
            await self.rest.ensure_topic(t.name)
        observed = {s.name for s in self.system.subscriptions if s.consumer is None and s.delivery == "pull"}
        trigger_subs = [(t.subscription, t.topic, None) for t in self.system.triggers if t.kind == "pubsub"]
        self.metrics = MetricsSampler(self.rest, [(s.name, s.topic, s.filter) for s in self.system.subscriptions]
                                      + trigger_subs, interval=self.metrics_interval, observed=observed)
        await self.metrics.provision()  # taps first: nothing published from now on is missed
        for s in self.system.subscriptions:
            dl = (s.dead_letter.topic, s.dead_letter.max_attempts) if s.dead_letter else None
            if s.delivery == "push":
                url = self.urls.get(s.consumer or "")
                if url is None:
                    log.warning("push subscription %s: no URL for %s, not delivered", s.name, s.consumer)
                    continue
                sp = self.plan.subscription(s.name)
                target = PushTarget(
                    s.name, s.topic, url.rstrip("/") + s.push_path, ack_deadline=s.ack_deadline,
                    min_backoff=s.retry.min_backoff if s.retry else None,
                    max_backoff=s.retry.max_backoff if s.retry else None,
                    dead_letter_topic=dl[0] if dl else None, max_attempts=dl[1] if dl else 5,
                    filter=s.filter, enforce_filter=self.enforce,
                    service_account=push_service_account(s, self.project), max_window=sp.max_outstanding_messages)
                bridge = PushBridge(self.rest, target, self.http, on_settled=self.metrics.settled, issuer=self.issuer)
                await bridge.provision()
                self.metrics.observe(s.name)
                self.push[s.name] = bridge
            elif s.delivery == "bigquery":
                if self.bigquery is None:
                    log.warning("BigQuery subscription %s: no BigQuery client, not delivered", s.name)
                    continue
                b = BigQuerySubscriptionBridge(self.rest, self.bigquery, subscription=s.name, topic=s.topic,
                                               table=s.bigquery.table, write_metadata=s.bigquery.write_metadata,
                                               use_table_schema=s.bigquery.use_table_schema, dead_letter=dl,
                                               on_settled=self.metrics.settled)
                await b.provision()
                self.metrics.observe(s.name)
                self.bq[s.name] = b
            elif s.filter and self.enforce:
                relay = FilterRelay(self.rest, s.name, s.topic, s.filter, ack_deadline=s.ack_deadline, dead_letter=dl)
                await relay.provision()
                self.relays[s.name] = relay
            else:
                await self.rest.create_subscription(s.name, s.topic, ack_deadline=s.ack_deadline, dead_letter=dl,
                                                    filter=s.filter)
                if s.consumer is not None and self.count_pull_acks:
                    self._start_proxy()
                    self.metrics.observe(s.name)
        firestore_triggers = [t for t in self.system.triggers if t.kind == "firestore"]
        if firestore_triggers and self.trigger_source == "emulator":
            await self._start_hook()
        for trig in self.system.triggers:
            url = self.urls.get(trig.target)
            if url is None:
                log.warning("trigger %s: no URL for %s, not delivered", trig.name, trig.target)
                continue
            url = url.rstrip("/") + trig.path
            if trig.kind == "pubsub":
                await self._pubsub_trigger(trig, url)
            elif trig.kind == "storage":
                self._storage_trigger(trig, url)
            elif self.firestore is None:
                log.warning("trigger %s: no Firestore client, not delivered", trig.name)
            else:
                self.triggers[trig.name] = TriggerBridge(
                    self._firestore_for(trig.database), collection=trig.collection, document=trig.document,
                    url=url, project=self.project, events=list(trig.events), database=trig.database,
                    encoding=trig.encoding, partitions=self.trigger_partitions, issuer=self.issuer,
                    service_account=trigger_service_account(trig, self.project), http=self.http,
                    source=self.trigger_source, hook=self.hook, name=trig.name,
                    backoff=(trig.retry.min_backoff, trig.retry.max_backoff))
        # both kinds of watcher take a baseline before start() returns
        self._ready = [asyncio.Event() for _ in (*self.triggers, *self.storage_triggers)]

    def _firestore_for(self, database: str):
        """The Firestore client of the trigger's database (the database filter)."""
        if database == getattr(self.firestore, "_database", "(default)"):
            return self.firestore
        from .clients import FIRESTORE_EMULATOR_HOST, Clients

        host: str | None = getattr(self.firestore, "_emulator_host", None) or os.environ.get(FIRESTORE_EMULATOR_HOST)
        if not host:
            raise RuntimeError(f"a trigger on Firestore database {database!r}: no Firestore emulator host known")
        return Clients({FIRESTORE_EMULATOR_HOST: host}, project=self.project).firestore(database)

    async def _pubsub_trigger(self, trig, url: str) -> None:
        """An Eventarc Pub/Sub trigger: its own push subscription on the topic, delivering
        messagePublished CloudEvents with that subscription's retry and dead-letter policy."""
        dl = trig.dead_letter
        target = PushTarget(trig.subscription, trig.topic, url, min_backoff=trig.retry.min_backoff,
                            max_backoff=trig.retry.max_backoff, dead_letter_topic=dl.topic if dl else None,
                            max_attempts=dl.max_attempts if dl else 5, cloudevent=True,
                            service_account=trigger_service_account(trig, self.project),
                            max_window=self.plan.subscription(trig.subscription).max_outstanding_messages)
        bridge = PushBridge(self.rest, target, self.http, on_settled=self.metrics.settled, issuer=self.issuer)
        await bridge.provision()
        self.metrics.observe(trig.subscription)
        self.push[trig.subscription] = bridge

    def _storage_trigger(self, trig, url: str) -> None:
        if self.storage_endpoint is None:
            log.warning("trigger %s: no Storage emulator, not delivered", trig.name)
            return
        self.storage_triggers[trig.name] = StorageTriggerBridge(
            self.storage_endpoint, bucket=trig.bucket, url=url, events=list(trig.events), issuer=self.issuer,
            service_account=trigger_service_account(trig, self.project), http=self.http, name=trig.name,
            backoff=(trig.retry.min_backoff, trig.retry.max_backoff))

    async def _start_hook(self) -> None:
        why = "the Firestore emulator was not started with a trigger events port"
        if self.firestore_events_port:
            hook = TriggerHook(self.firestore_events_port)
            try:
                await hook.start()
                self.hook = hook
                return
            except OSError as exc:
                why = f"port {self.firestore_events_port}: {exc}"
        log.warning("Firestore trigger events: %s; using collection listeners instead (slower on large "
                    "collections)", why)
        self.trigger_source = "listen"

    def _start_proxy(self) -> None:
        # The services' own streaming pulls ack straight to the emulator, which reports
        # nothing; a counting gRPC proxy in between gives the backlog of those subscriptions.
        if self.proxy is None:
            from .grpc_proxy import PubSubProxy, sampler_sink

            self.proxy = PubSubProxy(self.endpoint, on_settled=sampler_sink(self.metrics, self._loop)).start()

    @property
    def services_pubsub_host(self) -> str:
        """What the services' PUBSUB_EMULATOR_HOST should be: the counting proxy when one runs."""
        return self.proxy.endpoint if self.proxy is not None else self.endpoint

    async def _run(self) -> None:
        tasks = [asyncio.create_task(b.run()) for b in (*self.push.values(), *self.relays.values(), *self.bq.values())]
        watchers = [*self.triggers.values(), *self.storage_triggers.values()]
        tasks += [asyncio.create_task(t.run(r)) for t, r in zip(watchers, self._ready)]
        tasks.append(asyncio.create_task(self.metrics.run()))
        self._tasks = tasks
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("bridge stopped with %r", r)

    def _stop_all(self) -> None:
        for b in (*self.push.values(), *self.relays.values(), *self.bq.values(), *self.triggers.values(),
                  *self.storage_triggers.values()):
            b.stop()
        # the sampler last, after one final drain and sample
        if self.metrics is not None:
            self._loop.call_later(0.2, self.metrics.stop)

    async def _close(self) -> None:
        if self.hook is not None:
            await self.hook.close()
        if getattr(self, "http", None) is not None:
            await self.http.close()
        if getattr(self, "rest", None) is not None:
            await self.rest.aclose()
