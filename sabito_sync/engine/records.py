"""Sabito records checked and cleaned into Customer values, per the guide's field table.

No database here: a record either becomes the values of the Customer fields a sync
owns, or is rejected with a reason a person can act on. The prefetcher runs this in
its thread, ahead of the page being written.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, cast

import msgspec
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

from ..models import Customer

if TYPE_CHECKING:
    from django.db.models import CharField

# Sabito record key → Customer field, for the plain string fields of the guide's table.
SABITO_STRING_FIELDS = {
    "email": "email",
    "name": "name",
    "phone": "phone",
    "address": "address",
    "city": "city",
    "state": "state",
    "country": "country",
    "sourceReferralId": "sabito_source_referral_id",
    "sourceType": "sabito_source_type",
}

# Every Customer field a sync owns; a record updates a customer only if one differs.
SYNCED_FIELDS = (
    *SABITO_STRING_FIELDS.values(),
    "sabito_customer_id",
    "how_did_you_hear",
    "sabito_business_id",
    "sabito_missing_since",
)
synced_values = operator.itemgetter(*SYNCED_FIELDS)  # a record's values as a tuple, in that order

# What a sync writes of a record: its synced values, then the fingerprint of the record
# they came from (see `fingerprint_key`), which is not a value of the customer's: a
# customer whose values are a record's but whose fingerprint is not is unchanged.
WRITTEN_FIELDS = (*SYNCED_FIELDS, "sabito_fingerprint")
written_values = operator.itemgetter(*WRITTEN_FIELDS)
FINGERPRINT_POSITION = WRITTEN_FIELDS.index("sabito_fingerprint")

# Part of every fingerprint: raised whenever validation would turn a record into other
# values than before (a new rule, a new default), so that no stored fingerprint vouches
# for values the code would no longer write, and every record is checked once again.
FINGERPRINT_VERSION = 2  # 2: emails with invisible characters or a quoted local part refused

SABITO_ID_POSITION = SYNCED_FIELDS.index("sabito_customer_id")
EMAIL_POSITION = SYNCED_FIELDS.index("email")

# A record's id and string fields, in the order they are checked: the Sabito keys,
# the Customer fields they fill and those fields' max_length.
RECORD_KEYS = ("id", *SABITO_STRING_FIELDS)
RECORD_FIELDS = ("sabito_customer_id", *SABITO_STRING_FIELDS.values())
# (Each a CharField's, always set: get_field is typed for relations too.)
RECORD_LIMITS: tuple[int, ...] = tuple(
    cast(int, cast("CharField[Any, Any]", Customer._meta.get_field(name)).max_length) for name in RECORD_FIELDS
)
SHORTEST_LIMIT = min(RECORD_LIMITS)

# A usual Sabito record, for the client to decode pages into (`record_type`): an
# object with a string id and the other string fields strings, null or missing (any
# further keys ignored), in RECORD_KEYS order. A page with a record that does not
# fit comes as parsed JSON instead and is judged record by record as ever.
if TYPE_CHECKING:
    # What the type checker reads of the Struct made below: the same fields, spelled out.

    class SabitoRecord(msgspec.Struct):
        id: str
        email: str | None = ""
        name: str | None = ""
        phone: str | None = ""
        address: str | None = ""
        city: str | None = ""
        state: str | None = ""
        country: str | None = ""
        sourceReferralId: str | None = ""
        sourceType: str | None = ""

else:
    SabitoRecord = msgspec.defstruct(
        "SabitoRecord",
        [("id", str), *((key, str | None, "") for key in SABITO_STRING_FIELDS)],
        module=__name__,
    )


class InvalidRecord(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record that cannot become a customer: why (its error detail), and the Sabito
    id it carries if any, so that its customer is still not marked missing."""

    sabito_id: str | None
    detail: dict[str, Any]


def fingerprint_key(business_id: str) -> bytes:
    """The key the client hashes a business's records with (`SabitoClient`'s
    `fingerprint_key`). A record's fingerprint then stands for the values this code
    validates it to for this business: the same bytes from another business, or read
    by another FINGERPRINT_VERSION, have another fingerprint."""
    return hashlib.blake2b(f"{FINGERPRINT_VERSION}\0{business_id}".encode("utf-8", "surrogatepass")).digest()


def validate_records(
    records: list[Any], *, business_id: str, fingerprints: Sequence[str | None] | None = None
) -> list[dict[str, Any] | RejectedRecord]:
    """For each record (parsed JSON, or a SabitoRecord), in order: its Customer values,
    with its fingerprint (from `fingerprints`, None without) as `sabito_fingerprint`,
    or the RejectedRecord saying why it has none."""
    validated: list[dict[str, Any] | RejectedRecord] = []
    paired: Iterable[tuple[Any, str | None]] = (
        zip(records, repeat(None)) if fingerprints is None else zip(records, fingerprints, strict=True)
    )
    for record, fingerprint in paired:
        if type(record) is SabitoRecord:
            values = usual_typed_values(record, business_id=business_id)
            if values is not None and email_is_valid(values["email"]):
                values["sabito_fingerprint"] = fingerprint
                validated.append(values)
                continue
            # Anything unusual is judged as the record's JSON would be, for the same verdict.
            record = msgspec.structs.asdict(record)
        try:
            values = customer_values(record, business_id=business_id)
        except InvalidRecord as exc:
            validated.append(rejected(record, str(exc)))
            continue
        values["sabito_fingerprint"] = fingerprint
        validated.append(values)
    return validated


def customer_values(record: Any, *, business_id: str) -> dict[str, Any]:
    """The Customer field values for one Sabito record, per the guide's mapping
    table. Raises InvalidRecord with a reason a person can act on."""
    values = usual_customer_values(record, business_id=business_id)
    if values is None:
        values = checked_customer_values(record, business_id=business_id)
    if not email_is_valid(values["email"]):
        raise InvalidRecord(f"email {values['email']!r} is not a valid address")
    return values


def email_is_valid(address: str) -> bool:
    """Whether a record's (stripped) email is acceptable: empty, or a valid address."""
    if not address:
        return True
    try:
        validate_email_address(address)
    except ValidationError:
        return False
    return True


def usual_customer_values(record: Any, *, business_id: str) -> dict[str, Any] | None:
    """`checked_customer_values` for a usual record: an object with an id and every
    field a string (or null, or missing) of an allowed length, without NUL. None for any other
    record, valid or not, which `checked_customer_values` then goes through."""
    if type(record) is not dict:
        return None
    try:
        # str.strip refuses anything but a string, null included.
        fields = tuple(map(str.strip, map(record.get, RECORD_KEYS, repeat(""))))
    except TypeError:
        # A null field is a field left out, as the field-by-field check reads it, and
        # records often carry one (no phone, say): checked again without their nulls
        # rather than field by field, which costs several times more.
        if None in record.values():
            return usual_customer_values(
                {key: value for key, value in record.items() if value is not None}, business_id=business_id
            )
        return None
    return usual_field_values(fields, business_id=business_id)


def usual_typed_values(record: SabitoRecord, *, business_id: str) -> dict[str, Any] | None:
    """`usual_customer_values` for a record the client decoded into a SabitoRecord,
    whose fields are known to be strings or null: nearly every record of a sync."""
    fields = msgspec.structs.astuple(record)
    try:
        fields = tuple(map(str.strip, fields))
    except TypeError:  # a null, read as the field left out
        fields = tuple(map(str.strip, ("" if value is None else value for value in fields)))
    return usual_field_values(fields, business_id=business_id)


def usual_field_values(fields: tuple[str, ...], *, business_id: str) -> dict[str, Any] | None:
    """The Customer values of a record's stripped RECORD_KEYS strings, or None unless
    they are usual: an id, nothing too long, no NUL and no lone surrogate. A sync may
    see a million records, nearly all of them usual: the checks run on all the
    strings at once rather than one by one."""
    joined = "".join(fields)
    if not fields[0] or "\x00" in joined or not encodable(joined):
        return None
    # Nothing longer than the shortest limit is the usual case, and cheaper to see.
    if max(map(len, fields)) > SHORTEST_LIMIT and any(map(operator.gt, map(len, fields), RECORD_LIMITS)):
        return None
    # One dict display, in RECORD_FIELDS order (checked below at import): half the
    # cost of filling the dict from a zip.
    sabito_id, email, name, phone, address, city, state, country, referral_id, source_type = fields
    return {
        "sabito_customer_id": sabito_id,
        "email": email,
        "name": name,
        "phone": phone,
        "address": address,
        "city": city,
        "state": state,
        "country": country or Customer.DEFAULT_COUNTRY,
        "sabito_source_referral_id": referral_id,
        "sabito_source_type": source_type,
        "how_did_you_hear": Customer.HOW_DID_YOU_HEAR_SABITO,
        "sabito_business_id": business_id,
        "sabito_missing_since": None,  # Sabito has it (again)
    }


assert RECORD_FIELDS == (
    "sabito_customer_id",
    "email",
    "name",
    "phone",
    "address",
    "city",
    "state",
    "country",
    "sabito_source_referral_id",
    "sabito_source_type",
), "usual_field_values unpacks the record's fields in RECORD_FIELDS order"


def checked_customer_values(record: Any, *, business_id: str) -> dict[str, Any]:
    """The Customer field values for one record but its email's validity, checked
    field by field: the InvalidRecord naming the first thing wrong, if anything is."""
    if not isinstance(record, dict):
        raise InvalidRecord(f"record is a {json_type(record)}, not an object")
    raw_id = record.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raise InvalidRecord("record has no id")
    if not isinstance(raw_id, str):
        raise InvalidRecord(f"id must be a string, got {json_type(raw_id)}")
    values: dict[str, Any] = {"sabito_customer_id": clean_string("id", raw_id, "sabito_customer_id")}
    for key, field_name, max_length in zip(RECORD_KEYS[1:], RECORD_FIELDS[1:], RECORD_LIMITS[1:], strict=True):
        raw = record.get(key)
        if raw is None:
            values[field_name] = ""
        elif isinstance(raw, str):
            value = raw.strip()
            if len(value) > max_length or "\x00" in value or not encodable(value):
                value = clean_string(key, raw, field_name)
            values[field_name] = value
        else:
            raise InvalidRecord(f"{key} must be a string, got {json_type(raw)}")
    values["country"] = values["country"] or Customer.DEFAULT_COUNTRY
    values["how_did_you_hear"] = Customer.HOW_DID_YOU_HEAR_SABITO
    values["sabito_business_id"] = business_id
    values["sabito_missing_since"] = None  # Sabito has it (again)
    return values


def clean_string(key: str, raw: str, field_name: str) -> str:
    value = raw.strip()
    if "\x00" in value:
        # PostgreSQL cannot store NUL in text; rejecting beats silently altering it.
        raise InvalidRecord(f"{key} contains a NUL character")
    if not encodable(value):
        # JSON can escape half of a surrogate pair alone (json reads it, orjson does
        # not); no database can store one, and dropping it would alter the value.
        surrogate = next(char for char in value if "\ud800" <= char <= "\udfff")
        raise InvalidRecord(f"{key} contains a lone surrogate (\\u{ord(surrogate):04x})")
    max_length = cast(int, cast("CharField[Any, Any]", Customer._meta.get_field(field_name)).max_length)
    if len(value) > max_length:
        raise InvalidRecord(f"{key} is {len(value)} characters long; the limit is {max_length}")
    return value


def encodable(value: str) -> bool:
    """Whether the string is valid Unicode text (has no lone surrogate), as UTF-8 and
    so every database needs."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(value: str) -> str:
    """The value with any lone surrogate written out as its escape, so that the error
    detail showing it can be stored."""
    return value if encodable(value) else value.encode("utf-8", "backslashreplace").decode()


class EmailAddressValidator(EmailValidator):
    """Django's email rules, checked faster: the patterns compiled up front rather than
    looked up through lazy objects on every call, and each domain's verdict remembered,
    since a feed's customers share a handful of domains and the domain is the slow half."""

    user_regex = re.compile(EmailValidator.user_regex.pattern, EmailValidator.user_regex.flags)
    domain_regex = re.compile(EmailValidator.domain_regex.pattern, EmailValidator.domain_regex.flags)
    remembered_domains = 10_000

    # Django's user pattern, less its quoted form and without ignoring case (which
    # makes it match a few non-ASCII letters too): what nearly every address has
    # before its @, matched in half the time. Whatever it does not match is judged
    # by Django's pattern as before.
    usual_user_regex = re.compile(r"[-!#$%&'*+/=?^_`{}|~0-9A-Za-z]+(?:\.[-!#$%&'*+/=?^_`{}|~0-9A-Za-z]+)*")

    def __init__(self) -> None:
        super().__init__()
        self._domain_verdicts: dict[str, bool] = {}

    # Only ever given a str (`email_is_valid`'s stripped address), not Django's None too.
    def __call__(self, value: str) -> None:  # type: ignore[override]
        user_part, at, domain_part = value.rpartition("@")
        # Refused though RFC 5322 allows them: an invisible or format character (a
        # zero-width space: `test@exa\u200bmple.com` looks like another customer's
        # address and matches as a distinct one) and a quoted local part (markup
        # travels in it; no customer's address has one).
        if not value.isprintable() or user_part.startswith('"'):
            raise ValidationError(self.message, code=self.code, params={"value": value})
        if (
            at
            and len(value) <= 320
            and self._domain_verdicts.get(domain_part)
            and self.usual_user_regex.fullmatch(user_part)
        ):
            return
        super().__call__(value)

    def validate_domain_part(self, domain_part: str) -> bool:
        verdict = self._domain_verdicts.get(domain_part)
        if verdict is None:
            verdict = super().validate_domain_part(domain_part)
            if len(self._domain_verdicts) < self.remembered_domains:
                self._domain_verdicts[domain_part] = verdict
        return verdict


validate_email_address = EmailAddressValidator()


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --- Error details: what a run stores (and the API shows) about a record it could not sync ---


def error_detail(*, sabito_id: str | None, email: str | None, reason: str) -> dict[str, Any]:
    return {"sabitoCustomerId": sabito_id, "email": email or None, "reason": reason}


def rejected(record: Any, reason: str) -> RejectedRecord:
    """The rejection of a record as Sabito sent it: its id and email are shown only
    when they are what they should be (cut to their columns' length)."""
    record = record if isinstance(record, dict) else {}
    raw_id, raw_email = record.get("id"), record.get("email")
    shown_id = storable(str(raw_id))[:100] if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None
    shown_email = storable(raw_email)[:254] if isinstance(raw_email, str) else None
    detail = error_detail(sabito_id=shown_id, email=shown_email, reason=reason)
    # An id no database can store matches no stored customer: nothing to keep from being marked missing.
    sabito_id = raw_id.strip() if isinstance(raw_id, str) and encodable(raw_id) else None
    return RejectedRecord(sabito_id=sabito_id, detail=detail)


def values_error_detail(values: dict[str, Any], reason: str) -> dict[str, Any]:
    """The error detail of a valid record the page could not write."""
    return error_detail(sabito_id=values["sabito_customer_id"], email=values["email"], reason=reason)
