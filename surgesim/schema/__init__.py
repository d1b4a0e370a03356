"""The three files that describe a run (system, plan, scenario), imported by every part."""

from surgesim.schema.common import Latency, format_duration, parse_duration, parse_rate
from surgesim.schema.loading import (
    Experiment,
    SchemaError,
    detect_kind,
    load_experiment,
    load_plan,
    load_system,
    validate_file,
)
from surgesim.schema.plan import Plan, ServicePlan, SubscriptionPlan
from surgesim.schema.scenario import Fault, Scenario, Slo, Source, Wave
from surgesim.schema.system import (
    ExternalApi,
    Route,
    Service,
    Step,
    Subscription,
    System,
    Topic,
)

__all__ = [
    "Experiment", "ExternalApi", "Fault", "Latency", "Plan", "Route", "Scenario", "SchemaError",
    "Service", "ServicePlan", "Slo", "Source", "Step", "Subscription", "SubscriptionPlan", "System",
    "Topic", "Wave", "detect_kind", "format_duration", "load_experiment", "load_plan", "load_system",
    "parse_duration", "parse_rate", "validate_file",
]
