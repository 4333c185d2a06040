"""The Sabito simulator: a real HTTP server that speaks Sabito's `GET /api/customers`.

The demo, the end-to-end tests, the chaos tests and the benchmark all talk to it over
real HTTP. It is plain standard library on purpose (`python -m sabito_simulator`
runs it without Django), and each of them starts it the same way: `with
serving(...) as simulator:` serves it from a background thread for the block.

What it serves
    GET /api/customers?businessId=&updatedAfter=&limit=&offset=   (header X-API-Key)
        {"data": [customer, ...]}, customers with `updatedAt > updatedAfter` ordered by
        (updatedAt, id): the order in which offset pagination drifts when records are
        edited mid-scan. `limit` defaults to 100 and is silently capped at
        `max_page_size`, as real servers do.

    Control endpoints, no key needed (tests, demo, benchmark):
        GET  /_simulator/businesses                  ids, names, customer counts
        GET  /_simulator/customers?businessId=       every current record, in served order
        POST /_simulator/edit|add|delete             {"businessId", "count"} -> {"ids": [...]}
        GET  /_simulator/faults, POST /_simulator/faults   fault config ({} resets)
        GET  /_simulator/stats                       requests, customerRequests, recordsServed,
                                                     statuses, faultsInjected, driftEditedIds
        POST /_simulator/reset                       seeded data, no faults, zeroed stats

The data is deterministic for a seed: the same seed gives the same businesses and
customers (ids, emails, names, timestamps) in any process started on the same UTC day.
With a state file (`--state-file`, `state_file=`) the changes made through the
controls are kept and replayed on the next start, on the first start's epoch.
Faults (`Faults`) apply to /api/customers only, after the key and the parameters
have been checked, so a 401 or 400 always means what it says.

It is a development and test tool, kept out of the `sabito_sync` package (and of its
wheel and the production image): its control endpoints need no key.

    data.py     the seeded businesses and customers
    faults.py   the fault settings and the hostile records
    server.py   `SabitoSimulator` (the HTTP API and the controls) and `serving()`
    journal.py  the state file: the controls' changes, kept across restarts
    cli.py      `python -m sabito_simulator`
"""

from .data import UnknownBusinessError
from .faults import EditDuringPaging, Faults
from .server import SabitoSimulator, serving

__all__ = ["EditDuringPaging", "Faults", "SabitoSimulator", "UnknownBusinessError", "serving"]
