"""`manage.py sabito_sync`: human and JSON output, exit codes."""

import json

import pytest
from django.core.management import CommandError, call_command

from sabito_sync.models import Customer

from .factories import SabitoMappingFactory, sabito_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapping(fake_sabito):
    mapping = SabitoMappingFactory(sabito_business_id="biz-1", business_name="iCreations Global")
    fake_sabito.records["biz-1"] = [sabito_record(1), sabito_record(2)]
    return mapping


def test_json_output_is_only_the_list_of_results(mapping, capsys):
    call_command("sabito_sync", "--json", "--full")

    results = json.loads(capsys.readouterr().out)
    assert results == [
        {
            "success": True,
            "businessId": "biz-1",
            "customersProcessed": 2,
            "created": 2,
            "updated": 0,
            "skipped": 0,
            "errors": 0,
            "errorDetails": [],
        }
    ]


def test_human_output_names_the_business_and_counters(mapping, capsys):
    call_command("sabito_sync")

    out = capsys.readouterr().out
    assert "iCreations Global (biz-1): OK" in out
    assert "processed 2, created 2, updated 0, skipped 0, errors 0" in out


def test_one_mapping_by_id(mapping, fake_sabito, capsys):
    SabitoMappingFactory(sabito_business_id="biz-other")

    call_command("sabito_sync", "--mapping", str(mapping.pk), "--json")

    assert [r["businessId"] for r in json.loads(capsys.readouterr().out)] == ["biz-1"]
    assert {request["businessId"] for request in fake_sabito.requests} == {"biz-1"}


def test_exit_status_is_1_when_a_mapping_fails(mapping, fake_sabito, capsys):
    fake_sabito.answer_next(401)

    with pytest.raises(SystemExit) as exit_info:
        call_command("sabito_sync", "--json")

    assert exit_info.value.code == 1
    [result] = json.loads(capsys.readouterr().out)
    assert result["success"] is False and "rejected the API key" in result["error"]


def test_unknown_mapping_is_a_clear_error_with_exit_status_2(mapping):
    with pytest.raises(CommandError, match="No Sabito mapping with id 00000000-0000-0000-0000-000000000000") as error:
        call_command("sabito_sync", "--mapping", "00000000-0000-0000-0000-000000000000")

    assert error.value.returncode == 2
    assert not Customer.objects.exists()


def test_malformed_mapping_id_is_exit_status_2(mapping):
    with pytest.raises(CommandError, match="is not a UUID") as error:
        call_command("sabito_sync", "--mapping", "nope")

    assert error.value.returncode == 2
