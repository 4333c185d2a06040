"""A batch's customer reads and writes as SQL: the same few statements whatever the
batch holds, on PostgreSQL and SQLite, without a model instance per row
(docs/architecture.md, "A batch's statements")."""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from django.db import connection, transaction

from ..models import Customer

if TYPE_CHECKING:
    from django.db.backends.utils import CursorWrapper
    from django.db.models import Field
    from django.db.models.expressions import Col
    from psycopg.types.json import Jsonb

# A row of the candidates query, or of values to write: a tuple of column values.
Row = tuple[Any, ...]


def find_candidates(
    *, tenant_id: uuid.UUID, keys: list[tuple[str, str]], fields: Sequence[str], expected: list[Row] | None = None
) -> list[Row]:
    """The tenant's customers that records with these `(sabito_id, lowercased email)`
    keys may match, as rows `(pk, matched_by_id, lower(email), unchanged, *fields)`: by
    Sabito id, and by email (an empty email matches nothing). A customer found by a
    record's email may be left out when it is linked to that same record's Sabito id:
    the id lookup returns it anyway.

    `expected`, if given, holds each key's record's `fields` values: a customer found
    by id that already has exactly them comes back `unchanged`. PostgreSQL compares
    them and leaves such a row's values out (None), all but its Sabito id: on a
    re-sync that is every customer, and reading their values back cost more than
    sending them. SQLite's rows keep their values."""
    return page_sql(connection.vendor, tuple(fields)).find(tenant_id, keys, expected)


def find_fingerprinted(*, tenant_id: uuid.UUID, fingerprints: list[str | None]) -> list[int]:
    """The positions in `fingerprints` of those a customer of the tenant has (None
    matches nothing): one probe of the fingerprint index each. A fingerprint hashes
    the whole record, its id included, so it finds the customer linked to that id."""
    tenant = _db_value("tenant", tenant_id)
    if connection.vendor == "postgresql":
        params = [_jsonb(fingerprints), tenant]
    else:
        params = [_json(fingerprints), tenant]
    with sync_cursor() as cursor:
        cursor.execute(_fingerprinted_sql(connection.vendor), params)
        return [row[0] for row in cursor.fetchall()]


@functools.cache
def _fingerprinted_sql(vendor: str) -> str:
    meta, quote = Customer._meta, connection.ops.quote_name
    table = quote(meta.db_table)
    tenant, fingerprint = (
        quote(cast("Field[Any, Any]", meta.get_field(name)).column) for name in ("tenant", "sabito_fingerprint")
    )
    if vendor == "postgresql":
        # A probe of the fingerprint's index per key, whatever the statistics say: a
        # subquery per key (OFFSET 0 keeps it one), the tenant checked on what it
        # finds. Offered the tenant inside, a planner whose statistics say the tenant
        # has next to no customers (after its first large load) reads them all instead.
        return f"""
            SELECT k.position - 1
            FROM jsonb_array_elements_text(%s::jsonb) WITH ORDINALITY AS k (fingerprint, position)
            CROSS JOIN LATERAL (
                SELECT c.{tenant} FROM {table} AS c WHERE c.{fingerprint} = k.fingerprint OFFSET 0
            ) AS found
            WHERE found.{tenant} = %s
        """
    # `+` keeps SQLite from reading the tenant's customers through the tenant's index.
    return f"""
        SELECT k.key FROM json_each(%s) AS k JOIN {table} AS c ON c.{fingerprint} = k.value
        WHERE +c.{tenant} = %s
    """


def write_customers(
    *, tenant_id: uuid.UUID, creates: list[Row], updates: list[Row], fields: Sequence[str], now: datetime
) -> int:
    """Insert one new customer of the tenant per row of `fields` values in `creates`
    (each with a new random id), and set `fields` of the existing customers in
    `updates`, one row `(pk, *values, changed)` each: a changed one's updated_at too;
    one not `changed`, whose last field is its new fingerprint (a customer only
    given its record's fingerprint), only while its other fields still equal the
    row's, and its updated_at stays. Returns how many customers were updated: fewer
    than `updates` if some were deleted (or, not changed, edited) meanwhile, or, were
    a key ever wrong, belong to another tenant: those are never touched."""
    return page_sql(connection.vendor, tuple(fields)).write(tenant_id, creates, updates, now)


def release_emails(*, tenant_id: uuid.UUID, customer_ids: list[uuid.UUID | str]) -> None:
    """Blank the addresses of these customers of the tenant, inside the batch's
    transaction, before the batch's write gives them their new ones: so another
    customer of the batch can take an address one of them gives up (two customers
    swapping addresses), which the unique index would refuse mid-statement."""
    Customer.objects.filter(tenant_id=tenant_id, pk__in=customer_ids).update(email="")


# The seen ids of a full sync's missing-marks, for the length of one transaction.
SEEN_IDS_TABLE = "sabito_sync_seen_ids"


def mark_missing(*, tenant_id: uuid.UUID, business_id: str, seen_ids: Iterable[str], now: datetime) -> int:
    """Stamp `sabito_missing_since` on the tenant's customers linked to the business
    whose Sabito id is not among `seen_ids` and that are not missing already; returns
    how many. Reading every linked customer into Python to compare there cost more
    than the whole statement.

    On PostgreSQL the ids stream in by binary COPY to a temporary table, then one
    UPDATE compares: sent as one JSON parameter, a full sync's ids were several
    copies of megabytes of JSON at once (about 8 MB for 100,000 ids, the largest
    part of a large sync's peak memory). On SQLite they travel as one JSON array."""
    stamp, tenant = connection.ops.adapt_datetimefield_value(now), _db_value("tenant", tenant_id)
    sql = _mark_missing_sql(connection.vendor)
    if connection.vendor != "postgresql":
        with sync_cursor() as cursor:
            cursor.execute(sql, [stamp, stamp, tenant, business_id, _json(list(seen_ids))])
            marked: int = cursor.rowcount
            return marked
    # Made and dropped in one transaction (an error rolls its making back): inside a
    # caller's transaction (a test's) a second full sync makes it again.
    with transaction.atomic(), sync_cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE {SEEN_IDS_TABLE} (sabito_id text)")
        copy_sql = f"COPY {SEEN_IDS_TABLE} (sabito_id) FROM STDIN (FORMAT BINARY)"
        copy_rows(cursor, copy_sql, ["text"], ((sabito_id,) for sabito_id in seen_ids))
        # No nested loop for this one statement, whatever the statistics say. Taken
        # after a new tenant's first load, they say the tenant has next to no
        # customers; PostgreSQL then loops over the linked customers and, for each
        # one, computes the difference again: 100,000 customers took minutes. Hashed,
        # it is one pass over each side, however wrong the estimates. Restored after:
        # inside a caller's transaction the setting would otherwise outlive the call.
        cursor.execute(
            "SELECT previous, set_config('enable_nestloop', 'off', true)"
            " FROM (SELECT current_setting('enable_nestloop') AS previous) AS setting"
        )
        previous = cursor.fetchone()[0]
        cursor.execute(sql, [stamp, stamp, tenant, business_id, tenant])
        marked = cursor.rowcount
        cursor.execute("SELECT set_config('enable_nestloop', %s, true)", [previous])
        cursor.execute(f"DROP TABLE {SEEN_IDS_TABLE}")
    return marked


@functools.cache
def _mark_missing_sql(vendor: str) -> str:
    meta, quote = Customer._meta, connection.ops.quote_name
    table = quote(meta.db_table)
    tenant, business, sabito_id, missing_since, updated_at = (
        quote(cast("Field[Any, Any]", meta.get_field(name)).column)
        for name in ("tenant", "sabito_business_id", "sabito_customer_id", "sabito_missing_since", "updated_at")
    )
    linked = f"{tenant} = %s AND {business} = %s AND {sabito_id} IS NOT NULL AND {missing_since} IS NULL"
    if vendor == "postgresql":
        # The difference as a set operation, which PostgreSQL always hashes or sorts,
        # then each missing id through the unique (tenant, Sabito id) index. An
        # anti-join (NOT EXISTS, NOT IN) is at the planner's mercy: after a new
        # tenant's first load its statistics say the tenant has one customer, and it
        # loops over the seen ids once per customer (100,000 of each: minutes).
        return f"""
            UPDATE {table} AS c SET {missing_since} = %s, {updated_at} = %s
            FROM (
                SELECT {sabito_id} FROM {table} WHERE {linked}
                EXCEPT SELECT sabito_id FROM {SEEN_IDS_TABLE}
            ) AS gone (sabito_id)
            WHERE c.{tenant} = %s AND c.{sabito_id} = gone.sabito_id
        """
    # SQLite turns an uncorrelated IN (subquery) into a temporary index, built once.
    return f"""
        UPDATE {table} SET {missing_since} = %s, {updated_at} = %s
        WHERE {linked} AND {sabito_id} NOT IN (SELECT value FROM json_each(%s))
    """


def sync_cursor() -> CursorWrapper:
    """The cursor the sync's large statements run on. On PostgreSQL, a Django cursor
    over a server-binding psycopg cursor: Django's execute wrappers, query log and
    error translation see every statement as on its own cursor, which binds on the
    client (unless OPTIONS["server_side_binding"], which would change every query of
    the project). Nothing is prepared: the connection's prepare_threshold, which
    Django sets to None for the sake of connection poolers, holds here too."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    import psycopg  # only installed where PostgreSQL is used

    connection.ensure_connection()
    connection.validate_thread_sharing()
    server_binding = psycopg.Cursor(connection.connection)
    # Django's stubs type the argument as a CursorWrapper: it is the driver's cursor,
    # which these wrap (as connection.cursor() does).
    if connection.queries_logged:
        return connection.make_debug_cursor(server_binding)  # type: ignore[arg-type]
    return connection.make_cursor(server_binding)  # type: ignore[arg-type]


@functools.cache
def page_sql(vendor: str, fields: tuple[str, ...]) -> PageSQL:
    if vendor == "postgresql":
        return PostgreSQLPageSQL(fields)
    if vendor == "sqlite":
        return SQLitePageSQL(fields)
    raise NotImplementedError(f"The Sabito sync writes pages on PostgreSQL and SQLite, not on {vendor}")


class PageSQL:
    """A database's statements for one list of synced fields, built once."""

    # Each database's own (see the subclasses).
    find_sql: str
    if TYPE_CHECKING:

        def find_params(self, tenant: Any, keys: list[tuple[str, str]], expected: list[Row] | None) -> list[Any]: ...

        def write(self, tenant_id: uuid.UUID, creates: list[Row], updates: list[Row], now: datetime) -> int: ...

    def __init__(self, fields: tuple[str, ...]):
        meta, quote = Customer._meta, connection.ops.quote_name
        # Every synced field is a column: get_field is typed for relations too.
        self.fields = cast("list[Field[Any, Any]]", [meta.get_field(name) for name in fields])
        self.table = quote(meta.db_table)
        self.pk, self.tenant, self.email, self.sabito_id, self.created_at, self.updated_at = (
            quote(cast("Field[Any, Any]", meta.get_field(name)).column)
            for name in ("id", "tenant", "email", "sabito_customer_id", "created_at", "updated_at")
        )
        self.columns = [quote(f.column) for f in self.fields]
        self.selected = ", ".join(f"c.{column}" for column in self.columns)
        self.insert_columns = ", ".join([self.pk, self.tenant, *self.columns, self.created_at, self.updated_at])
        self.text = [f for f in self.fields if f.get_internal_type() in ("CharField", "TextField")]
        self.not_text = [f for f in self.fields if f not in self.text]
        self.converters = self._converters()
        self.fingerprint = quote(meta.get_field("sabito_fingerprint").column)

    def find(self, tenant_id: uuid.UUID, keys: list[tuple[str, str]], expected: list[Row] | None) -> list[Row]:
        with sync_cursor() as cursor:
            cursor.execute(self.find_sql, self.find_params(_db_value("tenant", tenant_id), keys, expected))
            rows: list[Row] = cursor.fetchall()
        return [self._converted(row) for row in rows] if self.converters else rows

    def _converters(self) -> list[tuple[int, Col, list[Callable[..., Any]]]]:
        """The conversions the ORM applies to what the driver returns for these columns
        (e.g. text to an aware datetime on SQLite), so stored and new values compare equal."""
        converters: list[tuple[int, Col, list[Callable[..., Any]]]] = []
        for model_field in self.not_text:
            expression = model_field.get_col(Customer._meta.db_table)
            functions = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
            if functions:
                converters.append((4 + self.fields.index(model_field), expression, functions))
        return converters

    def _converted(self, row: Row) -> Row:
        values = list(row)
        for position, expression, functions in self.converters:
            for function in functions:
                values[position] = function(values[position], expression, connection)
        return tuple(values)


class PostgreSQLPageSQL(PageSQL):
    def __init__(self, fields: tuple[str, ...]):
        super().__init__(fields)
        # Text rather than varchar(n): an explicit cast to varchar(n) would cut a value
        # that is too long, where assigning text to the column refuses it.
        # (A column's type: never None, as for a field with no column of its own.)
        typed = cast(
            "list[tuple[str, str]]",
            [
                (column, "text" if f in self.text else f.db_type(connection))
                for column, f in zip(self.columns, self.fields, strict=True)
            ],
        )
        keys = _json_rows([("tenant_id", "uuid"), ("sabito_id", "text"), ("email_key", "text"), ("expected", "jsonb")])
        # Each key probes the unique (tenant, Sabito id) and (lower(email), tenant)
        # indexes, whatever the planner's statistics say; they are often wrong here.
        # After a large first load they say the tenant has next to no customers, so the
        # tenant comes in as a column of the key list, not as a constant the planner
        # could look up (it would read all the tenant's customers through the plain
        # tenant index, for every page). And PostgreSQL keeps no statistics for
        # lower(email) (it ignores those of a partial index), guesses that each email
        # matches hundreds of rows and would hash-join a scan of the whole table; so
        # the email lookup is a LATERAL subquery per key, with LIMIT 1 since the index
        # is unique (on a young table the id join may still scan: as cheap there).
        #
        # The email lookup is only needed for a key whose record did not find, by its
        # id, a customer with that very email (for one that did, the email can only
        # point at that customer): on a re-sync that skips every email lookup.
        #
        # A customer found by id with exactly its record's expected values (a key's
        # fourth element, absent without them) comes back without them: a re-sync
        # finds every customer so, and the values are most of what a lookup reads back.
        #
        # Primary keys come back as text: the page only hands them back in JSON, and
        # a str is cheaper to make than a UUID and to encode.
        field_columns = ", ".join(self.columns)
        same = " AND ".join(
            f"c.{column} IS NOT DISTINCT FROM (k.expected->>{position})::{db_type}"
            for position, (column, db_type) in enumerate(typed)
        )
        left_out = ", ".join("sabito_id" if column == self.sabito_id else "NULL" for column in self.columns)
        self.find_sql = f"""
            WITH k AS MATERIALIZED ({keys}),
            by_id AS MATERIALIZED (
                SELECT k.tenant_id, k.sabito_id, k.email_key, c.{self.pk}::text AS found,
                       lower(c.{self.email}) AS found_email_key, (k.expected IS NOT NULL AND {same}) AS unchanged,
                       {self.selected}
                FROM k LEFT JOIN {self.table} AS c
                  ON c.{self.tenant} = k.tenant_id AND c.{self.sabito_id} = k.sabito_id
            )
            SELECT found, true, found_email_key, true, {left_out} FROM by_id WHERE found IS NOT NULL AND unchanged
            UNION ALL
            SELECT found, true, found_email_key, false, {field_columns} FROM by_id WHERE found IS NOT NULL AND NOT unchanged
            UNION ALL
            SELECT c.{self.pk}, false, c.email_key, false, {self.selected}
            FROM by_id AS k CROSS JOIN LATERAL (
                SELECT c.{self.pk}::text, lower(c.{self.email}) AS email_key, {self.selected} FROM {self.table} AS c
                WHERE c.{self.tenant} = k.tenant_id AND lower(c.{self.email}) = k.email_key AND c.{self.email} <> ''
                LIMIT 1
            ) AS c
            WHERE k.found IS NULL OR k.found_email_key IS DISTINCT FROM k.email_key
        """
        # New customers arrive by binary COPY: no SQL to parse per row and no JSON to
        # unpack, about the least PostgreSQL can spend on an insert. A value too long
        # for its varchar(n) is refused there too (validation keeps them short anyway).
        self.copy_sql = f"COPY {self.table} ({self.insert_columns}) FROM STDIN (FORMAT BINARY)"
        # The ids (the customer's and its tenant's) go as their 16 bytes, typed bytea:
        # binary COPY sends no type with a value (the column's type reads it), and a
        # uuid's binary form is exactly its 16 bytes, as a bytea's is its bytes. No UUID
        # object is made per new customer.
        self.copy_types = ["bytea", "bytea", *(db_type for _column, db_type in typed), "timestamptz", "timestamptz"]
        assignments = ", ".join(f"{column} = k.{column}" for column in self.columns)
        # A row not `changed` only gives its customer the fingerprint (the last field)
        # of values it already has: never a value, should a person have edited the
        # customer since the lookup.
        values = [column for column in self.columns if column != self.fingerprint]
        still_same = f"ROW({', '.join(f'c.{c}' for c in values)}) IS NOT DISTINCT FROM ROW({', '.join(f'k.{c}' for c in values)})"
        self.update_sql = f"""
            UPDATE {self.table} AS c
            SET {assignments}, {self.updated_at} = CASE WHEN k.changed THEN %s ELSE c.{self.updated_at} END
            FROM ({_json_rows([("pk", "uuid"), *typed, ("changed", "boolean")])}) AS k
            WHERE c.{self.pk} = k.pk AND c.{self.tenant} = %s AND (k.changed OR {still_same})
        """

    def find_params(self, tenant: Any, keys: list[tuple[str, str]], expected: list[Row] | None) -> list[Any]:
        tenant = str(tenant)
        if expected is None:
            return [_jsonb([(tenant, sabito_id, email_key or None) for sabito_id, email_key in keys])]
        rows = [
            (tenant, sabito_id, email_key or None, values)
            for (sabito_id, email_key), values in zip(keys, expected, strict=True)
        ]
        return [_jsonb(rows)]

    def write(self, tenant_id: uuid.UUID, creates: list[Row], updates: list[Row], now: datetime) -> int:
        stamp = connection.ops.adapt_datetimefield_value(now)
        tenant = _db_value("tenant", tenant_id)
        tenant_bytes = tenant.bytes
        with sync_cursor() as cursor:
            ids = random_uuid_bytes(len(creates))
            rows = [(pk, tenant_bytes, *values, stamp, stamp) for pk, values in zip(ids, creates, strict=True)]
            copy_rows(cursor, self.copy_sql, self.copy_types, rows)
            # psycopg adapts a Jsonb; Django's stubs know only plain Python values as parameters.
            cursor.execute(self.update_sql, [stamp, _jsonb(updates), tenant])  # type: ignore[list-item]
            updated: int = cursor.rowcount
            return updated


def copy_rows(cursor: CursorWrapper, sql: str, types: list[str], rows: Iterable[Row]) -> None:
    """Binary COPY of `rows` (of these PostgreSQL `types`), as one more statement of the
    connection: through its execute wrappers (a host's instrumentation, a test's
    fault injection) and its query log, with errors as Django's (an IntegrityError
    stays one)."""

    def copy(sql: str, rows: Iterable[Row], _many: bool, _context: dict[str, Any]) -> None:
        connection.validate_no_broken_transaction()
        with connection.wrap_database_errors, cursor.cursor.copy(sql) as stream:
            stream.set_types(types)
            for row in rows:
                stream.write_row(row)

    # What Django's own cursor does with execute(): each wrapper around the next.
    execute: Callable[[str, Iterable[Row], bool, dict[str, Any]], object] = copy
    for wrapper in reversed(connection.execute_wrappers):
        execute = functools.partial(wrapper, execute)
    logged = cursor.debug_sql(sql) if connection.queries_logged else contextlib.nullcontext()
    with logged:
        execute(sql, rows, False, {"connection": connection, "cursor": cursor})


def _json_rows(columns: list[tuple[str, str]]) -> str:
    """A subquery turning a JSON parameter, an array of arrays, into rows of these
    (name, type) columns. Arrays rather than objects are less to encode in Python,
    and read as jsonb (parsed once, then indexed) they cost PostgreSQL about a third
    less than json_to_recordset's objects; as json each `->>` would parse the row again."""
    values = ", ".join(
        f"(r->{position}) AS {name}" if db_type == "jsonb" else f"(r->>{position})::{db_type} AS {name}"
        for position, (name, db_type) in enumerate(columns)
    )
    return f"SELECT {values} FROM jsonb_array_elements(%s::jsonb) AS r"


class SQLitePageSQL(PageSQL):
    def __init__(self, fields: tuple[str, ...]):
        super().__init__(fields)
        # `NOT (email = '')` as the partial index's condition is written, so that
        # SQLite's planner sees the index applies.
        self.find_sql = f"""
            SELECT c.{self.pk}, 1, lower(c.{self.email}), 0, {self.selected} FROM {self.table} AS c
            WHERE c.{self.tenant} = %s AND c.{self.sabito_id} IN (SELECT value FROM json_each(%s))
            UNION ALL
            SELECT c.{self.pk}, 0, lower(c.{self.email}), 0, {self.selected} FROM {self.table} AS c
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
        # As on PostgreSQL: a row not `changed` only gives its customer a fingerprint.
        changed = f"json_extract(k.value, '$[{len(self.columns) + 1}]')"
        compared = [(position, c) for position, c in enumerate(self.columns, start=1) if c != self.fingerprint]
        stored = ", ".join(f"{self.table}.{column}" for _position, column in compared)
        sent = ", ".join(f"json_extract(k.value, '$[{position}]')" for position, _column in compared)
        self.update_sql = f"""
            UPDATE {self.table}
            SET {assignments}, {self.updated_at} = CASE WHEN {changed} THEN %s ELSE {self.table}.{self.updated_at} END
            FROM json_each(%s) AS k
            WHERE {self.table}.{self.pk} = json_extract(k.value, '$[0]') AND {self.table}.{self.tenant} = %s
              AND ({changed} OR ({stored}) IS ({sent}))
        """

    def find(self, tenant_id: uuid.UUID, keys: list[tuple[str, str]], expected: list[Row] | None) -> list[Row]:
        rows = super().find(tenant_id, keys, None)
        if expected is None:
            return rows
        # Compared here, on the values read back as the ORM reads them: SQLite is the
        # small deployment's database, where a lookup costs little either way.
        expected_by_id = {sabito_id: values for (sabito_id, _email_key), values in zip(keys, expected, strict=True)}
        sabito_id_at = 4 + [f.name for f in self.fields].index("sabito_customer_id")
        return [
            (*row[:3], True, *row[4:]) if row[1] and expected_by_id.get(row[sabito_id_at]) == row[4:] else row
            for row in rows
        ]

    def find_params(self, tenant: Any, keys: list[tuple[str, str]], expected: list[Row] | None) -> list[Any]:
        email_keys = list({email_key for _, email_key in keys if email_key})
        return [tenant, _json([sabito_id for sabito_id, _ in keys]), tenant, _json(email_keys)]

    def write(self, tenant_id: uuid.UUID, creates: list[Row], updates: list[Row], now: datetime) -> int:
        stamp = connection.ops.adapt_datetimefield_value(now)
        created = self._json(
            [[pk.hex(), *row] for pk, row in zip(random_uuid_bytes(len(creates)), creates, strict=True)]
        )
        changed = self._json([list(row) for row in updates])
        with sync_cursor() as cursor:
            tenant = _db_value("tenant", tenant_id)
            cursor.execute(self.insert_sql, [tenant, stamp, stamp, created])
            cursor.execute(self.update_sql, [stamp, changed, tenant])
            updated: int = cursor.rowcount
            return updated

    def _json(self, rows: list[list[Any]]) -> str:
        """Rows `[pk, *values]`, each value as Django stores it on SQLite (a datetime as text)."""
        for model_field in self.not_text:
            position = 1 + self.fields.index(model_field)
            for row in rows:
                row[position] = model_field.get_db_prep_value(row[position], connection)
        return _json(rows)


# The bits that make 16 random bytes a version 4 UUID (RFC 4122): the version in the
# high nibble of byte 6, the variant in the two high bits of byte 8.
_VERSION_4 = bytes((byte & 0x0F) | 0x40 for byte in range(256))
_RFC_4122_VARIANT = bytes((byte & 0x3F) | 0x80 for byte in range(256))


def random_uuid_bytes(count: int) -> list[bytes]:
    """The 16 bytes of each of `count` new random (version 4) UUIDs, what uuid.uuid4()
    makes, from one read of the system's randomness. uuid4() reads 16 bytes at a time,
    and each read lets go of the interpreter: in a batch of new customers that was
    thousands of hand-offs to the prefetching thread, each one a wait of up to a switch
    interval to get it back."""
    drawn = bytearray(os.urandom(16 * count))
    drawn[6::16] = drawn[6::16].translate(_VERSION_4)
    drawn[8::16] = drawn[8::16].translate(_RFC_4122_VARIANT)
    block = bytes(drawn)
    return [block[start : start + 16] for start in range(0, 16 * count, 16)]


def _db_value(field_name: str, value: Any) -> Any:
    return cast("Field[Any, Any]", Customer._meta.get_field(field_name)).get_db_prep_value(value, connection)


def _json(value: Any) -> str:
    """A JSON parameter: orjson writes a batch's keys or rows several times faster than
    json, datetimes (ISO 8601) and UUIDs included. Every string in it is valid Unicode
    text: validation refuses lone surrogates, the one thing orjson cannot write."""
    return orjson.dumps(value).decode()


def _jsonb(value: Any) -> Jsonb:
    """A JSON parameter for PostgreSQL, handed to psycopg as orjson's bytes: no str of
    it is made (a full sync's seen ids are megabytes of JSON)."""
    from psycopg.types.json import Jsonb  # only installed where PostgreSQL is used

    return Jsonb(value, dumps=orjson.dumps)
