"""`manage.py sabito_health [--check NAME ...]`: the /readyz checks from a shell, for
processes that serve no HTTP (beat's container health check). Prints the verdicts
as JSON; exit status 0 when every check passed, 1 otherwise."""

import json

from django.core.management.base import BaseCommand

from sabito_sync.ops.health import readiness_checks


class Command(BaseCommand):
    help = "Run the readiness checks (database, migrations, broker, beat); exit 1 if one fails."
    requires_system_checks = []  # a health check every few seconds need not re-run them

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="append",
            choices=["database", "migrations", "broker", "beat"],
            help="Only this check (repeatable); the database is always checked when another needs it.",
        )

    def handle(self, *args, check, **options):
        checks = readiness_checks(only=check)
        self.stdout.write(json.dumps(checks, sort_keys=True))
        if not all(verdict["ok"] for verdict in checks.values()):
            raise SystemExit(1)
