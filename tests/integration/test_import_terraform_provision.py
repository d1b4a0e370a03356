"""An imported system provisions onto the real emulators like a written one: what the
Terraform declares (dead-letter policy, filter, deadlines, partitioned table, bucket)
reads back through the official clients."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from surgesim.emulators import Clients
from surgesim.emulators.provision import provision
from surgesim.importers.terraform import import_terraform
from surgesim.schema import load_system

pytestmark = pytest.mark.integration

SHOP = Path(__file__).resolve().parents[1] / "fixtures" / "terraform" / "shop"


def test_an_imported_system_provisions_and_reads_back(gcp, tmp_path):
    project = f"prov-tf-{uuid.uuid4().hex[:6]}"  # a project of its own: -var, as with terraform
    imported = import_terraform(SHOP, variables=[f"project_id={project}"])
    path = tmp_path / "shop.yaml"
    path.write_text(imported.system_yaml(SHOP))
    system = load_system(path)
    assert system.project == project
    outcomes = provision(system, Clients(gcp.env_vars(), project=project))
    assert {o.action for o in outcomes} == {"created"}
    assert {o.name for o in outcomes if o.kind == "subscription"} == {s.name for s in system.subscriptions}

    subscriber = Clients(gcp.env_vars(), project=project).subscriber()
    billing = subscriber.get_subscription(request={"subscription": f"projects/{project}/subscriptions/billing-orders"})
    assert billing.dead_letter_policy.max_delivery_attempts == 10
    assert billing.dead_letter_policy.dead_letter_topic == f"projects/{project}/topics/shop.orders.dlq"
    assert billing.filter == 'attributes.kind = "OrderPlaced"'
    assert billing.ack_deadline_seconds == 60
    assert billing.retry_policy.maximum_backoff.total_seconds() == 300
    assert billing.enable_message_ordering

    table = Clients(gcp.env_vars(), project=project).bigquery().get_table(f"{project}.analytics.orders")
    assert table.time_partitioning.field == "publish_time"
    bucket = f"{project}-order-archive"
    assert Clients(gcp.env_vars(), project=project).storage().get_bucket(bucket).name == bucket
