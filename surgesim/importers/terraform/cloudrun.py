"""Cloud Run services (both generations), jobs, functions and run.invoker IAM."""

from __future__ import annotations

from typing import Any

from surgesim.importers.terraform import units
from surgesim.importers.terraform.eventarc import route_event
from surgesim.importers.terraform.mapping import Builder, convert, duration, mapper, schema_accepts
from surgesim.importers.terraform.resolve import Instance
from surgesim.schema.common import format_duration


def _service(b: Builder, inst: Instance, name: str, what: str) -> dict:
    svc: dict[str, Any] = {"name": name, "description": f"Imported from Terraform ({inst.addr}); {what}."}
    b.services[name] = svc
    b.origin("services", name, inst)
    b.note(inst, f"service {name}: {what}; fill `command:` (your process, listening on $PORT) or "
                 "`app:` (module:attribute) to run it live; until then `surgesim up`/`live` list it as skipped")
    return svc


def _env(b: Builder, inst: Instance, svc: dict, env: dict[str, str]) -> None:
    if not env:
        return
    if schema_accepts("Service", "env", env):
        svc["env"] = env
    else:
        b.note(inst, f"environment variables {', '.join(sorted(env))}: this version's system file does not carry them")


@mapper("google_cloud_run_v2_service")
def _cloud_run_service(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    template = b.block(inst, "template")
    if template is None:
        b.problem(inst, "template", "is required")
        return
    container = b.block(template, "containers")
    image = b.get(inst, container, "image", "?") if container is not None else "?"
    svc = _service(b, inst, name, f"image {image} cannot run locally")
    plan: dict[str, Any] = {}
    for scaling in filter(None, [b.block(inst, "scaling"), b.block(template, "scaling")]):
        lo = b.get(inst, scaling, "min_instance_count", None)
        hi = b.get(inst, scaling, "max_instance_count", None)
        if lo is not None:
            plan["min_instances"] = int(lo)
        if hi is not None:
            plan["max_instances"] = int(hi)
    concurrency = b.get(inst, template, "max_instance_request_concurrency", None)
    if concurrency is not None:
        plan["concurrency"] = int(concurrency)
    timeout = b.get(inst, template, "timeout", None)
    if timeout is not None:
        plan["request_timeout"] = duration(b, inst, "template.timeout", timeout)
    env: dict[str, str] = {}
    if container is not None:
        resources = b.block(container, "resources")
        if resources is not None:
            limits = b.get(inst, resources, "limits", {}) or {}
            if "cpu" in limits:
                plan["cpu"] = convert(b, inst, "template.containers.resources.limits.cpu", units.cpu, limits["cpu"])
            if "memory" in limits:
                plan["memory_gib"] = convert(b, inst, "template.containers.resources.limits.memory",
                                              units.memory_gib, limits["memory"])
            idle = b.get(inst, resources, "cpu_idle", None)
            if idle is not None:
                plan["cpu_always_allocated"] = not idle
        for e in b.blocks(container, "env"):
            key = b.get(inst, e, "name")
            if b.block(e, "value_source") is not None:
                b.note(inst, f"env {key}: a secret reference; give the service a local value yourself")
                continue
            env[key] = str(b.get(inst, e, "value", ""))
    _env(b, inst, svc, env)
    account = b.get(inst, template, "service_account", None)
    ingress = b.get(inst, inst, "ingress", None)
    if ingress not in (None, "INGRESS_TRAFFIC_ALL"):
        b.note(inst, f"ingress {ingress}: every local caller reaches the service; ingress is not modelled")
    if account is not None:
        svc["description"] += f" Runs as {account}."
    if plan:
        b.plan_services[name] = plan


@mapper("google_cloud_run_service")
def _cloud_run_service_v1(b: Builder, inst: Instance) -> None:
    """The first-generation resource (`template { spec { ... } }`, scaling in Knative annotations)."""
    name = b.get(inst, inst, "name")
    template = b.block(inst, "template")
    spec = b.block(template, "spec") if template is not None else None
    if spec is None:
        b.problem(inst, "template.spec", "is required")
        return
    container = b.block(spec, "containers")
    image = b.get(inst, container, "image", "?") if container is not None else "?"
    svc = _service(b, inst, name, f"image {image} cannot run locally")
    plan: dict[str, Any] = {}
    meta = b.block(template, "metadata")
    annotations = (b.get(inst, meta, "annotations", {}) or {}) if meta is not None else {}
    for key, knob in (("autoscaling.knative.dev/minScale", "min_instances"), ("autoscaling.knative.dev/maxScale", "max_instances")):
        if key in annotations:
            plan[knob] = convert(b, inst, f"template.metadata.annotations[{key!r}]", int, annotations[key])
    concurrency = b.get(inst, spec, "container_concurrency", None)
    if concurrency:  # 0 means Cloud Run's default
        plan["concurrency"] = int(concurrency)
    timeout = b.get(inst, spec, "timeout_seconds", None)
    if timeout is not None:
        plan["request_timeout"] = format_duration(float(timeout))
    env: dict[str, str] = {}
    if container is not None:
        resources = b.block(container, "resources")
        limits = (b.get(inst, resources, "limits", {}) or {}) if resources is not None else {}
        if "cpu" in limits:
            plan["cpu"] = convert(b, inst, "template.spec.containers.resources.limits.cpu", units.cpu, limits["cpu"])
        if "memory" in limits:
            plan["memory_gib"] = convert(b, inst, "template.spec.containers.resources.limits.memory",
                                          units.memory_gib, limits["memory"])
        for e in b.blocks(container, "env"):
            if b.block(e, "value_from") is None:
                env[b.get(inst, e, "name")] = str(b.get(inst, e, "value", ""))
    _env(b, inst, svc, env)
    account = b.get(inst, spec, "service_account_name", None)
    if account is not None:
        svc["description"] += f" Runs as {account}."
    if plan:
        b.plan_services[name] = plan


@mapper("google_cloud_run_v2_job")
def _cloud_run_job(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    outer = b.block(inst, "template")
    if outer is None:
        b.problem(inst, "template", "is required")
        return
    tasks = int(b.get(inst, outer, "task_count", 1))
    parallelism = int(b.get(inst, outer, "parallelism", 0)) or tasks  # 0: Cloud Run runs them all at once
    job: dict[str, Any] = {"name": name, "tasks": tasks, "parallelism": parallelism}
    inner = b.block(outer, "template")
    plan: dict[str, Any] = {}
    if inner is not None:
        timeout = b.get(inst, inner, "timeout", None)
        if timeout is not None:
            job["task_timeout"] = duration(b, inst, "template.template.timeout", timeout)
        retries = b.get(inst, inner, "max_retries", None)
        if retries is not None:
            job["max_retries"] = int(retries)
        container = b.block(inner, "containers")
        resources = b.block(container, "resources") if container is not None else None
        if resources is not None:
            limits = b.get(inst, resources, "limits", {}) or {}
            if "cpu" in limits:
                plan["cpu"] = convert(b, inst, "template.template.containers.resources.limits.cpu", units.cpu, limits["cpu"])
            if "memory" in limits:
                plan["memory_gib"] = convert(b, inst, "template.template.containers.resources.limits.memory",
                                              units.memory_gib, limits["memory"])
    b.jobs[name] = job
    b.origin("jobs", name, inst)
    b.note(inst, f"job {name}: its work per task (`items`, `batch_size`, `steps`) is not in Terraform; fill it in")
    if plan:
        b.plan_jobs[name] = plan


@mapper("google_cloudfunctions2_function")
def _function(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    build = b.block(inst, "build_config")
    runtime = b.get(inst, build, "runtime", "?") if build is not None else "?"
    entry = b.get(inst, build, "entry_point", "?") if build is not None else "?"
    svc = _service(b, inst, name, f"a Cloud Run function ({runtime}, entry point {entry}) built from source it cannot build")
    cfg = b.block(inst, "service_config")
    plan: dict[str, Any] = {}
    if cfg is not None:
        for key, knob, conv in (("max_instance_count", "max_instances", int), ("min_instance_count", "min_instances", int),
                                ("max_instance_request_concurrency", "concurrency", int),
                                ("available_cpu", "cpu", units.cpu), ("available_memory", "memory_gib", units.memory_gib)):
            value = b.get(inst, cfg, key, None)
            if value is not None:
                plan[knob] = convert(b, inst, f"service_config.{key}", conv, value)
        timeout = b.get(inst, cfg, "timeout_seconds", None)
        if timeout is not None:
            plan["request_timeout"] = format_duration(float(timeout))
        _env(b, inst, svc, {k: str(v) for k, v in (b.get(inst, cfg, "environment_variables", {}) or {}).items()})
        ingress = b.get(inst, cfg, "ingress_settings", None)
        if ingress not in (None, "ALLOW_ALL"):
            b.note(inst, f"ingress_settings {ingress}: not modelled")
    if plan:
        b.plan_services[name] = plan
    trigger = b.block(inst, "event_trigger")
    if trigger is None:
        return
    event_type = b.get(inst, trigger, "event_type")
    criteria = {"type": (event_type, None)}
    for f in b.blocks(trigger, "event_filters"):
        criteria[b.get(inst, f, "attribute")] = (b.get(inst, f, "value"), b.get(inst, f, "operator", None))
    topic = b.get(inst, trigger, "pubsub_topic", None)
    route_event(b, inst, name, criteria, topic, ("service", name), "/",
                b.get(inst, trigger, "service_account_email", None))


@mapper("google_cloud_run_v2_service_iam_member", "google_cloud_run_v2_service_iam_binding",
        "google_cloud_run_service_iam_member", "google_cloud_run_service_iam_binding")
def _invoker(b: Builder, inst: Instance) -> None:
    role = b.get(inst, inst, "role")
    if role != "roles/run.invoker":
        b.skipped.append(f"{inst.where}: {inst.addr}: role {role} (only roles/run.invoker is imported)")
        return
    service = units.last_segment(b.get(inst, inst, "name" if inst.has("name") else "service"), "services")
    members = [b.get(inst, inst, "member")] if inst.has("member") else list(b.get(inst, inst, "members"))
    for m in members:
        b.invokers.setdefault(service, []).append((m, inst))
