"""Sabito records checked into Customer values: the usual record's quick check and the
field-by-field one always agree, and the email rules stay Django's."""

from __future__ import annotations

import json
import random

import msgspec
import pytest
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

from sabito_simulator.data import new_customer
from sabito_simulator.faults import hostile_variant
from sabito_sync.engine.records import (
    RECORD_FIELDS,
    EmailAddressValidator,
    InvalidRecord,
    RejectedRecord,
    SabitoRecord,
    checked_customer_values,
    customer_values,
    usual_customer_values,
    validate_records,
)
from sabito_sync.models import Customer

BUSINESS = "biz-records"


def simulated_records(count: int, *, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [new_customer(rng, seq=seq, updated_ms=seq, created_ms=seq) for seq in range(count)]


def edge_records() -> list:
    base = {"id": "c1", "email": "ada@example.com", "name": "Ada", "phone": "+1555", "country": "Ghana"}
    return [
        base,
        {"id": "c1"},
        {"id": "  c1  ", "name": "  Ada \n", "country": "   "},
        {**base, "phone": None},
        {**base, "id": None},
        {**base, "id": "   "},
        {**base, "id": ""},
        {**base, "id": 5},
        {**base, "id": True},
        {**base, "name": 0},
        {**base, "name": False},
        {**base, "name": []},
        {**base, "name": {}},
        {**base, "email": ""},
        {**base, "email": "not-an-email"},
        {**base, "name": "x" * 255},
        {**base, "name": "x" * 256},
        {**base, "name": " " + "x" * 255 + " "},
        {**base, "phone": "1" * 50},
        {**base, "phone": "1" * 51},
        {**base, "id": "i" * 100},
        {**base, "id": "i" * 101},
        {**base, "sourceType": "s" * 51},
        {**base, "city": "Accra\x00"},
        {**base, "name": "Ada \ud83d"},
        {**base, "id": "c\udc00"},
        {**base, "email": "\ud800@example.com"},
        {**base, "id": "c\x00"},
        "a string",
        ["a", "list"],
        None,
        17,
    ]


def outcome(function, record):
    try:
        return "values", function(record)
    except InvalidRecord as exc:
        return "invalid", str(exc)


def test_the_quick_check_of_a_usual_record_gives_what_the_field_by_field_check_gives():
    records = simulated_records(2_000, seed=11) + edge_records()
    usual = 0
    for record in records:
        quick = usual_customer_values(record, business_id=BUSINESS)
        if quick is not None:
            usual += 1
            assert list(quick) == list(checked_customer_values(record, business_id=BUSINESS))
            assert quick == checked_customer_values(record, business_id=BUSINESS)
    assert usual > 1_500  # the quick check does carry the usual records


def test_a_record_with_null_fields_takes_the_quick_check():
    record = {"id": "c1", "email": "ada@example.com", "name": "Ada", "phone": None, "country": None, "city": None}
    quick = usual_customer_values(record, business_id=BUSINESS)
    assert quick is not None
    assert quick == checked_customer_values(record, business_id=BUSINESS)
    assert (quick["phone"], quick["country"], quick["city"]) == ("", Customer.DEFAULT_COUNTRY, "")
    # A null id is still no id, and a non-string beside a null still goes field by field.
    assert usual_customer_values({**record, "id": None}, business_id=BUSINESS) is None
    assert usual_customer_values({**record, "name": 0}, business_id=BUSINESS) is None


def test_records_the_quick_check_declines_are_judged_field_by_field():
    chaos = random.Random(7)
    records = [hostile_variant(record, chaos) for record in simulated_records(300, seed=5)] + edge_records()

    for record in records:
        if usual_customer_values(record, business_id=BUSINESS) is None:
            expected = outcome(lambda r: checked_customer_values(r, business_id=BUSINESS), record)
            actual = outcome(lambda r: customer_values(r, business_id=BUSINESS), record)
            if expected[0] == "values" and expected[1]["email"] and actual[0] == "invalid":
                assert actual[1].startswith("email ")  # the one rule applied after both checks
            else:
                assert actual == expected


def test_customer_values_has_every_field_the_sync_writes_in_one_order():
    values = customer_values({"id": "c1"}, business_id=BUSINESS)

    assert list(values)[: len(RECORD_FIELDS)] == list(RECORD_FIELDS)
    assert values["country"] == "USA"
    assert (values["sabito_business_id"], values["sabito_missing_since"]) == (BUSINESS, None)


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com",
        "Ada.Lovelace+tag@Example.COM",
        "a.b-c_d@mail.example.net",
        "ſ@example.com",  # a long s: Django's case-insensitive pattern takes it
        "K@example.com",  # the Kelvin sign, likewise
        '"quoted local"@example.com',
        "dot.@example.com",
        ".dot@example.com",
        "two..dots@example.com",
        "two@@example.com",
        "@example.com",
        "ada@",
        "ada@localhost",
        "ada@[127.0.0.1]",
        "ada@[300.1.1.1]",
        "ada@exa_mple.com",
        "ada@-example.com",
        "ada@xn--bcher-kva.example",
        "ada@bücher.example",
        "ada@example.com\n",
        "a" * 310 + "@example.com",
        "a" * 64 + "@" + "b" * 250 + ".com",
    ],
)
def test_email_verdicts_are_djangos(address):
    validator = EmailAddressValidator()
    for _ in range(2):  # the second time with the domain's verdict remembered
        assert verdict(validator, address) == verdict(EmailValidator(), address)


def verdict(validator, address: str) -> bool:
    try:
        validator(address)
    except ValidationError:
        return False
    return True


def test_a_record_decoded_as_a_sabito_record_gets_the_verdict_its_json_gets():
    chaos = random.Random(3)
    records = (
        simulated_records(1_000, seed=13)
        + [hostile_variant(record, chaos) for record in simulated_records(300, seed=17)]
        + [record for record in edge_records() if isinstance(record, dict)]
    )
    typed = 0
    for record in records:
        try:
            decoded = msgspec.json.decode(json.dumps(record), type=SabitoRecord)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue  # not a usual record: its page comes as parsed JSON
        typed += 1
        assert validate_records([decoded], business_id=BUSINESS) == validate_records([record], business_id=BUSINESS)
    assert typed > 1_000  # the usual records, and the odd ones whose fields are strings still


@pytest.mark.parametrize("country", [None, "", "   "], ids=["null", "empty", "blank"])
def test_a_country_sabito_leaves_out_or_sends_empty_takes_the_default_as_the_readme_says(country):
    values = customer_values({"id": "c1", "country": country, "city": ""}, business_id=BUSINESS)

    assert values["country"] == "USA"
    assert values["city"] == ""  # any other field sent empty is emptied


@pytest.mark.parametrize("quick", [True, False], ids=["usual record", "field by field"])
def test_each_field_sabito_sends_lands_in_its_own_customer_field(quick):
    """Every key of a record, by name, whichever path judges it."""
    record = {
        "id": "c1",
        "email": "ada@example.com",
        "name": "Ada",
        "phone": "+233 20 000 0000",
        "address": "1 Ring Road",
        "city": "Accra",
        "state": "Greater Accra",
        "country": "Ghana",
        "sourceReferralId": "ref-9",
        "sourceType": "partner",
    }
    judge = customer_values if quick else checked_customer_values

    values = judge(record, business_id=BUSINESS)

    assert {
        key: values[key]
        for key in (
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
        )
    } == {
        "sabito_customer_id": "c1",
        "email": "ada@example.com",
        "name": "Ada",
        "phone": "+233 20 000 0000",
        "address": "1 Ring Road",
        "city": "Accra",
        "state": "Greater Accra",
        "country": "Ghana",
        "sabito_source_referral_id": "ref-9",
        "sabito_source_type": "partner",
    }


@pytest.mark.parametrize(
    "email",
    ["test@exa\u200bmple.com", "te\u200dst@example.com", "test@example.com\u2060", '"<b>ada</b>"@example.com'],
    ids=["zero-width-space", "zero-width-joiner", "word-joiner", "quoted-markup"],
)
def test_an_email_with_invisible_characters_or_a_quoted_local_part_is_an_error_not_a_distinct_address(email):
    with pytest.raises(InvalidRecord, match="email"):
        customer_values({"id": "c1", "email": email}, business_id=BUSINESS)


def test_the_batch_path_refuses_the_same_invisible_characters():
    records = [{"id": "c1", "email": "test@exa\u200bmple.com"}, {"id": "c2", "email": "ada@example.com"}]

    first, second = validate_records(records, business_id=BUSINESS)

    assert isinstance(first, RejectedRecord) and "email" in first.detail["reason"]
    assert second["email"] == "ada@example.com"
