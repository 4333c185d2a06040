"""The admin in a real browser: an operator logs in, presses "Full sync now" on a
mapping and watches the page follow the run it queued until it has finished, with
a real Celery worker syncing from the Sabito simulator over HTTP; and cancels a run
no worker has taken yet.

Debian's chromium driven by Playwright for Python; skipped only where that browser
is not installed (`apt-get install -y chromium`)."""

from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from playwright.sync_api import expect, sync_playwright

from sabito_sync.models import Customer, SyncRun

from .factories import SabitoMappingFactory, TenantFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SYNC_TIMEOUT_SECONDS = 30
USERNAME, PASSWORD = "operator", "press-the-button-42"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no browser: {CHROMIUM} is missing (install it with `apt-get install -y chromium`)",
    ),
]


@contextmanager
def chromium_page(*, profile_dir: Path, base_url: str):
    """A page in a fresh chromium profile. Django's ORM refuses to run while the
    Playwright sync API's event loop exists in this thread, so tests arrange the
    database before this block and assert on it after."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=profile_dir,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
            base_url=base_url,
        )
        context.set_default_timeout(15_000)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@pytest.fixture
def operator_and_mapping(transactional_db, sabito_simulator):
    get_user_model().objects.create_superuser(USERNAME, "operator@example.com", PASSWORD)
    business_id = sabito_simulator.business_ids[0]
    return SabitoMappingFactory(
        tenant=TenantFactory(name="Acme Accra"),
        sabito_business_id=business_id,
        business_name=sabito_simulator.business_names[business_id],
    )


def log_in(page):
    page.goto("/admin/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#site-name")).to_contain_text("NEXPro administration")


def test_operator_presses_full_sync_and_the_page_follows_the_run_until_it_has_finished(
    operator_and_mapping, sabito_simulator, celery_worker_thread, live_server, tmp_path, settings
):
    mapping = operator_and_mapping
    expected_customers = len(sabito_simulator.customers(mapping.sabito_business_id))
    # Pages of 10 after 0.3 s each: the run is still queued or running when the page shows it.
    settings.SABITO_PAGE_SIZE = "10"
    sabito_simulator.set_faults({"slow_seconds": 0.3})
    mapping_changelist = reverse("admin:sabito_sync_sabitomapping_changelist")
    mapping_change = reverse("admin:sabito_sync_sabitomapping_change", args=[mapping.pk])

    with chromium_page(profile_dir=tmp_path / "chromium-profile", base_url=live_server.url) as page:
        log_in(page)

        page.goto(mapping_changelist)
        expect(page.locator("#result_list")).to_contain_text("Never synced")
        page.get_by_role("link", name=mapping.business_name).click()
        expect(page.locator("h2", has_text=str(mapping))).to_be_visible()

        page.get_by_role("button", name="Full sync now").click()
        expect(page.locator(".messagelist .success")).to_have_text(f"Full sync queued for {mapping.business_name}")
        assert page.url.endswith(mapping_change)
        current_run = page.locator(".field-current_run")
        expect(current_run.locator(".sabito-badge--queued, .sabito-badge--running")).to_be_visible()
        expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
        page.screenshot(path=tmp_path / "admin_mapping_change.png", full_page=True)

        # No reload from here: the page follows the run and reloads itself once it has finished.
        expect(page.locator(".field-last_state .sabito-badge--succeeded")).to_be_visible(
            timeout=SYNC_TIMEOUT_SECONDS * 1000
        )
        expect(current_run).to_contain_text("None: no sync of it is queued or running")
        expect(page.locator(".field-last_result")).to_contain_text(f"created {expected_customers}")
        expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
        page.screenshot(path=tmp_path / "admin_mapping_after_sync.png", full_page=True)

        page.locator(".object-tools").get_by_role("link", name="Runs").click()
        finished_row = page.locator("#result_list tbody tr", has=page.locator(".sabito-badge--succeeded"))
        expect(page.locator("#result_list tbody tr")).to_have_count(1)
        expect(finished_row.locator("td.field-trigger")).to_have_text("Admin")
        expect(finished_row.locator("td.field-kind")).to_have_text("Full")
        expect(finished_row.locator("td.field-result")).to_have_text(
            f"processed {expected_customers} · created {expected_customers} · updated 0 · skipped 0 · errors 0"
        )
        page.screenshot(path=tmp_path / "admin_after_sync.png", full_page=True)

        page.goto(mapping_changelist)
        mapping_row = page.locator("#result_list tbody tr", has_text=mapping.business_name)
        expect(mapping_row.locator(".sabito-badge--succeeded")).to_have_text("Succeeded")
        expect(mapping_row.locator("td.field-last_result")).to_contain_text(f"created {expected_customers}")
        expect(mapping_row.locator("td.field-last_sync")).to_contain_text("(just now)")
        page.screenshot(path=tmp_path / "admin_mapping_changelist.png", full_page=True)

    run = SyncRun.objects.get(mapping=mapping)
    assert (run.status, run.trigger, run.full_sync, run.created) == ("succeeded", "admin", True, expected_customers)
    assert Customer.objects.filter(tenant=mapping.tenant).count() == expected_customers


def test_operator_cancels_a_queued_run_from_the_mapping_page(operator_and_mapping, live_server, tmp_path):
    mapping = operator_and_mapping  # and no worker: the run stays queued until cancelled
    mapping_change = reverse("admin:sabito_sync_sabitomapping_change", args=[mapping.pk])

    with chromium_page(profile_dir=tmp_path / "chromium-profile", base_url=live_server.url) as page:
        log_in(page)
        page.goto(mapping_change)
        page.get_by_role("button", name="Incremental sync now").click()
        expect(page.locator(".field-current_run .sabito-badge--queued")).to_have_text("Queued")
        expect(page.locator(".field-current_run")).to_contain_text("waiting for a worker since")

        page.get_by_role("button", name="Cancel run").click()

        expect(page.locator(".messagelist .success")).to_have_text(
            f"Cancelled the queued sync of {mapping.business_name}"
        )
        assert page.url.endswith(mapping_change)
        expect(page.locator(".field-current_run")).to_contain_text("None: no sync of it is queued or running")
        expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
        page.screenshot(path=tmp_path / "admin_mapping_cancelled.png", full_page=True)

    run = SyncRun.objects.get(mapping=mapping)
    assert (run.status, run.trigger, run.cancel_requested_at is not None) == ("cancelled", "admin", True)
