"""`surgesim import terraform`: static resolution (variables, locals, references,
count/for_each, modules), clear messages for what is not static, the two fixture
directories end to end, `--check`, and the simulator running an imported system."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from surgesim.cli import cli
from surgesim.importers.terraform import ImportError_, import_terraform
from surgesim.schema import load_plan, load_system

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "terraform"
SHOP = FIXTURES / "shop"
GREENHOUSE = FIXTURES / "greenhouse"
PROVIDER = 'provider "google" {\n  project = "acme-test-01"\n}\n'


def _tf(tmp_path: Path, text: str, name: str = "main.tf") -> Path:
    (tmp_path / name).write_text(PROVIDER + text if name == "main.tf" else text)
    return tmp_path


def _problems(directory: Path, **kw) -> list[str]:
    with pytest.raises(ImportError_) as err:
        import_terraform(directory, **kw)
    return err.value.problems


# ---- resolution ---------------------------------------------------------------------------


def test_locals_variables_and_functions_resolve(tmp_path: Path) -> None:
    _tf(tmp_path, '''
variable "env" {
  default = "dev"
}
variable "attempts" {
  type    = number
  default = 5
}
locals {
  prefix = "${upper(var.env)}-app"
  names  = [for n in ["a", "b"] : "${local.prefix}.${n}"]
}
resource "google_pubsub_topic" "t" {
  count = length(local.names)
  name  = local.names[count.index]
}
resource "google_pubsub_topic" "dlq" {
  name = var.env == "prod" ? "dlq-prod" : format("dlq-%s", var.env)
}
resource "google_pubsub_subscription" "hold" {
  name  = "dlq-hold"
  topic = google_pubsub_topic.dlq.name
}
resource "google_pubsub_subscription" "s" {
  name  = "sub-${google_pubsub_topic.t[1].name}"
  topic = google_pubsub_topic.t[1].id
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dlq.id
    max_delivery_attempts = var.attempts * 2
  }
}
''')
    system = import_terraform(tmp_path).system
    assert [t["name"] for t in system["topics"]] == ["DEV-app.a", "DEV-app.b", "dlq-dev"]
    sub = next(s for s in system["subscriptions"] if s["name"] == "sub-DEV-app.b")
    assert sub["topic"] == "DEV-app.b"
    assert sub["dead_letter"] == {"topic": "dlq-dev", "max_attempts": 10}


def test_var_and_var_file_override_defaults_in_terraforms_order(tmp_path: Path) -> None:
    _tf(tmp_path, '''
variable "topic" {
  default = "from-default"
}
resource "google_pubsub_topic" "t" {
  name = var.topic
}
''')
    assert import_terraform(tmp_path).system["topics"][0]["name"] == "from-default"
    (tmp_path / "terraform.tfvars").write_text('topic = "from-auto-tfvars"\n')
    assert import_terraform(tmp_path).system["topics"][0]["name"] == "from-auto-tfvars"
    extra = tmp_path / "extra.tfvars"
    extra.write_text('topic = "from-var-file"\n')
    assert import_terraform(tmp_path, var_files=[extra]).system["topics"][0]["name"] == "from-var-file"
    got = import_terraform(tmp_path, var_files=[extra], variables=["topic=from-cli"])
    assert got.system["topics"][0]["name"] == "from-cli"


def test_for_each_over_a_map_and_over_another_resource(tmp_path: Path) -> None:
    _tf(tmp_path, '''
variable "consumers" {
  default = {
    alpha = 20
    beta  = 40
  }
}
resource "google_cloud_run_v2_service" "svc" {
  for_each = var.consumers
  name     = "svc-${each.key}"
  location = "us-central1"
  template {
    max_instance_request_concurrency = each.value
    containers {
      image = "img"
    }
  }
}
resource "google_pubsub_topic" "t" {
  name = "work"
}
resource "google_pubsub_subscription" "push" {
  for_each = google_cloud_run_v2_service.svc
  name     = "${each.value.name}-push"
  topic    = google_pubsub_topic.t.id
  push_config {
    push_endpoint = "${each.value.uri}/in/${each.key}"
  }
}
''')
    got = import_terraform(tmp_path)
    subs = {s["name"]: s for s in got.system["subscriptions"]}
    assert subs["svc-alpha-push"]["consumer"] == "svc-alpha" and subs["svc-alpha-push"]["push_path"] == "/in/alpha"
    assert subs["svc-beta-push"]["consumer"] == "svc-beta"
    assert got.plan["services"] == {"svc-alpha": {"concurrency": 20}, "svc-beta": {"concurrency": 40}}


def test_a_local_module_gets_its_arguments_and_gives_its_outputs(tmp_path: Path) -> None:
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "main.tf").write_text('''
variable "base" {}
resource "google_pubsub_topic" "t" {
  name = "${var.base}-events"
}
output "topic" {
  value = google_pubsub_topic.t.id
}
''')
    _tf(tmp_path, '''
module "events" {
  source = "./mod"
  base   = "shop"
}
resource "google_pubsub_subscription" "s" {
  name  = "reader"
  topic = module.events.topic
}
''')
    system = import_terraform(tmp_path).system
    assert system["topics"] == [{"name": "shop-events"}]
    assert system["subscriptions"][0]["topic"] == "shop-events"


# ---- what is not static ---------------------------------------------------------------------


def test_a_data_source_in_a_mapped_attribute_names_resource_and_attribute(tmp_path: Path) -> None:
    _tf(tmp_path, '''
data "google_pubsub_topic" "existing" {
  name = "legacy"
}
resource "google_pubsub_topic" "t" {
  name   = "ok"
  labels = { from = data.google_pubsub_topic.existing.id }
}
resource "google_pubsub_subscription" "s" {
  name   = "reader"
  topic  = google_pubsub_topic.t.id
  filter = "attributes.topic = \\"${data.google_pubsub_topic.existing.id}\\""
}
''')
    problems = _problems(tmp_path)
    # The label is never read, so only the filter is a problem, with file, line, resource and attribute.
    assert len(problems) == 1
    assert problems[0].startswith("main.tf:12: google_pubsub_subscription.s: filter: cannot be resolved statically")
    assert "data sources" in problems[0]


def test_a_variable_without_default_says_how_to_give_it(tmp_path: Path) -> None:
    _tf(tmp_path, '''
variable "name" {
  type = string
}
resource "google_pubsub_topic" "t" {
  name = var.name
}
''')
    (problem,) = _problems(tmp_path)
    assert "google_pubsub_topic.t: name:" in problem and "-var name=" in problem


def test_unsupported_constructs_are_named_not_guessed(tmp_path: Path) -> None:
    _tf(tmp_path, '''
module "remote" {
  source = "terraform-google-modules/pubsub/google"
}
resource "google_pubsub_topic" "t" {
  name = templatefile("name.tpl", {})
}
resource "google_pubsub_topic" "u" {
  for_each = toset([timestamp()])
  name     = each.key
}
''')
    problems = "\n".join(_problems(tmp_path))
    assert "module.remote: source 'terraform-google-modules/pubsub/google' is not a local path" in problems
    assert "google_pubsub_topic.t: name: cannot be resolved statically: templatefile()" in problems
    assert "google_pubsub_topic.u: for_each: cannot be resolved statically: timestamp() is known only at apply" in problems


def test_a_push_endpoint_outside_the_configuration_is_a_problem(tmp_path: Path) -> None:
    _tf(tmp_path, '''
resource "google_pubsub_topic" "t" {
  name = "events"
}
resource "google_pubsub_subscription" "s" {
  name  = "webhook"
  topic = google_pubsub_topic.t.id
  push_config {
    push_endpoint = "https://hooks.example.com/in"
  }
}
''')
    (problem,) = _problems(tmp_path)
    assert "google_pubsub_subscription.s: push_config.push_endpoint: 'https://hooks.example.com/in'" in problem


def test_an_imported_value_outside_the_schemas_range_points_at_its_terraform(tmp_path: Path) -> None:
    problems = _problems(SHOP, variables=["max_delivery_attempts=3"])
    assert any("dead_letter.max_attempts" in p and "must be 5..100, got 3" in p
               and 'google_pubsub_subscription.consumers["billing"]' in p for p in problems)


def test_hcl_syntax_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text('resource "google_pubsub_topic" "t" {\n  name = \n}\n')
    (problem,) = _problems(tmp_path)
    assert problem.startswith("main.tf:") and "HCL syntax error" in problem


# ---- the fixtures end to end ----------------------------------------------------------------


def test_the_shop_fixture_imports_into_files_that_validate(tmp_path: Path) -> None:
    out, plan = tmp_path / "shop.yaml", tmp_path / "shop-plan.yaml"
    res = CliRunner().invoke(cli, ["import", "terraform", str(SHOP), "-o", str(out), "--plan-out", str(plan)])
    assert res.exit_code == 0, res.output
    system = load_system(out)
    load_plan(plan, system)
    subs = {s.name: s for s in system.subscriptions}
    # for_each over the consumers variable, push endpoints resolved to service + path
    assert subs["billing-orders"].consumer == "billing-worker" and subs["billing-orders"].push_path == "/pubsub/orders"
    assert subs["shipping-orders"].filter == 'hasPrefix(attributes.kind, "Order")'
    # the dead-letter topic comes from a local module's output
    assert subs["billing-orders"].dead_letter.topic == "shop.orders.dlq"
    assert subs["billing-orders"].dead_letter.max_attempts == 10
    # Eventarc with a path pattern -> a Firestore trigger; Pub/Sub Eventarc -> a push subscription
    (trigger,) = system.triggers
    assert (trigger.collection, trigger.events, trigger.target) == ("orders", ["written"], "shipping-worker")
    assert subs["eventarc-audit-events"].push_path == "/audit"
    # the workflow's URLs come from user_env_vars built from services' uris
    assert [(s.name, s.call) for s in system.workflows[0].steps[:2]] == [("charge", "billing-worker"), ("ship", "shipping-worker")]
    # its jobs.run step (skip_polling) -> a run_job step of the job the configuration declares
    reindex = system.workflows[0].steps[2]
    assert (reindex.name, reindex.run_job, reindex.wait, reindex.call) == ("reindex", "reindex", False, None)
    assert "orders-archive" not in subs  # the Cloud Storage subscription is left out, and said so
    text = out.read_text()
    assert "google_pubsub_subscription.orders_archive: a Cloud Storage subscription" in text.split("\nname:")[0]
    assert "left out: main.tf:346: google_compute_network.vpc" in res.output
    assert "fill `command:`" in text
    # run.invoker IAM members -> the allow-lists; push and trigger identities
    services = {s.name: s for s in system.services}
    pusher = "shop-pusher@shop-prod-4411.iam.gserviceaccount.com"
    runner = "shop-runner@shop-prod-4411.iam.gserviceaccount.com"
    assert services["billing-worker"].invokers == [f"serviceAccount:{pusher}"]
    assert services["shipping-worker"].invokers == [f"serviceAccount:{pusher}", f"serviceAccount:{runner}"]
    assert services["shop-api"].invokers == ["allUsers"]
    assert services["receipt-mailer"].invokers is None  # no IAM in the Terraform: the schema's default
    assert subs["billing-orders"].service_account == pusher
    assert trigger.service_account == runner


def test_a_foreign_configuration_imports_too() -> None:
    got = import_terraform(GREENHOUSE)
    system = got.system
    assert system["project"] == "greenhouse-dev-21"  # from terraform.tfvars
    assert [s["name"] for s in system["subscriptions"]] == ["readings-north-bq", "readings-south-bq"]  # count
    assert system["subscriptions"][0]["bigquery"] == {"table": "telemetry.readings", "use_table_schema": True}
    table = system["stores"]["bigquery"][0]
    assert table["partition_field"] == "measured_at" and "calibration" not in [c["name"] for c in table["columns"]]
    assert system["triggers"] == [{"name": "alert-fanout", "collection": "alerts", "events": ["created"],
                                   "target": "alert-fanout"}]
    (wf,) = system["workflows"]
    assert wf["trigger"] == "report-requests"
    assert wf["steps"][0] == {"name": "refresh", "call": "dashboard", "timeout": "2m", "retries": 4, "backoff": "2s"}
    assert any("calibration" in n for n in got.notes)


# ---- --check --------------------------------------------------------------------------------


@pytest.fixture()
def shop_file(tmp_path: Path) -> Path:
    out = tmp_path / "shop.yaml"
    res = CliRunner().invoke(cli, ["import", "terraform", str(SHOP), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def _edit(path: Path, change) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    edited = path.with_name("edited.yaml")
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    return edited


def test_check_agrees_with_its_own_import_and_ignores_what_only_the_file_says(shop_file: Path) -> None:
    def own_additions(d: dict) -> None:
        d["services"][0]["command"] = ["python", "-m", "billing"]
        d["services"][0]["steps"] = [{"cpu": "5ms"}]
        d["subscriptions"][2]["consumer"] = "shop-api"  # a pull subscription's consumer: the file's own
        d["topics"][0]["message_bytes"] = 900

    res = CliRunner().invoke(cli, ["import", "terraform", str(SHOP), "--check", str(_edit(shop_file, own_additions))])
    assert res.exit_code == 0, res.output
    assert "agrees" in res.output


def test_check_catches_a_changed_max_delivery_attempts(shop_file: Path) -> None:
    def change(d: dict) -> None:
        next(s for s in d["subscriptions"] if s["name"] == "billing-orders")["dead_letter"]["max_attempts"] = 5

    res = CliRunner().invoke(cli, ["import", "terraform", str(SHOP), "--check", str(_edit(shop_file, change))])
    assert res.exit_code == 1
    assert ('subscriptions.billing-orders.dead_letter.max_attempts: system file 5, Terraform 10  '
            '(main.tf:33 google_pubsub_subscription.consumers["billing"])') in res.output
    assert "1 difference(s)" in res.output


def test_check_catches_a_removed_and_an_extra_subscription(shop_file: Path) -> None:
    def change(d: dict) -> None:
        d["subscriptions"] = [s for s in d["subscriptions"] if s["name"] != "audit-pull"]
        d["subscriptions"].append({"name": "forgotten", "topic": "shop.audit"})

    res = CliRunner().invoke(cli, ["import", "terraform", str(SHOP), "--check", str(_edit(shop_file, change))])
    assert res.exit_code == 1
    assert "subscriptions.audit-pull: in Terraform (main.tf:66 google_pubsub_subscription.audit_pull), not in the system file" in res.output
    assert "subscriptions.forgotten: in the system file, not in Terraform" in res.output


def test_check_catches_a_changed_terraform_value(shop_file: Path) -> None:
    res = CliRunner().invoke(cli, ["import", "terraform", str(SHOP), "--check", str(shop_file),
                                   "-var", "max_delivery_attempts=12"])
    assert res.exit_code == 1
    assert "system file 10, Terraform 12" in res.output


def test_import_problems_exit_2_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x.yaml"
    res = CliRunner().invoke(cli, ["import", "terraform", str(SHOP), "-o", str(out), "-var", "max_delivery_attempts=2"])
    assert res.exit_code == 2 and not out.exists()
    assert "nothing written" in res.output


# ---- the simulator reads an imported system -------------------------------------------------


def test_sim_runs_a_scenario_against_an_imported_system(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["import", "terraform", str(SHOP), "-o", str(tmp_path / "shop.yaml"),
                              "--plan-out", str(tmp_path / "shop-plan.yaml")])
    assert res.exit_code == 0, res.output
    (tmp_path / "scenario.yaml").write_text("""
name: imported_orders
system: shop.yaml
plan: shop-plan.yaml
seed: 3
duration: 5m
traffic:
  sources:
    - {name: placed, rate: 20/s, publish: {topic: shop.orders, attributes: {kind: OrderPlaced}}}
    - {name: cancelled, rate: 5/s, publish: {topic: shop.orders, attributes: {kind: OrderCancelled}}}
slos:
  - final(dlq.billing-orders) == 0
  - max(instances.billing-worker) <= 20
""")
    res = runner.invoke(cli, ["sim", str(tmp_path / "scenario.yaml"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    totals = json.loads((tmp_path / "run" / "summary.json").read_text())["totals"]
    subs = totals["subscriptions"]
    published = totals["topics"]["shop.orders"]["published"]
    # The imported filter: billing sees only OrderPlaced; shipping's hasPrefix passes both kinds.
    assert subs["billing-orders"]["filtered"] > 0.1 * published
    assert subs["billing-orders"]["acked"] + subs["billing-orders"]["filtered"] == published
    assert subs["shipping-orders"]["filtered"] == 0 and subs["shipping-orders"]["acked"] == published
    # The BigQuery subscription writes every message to the imported table.
    assert totals["bigquery"]["analytics.orders"]["rows"] == published
    # The imported plan's concurrency 1 for the function needs more than one instance at 25/s.
    assert totals["services"]["receipt-mailer"]["peak_instances"] >= 2
    assert totals["services"]["shipping-worker"]["peak_instances"] == 1


# ---- fields another branch adds to the schema -----------------------------------------------


def _map(directory: Path):
    from surgesim.importers.terraform import mapping
    from surgesim.importers.terraform.resolve import load

    problems: list[str] = []
    b = mapping.Builder()
    b.problems = problems
    for res in load(directory, {}, problems).all_resources():
        for inst in res.instances():
            mapping.map_instance(b, inst)
    mapping.finish(b)
    assert not problems, problems
    return b


def test_identities_are_carried_as_far_as_the_schema_takes_them(monkeypatch) -> None:
    from surgesim.importers.terraform import mapping
    from surgesim.schema.common import Strict

    case = FIXTURES / "types" / "run_invoker_iam"
    b = _map(case)
    assert b.services["private"]["invokers"] == [
        "serviceAccount:caller@acme-test-01.iam.gserviceaccount.com", "user:ops@example.com"]
    # A group is not a member the allow-list takes: left out, and said so.
    assert any("member group:team@example.com on private" in n and "left out" in n for n in b.notes)
    assert any("roles/run.viewer" in s for s in b.skipped)  # not an invoker role

    # A schema without allow-lists or identities (as before they existed): notes, nothing carried.
    class Bare(Strict):
        name: str

    for model in ("Service", "Subscription", "Trigger"):
        monkeypatch.setattr(mapping, model, Bare)
    b = _map(case)
    assert "invokers" not in b.services["private"]
    assert any("run.invoker on private" in n and "no invoker allow-list" in n for n in b.notes)
    b = _map(SHOP)
    assert "service_account" not in b.subscriptions["billing-orders"]
    assert "service_account" not in b.triggers["order-written"]
    assert any("oidc_token" in n for n in b.notes) and any("service_account shop-runner" in n for n in b.notes)


def test_a_missing_required_attribute_is_named(tmp_path: Path) -> None:
    _tf(tmp_path, '''
resource "google_pubsub_topic" "t" {
  name = "events"
}
resource "google_pubsub_subscription" "s" {
  topic = google_pubsub_topic.t.id
}
''')
    assert _problems(tmp_path) == ["main.tf:8: google_pubsub_subscription.s: name: is required"]


def test_cycles_are_problems_not_hangs(tmp_path: Path) -> None:
    _tf(tmp_path, '''
module "again" {
  source = "./"
}
locals {
  a = local.b
  b = "${local.a}-x"
}
resource "google_pubsub_topic" "t" {
  name = local.a
}
''')
    problems = "\n".join(_problems(tmp_path))
    assert "module.again: source './' calls a module that is already being read" in problems
    assert "google_pubsub_topic.t: name: cannot be resolved statically" in problems and "cycle" in problems


def test_a_runaway_count_is_refused(tmp_path: Path) -> None:
    _tf(tmp_path, '''
resource "google_pubsub_topic" "t" {
  count = 100000000
  name  = "t-${count.index}"
}
''')
    (problem,) = _problems(tmp_path)
    assert problem == ("main.tf:5: google_pubsub_topic.t: count: cannot be resolved statically: "
                       "count must be a whole number 0..10000, got 100000000")


def test_deeply_nested_expressions_are_a_problem_not_a_crash(tmp_path: Path) -> None:
    _tf(tmp_path, 'resource "google_pubsub_topic" "u" {\n  name = ' + "(" * 3000 + '"u"' + ")" * 3000 + "\n}\n")
    assert _problems(tmp_path) == [f"{tmp_path}: expressions nested too deeply to evaluate"]


def test_without_a_provider_project_the_local_default_stays_and_is_said(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text('resource "google_pubsub_topic" "t" {\n  name = "events"\n}\n')
    got = import_terraform(tmp_path)
    assert "project" not in got.system
    assert any(n.startswith("project: no `project` on the resource and no google provider block") for n in got.notes)


def test_a_line_break_in_a_terraform_value_stays_inside_the_header_comment(tmp_path: Path) -> None:
    _tf(tmp_path, '''
resource "google_pubsub_topic" "t" {
  name = "events"
}
resource "google_storage_bucket" "b" {
  name = "acme-media"
}
resource "google_storage_notification" "n" {
  bucket = "acme-media\\nname: injected"
  topic  = google_pubsub_topic.t.id
}
''')
    text = import_terraform(tmp_path).system_yaml(tmp_path)
    carrying = [line for line in text.splitlines() if "injected" in line]
    assert carrying and all(line.startswith("#   - ") for line in carrying)


def test_an_exact_document_trigger_says_the_system_file_watches_the_collection(tmp_path: Path) -> None:
    _tf(tmp_path, '''
resource "google_cloud_run_v2_service" "s" {
  name     = "watcher"
  location = "us-central1"
  template {
    containers {
      image = "img"
    }
  }
}
resource "google_eventarc_trigger" "one" {
  name     = "settings-changed"
  location = "nam5"
  matching_criteria {
    attribute = "type"
    value     = "google.cloud.firestore.document.v1.updated"
  }
  matching_criteria {
    attribute = "document"
    value     = "settings/global"
  }
  destination {
    cloud_run_service {
      service = google_cloud_run_v2_service.s.name
      region  = "us-central1"
    }
  }
}
''')
    got = import_terraform(tmp_path)
    assert got.system["triggers"][0]["collection"] == "settings"
    assert any("'settings/global' is one document" in n for n in got.notes)
