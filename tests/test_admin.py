"""The Django admin through the test client: sync buttons and actions (permissions,
POST-only with CSRF, messages, enqueue on commit), the mapping list at a glance, the
read-only run history, and the customer, tenant and membership admins."""

import re
from datetime import timedelta
from unittest.mock import patch

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import OperationalError

from sabito_sync.models import Customer, Membership, SabitoMapping, SyncRun, Tenant

from .factories import CustomerFactory, SabitoMappingFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

APPLY_ASYNC = "sabito_sync.tasks.sync_mapping_task.apply_async"
CHANGELIST = "admin:sabito_sync_sabitomapping_changelist"
RUNS = "admin:sabito_sync_syncrun_changelist"


def change_url(mapping):
    return reverse("admin:sabito_sync_sabitomapping_change", args=[mapping.pk])


def full_sync_url(mapping):
    return reverse("admin:sabito_sync_sabitomapping_sync_full", args=[mapping.pk])


def incremental_sync_url(mapping):
    return reverse("admin:sabito_sync_sabitomapping_sync_incremental", args=[mapping.pk])


SYNC_ALL_URL = "/admin/sabito_sync/sabitomapping/sync-all/"


def make_run(mapping, *, status=SyncRun.Status.SUCCEEDED, started_ago=timedelta(hours=1), **fields):
    started_at = timezone.now() - started_ago
    finished = status in SyncRun.FINISHED_STATUSES
    return SyncRun.objects.create(
        mapping=mapping,
        trigger=fields.pop("trigger", SyncRun.Trigger.BEAT),
        status=status,
        started_at=started_at,
        # A running run is a live one (its worker touched it just now) unless a test says otherwise.
        heartbeat_at=fields.pop("heartbeat_at", started_at if finished else timezone.now()),
        finished_at=fields.pop("finished_at", started_at + timedelta(seconds=12.5) if finished else None),
        **fields,
    )


def synced(mapping, *, hours_ago=3, success=True, **counters):
    synced_at = timezone.now() - timedelta(hours=hours_ago)
    mapping.metadata = {
        "lastSyncedAt": synced_at.isoformat(),
        "lastSyncResult": {
            "success": success,
            "fullSync": False,
            "customersProcessed": sum(counters.values()),
            "created": counters.get("created", 0),
            "updated": counters.get("updated", 0),
            "skipped": counters.get("skipped", 0),
            "errors": counters.get("errors", 0),
            "syncedAt": synced_at.isoformat().replace("+00:00", "Z"),
            **({} if success else {"error": "Sabito rejected the API key (HTTP 401)"}),
        },
    }
    mapping.save()
    return mapping


def message_texts(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


def text(response):
    """The page's text with tags stripped and whitespace (and &nbsp;) collapsed."""
    html = response.content.decode()
    html = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html).replace("&nbsp;", " ").replace("\xa0", " "))


@pytest.fixture
def mapping():
    return SabitoMappingFactory(sabito_business_id="biz-1", business_name="iCreations Global")


@pytest.fixture
def staff_client(client):
    """A logged-in staff user holding only the given permissions of sabito_sync."""

    def login(*codenames):
        user = UserFactory(is_staff=True)
        user.save()  # the factory sets the password after saving
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="sabito_sync", codename__in=codenames)
        )
        client.force_login(user)
        return client

    return login


# --- Buttons on the mapping's page ------------------------------------------------------


def test_change_page_shows_both_sync_buttons_to_a_user_who_may_change_mappings(admin_client, mapping):
    response = admin_client.get(change_url(mapping))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Full sync now" in html and "Incremental sync now" in html
    assert f'action="{full_sync_url(mapping)}"' in html
    assert f'action="{incremental_sync_url(mapping)}"' in html
    assert html.count("csrfmiddlewaretoken") >= 3  # each button's form plus the change form


def test_change_page_hides_the_buttons_from_a_view_only_user(staff_client, mapping):
    response = staff_client("view_sabitomapping").get(change_url(mapping))

    assert response.status_code == 200
    assert "Full sync now" not in response.content.decode()
    assert "Incremental sync now" not in response.content.decode()


def test_full_sync_button_queues_the_sync_on_commit_and_returns_with_a_message(
    admin_client, mapping, django_capture_on_commit_callbacks
):
    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(full_sync_url(mapping))

    assert response.status_code == 302
    assert response["Location"] == change_url(mapping)
    assert len(callbacks) == 1
    apply_async.assert_called_once()
    assert apply_async.call_args.kwargs["args"] == [str(mapping.pk), True, "admin"]
    assert message_texts(response) == ["Full sync queued for iCreations Global"]


def test_incremental_sync_button_queues_an_incremental_sync(admin_client, mapping, django_capture_on_commit_callbacks):
    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(incremental_sync_url(mapping))

    assert apply_async.call_args.kwargs["args"] == [str(mapping.pk), False, "admin"]
    assert message_texts(response) == ["Incremental sync queued for iCreations Global"]


def test_sync_is_not_sent_to_the_queue_before_the_transaction_commits(
    admin_client, mapping, django_capture_on_commit_callbacks
):
    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=False) as callbacks:
        admin_client.post(full_sync_url(mapping))
        apply_async.assert_not_called()

    assert len(callbacks) == 1


def test_message_is_shown_on_the_page_it_returns_to(admin_client, mapping):
    with patch(APPLY_ASYNC):
        response = admin_client.post(full_sync_url(mapping), follow=True)

    assert response.redirect_chain == [(change_url(mapping), 302)]
    assert "Full sync queued for iCreations Global" in text(response)


def test_button_keeps_the_changelist_filters_it_came_with(admin_client, mapping):
    with patch(APPLY_ASYNC):
        response = admin_client.post(full_sync_url(mapping) + "?_changelist_filters=is_active__exact%3D1")

    assert response["Location"] == change_url(mapping) + "?_changelist_filters=is_active__exact%3D1"


@pytest.mark.parametrize("url", [full_sync_url, incremental_sync_url])
def test_sync_buttons_refuse_get_with_405(admin_client, mapping, url):
    with patch(APPLY_ASYNC) as apply_async:
        response = admin_client.get(url(mapping))

    assert response.status_code == 405
    apply_async.assert_not_called()


def test_sync_all_refuses_get_with_405(admin_client, mapping):
    with patch(APPLY_ASYNC) as apply_async:
        response = admin_client.get(SYNC_ALL_URL)

    assert response.status_code == 405
    apply_async.assert_not_called()


def test_post_without_csrf_token_is_forbidden(admin_user, mapping, django_capture_on_commit_callbacks):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(full_sync_url(mapping))

    assert response.status_code == 403
    assert callbacks == []


def test_post_with_the_pages_csrf_token_is_accepted(admin_user, mapping):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    page = client.get(change_url(mapping)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    with patch(APPLY_ASYNC):
        response = client.post(full_sync_url(mapping), {"csrfmiddlewaretoken": token})

    assert response.status_code == 302


def test_already_running_sync_is_reported_and_nothing_is_queued(
    admin_client, mapping, django_capture_on_commit_callbacks
):
    make_run(mapping, status=SyncRun.Status.RUNNING)

    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(full_sync_url(mapping))

    assert response.status_code == 302
    assert callbacks == []
    apply_async.assert_not_called()
    assert message_texts(response) == ["A sync is already running for iCreations Global"]


@pytest.mark.parametrize("url", [full_sync_url, incremental_sync_url])
def test_user_without_change_permission_gets_403_from_the_buttons(staff_client, mapping, url):
    client = staff_client("view_sabitomapping")

    with patch(APPLY_ASYNC) as apply_async:
        response = client.post(url(mapping))

    assert response.status_code == 403
    apply_async.assert_not_called()


def test_sync_button_for_a_missing_mapping_is_404(admin_client):
    response = admin_client.post(reverse("admin:sabito_sync_sabitomapping_sync_full", args=["0" * 32]))

    assert response.status_code == 404


def test_logged_out_user_is_sent_to_the_login_page(client, mapping):
    with patch(APPLY_ASYNC) as apply_async:
        response = client.post(full_sync_url(mapping))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    apply_async.assert_not_called()


@pytest.mark.django_db(transaction=True)
def test_unreachable_broker_is_an_error_message_not_a_server_error(admin_client, mapping):
    # Outside a transaction on_commit runs at once, so the broker error reaches the view.
    with patch(APPLY_ASYNC, side_effect=OperationalError("Error 111 connecting to 127.0.0.1:6379")):
        response = admin_client.post(full_sync_url(mapping))

    assert response.status_code == 302
    [message] = message_texts(response)
    assert "Could not queue the full sync of iCreations Global: the task queue is unreachable" in message
    assert "Error 111" in message


# --- Bulk actions and "Sync all" on the change list ------------------------------------------


def run_action(client, action, mappings):
    return client.post(
        reverse(CHANGELIST), {"action": action, admin.helpers.ACTION_CHECKBOX_NAME: [str(m.pk) for m in mappings]}
    )


def test_changelist_offers_the_two_sync_actions_and_the_sync_all_button(admin_client, mapping):
    html = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert 'value="full_sync_selected"' in html
    assert 'value="incremental_sync_selected"' in html
    assert f'action="{SYNC_ALL_URL}"' in html and "Sync all active mappings" in html


def test_changelist_hides_the_sync_actions_and_button_from_a_view_only_user(staff_client, mapping):
    html = staff_client("view_sabitomapping").get(reverse(CHANGELIST)).content.decode()

    assert "full_sync_selected" not in html
    assert "incremental_sync_selected" not in html
    assert "Sync all active mappings" not in html


def test_full_sync_action_queues_the_selected_and_skips_the_running(admin_client, django_capture_on_commit_callbacks):
    idle = SabitoMappingFactory.create_batch(2)
    busy = SabitoMappingFactory(business_name="Busy Bakery")
    not_selected = SabitoMappingFactory()
    make_run(busy, status=SyncRun.Status.RUNNING)

    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "full_sync_selected", [*idle, busy])

    assert response.status_code == 302
    queued = sorted(call.kwargs["args"][0] for call in apply_async.call_args_list)
    assert queued == sorted(str(m.pk) for m in idle)
    assert str(not_selected.pk) not in queued
    assert {tuple(call.kwargs["args"][1:]) for call in apply_async.call_args_list} == {(True, "admin")}
    assert message_texts(response) == [
        "Full sync queued for 2 mappings",
        "A sync is already running for Busy Bakery",
    ]


def test_incremental_sync_action_queues_incremental_syncs(admin_client, mapping, django_capture_on_commit_callbacks):
    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "incremental_sync_selected", [mapping])

    assert apply_async.call_args.kwargs["args"] == [str(mapping.pk), False, "admin"]
    assert message_texts(response) == ["Incremental sync queued for iCreations Global"]


def test_action_reports_every_skipped_mapping_by_name(admin_client, django_capture_on_commit_callbacks):
    busy = [SabitoMappingFactory(business_name=name) for name in ("Alpha", "Beta")]
    for mapping in busy:
        make_run(mapping, status=SyncRun.Status.RUNNING)

    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "full_sync_selected", busy)

    apply_async.assert_not_called()
    assert message_texts(response) == ["Skipped 2 mappings with a sync already running: Alpha, Beta"]


def test_view_only_user_cannot_run_the_sync_actions(staff_client, mapping):
    with patch(APPLY_ASYNC) as apply_async:
        response = run_action(staff_client("view_sabitomapping"), "full_sync_selected", [mapping])

    apply_async.assert_not_called()
    # Django answers an action the user may not run like an unknown action: nothing happens.
    assert response.status_code in (200, 302)


def test_sync_all_queues_an_incremental_sync_of_every_active_mapping(admin_client, django_capture_on_commit_callbacks):
    active = SabitoMappingFactory.create_batch(3)
    SabitoMappingFactory(is_active=False)
    busy = SabitoMappingFactory(business_name="Busy Bakery")
    make_run(busy, status=SyncRun.Status.RUNNING)

    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(SYNC_ALL_URL)

    assert response.status_code == 302
    assert response["Location"] == reverse(CHANGELIST)
    assert len(callbacks) == 3
    assert sorted(call.kwargs["args"][0] for call in apply_async.call_args_list) == sorted(str(m.pk) for m in active)
    assert {tuple(call.kwargs["args"][1:]) for call in apply_async.call_args_list} == {(False, "admin")}
    assert message_texts(response) == [
        "Incremental sync queued for 3 mappings",
        "A sync is already running for Busy Bakery",
    ]


def test_sync_all_with_no_active_mapping_says_so(admin_client):
    SabitoMappingFactory(is_active=False)

    with patch(APPLY_ASYNC) as apply_async:
        response = admin_client.post(SYNC_ALL_URL)

    apply_async.assert_not_called()
    assert message_texts(response) == ["There are no active mappings to sync."]


def test_sync_all_is_forbidden_without_the_change_permission(staff_client, mapping):
    with patch(APPLY_ASYNC) as apply_async:
        response = staff_client("view_sabitomapping").post(SYNC_ALL_URL)

    assert response.status_code == 403
    apply_async.assert_not_called()


def test_sync_all_is_forbidden_with_only_other_models_change_permission(staff_client, mapping):
    client = staff_client("view_sabitomapping", "change_customer", "change_tenant")

    with patch(APPLY_ASYNC) as apply_async:
        response = client.post(SYNC_ALL_URL)

    assert response.status_code == 403
    apply_async.assert_not_called()


def test_user_with_change_permission_only_may_sync(staff_client, mapping, django_capture_on_commit_callbacks):
    client = staff_client("change_sabitomapping")

    with patch(APPLY_ASYNC) as apply_async, django_capture_on_commit_callbacks(execute=True):
        assert "Full sync now" in client.get(change_url(mapping)).content.decode()
        response = client.post(full_sync_url(mapping))

    assert response.status_code == 302
    apply_async.assert_called_once()


# --- The mapping list at a glance ----------------------------------------------------------


def test_changelist_shows_state_badges_counters_and_time_since_the_last_sync(admin_client):
    tenant = TenantFactory(name="Acme Tenant")
    ok = synced(
        SabitoMappingFactory(business_name="Good Co", sabito_business_id="biz-good", tenant=tenant),
        hours_ago=3,
        created=5,
        updated=3,
        skipped=2,
    )
    synced(SabitoMappingFactory(business_name="Bad Co"), hours_ago=1, success=False, errors=1)
    make_run(SabitoMappingFactory(business_name="Busy Co"), status=SyncRun.Status.RUNNING)
    SabitoMappingFactory(business_name="New Co")

    response = admin_client.get(reverse(CHANGELIST))

    html = response.content.decode()
    assert 'sabito-badge--succeeded">Succeeded' in html
    assert 'sabito-badge--failed" title="Sabito rejected the API key (HTTP 401)">Failed' in html
    assert 'sabito-badge--running">Running' in html
    assert 'sabito-badge--never">Never synced' in html
    page = text(response)
    assert "Good Co" in page and "biz-good" in page and "Acme Tenant" in page
    assert "created 5 · updated 3 · skipped 2 · errors 0" in page
    assert "(3 hours ago)" in page
    assert "(1 hour ago)" in page
    assert f'href="{reverse(RUNS)}?mapping__id__exact={ok.pk}"' in html


def test_changelist_query_count_does_not_grow_with_the_number_of_mappings(admin_client):
    def queries_for_list():
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(reverse(CHANGELIST))
        assert response.status_code == 200
        return len(captured)

    def add_mappings(count):
        for mapping in SabitoMappingFactory.create_batch(count):
            synced(mapping, created=1)
            make_run(mapping)
        make_run(mapping, status=SyncRun.Status.RUNNING, started_ago=timedelta(0))

    add_mappings(3)
    with_3 = queries_for_list()
    add_mappings(17)
    with_20 = queries_for_list()

    assert with_20 == with_3


def test_changelist_sorts_by_last_sync_time(admin_client):
    recent = synced(SabitoMappingFactory(business_name="A recent"), hours_ago=1)
    old = synced(SabitoMappingFactory(business_name="B old"), hours_ago=30)
    oldest = synced(SabitoMappingFactory(business_name="C oldest"), hours_ago=24 * 9)
    column = (
        list(admin.site._registry[SabitoMapping].list_display).index("last_sync") + 1
    )  # (get_model_admin: Django 5.0+)

    response = admin_client.get(reverse(CHANGELIST), {"o": f"-{column}"})

    assert list(response.context["cl"].result_list) == [recent, old, oldest]


def test_runs_link_lists_only_that_mappings_runs(admin_client, mapping):
    mine = make_run(mapping, error_message="mine")
    other = make_run(SabitoMappingFactory(), error_message="other")

    response = admin_client.get(f"{reverse(RUNS)}?mapping__id__exact={mapping.pk}")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [mine]
    assert other not in response.context["cl"].result_list


def test_change_page_shows_the_sync_status_and_watermark(admin_client, mapping):
    synced(mapping, hours_ago=2, created=7)

    page = text(admin_client.get(change_url(mapping)))

    assert "Succeeded" in page
    assert "processed 7 · created 7 · updated 0 · skipped 0 · errors 0" in page
    assert "Incremental watermark" in page and "(2 hours ago)" in page
    assert "View runs" in page


def test_saving_the_mapping_form_never_puts_back_a_stale_watermark(admin_client, mapping):
    stale = SabitoMapping.objects.get(pk=mapping.pk)
    stale.sync_running = False
    synced(mapping, created=1)  # a worker finishes while the operator edits

    form = {
        "business_name": "iCreations Global Ltd",
        "sabito_business_id": mapping.sabito_business_id,
        "tenant": str(mapping.tenant_id),
        "is_active": "on",
    }
    with patch("sabito_sync.admin.mappings.SabitoMappingAdmin.get_object", return_value=stale):
        response = admin_client.post(change_url(mapping), form)

    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.business_name == "iCreations Global Ltd"
    assert mapping.metadata["lastSyncResult"]["created"] == 1


# (A form trims whitespace at either end, a final newline included, before it validates.)
@pytest.mark.parametrize("name", ["Acme\nERROR forged", "Acme\x1b[2J", "Acme\t Ltd"])
def test_the_mapping_form_refuses_a_name_with_control_characters(admin_client, mapping, name):
    form = {
        "business_name": name,
        "sabito_business_id": mapping.sabito_business_id,
        "tenant": str(mapping.tenant_id),
        "is_active": "on",
    }

    response = admin_client.post(change_url(mapping), form)

    assert response.status_code == 200  # the form again, with its error
    assert "Must not contain control characters" in text(response)
    mapping.refresh_from_db()
    assert mapping.business_name != name


def test_deleting_a_mapping_takes_its_runs_with_it(admin_client, mapping):
    make_run(mapping)

    response = admin_client.post(reverse("admin:sabito_sync_sabitomapping_delete", args=[mapping.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not SabitoMapping.objects.exists()
    assert not SyncRun.objects.exists()


def test_deleting_a_tenant_takes_its_mappings_and_their_runs_with_it(admin_client, mapping):
    make_run(mapping)

    response = admin_client.post(reverse("admin:sabito_sync_tenant_delete", args=[mapping.tenant_id]), {"post": "yes"})

    assert response.status_code == 302
    assert not Tenant.objects.exists() and not SyncRun.objects.exists()


# --- The run history -----------------------------------------------------------------------


def test_sync_run_admin_cannot_add_change_or_delete(admin_client, mapping):
    run = make_run(mapping)

    assert admin_client.get(reverse("admin:sabito_sync_syncrun_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:sabito_sync_syncrun_delete", args=[run.pk]), {"post": "yes"}).status_code
        == 403
    )
    detail = admin_client.get(reverse("admin:sabito_sync_syncrun_change", args=[run.pk]))
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert admin_client.post(reverse("admin:sabito_sync_syncrun_change", args=[run.pk]), {}).status_code == 403
    changelist = admin_client.get(reverse(RUNS)).content.decode()
    assert "delete_selected" not in changelist
    assert SyncRun.objects.filter(pk=run.pk).exists()


def test_sync_runs_are_listed_newest_first(admin_client, mapping):
    old = make_run(mapping, started_ago=timedelta(days=2))
    new = make_run(mapping, started_ago=timedelta(minutes=5))
    middle = make_run(mapping, started_ago=timedelta(hours=5))

    response = admin_client.get(reverse(RUNS))

    assert list(response.context["cl"].result_list) == [new, middle, old]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("status__exact=failed", {"failed"}),
        ("trigger__exact=admin", {"admin-run"}),
        ("full_sync__exact=1", {"full"}),
    ],
)
def test_sync_runs_filter_by_status_trigger_and_kind(admin_client, mapping, query, expected):
    make_run(mapping, status=SyncRun.Status.FAILED, error_message="failed")
    make_run(mapping, trigger=SyncRun.Trigger.ADMIN, error_message="admin-run")
    make_run(mapping, full_sync=True, error_message="full")

    response = admin_client.get(f"{reverse(RUNS)}?{query}")

    assert {run.error_message for run in response.context["cl"].result_list} == expected


def test_sync_runs_filter_by_tenant(admin_client, mapping):
    mine = make_run(mapping)
    make_run(SabitoMappingFactory())

    response = admin_client.get(f"{reverse(RUNS)}?mapping__tenant__id__exact={mapping.tenant_id}")

    assert list(response.context["cl"].result_list) == [mine]


def test_sync_run_detail_shows_counters_duration_watermark_and_an_escaped_error_table(admin_client, mapping):
    run = make_run(
        mapping,
        status=SyncRun.Status.FAILED,
        updated_after=timezone.now() - timedelta(hours=6),
        customers_processed=12,
        created=4,
        updated=3,
        skipped=2,
        errors=3,
        error_message="Sabito answered HTTP 502 on page 3",
        error_details=[
            {"sabitoCustomerId": "cust-9", "email": "not-an-email", "reason": "invalid email"},
            {"sabitoCustomerId": "cust-<b>", "email": "x@example.com", "reason": "<script>alert(1)</script>"},
        ],
    )

    response = admin_client.get(reverse("admin:sabito_sync_syncrun_change", args=[run.pk]))

    html = response.content.decode()
    assert '<table class="sabito-error-details">' in html
    assert "<td>cust-9</td><td>not-an-email</td><td>invalid email</td>" in html
    assert "<td>cust-&lt;b&gt;</td>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert "Showing the first 2 of 3 errors" in html
    page = text(response)
    assert "Sabito answered HTTP 502 on page 3" in page
    assert "12.5 s" in page
    assert "(6 hours ago)" in page
    for label, value in [("Created", 4), ("Updated", 3), ("Skipped", 2), ("Errors", 3), ("Customers processed", 12)]:
        assert re.search(rf"{label}:? {value}\b", page), label


def test_full_sync_run_detail_says_no_updated_after_was_used(admin_client, mapping):
    run = make_run(mapping, full_sync=True)

    page = text(admin_client.get(reverse("admin:sabito_sync_syncrun_change", args=[run.pk])))

    assert "every customer was fetched" in page


def test_sync_run_list_shows_a_badge_per_status(admin_client, mapping):
    make_run(mapping, status=SyncRun.Status.SUCCEEDED)
    make_run(mapping, status=SyncRun.Status.FAILED, error_message="boom")
    make_run(mapping, status=SyncRun.Status.RUNNING)
    make_run(mapping, status=SyncRun.Status.ALREADY_RUNNING)

    html = admin_client.get(reverse(RUNS)).content.decode()

    for css_class in ("succeeded", "failed", "running", "skipped"):
        assert f"sabito-badge--{css_class}" in html


# --- Following and cancelling a run ------------------------------------------------------------


def run_change_url(run):
    return reverse("admin:sabito_sync_syncrun_change", args=[run.pk])


def cancel_url(run):
    return reverse("admin:sabito_sync_syncrun_cancel", args=[run.pk])


def progress_url(run):
    return reverse("admin:sabito_sync_syncrun_progress", args=[run.pk])


def test_changelist_shows_a_running_run_with_its_counters_and_pages_so_far(admin_client, mapping):
    make_run(mapping, status=SyncRun.Status.RUNNING, customers_processed=300, created=290, updated=10, pages_done=3)

    response = admin_client.get(reverse(CHANGELIST))

    assert 'sabito-badge--running">Running' in response.content.decode()
    assert "processed 300 · created 290 · updated 10 · skipped 0 · errors 0 · pages 3" in text(response)


def test_changelist_shows_a_queued_run_as_waiting_for_a_worker(admin_client, mapping):
    make_run(mapping, status=SyncRun.Status.QUEUED, started_ago=timedelta(0))

    response = admin_client.get(reverse(CHANGELIST))

    assert 'sabito-badge--queued">Queued' in response.content.decode()
    assert "waiting for a worker since" in text(response)


def test_mapping_page_follows_its_queued_run_and_offers_to_cancel_it(admin_client, mapping):
    run = make_run(mapping, status=SyncRun.Status.QUEUED, started_ago=timedelta(0))

    response = admin_client.get(change_url(mapping))

    html = response.content.decode()
    assert f'data-sabito-run-progress="{progress_url(run)}"' in html
    assert "sabito_sync/run_progress.js" in html
    assert f'action="{cancel_url(run)}"' in html and "Cancel run" in html
    assert f'name="next" value="{change_url(mapping)}"' in html


def test_mapping_page_without_a_queued_or_running_run_neither_follows_nor_offers_cancel(admin_client, mapping):
    make_run(mapping)

    html = admin_client.get(change_url(mapping)).content.decode()

    assert "data-sabito-run-progress" not in html and "Cancel run" not in html
    assert "None: no sync of it is queued or running" in html


def test_mapping_page_hides_the_cancel_button_from_a_view_only_user(staff_client, mapping):
    make_run(mapping, status=SyncRun.Status.RUNNING)

    html = staff_client("view_sabitomapping").get(change_url(mapping)).content.decode()

    assert "data-sabito-run-progress" in html and "Cancel run" not in html


def test_cancel_button_cancels_a_queued_run_and_returns_to_the_page_it_came_from(admin_client, mapping):
    run = make_run(mapping, status=SyncRun.Status.QUEUED)

    response = admin_client.post(cancel_url(run), {"next": change_url(mapping)}, follow=True)

    assert response.redirect_chain == [(change_url(mapping), 302)]
    assert message_texts(response) == ["Cancelled the queued sync of iCreations Global"]
    assert SyncRun.objects.get(pk=run.pk).status == SyncRun.Status.CANCELLED


def test_cancel_button_asks_a_running_run_to_stop_after_its_page(admin_client, mapping):
    run = make_run(mapping, status=SyncRun.Status.RUNNING)

    response = admin_client.post(cancel_url(run))

    assert response.status_code == 302 and response["Location"] == run_change_url(run)
    assert message_texts(response) == [
        "Cancel requested: the sync of iCreations Global stops once the pages it has fetched are written"
    ]
    run.refresh_from_db()
    assert run.status == SyncRun.Status.RUNNING and run.cancel_requested_at is not None


def test_cancel_button_on_a_finished_run_says_so_and_changes_nothing(admin_client, mapping):
    run = make_run(mapping, status=SyncRun.Status.FAILED)

    response = admin_client.post(cancel_url(run))

    assert message_texts(response) == [f"Run {run.pk} has already finished (failed); there is nothing to cancel."]
    assert SyncRun.objects.get(pk=run.pk).cancel_requested_at is None


def test_cancel_button_never_redirects_to_another_site(admin_client, mapping):
    run = make_run(mapping, status=SyncRun.Status.QUEUED)

    response = admin_client.post(cancel_url(run), {"next": "https://evil.example/"})

    assert response["Location"] == run_change_url(run)


def test_cancel_refuses_get_with_405(admin_client, mapping):
    run = make_run(mapping, status=SyncRun.Status.QUEUED)

    assert admin_client.get(cancel_url(run)).status_code == 405
    assert SyncRun.objects.get(pk=run.pk).status == SyncRun.Status.QUEUED


def test_cancel_is_forbidden_to_a_view_only_user(staff_client, mapping):
    run = make_run(mapping, status=SyncRun.Status.QUEUED)

    response = staff_client("view_sabitomapping").post(cancel_url(run))

    assert response.status_code == 403
    assert SyncRun.objects.get(pk=run.pk).status == SyncRun.Status.QUEUED


def test_run_page_offers_cancel_while_queued_or_running_only(admin_client, mapping):
    queued = make_run(mapping, status=SyncRun.Status.QUEUED)
    done = make_run(SabitoMappingFactory())

    assert f'action="{cancel_url(queued)}"' in admin_client.get(run_change_url(queued)).content.decode()
    assert "Cancel run" not in admin_client.get(run_change_url(done)).content.decode()


def test_progress_view_answers_the_run_its_rendered_progress_and_whether_it_finished(admin_client, mapping):
    run = make_run(mapping, status=SyncRun.Status.RUNNING, customers_processed=40, created=40, pages_done=2)

    running = admin_client.get(progress_url(run)).json()
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.SUCCEEDED, finished_at=timezone.now())
    finished = admin_client.get(progress_url(run)).json()

    assert running["finished"] is False and finished["finished"] is True
    assert (running["run"]["status"], running["run"]["pagesDone"], running["run"]["customersProcessed"]) == (
        "running",
        2,
        40,
    )
    assert "pages <b>2</b>" in running["html"] and "sabito-badge--running" in running["html"]


# --- Customers, tenants, memberships ---------------------------------------------------------


@pytest.mark.parametrize("term", ["Ama Mensah", "ama.mensah@example", "sab-cust-42"])
def test_customer_admin_searches_name_email_and_sabito_id(admin_client, term):
    wanted = CustomerFactory(name="Ama Mensah", email="ama.mensah@example.com", sabito_customer_id="sab-cust-42")
    CustomerFactory(name="Kofi Owusu", email="kofi@example.org", sabito_customer_id="sab-cust-7")

    response = admin_client.get(reverse("admin:sabito_sync_customer_changelist"), {"q": term})

    assert list(response.context["cl"].result_list) == [wanted]


@pytest.mark.parametrize("value, expected", [("yes", ["From Sabito"]), ("no", ["Walk-in"])])
def test_customer_admin_filters_by_whether_it_came_from_sabito(admin_client, value, expected):
    tenant = TenantFactory()
    CustomerFactory(tenant=tenant, name="From Sabito", sabito_customer_id="sab-1")
    CustomerFactory(tenant=tenant, name="Walk-in")

    response = admin_client.get(reverse("admin:sabito_sync_customer_changelist"), {"from_sabito": value})

    assert [c.name for c in response.context["cl"].result_list] == expected


def test_customer_admin_filters_by_tenant(admin_client):
    mine = CustomerFactory()
    CustomerFactory()

    response = admin_client.get(reverse("admin:sabito_sync_customer_changelist"), {"tenant__id__exact": mine.tenant_id})

    assert list(response.context["cl"].result_list) == [mine]


def test_customer_sabito_fields_are_read_only(admin_client):
    customer = CustomerFactory(sabito_customer_id="sab-1", sabito_business_id="biz-1")

    response = admin_client.get(reverse("admin:sabito_sync_customer_change", args=[customer.pk]))

    form_fields = response.context["adminform"].form.fields
    assert "name" in form_fields and "email" in form_fields
    for name in ("sabito_customer_id", "sabito_business_id", "sabito_source_referral_id", "sabito_source_type"):
        assert name not in form_fields
    assert "sab-1" in text(response)


def test_customer_admin_reports_a_duplicate_email_in_the_form(admin_client):
    existing = CustomerFactory(email="ama@example.com")

    response = admin_client.post(
        reverse("admin:sabito_sync_customer_add"),
        {"tenant": str(existing.tenant_id), "name": "Ama", "email": "AMA@example.com", "country": "USA"},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Customer.objects.count() == 1


def inline_management(prefix, total=1):
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def test_a_tenant_with_a_member_and_a_mapping_is_set_up_from_one_admin_page(admin_client):
    user = UserFactory(username="ama")

    response = admin_client.post(
        reverse("admin:sabito_sync_tenant_add"),
        {
            "name": "Acme",
            "slug": "acme",
            **inline_management("memberships"),
            "memberships-0-user": str(user.pk),
            "memberships-0-role": "admin",
            **inline_management("sabito_mappings"),
            "sabito_mappings-0-business_name": "iCreations Global",
            "sabito_mappings-0-sabito_business_id": "biz-acme",
            "sabito_mappings-0-is_active": "on",
        },
    )

    assert response.status_code == 302, response.context["errors"] if response.context else response
    tenant = Tenant.objects.get(slug="acme")
    assert Membership.objects.get(tenant=tenant).user == user
    assert SabitoMapping.objects.get(tenant=tenant).sabito_business_id == "biz-acme"


def test_tenant_list_shows_member_and_mapping_counts(admin_client):
    tenant = TenantFactory(name="Acme")
    SabitoMappingFactory.create_batch(2, tenant=tenant)
    Membership.objects.create(tenant=tenant, user=UserFactory())

    response = admin_client.get(reverse("admin:sabito_sync_tenant_changelist"))

    [row] = response.context["cl"].result_list
    assert (row.member_total, row.mapping_total) == (1, 2)


def test_membership_admin_autocompletes_users_and_tenants(admin_client):
    UserFactory(username="ama.mensah")
    TenantFactory(name="Acme Accra")
    autocomplete = reverse("admin:autocomplete")

    users = admin_client.get(
        autocomplete, {"app_label": "sabito_sync", "model_name": "membership", "field_name": "user", "term": "ama"}
    ).json()
    tenants = admin_client.get(
        autocomplete, {"app_label": "sabito_sync", "model_name": "membership", "field_name": "tenant", "term": "accra"}
    ).json()

    assert [item["text"] for item in users["results"]] == ["ama.mensah"]
    assert [item["text"] for item in tenants["results"]] == ["Acme Accra"]


def test_membership_change_form_uses_autocomplete_widgets(admin_client):
    html = admin_client.get(reverse("admin:sabito_sync_membership_add")).content.decode()

    assert html.count("admin-autocomplete") >= 2


def test_celery_beat_schedule_stays_in_the_admin(admin_client):
    assert admin.site.is_registered(PeriodicTask)
    assert admin_client.get(reverse("admin:django_celery_beat_periodictask_changelist")).status_code == 200


@pytest.mark.project
def test_every_admin_page_writes_dates_one_way(admin_client, mapping):
    run = make_run(mapping, started_ago=timedelta(hours=3))
    started = timezone.localtime(run.started_at).strftime("%Y-%m-%d %H:%M")

    run_page = text(admin_client.get(reverse("admin:sabito_sync_syncrun_change", args=[run.pk])))
    runs_list = text(admin_client.get(reverse(RUNS)))

    assert started in run_page and started in runs_list
    assert " a.m." not in run_page + runs_list and " p.m." not in run_page + runs_list
    assert "Error message: -" not in run_page


@pytest.mark.project
def test_view_site_leads_to_the_api_docs(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()

    assert 'href="/api/docs/">View site' in html
    assert admin_client.get("/api/docs/").status_code == 200
