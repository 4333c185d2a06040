"""`manage.py sabito_prune_runs [--older-than DAYS]`: delete old sync runs now."""

from django.core.management.base import BaseCommand, CommandError

from sabito_sync.conf import SabitoSettingsError, load_sabito_settings
from sabito_sync.services.retention import prune_runs


class Command(BaseCommand):
    help = (
        "Delete sync runs older than DAYS (default SABITO_RUN_RETENTION_DAYS), keeping each mapping's "
        "latest run and latest successful run."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", type=int, metavar="DAYS", help="Age in days (default: SABITO_RUN_RETENTION_DAYS)."
        )

    def handle(self, *args, older_than, **options):
        if older_than is None:
            try:
                older_than = load_sabito_settings().run_retention_days
            except SabitoSettingsError as exc:
                raise CommandError(f"Invalid Sabito settings: {exc}", returncode=2) from None
            if older_than == 0:
                self.stdout.write("SABITO_RUN_RETENTION_DAYS is 0: every run is kept; nothing deleted.")
                return
        if older_than < 0:
            raise CommandError("--older-than must be 0 or more days.", returncode=2)
        deleted = prune_runs(older_than_days=older_than)
        self.stdout.write(f"Deleted {deleted} sync runs older than {older_than} days.")
