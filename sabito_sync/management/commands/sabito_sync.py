"""`manage.py sabito_sync`: run the Sabito sync in this process (no broker needed).
Names and errors from outside are printed with their control characters escaped.

Exit status: 0 when every mapping succeeded, 1 when any failed, 2 for bad usage
(an unknown or malformed mapping id, invalid settings).
"""

import json as json_module
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from sabito_sync.conf import SabitoSettingsError, load_sabito_settings
from sabito_sync.logs import escape_controls as shown
from sabito_sync.models import SabitoMapping, SyncRun
from sabito_sync.runs.result import SyncAlreadyRunning, already_running_result, result_data
from sabito_sync.services.syncs import request_sync, sync_all_now, sync_now


class Command(BaseCommand):
    help = "Sync customers from Sabito for every active mapping, or for one mapping."

    def add_arguments(self, parser):
        parser.add_argument(
            "--full",
            action="store_true",
            help="Fetch every customer, not only those updated since the last successful sync.",
        )
        parser.add_argument(
            "--mapping", metavar="UUID", help="Sync only this mapping (its id, as shown in the admin or the API)."
        )
        parser.add_argument(
            "--json", action="store_true", help="Print only the JSON list of per-mapping results on stdout."
        )
        parser.add_argument(
            "--async",
            dest="enqueue",
            action="store_true",
            help="Queue the sync for the Celery workers instead of running it here; prints the task ids.",
        )

    def handle(self, *args, full, mapping, json: bool, enqueue: bool, **options):
        try:
            load_sabito_settings()
        except SabitoSettingsError as exc:
            raise CommandError(f"Invalid Sabito settings: {exc}", returncode=2) from None
        self.as_json = json
        self.verbose = not json and options["verbosity"] >= 1

        if enqueue:
            self.enqueue(full=full, mapping=mapping)
            return
        if mapping:
            selected = self.selected_mapping(mapping)
            try:
                results = [
                    sync_now(
                        actor=None, mapping=selected, full_sync=full, trigger=SyncRun.Trigger.CLI, on_page=self.progress
                    )
                ]
            except SyncAlreadyRunning as exc:
                results = [already_running_result(exc)]
        else:
            results = sync_all_now(actor=None, mappings=None, full_sync=full, trigger=SyncRun.Trigger.CLI)

        self.report(results)
        if not all(result.success for result in results):
            raise SystemExit(1)

    def enqueue(self, *, full: bool, mapping: str | None) -> None:
        mappings = [self.selected_mapping(mapping)] if mapping else list(SabitoMapping.objects.active())
        with transaction.atomic():
            outcome = request_sync(actor=None, mappings=mappings, full_sync=full, trigger=SyncRun.Trigger.CLI)
        if self.as_json:
            queued = [
                {
                    "mappingId": str(item.mapping.pk),
                    "businessId": item.mapping.sabito_business_id,
                    "taskId": item.task_id,
                    "runId": str(item.run.pk),
                    "joined": item.task_id is None,
                }
                for item in outcome.followed
            ]
            self.stdout.write(json_module.dumps(queued, indent=2))
            return
        if not mappings:
            self.stdout.write("No active Sabito mappings to sync.")
        for item in outcome.queued:
            self.stdout.write(
                f"Queued {'full' if full else 'incremental'} sync of {shown(item.mapping.business_name)}: task {item.task_id}"
            )
        for item in outcome.attached:
            self.stdout.write(
                f"Not queued again, a sync of {shown(item.mapping.business_name)} is already "
                f"{item.run.status}: run {item.run.pk}"
            )
        for running in outcome.already_running:
            self.stdout.write(
                f"Not queued, an incremental sync of {shown(running.business_name)} is running; "
                "a full sync can start once it has finished"
            )

    def selected_mapping(self, mapping_id: str) -> SabitoMapping:
        try:
            uuid.UUID(mapping_id)
        except ValueError:
            raise CommandError(f"--mapping {mapping_id!r} is not a UUID.", returncode=2) from None
        try:
            return SabitoMapping.objects.select_related("tenant").get(pk=mapping_id)
        except SabitoMapping.DoesNotExist:
            raise CommandError(f"No Sabito mapping with id {mapping_id}.", returncode=2) from None

    def progress(self, result) -> None:
        if self.verbose and result.processed and result.processed % 1000 < 100:
            self.stderr.write(f"  {shown(result.business_name)}: {result.processed} customers processed so far...")

    def report(self, results) -> None:
        if self.as_json:
            self.stdout.write(json_module.dumps([result_data(result) for result in results], indent=2))
            return
        if not results:
            self.stdout.write("No active Sabito mappings to sync.")
        for result in results:
            style = self.style.SUCCESS if result.success else self.style.ERROR
            outcome = "OK" if result.success else f"FAILED: {shown(result.error or '')}"
            self.stdout.write(style(f"{shown(result.business_name)} ({shown(result.business_id)}): {outcome}"))
            self.stdout.write(
                f"  processed {result.processed}, created {result.created}, updated {result.updated}, "
                f"skipped {result.skipped}, errors {result.errors}"
            )
            for detail in result.error_details[:20]:
                self.stdout.write(
                    f"  - {shown(detail['sabitoCustomerId'] or '(no id)')} {shown(detail['email'] or '')}: {shown(detail['reason'])}"
                )
            if len(result.error_details) > 20:
                self.stdout.write(f"  ... and {result.errors - 20} more errors (see the run history)")
