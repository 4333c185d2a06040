"""How many customer records per second the Sabito simulator serves to one client.

Run by hand (not a test): `.venv/bin/python scripts/simulator_throughput.py [--customers N]`.
The simulator runs in its own process, as in the benchmark, so client and server do
not share a GIL. Two clients page through every record with limit=100 over one
keep-alive connection: raw `http.client` (what the server alone can do) and a
`requests.Session` that also parses the JSON (what a sync client sees).
"""

import argparse
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "throughput-key"


def page_raw(url: str, business_id: str, limit: int) -> int:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    records = offset = 0
    while True:
        connection.request(
            "GET",
            f"/api/customers?businessId={business_id}&limit={limit}&offset={offset}",
            headers={"X-API-Key": API_KEY},
        )
        body = connection.getresponse().read()
        # Counting record separators is enough here: parsing is measured by the other client.
        count = body.count(b'"sourceType"')
        records += count
        offset += limit
        if count < limit:
            return records


def page_requests(url: str, business_id: str, limit: int) -> int:
    session = requests.Session()
    session.headers["X-API-Key"] = API_KEY
    records = offset = 0
    while True:
        response = session.get(
            f"{url}/api/customers",
            params={"businessId": business_id, "limit": limit, "offset": offset},
            timeout=(5, 30),
        )
        page = response.json()["data"]
        records += len(page)
        offset += limit
        if len(page) < limit:
            return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sabito_simulator",
            "--port",
            "0",
            "--businesses",
            "1",
            "--customers",
            str(options.customers),
            "--api-key",
            API_KEY,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        business_id = server.stdout.readline().split()[0]
        for name, client in (("http.client, no parsing", page_raw), ("requests + .json()", page_requests)):
            for _ in range(options.rounds):
                started = time.perf_counter()
                records = client(url, business_id, options.limit)
                elapsed = time.perf_counter() - started
                pages = -(-records // options.limit)
                print(
                    f"{name:24} {records} records in {elapsed:.2f} s: {records / elapsed:,.0f} records/s, "
                    f"{pages / elapsed:,.0f} pages/s"
                )
        stats = json.loads(requests.get(f"{url}/_simulator/stats", timeout=5).text)
        print(f"simulator stats: {stats['customerRequests']} requests, {stats['recordsServed']} records served")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
