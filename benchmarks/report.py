"""The benchmark's report: the counters checked, the targets judged, the table printed.

Plain functions of the figures `runner.py` collects (the same dict it writes as JSON).
"""

from __future__ import annotations

from scenarios import LINK_LATENCY_SECONDS, PAGE_SIZE, SCENARIOS

TARGETS = {
    "full_vs_baseline_min": 10.0,
    "full_vs_database_floor_max": 2.0,
    "resync_vs_fetch_limit_max": 4.0,
    "incremental_seconds_max": 0.5,
    "rss_growth_max": 0.20,
    "fanout_seconds_max": 60.0,
    "tick_seconds_max": 60.0,
    "status_p95_ms_max": 100.0,
}

# Scenarios measured against both limits in the table.
AGAINST_LIMITS = ("fetch_limit", "limit", "full", "resync", "resync_from_memory", "copy_floor")


def statements_per_unit(row: dict) -> list[int]:
    """The distinct statement counts a sync scenario saw per unit of writing: per batch
    where the sync writes pages in batches, per page where it writes page by page."""
    return row.get("queries_per_batch", row.get("queries_per_page", []))


def check_counts(size: int, figures: dict) -> None:
    """The benchmark is worthless if the sync did not do the work: verify the counters."""
    full, incremental = figures["full"], figures["incremental"]
    problems = []
    if not (full["success"] and full["created"] == size and full["records"] == size):
        problems.append(f"full sync: {full}")
    for name, key in (("re-sync", "resync"), ("re-sync from memory", "resync_from_memory")):
        row = figures[key]
        if not (row["success"] and row["skipped"] == size and row["records"] == size):
            problems.append(f"{name}: {row}")
    if not (incremental["success"] and incremental["updated"] == incremental["edited"]):
        problems.append(f"incremental: {incremental}")
    latency_full = figures.get("latency_full")
    if latency_full and not (latency_full["success"] and latency_full["created"] == size):
        problems.append(f"full sync with latency: {latency_full}")
    if problems:
        raise RuntimeError("the sync's counters are not what the scenario implies: " + "; ".join(problems))


def evaluate_targets(report: dict) -> dict:
    targets: dict = {}
    sizes = report["sizes"]
    largest = str(max(int(size) for size in sizes))
    figures = sizes[largest]
    full, _resync, baseline = figures["full"]["seconds"], figures["resync"]["seconds"], figures["baseline"]["seconds"]
    targets[f"full sync of {int(largest):,} >= 10x faster than the naive baseline"] = verdict(
        baseline / full, ">=", TARGETS["full_vs_baseline_min"], "x"
    )
    targets[f"full sync of {int(largest):,} new within 2x the database floor (median round)"] = verdict(
        against_limit(figures, "full"), "<=", TARGETS["full_vs_database_floor_max"], "x"
    )
    targets[f"unchanged re-sync of {int(largest):,} within 4x the fetch limit (median round)"] = verdict(
        against_limit(figures, "resync"), "<=", TARGETS["resync_vs_fetch_limit_max"], "x"
    )
    incremental = figures["incremental"]
    targets[f"incremental sync ({incremental['edited']:,} changed of {int(largest):,}) under 0.5 s"] = verdict(
        incremental["seconds"], "<", TARGETS["incremental_seconds_max"], " s"
    )
    # Every batch of a scenario costs the same statements, whatever it holds; a first
    # load's batches of new customers one fewer (they find no candidates first).
    # (A scenario of one batch, as the incremental sync is, has no count between batches.)
    per_scenario = {
        key: counts
        for key in ("full", "resync", "incremental")
        if (counts := sorted({count for size in sizes.values() for count in statements_per_unit(size[key])}))
    }
    targets["constant SQL queries per batch (each scenario)"] = {
        "value": ", ".join(f"{key} {counts}" for key, counts in per_scenario.items()),
        "met": bool(per_scenario) and all(len(counts) == 1 for counts in per_scenario.values()),
    }
    if len(sizes) > 1:
        smallest = str(min(int(size) for size in sizes))
        growth = figures["full"]["peak_rss_mb"] / sizes[smallest]["full"]["peak_rss_mb"] - 1
        targets[f"peak RSS grows < 20% from {int(smallest):,} to {int(largest):,}"] = verdict(
            growth * 100, "<", TARGETS["rss_growth_max"] * 100, "%"
        )
    fanout = report.get("fanout")
    if fanout and fanout.get("seconds") is not None:
        targets[f"fan-out of {fanout['mappings']} mappings under 60 s"] = verdict(
            fanout["seconds"], "<", TARGETS["fanout_seconds_max"], " s"
        )
    tick = report.get("tick")
    if tick and tick.get("seconds") is not None:
        targets[f"beat tick of {tick['mappings']:,} mappings with nothing new under 60 s"] = verdict(
            tick["seconds"], "<", TARGETS["tick_seconds_max"], " s"
        )
    status = report.get("status")
    if status and "latency_ms" in status:
        targets["status API p95 under 100 ms (20 clients)"] = verdict(
            status["latency_ms"]["p95"], "<", TARGETS["status_p95_ms_max"], " ms"
        )
        targets["status API constant query count"] = {"value": status["queries"], "met": status["constant_queries"]}
        probes = status.get("probes_under_256_connections", {}).get("probe port")
        if probes:
            targets["probes answer within 1 s under 256 connections (probe port)"] = {
                "value": f"{probes['failed']} of {probes['sent']} failed",
                "met": probes["failed"] == 0,
            }
    return targets


def against_limit(figures: dict, key: str) -> float:
    """The full sync against the database floor, or the re-sync against the fetch limit:
    the median of the rounds' ratios, each against its own round's limit (a report
    from before the limits were measured per round: the median figures' ratio)."""
    ratio, limit = {
        "full": ("full_vs_database_floor", "copy_floor"),
        "resync": ("resync_vs_fetch_limit", "fetch_limit"),
    }[key]
    if ratio in figures:
        return figures[ratio]
    return figures[key]["seconds"] / figures[limit]["seconds"]


def verdict(value: float, relation: str, bound: float, unit: str) -> dict:
    met = {"<": value < bound, "<=": value <= bound, ">=": value >= bound}[relation]
    return {"value": round(value, 3), "bound": f"{relation} {bound:g}{unit}", "met": met}


def ratio_cell(figures: dict, key: str, judged: str, ratio: float) -> str:
    """A scenario against a limit; for the scenario a target judges on that limit, the
    median of the rounds' own ratios (marked *), which the target uses."""
    if key not in AGAINST_LIMITS:
        return ""
    if key == judged and len(figures.get("rounds", [])) > 1:
        return f"{against_limit(figures, key):.2f}x*"
    return f"{ratio:.2f}x"


def render_table(report: dict) -> str:
    header = (
        "N",
        "scenario",
        "wall s",
        "records/s",
        "SQL/batch",
        "CPU s sync+DB",
        "peak RSS MB",
        "vs fetch limit",
        "vs database floor",
        "baseline/this",
    )
    rows = []
    for size, figures in report["sizes"].items():
        fetch_limit, database_floor = figures["fetch_limit"]["seconds"], figures["copy_floor"]["seconds"]
        baseline = figures["baseline"]["seconds"]
        for key, label in SCENARIOS:
            if key not in figures:
                continue
            row = figures[key]
            seconds = row["seconds"]
            if key in ("full", "resync", "resync_from_memory") and len(figures.get("rounds", [])) > 1:
                label += f" (median of {len(figures['rounds'])})"
            if key == "baseline" and row["extrapolated"]:
                label += f" (extrapolated from the first {row['measured_records']:,})"
            records = row["edited"] if key == "incremental" else int(size)
            if key == "baseline":
                statements = f"~{row['queries'] / max(1, row['measured_records']) * PAGE_SIZE:.0f}/page"
            elif key in ("full", "resync", "resync_from_memory", "incremental", "latency_full"):
                statements = ",".join(str(count) for count in statements_per_unit(row)) or "-"
            else:
                statements = ""
            cpu = ""
            if "database_cpu_seconds" in row:
                cpu = f"{row['process_cpu_seconds']:.2f}+{row['database_cpu_seconds']:.2f}"
            elif "process_cpu_seconds" in row:
                cpu = f"{row['process_cpu_seconds']:.2f}"
            rows.append(
                (
                    f"{int(size):,}",
                    label,
                    f"{seconds:.2f}",
                    f"{records / seconds:,.0f}",
                    statements,
                    cpu,
                    f"{row['peak_rss_mb']:.0f}",
                    ratio_cell(figures, key, "resync", seconds / fetch_limit),
                    ratio_cell(figures, key, "full", seconds / database_floor),
                    f"{baseline / seconds:.1f}x" if key == "full" else "",
                )
            )
        simulator = figures["simulator"]
        rows.append(
            (
                f"{int(size):,}",
                "simulator alone: raw client, no parsing",
                f"{simulator['seconds']:.2f}",
                f"{simulator['records_per_second']:,.0f}",
                "",
                "",
                "",
                "",
                "",
                "",
            )
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [" | ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=False))]
    lines.append("-+-".join("-" * width for width in widths))
    lines += [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)) for row in rows]
    fanout = report.get("fanout")
    if fanout and fanout.get("seconds") is not None:
        lines.append("")
        lines.append(
            f"Fan-out: {fanout['mappings']} mappings x {fanout['customers_per_mapping']} customers, Celery prefork x2, "
            f"Redis: {fanout['seconds']:.1f} s wall, {fanout['worker_seconds_per_mapping'] * 1000:.0f} ms worker time "
            f"per mapping (sync {fanout['mean_run_seconds'] * 1000:.0f} ms + overhead "
            f"{fanout['overhead_seconds_per_mapping'] * 1000:.0f} ms); "
            f"{fanout['succeeded']} succeeded, {fanout['failed']} failed"
        )
    tick = report.get("tick")
    if tick and tick.get("seconds") is not None:
        one = tick["nothing_new"]
        lines.append(
            f"Beat tick, {tick['mappings']:,} mappings with nothing new, chunks of {tick['chunk_size']}, Celery prefork x2, "
            f"Redis: {tick['seconds']:.1f} s from the fan-out to the last run, {tick['worker_ms_per_mapping']:.1f} ms "
            f"worker time per mapping; {tick['succeeded']:,} succeeded. One mapping: "
            f"{one['statements_per_mapping']:g} statements, {one['in_process_ms']:.1f} ms in-process, "
            f"{one['chunk_task_ms_per_mapping']:.1f} ms of a chunk task's body"
        )
    status = report.get("status")
    if status and "latency_ms" in status:
        latency = status["latency_ms"]
        lines.append(
            f"Status API, {status['mappings']} mappings, 20 connections, gunicorn x2: p50 {latency['p50']:.1f} ms, "
            f"p95 {latency['p95']:.1f} ms, p99 {latency['p99']:.1f} ms, {status['requests_per_second']:.0f} req/s, "
            f"queries per request {status['queries']}"
        )
        for where, probes in status.get("probes_under_256_connections", {}).items():
            lines.append(
                f"  /healthz on the {where}, 256 connections on the status API: {probes['failed']} of "
                f"{probes['sent']} probes failed their 1 s timeout; answered p50 {probes['p50_ms']:.0f} ms, "
                f"max {probes['max_ms']:.0f} ms"
            )
    lines.append("")
    lines.append("* the median of the rounds' ratios, each round against the limits measured beside it")
    if report["quick"]:
        lines.append("Quick mode: the targets are for N = 100,000; shown for information only.")
    for size, figures in report["sizes"].items():
        if "resync_from_memory_vs_fetch_limit" in figures:
            lines.append(
                f"[info] N = {int(size):,}: the unchanged re-sync with Sabito's pages from memory, "
                f"{figures['resync_from_memory_vs_fetch_limit']:.2f}x the fetch limit (median round): "
                "what it costs beyond getting the pages"
            )
        if "latency_full" in figures:
            ratio = figures["latency_full"]["seconds"] / figures["latency_limit"]["seconds"]
            lines.append(
                f"[info] N = {int(size):,}, {LINK_LATENCY_SECONDS * 1000:.0f} ms per Sabito response: "
                f"full sync {ratio:.2f}x the project client's fetching alone"
            )
    for name, target in report["targets"].items():
        value = target["value"]
        bound = target.get("bound", "")
        lines.append(f"[{'met' if target['met'] else 'NOT MET'}] {name}: {value} {bound}".rstrip())
    return "\n".join(lines)
