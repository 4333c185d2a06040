"""A page's customer reads and writes, in the same three statements whatever the page holds.

The sync engine decides, per page, which customers to create, update or leave alone;
this module turns that decision into SQL without building a model instance per row:
one statement finds the tenant's candidate customers, one inserts the new ones, one
updates the changed ones. Each runs even when it has nothing to do (a no-op costs a
fraction of a millisecond), so every page costs the same queries.

The keys and rows travel as one JSON parameter per statement, not one placeholder per
value: PostgreSQL reads it with `json_to_recordset`, SQLite with `json_each`. Encoding
one JSON string is far cheaper than having the driver quote hundreds of values. The
statements are plain INSERTs and UPDATEs with no ON CONFLICT clause, so a customer
written meanwhile by someone else makes the statement fail with an IntegrityError, which
the engine answers by redoing the page record by record.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from datetime import datetime

from django.db import connection

from .models import Customer


def find_candidates(*, tenant_id, sabito_ids: list[str], email_keys: list[str], fields: Sequence[str]) -> list[tuple]:
    """The tenant's customers whose Sabito id is in `sabito_ids` or whose lowercased
    email is in `email_keys`, as rows `(pk, matched_by_id, lower(email), *fields)`.
    A customer matched both ways comes back twice, once per way."""
    return page_sql(connection.vendor, tuple(fields)).find(tenant_id, sabito_ids, email_keys)


def insert_customers(*, tenant_id, rows: list[tuple], fields: Sequence[str], now: datetime) -> None:
    """One new customer of the tenant per row of `fields` values, each with a new random id."""
    page_sql(connection.vendor, tuple(fields)).insert(tenant_id, rows, now)


def update_customers(*, rows: list[tuple], fields: Sequence[str], now: datetime) -> None:
    """Set `fields` and updated_at of existing customers, one row `(pk, *values)` each."""
    page_sql(connection.vendor, tuple(fields)).update(rows, now)


@functools.cache
def page_sql(vendor: str, fields: tuple[str, ...]) -> PageSQL:
    if vendor == "postgresql":
        return PostgreSQLPageSQL(fields)
    if vendor == "sqlite":
        return SQLitePageSQL(fields)
    raise NotImplementedError(f"The Sabito sync writes pages on PostgreSQL and SQLite, not on {vendor}")


class PageSQL:
    """The three statements for one list of synced fields, built once."""

    def __init__(self, fields: tuple[str, ...]):
        meta, quote = Customer._meta, connection.ops.quote_name
        self.fields = [meta.get_field(name) for name in fields]
        self.table = quote(meta.db_table)
        self.pk, self.tenant, self.email, self.sabito_id, self.created_at, self.updated_at = (
            quote(meta.get_field(name).column)
            for name in ("id", "tenant", "email", "sabito_customer_id", "created_at", "updated_at")
        )
        self.columns = [quote(f.column) for f in self.fields]
        # JSON keys are the plain column names; `json_to_recordset` matches them by name.
        self.keys = [f.column for f in self.fields]
        self.selected = ", ".join(f"c.{column}" for column in self.columns)
        self.insert_columns = ", ".join([self.pk, self.tenant, *self.columns, self.created_at, self.updated_at])
        self.not_text = [f for f in self.fields if f.get_internal_type() not in ("CharField", "TextField")]
        self.converters = self._converters()

    def find(self, tenant_id, sabito_ids: list[str], email_keys: list[str]) -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(self.find_sql, self.find_params(_db_value("tenant", tenant_id), sabito_ids, email_keys))
            rows = cursor.fetchall()
        return [self._converted(row) for row in rows] if self.converters else rows

    def insert(self, tenant_id, rows: list[tuple], now: datetime) -> None:
        stamp = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            cursor.execute(self.insert_sql, [_db_value("tenant", tenant_id), stamp, stamp, self.insert_json(rows)])

    def update(self, rows: list[tuple], now: datetime) -> None:
        stamp = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            cursor.execute(self.update_sql, [stamp, self.update_json(rows)])

    def _converters(self) -> list:
        """The conversions the ORM applies to what the driver returns for these columns
        (e.g. text to an aware datetime on SQLite), so stored and new values compare equal."""
        converters = []
        for model_field in self.not_text:
            expression = model_field.get_col(Customer._meta.db_table)
            functions = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
            if functions:
                converters.append((3 + self.fields.index(model_field), expression, functions))
        return converters

    def _converted(self, row: tuple) -> tuple:
        values = list(row)
        for position, expression, functions in self.converters:
            for function in functions:
                values[position] = function(values[position], expression, connection)
        return tuple(values)


class PostgreSQLPageSQL(PageSQL):
    def __init__(self, fields: tuple[str, ...]):
        super().__init__(fields)
        record = ", ".join(f"{column} {f.db_type(connection)}" for column, f in zip(self.columns, self.fields))
        # The tenant comes in as a column of the key list, not as a constant, so the
        # planner cannot consult the tenant's statistics. After a large first load those
        # say the tenant has next to no customers, and the planner would scan all of them
        # through the plain tenant index for every page (slower and slower as the load
        # goes on). As a join key it probes the unique (tenant, Sabito id) and
        # (lower(email), tenant) indexes once per key, whatever the statistics say.
        self.find_sql = f"""
            SELECT c.{self.pk}, true, lower(c.{self.email}), {self.selected}
            FROM json_to_recordset(%s::json) AS k(tenant_id uuid, sabito_id text)
            JOIN {self.table} AS c ON c.{self.tenant} = k.tenant_id AND c.{self.sabito_id} = k.sabito_id
            UNION ALL
            SELECT c.{self.pk}, false, lower(c.{self.email}), {self.selected}
            FROM json_to_recordset(%s::json) AS k(tenant_id uuid, email_key text)
            JOIN {self.table} AS c
              ON c.{self.tenant} = k.tenant_id AND lower(c.{self.email}) = k.email_key AND c.{self.email} <> ''
        """
        values = ", ".join(f"k.{column}" for column in self.columns)
        self.insert_sql = f"""
            INSERT INTO {self.table} ({self.insert_columns})
            SELECT gen_random_uuid(), %s, {values}, %s, %s FROM json_to_recordset(%s::json) AS k({record})
        """
        assignments = ", ".join(f"{column} = k.{column}" for column in self.columns)
        self.update_sql = f"""
            UPDATE {self.table} AS c SET {assignments}, {self.updated_at} = %s
            FROM json_to_recordset(%s::json) AS k(pk uuid, {record})
            WHERE c.{self.pk} = k.pk
        """

    def find_params(self, tenant, sabito_ids: list[str], email_keys: list[str]) -> list[str]:
        tenant = str(tenant)
        return [
            json.dumps([{"tenant_id": tenant, "sabito_id": sabito_id} for sabito_id in sabito_ids]),
            json.dumps([{"tenant_id": tenant, "email_key": email_key} for email_key in email_keys]),
        ]

    def insert_json(self, rows: list[tuple]) -> str:
        keys = self.keys
        return json.dumps([dict(zip(keys, row)) for row in rows], default=_json_value)

    def update_json(self, rows: list[tuple]) -> str:
        keys = ["pk", *self.keys]
        return json.dumps([dict(zip(keys, row)) for row in rows], default=_json_value)


class SQLitePageSQL(PageSQL):
    def __init__(self, fields: tuple[str, ...]):
        super().__init__(fields)
        # `NOT (email = '')` as the partial index's condition is written, so that
        # SQLite's planner sees the index applies.
        self.find_sql = f"""
            SELECT c.{self.pk}, 1, lower(c.{self.email}), {self.selected} FROM {self.table} AS c
            WHERE c.{self.tenant} = %s AND c.{self.sabito_id} IN (SELECT value FROM json_each(%s))
            UNION ALL
            SELECT c.{self.pk}, 0, lower(c.{self.email}), {self.selected} FROM {self.table} AS c
            WHERE c.{self.tenant} = %s AND lower(c.{self.email}) IN (SELECT value FROM json_each(%s))
              AND NOT (c.{self.email} = '')
        """
        values = ", ".join(f"json_extract(value, '$[{position}]')" for position in range(1, 1 + len(self.columns)))
        self.insert_sql = f"""
            INSERT INTO {self.table} ({self.insert_columns})
            SELECT json_extract(value, '$[0]'), %s, {values}, %s, %s FROM json_each(%s)
        """
        assignments = ", ".join(
            f"{column} = json_extract(k.value, '$[{position}]')"
            for position, column in enumerate(self.columns, start=1)
        )
        self.update_sql = f"""
            UPDATE {self.table} SET {assignments}, {self.updated_at} = %s
            FROM json_each(%s) AS k WHERE {self.table}.{self.pk} = json_extract(k.value, '$[0]')
        """

    def find_params(self, tenant, sabito_ids: list[str], email_keys: list[str]) -> list:
        return [tenant, json.dumps(sabito_ids), tenant, json.dumps(email_keys)]

    def insert_json(self, rows: list[tuple]) -> str:
        return self._json([[uuid.uuid4().hex, *row] for row in rows])

    def update_json(self, rows: list[tuple]) -> str:
        return self._json([list(row) for row in rows])

    def _json(self, rows: list[list]) -> str:
        """Rows `[pk, *values]`, each value as Django stores it on SQLite (a datetime as text)."""
        for model_field in self.not_text:
            position = 1 + self.fields.index(model_field)
            for row in rows:
                row[position] = model_field.get_db_prep_value(row[position], connection)
        return json.dumps(rows)


def _db_value(field_name: str, value):
    return Customer._meta.get_field(field_name).get_db_prep_value(value, connection)


def _json_value(value) -> str:
    """JSON for the values `json.dumps` does not know: datetimes and UUIDs."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} to the database as JSON")
