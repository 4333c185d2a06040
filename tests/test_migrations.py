"""Data migrations: what they make of rows written before them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("sabito_sync", "0007_customer_fingerprint")]
AFTER = [("sabito_sync", "0008_syncrun_stop_reason_choices")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_runs_reaped_before_the_upgrade_are_counted_as_reaped_after_it():
    apps = migrate(BEFORE)
    try:
        tenant = apps.get_model("sabito_sync", "Tenant").objects.create(name="Acme", slug="acme")
        mapping = apps.get_model("sabito_sync", "SabitoMapping").objects.create(
            sabito_business_id="biz-1", business_name="Acme", tenant=tenant
        )
        now = timezone.now()
        runs = apps.get_model("sabito_sync", "SyncRun").objects
        for status, message in (
            ("failed", "Abandoned: no heartbeat since 2026-12-01T10:00:00+00:00 (its worker died); ..."),
            ("failed", "Sabito rejected the API key (HTTP 401) for business biz-1"),
            ("succeeded", ""),
        ):
            runs.create(
                mapping=mapping, trigger="beat", status=status, started_at=now, heartbeat_at=now, error_message=message
            )

        apps = migrate(AFTER)

        stop_reasons = dict(
            apps.get_model("sabito_sync", "SyncRun").objects.values_list("error_message", "stop_reason")
        )
        assert sorted(stop_reasons.values()) == ["", "", "abandoned"]
        assert stop_reasons[next(m for m in stop_reasons if m.startswith("Abandoned:"))] == "abandoned"
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
