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


def test_async_queues_one_task_per_mapping_after_commit_and_prints_the_ids(
    mapping, capsys, django_capture_on_commit_callbacks
):
    from unittest.mock import patch

    other = SabitoMappingFactory(sabito_business_id="biz-2")
    SabitoMappingFactory(sabito_business_id="biz-off", is_active=False)
    with (
        patch("sabito_sync.tasks.sync_mapping_task.apply_async") as apply_async,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        call_command("sabito_sync", "--async", "--full", "--json")

    queued = json.loads(capsys.readouterr().out)
    assert {item["businessId"] for item in queued} == {"biz-1", "biz-2"}
    assert len(callbacks) == 2
    sent = {(call.kwargs["args"][0], call.kwargs["task_id"]) for call in apply_async.call_args_list}
    assert sent == {(item["mappingId"], item["taskId"]) for item in queued}
    assert {call.kwargs["args"][1] for call in apply_async.call_args_list} == {True}
    assert str(other.pk) in {item["mappingId"] for item in queued}
    assert not Customer.objects.exists()  # nothing ran here


def test_async_human_output_names_each_queued_sync(mapping, capsys, django_capture_on_commit_callbacks):
    from unittest.mock import patch

    with patch("sabito_sync.tasks.sync_mapping_task.apply_async"), django_capture_on_commit_callbacks(execute=True):
        call_command("sabito_sync", "--async", "--mapping", str(mapping.pk))

    assert "Queued incremental sync of iCreations Global: task " in capsys.readouterr().out
