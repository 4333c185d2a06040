"""`manage.py sabito_demo`: the demo that `scripts/run` starts beside the stack.

A project command, not the app's: it creates a superuser with a known password, so
it stays out of the `sabito_sync` package and the production image.

`--setup` (run before the stack starts) creates a demo tenant, one mapping per
simulator business, and an admin user with an API token. Without it, the command
narrates: it waits for the start-up sync, then edits and adds customers in the
simulator and runs an incremental sync, then a full sync — both through the
Celery workers — and prints each step's results. Then it keeps the stack up.
"""

import argparse
import os
import time
from datetime import UTC, datetime

import requests
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.authtoken.models import Token

from sabito_simulator import SabitoSimulator
from sabito_sync.conf import load_sabito_settings
from sabito_sync.models import Membership, SabitoMapping, SyncRun, Tenant
from sabito_sync.services.queueing import enqueue_mapping_syncs

DEMO_TENANT_SLUG = "demo"


def parse_moment(text: str) -> datetime:
    moment = parse_datetime(text)
    if moment is None:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date and time: {text!r}")
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


class Command(BaseCommand):
    help = "Set up demo data for the simulator (--setup), or narrate a demo of the running stack."

    def add_arguments(self, parser):
        parser.add_argument(
            "--setup", action="store_true", help="Create the demo tenant, mappings and admin user, then exit."
        )
        parser.add_argument(
            "--seed", type=int, default=int(os.environ.get("DEMO_SEED", 42)), help="simulator data seed"
        )
        parser.add_argument("--businesses", type=int, default=int(os.environ.get("DEMO_BUSINESSES", 2)))
        parser.add_argument(
            "--edits", type=int, default=5, help="customers to edit in Sabito before the incremental sync"
        )
        parser.add_argument(
            "--additions", type=int, default=3, help="customers to add in Sabito before the incremental sync"
        )
        parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for each step")
        parser.add_argument(
            "--exit", action="store_true", help="Exit when the demo is done instead of keeping the stack up."
        )
        parser.add_argument(
            "--since",
            type=parse_moment,
            default=os.environ.get("DEMO_STARTED_AT") or None,
            help="when this start of the stack began (ISO 8601; default $DEMO_STARTED_AT, which scripts/run sets): "
            "runs that started before it belong to an earlier start and are not reported",
        )

    def handle(self, *args, **options):
        if options["setup"]:
            self.setup(seed=options["seed"], businesses=options["businesses"])
            return
        self.timeout = options["timeout"]
        mappings = list(SabitoMapping.objects.filter(tenant__slug=DEMO_TENANT_SLUG, is_active=True))
        if not mappings:
            raise CommandError("No demo mappings: run `manage.py sabito_demo --setup` first (scripts/run does).")
        self.wait_for_simulator()

        self.section("1. Start-up sync (queued by beat when the stack started; the first one fetches everything)")
        startup_runs = self.wait_for_runs(mappings, trigger=SyncRun.Trigger.STARTUP, started_after=options["since"])
        self.print_runs(startup_runs)

        self.section(
            f"2. In Sabito: {options['edits']} customers edited, {options['additions']} added; incremental sync"
        )
        for mapping in mappings:
            self.simulator_control("edit", mapping.sabito_business_id, options["edits"])
            self.simulator_control("add", mapping.sabito_business_id, options["additions"])
        self.print_runs(self.sync_through_workers(mappings, full_sync=False))

        self.section("3. Full sync (nothing changed since: every customer is skipped)")
        self.print_runs(self.sync_through_workers(mappings, full_sync=True))

        self.print_welcome()
        if not options["exit"]:
            while True:  # keep the stack up: the process runner stops everything when one process exits
                time.sleep(3600)

    # --- setup ---------------------------------------------------------------------

    def setup(self, *, seed: int, businesses: int) -> None:
        # Same seed and count as the simulator process: the same business ids, without
        # needing the simulator to be up yet.
        simulator = SabitoSimulator(customers_per_business=0, businesses=businesses, seed=seed)
        username = os.environ.get("DEMO_ADMIN_USERNAME", "admin")
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "admin")
        with transaction.atomic():
            tenant, _ = Tenant.objects.get_or_create(slug=DEMO_TENANT_SLUG, defaults={"name": "Demo Tenant"})
            for business in simulator.businesses():
                SabitoMapping.objects.get_or_create(
                    sabito_business_id=business["id"], defaults={"business_name": business["name"], "tenant": tenant}
                )
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                user = get_user_model().objects.create_superuser(username, f"{username}@example.com", password)
            Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Membership.Role.ADMIN})
            token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(
            f"Demo tenant {tenant.name} ({tenant.pk}) with {tenant.sabito_mappings.count()} Sabito mappings."
        )
        self.stdout.write(f"Admin user: {username} / {password}   API token: {token.key}")

    # --- narration -------------------------------------------------------------------

    def wait_for_simulator(self) -> None:
        url = f"{load_sabito_settings().api_url}/_simulator/businesses"
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                requests.get(url, timeout=2).raise_for_status()
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise CommandError(f"The Sabito simulator did not answer at {url}") from None
                time.sleep(0.5)

    def simulator_control(self, action: str, business_id: str, count: int) -> None:
        url = f"{load_sabito_settings().api_url}/_simulator/{action}"
        requests.post(url, json={"businessId": business_id, "count": count}, timeout=10).raise_for_status()

    def sync_through_workers(self, mappings, *, full_sync: bool) -> list[SyncRun]:
        started_after = timezone.now()
        with transaction.atomic():
            enqueue_mapping_syncs(mappings=mappings, full_sync=full_sync, trigger=SyncRun.Trigger.CLI)
        return self.wait_for_runs(mappings, trigger=SyncRun.Trigger.CLI, started_after=started_after)

    def wait_for_runs(self, mappings, *, trigger: str, started_after) -> list[SyncRun]:
        """The latest finished run of each mapping for this trigger (waiting out one
        that another trigger is still running)."""
        deadline = time.monotonic() + self.timeout
        while True:
            runs = []
            for mapping in mappings:
                finished = SyncRun.objects.filter(mapping=mapping, trigger=trigger).exclude(
                    status=SyncRun.Status.RUNNING
                )
                if started_after is not None:
                    finished = finished.filter(started_at__gte=started_after)
                run = finished.select_related("mapping").first()
                if run is not None:
                    runs.append(run)
            if len(runs) == len(mappings):
                return runs
            if time.monotonic() > deadline:
                raise CommandError(f"Timed out waiting for the {trigger} sync; is the worker running?")
            time.sleep(0.5)

    def section(self, title: str) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(f"[Demo] {title}"))

    def print_runs(self, runs: list[SyncRun]) -> None:
        self.stdout.write(
            f"  {'business':<22} {'status':<16} {'processed':>9} {'created':>8} {'updated':>8} {'skipped':>8} {'errors':>7}"
        )
        for run in runs:
            self.stdout.write(
                f"  {run.mapping.business_name:<22} {run.status:<16} {run.customers_processed:>9} {run.created:>8} "
                f"{run.updated:>8} {run.skipped:>8} {run.errors:>7}"
            )

    def print_welcome(self) -> None:
        token = Token.objects.filter(user__memberships__tenant__slug=DEMO_TENANT_SLUG).first()
        tenant = Tenant.objects.get(slug=DEMO_TENANT_SLUG)
        web = f"http://{os.environ.get('WEB_BIND', '127.0.0.1:8000')}"
        self.section("Done. The stack keeps running (Ctrl-C stops it):")
        self.stdout.write(f"  Admin:  {web}/admin/  (user and password printed by the setup step above)")
        self.stdout.write(f"  API:    {web}/api/docs/")
        if token:
            self.stdout.write(
                f"  curl -s -H 'Authorization: Bearer {token.key}' -H 'X-Tenant-ID: {tenant.pk}' "
                f"{web}/api/sabito/sync/status"
            )
