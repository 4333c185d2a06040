"""`manage.py sabito_simulator`: serve the Sabito simulator in the foreground until Ctrl-C.

The simulator itself lives in `sabito_sync.simulator` (no Django in it), so the demo,
the tests and the benchmark run the same server this command does.
"""

from django.core.management.base import BaseCommand, CommandError

from sabito_sync.simulator import add_simulator_arguments, describe_businesses, simulator_from_options


class Command(BaseCommand):
    help = "Serve a simulated Sabito API (GET /api/customers plus /_simulator/ controls) until Ctrl-C."

    def add_arguments(self, parser):
        add_simulator_arguments(parser)

    def handle(self, *args, **options):
        try:
            # -v 2 logs every request; the default stays quiet so the benchmark is not I/O bound.
            simulator = simulator_from_options(options, verbose=options["verbosity"] >= 2).bind()
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot start the Sabito simulator on {options['host']}:{options['port']}: {exc}")
        self.stdout.write(
            f"Sabito simulator serving {simulator.url} for businesses {describe_businesses(simulator)}; Ctrl-C to stop."
        )
        self.stdout.flush()
        simulator.serve_forever()
