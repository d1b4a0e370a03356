"""`surgesim provision` against the real emulators, verified by listing back through the official clients."""

import re
import shutil
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from surgesim.cli import cli
from surgesim.emulators.provision import provision
from surgesim.schema import load_system

pytestmark = pytest.mark.integration


def _isolated(name: str, tmp_path) -> Path:
    """The seed system in a project of its own: other tests run the same system on the same emulators."""
    text = Path(f"scenarios/systems/{name}.yaml").read_text()
    project = f"prov-{name[:4]}-{uuid.uuid4().hex[:6]}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(re.sub(r"^project: .*$", f"project: {project}", text, count=1, flags=re.M))
    for extra in Path("scenarios/systems").glob(f"{name}-*.yaml"):  # files it names (a workflow's source:)
        shutil.copy(extra, tmp_path / extra.name)
    return path


@pytest.fixture(scope="module")
def provisioned(gcp, tmp_path_factory):
    outcomes = {}
    tmp = tmp_path_factory.mktemp("systems")
    for name in ("meridian", "dogfinder"):
        path = _isolated(name, tmp)
        system = load_system(path)
        outcomes[name] = (system, provision(system, gcp.clients), path)
    return outcomes


def test_everything_declared_is_created(provisioned):
    for system, outcomes, _ in provisioned.values():
        assert {o.action for o in outcomes} <= {"created", "unchanged"}
        assert {o.name for o in outcomes if o.kind == "subscription"} == {s.name for s in system.subscriptions}


def test_subscriptions_read_back_with_their_policies(provisioned, gcp):
    system, _, _ = provisioned["meridian"]
    subscriber = gcp.clients.subscriber()
    publisher = gcp.clients.publisher()
    topics = {t.name.rsplit("/", 1)[-1] for t in publisher.list_topics(request={"project": f"projects/{system.project}"})}
    assert {t.name for t in system.topics} <= topics
    listed = {s.name.rsplit("/", 1)[-1]: s for s in
              subscriber.list_subscriptions(request={"project": f"projects/{system.project}"})}
    for sub in system.subscriptions:
        got = listed[sub.name]
        assert got.topic.endswith("/" + sub.topic)
        assert got.ack_deadline_seconds == int(sub.ack_deadline)
        assert (got.filter or None) == sub.filter
        if sub.dead_letter:
            assert got.dead_letter_policy.dead_letter_topic.endswith("/" + sub.dead_letter.topic)
            assert got.dead_letter_policy.max_delivery_attempts == sub.dead_letter.max_attempts == 5
        if sub.retry:
            assert got.retry_policy.minimum_backoff.total_seconds() == sub.retry.min_backoff
            assert got.retry_policy.maximum_backoff.total_seconds() == sub.retry.max_backoff
        assert got.labels["surgesim-delivery"] == sub.delivery


def test_tables_buckets_and_firestore_read_back(provisioned, gcp):
    bq = gcp.clients.bigquery()
    system, _, _ = provisioned["dogfinder"]
    table = bq.get_table(f"{system.project}.dogfinder.sightings")
    assert table.time_partitioning.field == "sighting_date"
    assert [f.name for f in table.schema] == [c.name for c in system.stores.bigquery[0].columns]
    assert gcp.clients.storage().get_bucket("dogfinder-photos").name == "dogfinder-photos"
    from surgesim.emulators import Clients

    db = Clients(gcp.env_vars(), project=provisioned["meridian"][0].project).firestore()
    meta = db.collection("_surgesim").document("system-meridian").get().to_dict()
    assert "parcels" in meta["collections"] and "LiveMap" in meta["collections"]


def test_second_run_changes_nothing_and_says_so(provisioned, gcp):
    runner = CliRunner()
    for name in ("meridian", "dogfinder"):
        result = runner.invoke(cli, ["provision", str(provisioned[name][2]), "--state-dir", str(gcp.state_dir)])
        assert result.exit_code == 0, result.output
        assert "nothing changed" in result.output
        assert "created" not in result.output


def test_changed_ack_deadline_is_updated_and_changed_filter_is_a_conflict(gcp, tmp_path):
    base = ("name: shop\nproject: prov-shop-" + uuid.uuid4().hex[:6] + "\ntopics: [{name: orders}, {name: orders.dlq}]\nsubscriptions:\n"
            "  - {name: orders-audit, topic: orders, ack_deadline: %s, filter: '%s', dead_letter: {topic: orders.dlq}}\n"
            "  - {name: orders-dlq-hold, topic: orders.dlq}\n")
    first = tmp_path / "a.yaml"
    first.write_text(base % ("10s", 'attributes.kind = "audit"'))
    provision(load_system(first), gcp.clients)
    second = tmp_path / "b.yaml"
    second.write_text(base % ("30s", 'attributes.kind = "audit"'))
    actions = {o.name: o.action for o in provision(load_system(second), gcp.clients)}
    assert actions["orders-audit"] == "updated"
    third = tmp_path / "c.yaml"
    third.write_text(base % ("30s", 'attributes.kind = "other"'))
    outcome = next(o for o in provision(load_system(third), gcp.clients) if o.name == "orders-audit")
    assert outcome.action == "conflict" and "filter" in outcome.detail
