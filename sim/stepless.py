"""Where the simulator had nothing to go on: routes and services that traffic reached but
that declare no steps. Their handlers take 0 ms and touch nothing, which is rarely what
the system does; `surgesim sim` warns, one line each, so the gap is seen, not guessed.

Judged from the run's totals (what really arrived), so a step-less service that no traffic
reaches stays quiet, and a split run (sim/split.py) is judged on its merged totals."""

from __future__ import annotations

from surgesim.sim.triggers import with_trigger_subscriptions


def stepless_warnings(exp, totals: dict) -> list[str]:
    """One line per route, and per service's message handler, that got work and has no steps."""
    lines = []
    routes = totals.get("routes") or {}
    subs = totals.get("subscriptions") or {}
    triggers = totals.get("triggers") or {}
    system = with_trigger_subscriptions(exp.system)
    for svc in system.services:
        for r in exp.routes(svc.name):
            n = (routes.get(f"{svc.name}.{r.name}") or {}).get("requests", 0)
            if n and not r.steps:
                lines.append(f"route {svc.name}.{r.name} has no steps: the simulator answered its {n} requests "
                             f"in 0 ms (give the route `steps:` in the system file or the plan)")
        if exp.steps(svc.name):
            continue
        feeds = [(s.name, (subs.get(s.name) or {}).get("delivered", 0)) for s in system.subscriptions
                 if s.consumer == svc.name]
        feeds += [(t.name, (triggers.get(t.name) or {}).get("delivered", 0)) for t in system.triggers
                  if t.target == svc.name and t.kind != "pubsub"]
        feeds = [(name, n) for name, n in feeds if n]
        if feeds:
            what = ", ".join(f"{n} from {name}" for name, n in feeds)
            lines.append(f"service {svc.name} has no steps: the simulator handled its deliveries ({what}) "
                         f"in 0 ms (give the service `steps:` in the system file or the plan)")
    return lines


def workflow_job_warnings(exp) -> list[str]:
    """One line per jobs.run step in a workflow's Workflows YAML (`source:`) that its `steps:`
    model has no `run_job` step for: the simulator runs the model, so that job's executions,
    its task-seconds and its job.NAME SLO would be missing from the run, not zero."""
    from surgesim.workflows import load
    from surgesim.workflows.parse import RUN_JOB, run_job_steps

    lines = []
    for wf in exp.system.workflows:
        if wf.source is None:
            continue
        modelled = {st.run_job for st in [*wf.steps, *wf.compensations] if st.run_job}
        for path, job in run_job_steps(load(wf.source)):
            if job in modelled or (job is None and modelled):
                continue
            lines.append(f"workflow {wf.name}: step {path} of its source starts Cloud Run job "
                         f"{job or '(named at run time)'} ({RUN_JOB}), and its steps: model has no "
                         f"`run_job: {job or 'JOB'}` step, so the simulator does not start it (docs/workflows.md)")
    return lines

