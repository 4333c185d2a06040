"""`manage.py sabito_simulator`: serve the Sabito simulator in the foreground until
Ctrl-C or SIGTERM (the demo stack's `simulator` process).

A project command, not the app's: the simulator (`sabito_simulator`, no Django in it)
is a development tool that the `sabito_sync` package and the production image leave out.
"""

from django.core.management.base import BaseCommand, CommandError

from sabito_simulator.cli import add_simulator_arguments, describe_businesses, serve_until_stopped, simulator_options


class Command(BaseCommand):
    help = "Serve a simulated Sabito API (GET /api/customers plus /_simulator/ controls) until Ctrl-C."
    # The simulator needs no database nor Sabito settings: it is what those point at.
    requires_system_checks = []

    def add_arguments(self, parser):
        add_simulator_arguments(parser)

    def handle(self, *args, **options):
        def announce(simulator):
            self.stdout.write(
                f"Sabito simulator serving {simulator.url} for businesses {describe_businesses(simulator)}; Ctrl-C to stop."
            )
            self.stdout.flush()

        try:
            # -v 2 logs every request; the default stays quiet so the benchmark is not I/O bound.
            serve_until_stopped(simulator_options(options, verbose=options["verbosity"] >= 2), on_ready=announce)
        except (OSError, ValueError) as exc:
            raise CommandError(
                f"Cannot start the Sabito simulator on {options['host']}:{options['port']}: {exc}"
            ) from exc
