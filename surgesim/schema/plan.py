"""The plan: capacity knobs. A plan overrides only what it names; everything else keeps
Cloud Run's and the Pub/Sub client's defaults."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from surgesim.schema.common import Duration, Fraction, LatencySpec, Rate, Strict, in_range
from surgesim.schema.system import Route, Step


class ServicePlan(Strict):
    min_instances: Annotated[int, Field(strict=True), in_range(0, 1000)] = 0
    max_instances: Annotated[int, Field(strict=True), in_range(1, 1000)] = 100
    concurrency: Annotated[int, Field(strict=True), in_range(1, 1000)] = 80
    cpu: Annotated[float, in_range(0.08, 8)] = 1.0
    memory_gib: Annotated[float, in_range(0.125, 32)] = 0.5
    cold_start: LatencySpec = Field(default_factory=lambda: {"p50": 1.5, "p99": 4.0})
    target_utilisation: Annotated[Fraction, in_range(0.1, 1.0)] = 0.6
    """Cloud Run scales to keep concurrency in use near this fraction of the slots."""
    scale_up_delay: Annotated[Duration, in_range(0, 600, "s")] = 2.0
    scale_down_delay: Annotated[Duration, in_range(0, 3600, "s")] = 900.0
    """Idle time before an instance above min_instances is removed (Cloud Run keeps idle instances up to 15 min)."""
    request_timeout: Annotated[Duration, in_range(1, 3600, "s")] = 300.0
    pending_timeout: Annotated[Duration, in_range(0.001, 600, "s")] = 10.0
    """How long a request waits for a free slot at max instances before it gets 429."""
    cpu_always_allocated: bool = False
    routes: list[Route] | None = None
    """Replace the service's routes (e.g. a 'monolith' plan that calls the SMS gateway inline)."""
    steps: list[Step] | None = None
    """Replace the service's message handler steps."""

    @model_validator(mode="after")
    def _bounds(self) -> "ServicePlan":
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) must be <= max_instances ({self.max_instances})")
        return self


class SubscriptionPlan(Strict):
    """Subscriber flow control (pull) or push window limits."""

    max_outstanding_messages: Annotated[int, Field(strict=True), in_range(1, 1_000_000)] = 1000
    max_outstanding_bytes: Annotated[int, Field(strict=True), in_range(1, 10**10)] = 100 * 2**20
    streams: Annotated[int, Field(strict=True), in_range(1, 64)] = 1
    """Streaming-pull streams (each ~2k msg/s on the emulator)."""
    write_latency: LatencySpec | None = None
    """A BigQuery subscription only: publish to row, on top of the writer's throughput
    (the system's `stores.bigquery_latency.subscription_rows_per_s`). Simulator only: an
    environment figure, not a capacity; `surgesim calibrate` writes the one it measured
    live (the bridge's paced pulls), and `surgesim live` has the real thing."""


class TriggerPlan(Strict):
    """An environment figure for one Firestore or Cloud Storage trigger (simulator only)."""

    delivery_latency: LatencySpec
    """Change to delivery, replacing the system file's (Eventarc's assumed) figure for
    this plan; `surgesim calibrate` writes what the local trigger bridge measured."""


class JobPlan(Strict):
    tasks: Annotated[int, Field(strict=True), in_range(1, 10_000)] | None = None
    parallelism: Annotated[int, Field(strict=True), in_range(1, 10_000)] | None = None
    cpu: Annotated[float, in_range(0.08, 8)] = 1.0
    memory_gib: Annotated[float, in_range(0.125, 32)] = 0.5


class ApiPlan(Strict):
    """The quota contracted with an external API: replaces the system file's figure for
    this plan (what a plan buys, like instances)."""

    rate_limit: Annotated[Rate, in_range(0.001, 1e7)] | None = None
    """Requests per second beyond which the API answers 429."""


class Plan(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    services: dict[str, ServicePlan] = Field(default_factory=dict)
    subscriptions: dict[str, SubscriptionPlan] = Field(default_factory=dict)
    jobs: dict[str, JobPlan] = Field(default_factory=dict)
    apis: dict[str, ApiPlan] = Field(default_factory=dict)
    """Per external API: the quota this plan contracts (e.g. a higher `rate_limit`)."""
    triggers: dict[str, TriggerPlan] = Field(default_factory=dict)
    """Per Firestore or Storage trigger: its delivery latency in this environment."""
    debounce: dict[str, Annotated[Duration, in_range(0, 3600, "s")]] = Field(default_factory=dict)
    """Per service: coalesce keyed writes (`firestore: {debounce: true}`) to one per key per interval."""
    read_every: dict[str, Annotated[Duration, in_range(0.001, 86400, "s")]] = Field(default_factory=dict)
    """Per Firestore collection: its readers poll it at this interval instead of listening in
    real time (a polling live map); `freshness.<collection>` counts the age they see."""

    def service(self, name: str) -> ServicePlan:
        return self.services.get(name) or ServicePlan()

    def subscription(self, name: str) -> SubscriptionPlan:
        return self.subscriptions.get(name) or SubscriptionPlan()
