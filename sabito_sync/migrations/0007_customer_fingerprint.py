"""Customer.sabito_fingerprint, the trigger that clears it, and its index.

A fingerprint says "these synced values are exactly what Sabito's record with this
hash validates to"; the sync then skips that record unread. Whatever else changes a
synced field (a person in the admin, the API, a host's own code, the missing-marks,
a bulk UPDATE) must therefore clear it, and only the database sees every one of
those writes. A write that sets a new fingerprint itself (the sync's) keeps it.

On SQLite, Django rebuilds a table to alter it and drops its triggers with the old
one: a later migration altering Customer must create the trigger and the index again
(the tests check the trigger exists and fires, on both databases).
"""

from django.db import migrations, models

TABLE = "sabito_sync_customer"
TRIGGER = "sabito_sync_customer_fingerprint_outdated"
# Every column a sync writes from a record, and the tenant the customer belongs to.
WATCHED_COLUMNS = (
    "tenant_id",
    "email",
    "name",
    "phone",
    "address",
    "city",
    "state",
    "country",
    "how_did_you_hear",
    "sabito_customer_id",
    "sabito_source_referral_id",
    "sabito_source_type",
    "sabito_business_id",
    "sabito_missing_since",
)


def postgresql_trigger() -> list[str]:
    old = ", ".join(f"OLD.{column}" for column in WATCHED_COLUMNS)
    new = ", ".join(f"NEW.{column}" for column in WATCHED_COLUMNS)
    return [
        f"""
        CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.sabito_fingerprint := NULL;
            RETURN NEW;
        END
        $$
        """,
        # The condition in WHEN, not in the function: the sync's own updates, which
        # set a new fingerprint, never call it.
        f"""
        CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON {TABLE} FOR EACH ROW
        WHEN (
            OLD.sabito_fingerprint IS NOT NULL
            AND NEW.sabito_fingerprint IS NOT DISTINCT FROM OLD.sabito_fingerprint
            AND ROW({new}) IS DISTINCT FROM ROW({old})
        )
        EXECUTE FUNCTION {TRIGGER}()
        """,
    ]


def sqlite_trigger() -> list[str]:
    # SQLite cannot assign to NEW: the row is updated again after the statement's own update.
    changed = " OR ".join(f"NEW.{column} IS NOT OLD.{column}" for column in WATCHED_COLUMNS)
    return [
        f"""
        CREATE TRIGGER {TRIGGER} AFTER UPDATE ON {TABLE} FOR EACH ROW
        WHEN OLD.sabito_fingerprint IS NOT NULL
            AND NEW.sabito_fingerprint IS OLD.sabito_fingerprint
            AND ({changed})
        BEGIN
            UPDATE {TABLE} SET sabito_fingerprint = NULL WHERE id = NEW.id;
        END
        """
    ]


# A re-sync looks every record's fingerprint up: on PostgreSQL a hash index, whose
# probe costs well under half of a probe of the unique (tenant, Sabito id) btree (a
# fingerprint is random, 32 characters, and never looked up by range). Not declared on
# the model: Django's HashIndex is PostgreSQL's alone, and the app runs on SQLite too.
INDEX = "sabito_sync_customer_fingerprint"


def create_trigger_and_index(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        statements = [*postgresql_trigger(), f"CREATE INDEX {INDEX} ON {TABLE} USING hash (sabito_fingerprint)"]
    elif vendor == "sqlite":
        statements = [*sqlite_trigger(), f"CREATE INDEX {INDEX} ON {TABLE} (sabito_fingerprint)"]
    else:
        raise NotImplementedError(f"The Sabito sync runs on PostgreSQL and SQLite, not on {vendor}")
    for statement in statements:
        schema_editor.execute(statement)


def drop_trigger_and_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TABLE}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    else:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")


class Migration(migrations.Migration):

    dependencies = [
        ("sabito_sync", "0006_operations"),
    ]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="sabito_fingerprint",
            field=models.CharField(blank=True, editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(create_trigger_and_index, drop_trigger_and_index),
    ]
