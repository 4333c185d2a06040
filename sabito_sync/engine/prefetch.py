"""Fetching ahead: a background thread fetches (and, but on a re-sync, validates) the
next pages while the current batch is written, and hands them over in batches
(docs/architecture.md, "Fetching ahead")."""

from __future__ import annotations

import contextvars
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .client import CustomerPage, SabitoClient
from .records import RejectedRecord, SabitoRecord, fingerprint_key, validate_records

# Pages fetched and validated ahead of the next batch to gather; the thread doing it
# gets this long to notice a stop (it may be inside a request) before it is left behind.
PREFETCH_PAGES = 2
PREFETCH_STOP_WAIT_SECONDS = 1.0

# How long a batch waits for its next page before it is written without it. Fetched
# ahead, the pages of a fast Sabito are already there; a Sabito slower than this
# hides the writes anyway, and each of its pages is committed (the checkpoint, the
# counters an operator watches) as soon as it arrives, as if there were no batches.
BATCH_PAGE_WAIT_SECONDS = 0.2


@dataclass
class ValidatedPage:
    """A page of Sabito records, each already turned into its Customer values (a dict)
    or the RejectedRecord saying why it cannot be, in the page's order; or, while the
    caller says most records are already stored (`PagePrefetcher.defer_validation`),
    a page of fingerprinted records left as the client typed them (SabitoRecords):
    the writer validates those of them it does not find stored already."""

    offset: int
    validated: list[dict[str, Any] | RejectedRecord | SabitoRecord]
    # The feed position after this page (`CustomerPage.resume_from`): the checkpoint
    # a run stores once the page is written.
    resume_from: dict[str, Any] | None = None
    # Each record's fingerprint (`CustomerPage.fingerprints`), or None.
    fingerprints: list[str] | None = None


@dataclass
class ValidatedBatch:
    """Consecutive pages written together: their records in feed order, and where the
    feed stands after the last of them (the checkpoint stored with the batch)."""

    pages: list[ValidatedPage]

    @property
    def validated(self) -> list[dict[str, Any] | RejectedRecord | SabitoRecord]:
        return [values for page in self.pages for values in page.validated]

    @property
    def fingerprints(self) -> list[str | None] | None:
        """The records' fingerprints in the same order, None for a record without
        one; None if none has one."""
        if all(page.fingerprints is None for page in self.pages):
            return None
        return [
            fingerprint
            for page in self.pages
            for fingerprint in ([None] * len(page.validated) if page.fingerprints is None else page.fingerprints)
        ]

    @property
    def offset(self) -> int:
        return self.pages[0].offset

    @property
    def resume_from(self) -> dict[str, Any] | None:
        return self.pages[-1].resume_from


def prefetch_depth(*, batch_records: int, page_size: int) -> int:
    """Pages to fetch ahead: a whole next batch, so it is ready when the current one is written."""
    return PREFETCH_PAGES + math.ceil(batch_records / page_size)


def sync_feed(
    client: SabitoClient,
    *,
    business_id: str,
    updated_after: datetime | None = None,
    start: dict[str, Any] | None = None,
) -> Iterator[CustomerPage]:
    """Sabito's pages of the business as a sync reads them: usual records typed
    (`SabitoRecord`), each with its fingerprint."""
    return client.iter_customer_pages(
        business_id=business_id,
        updated_after=updated_after,
        start=start,
        record_type=SabitoRecord,
        fingerprint_key=fingerprint_key(business_id),
    )


@contextmanager
def prefetched_pages(
    client: SabitoClient,
    *,
    business_id: str,
    updated_after: datetime | None,
    start: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    depth: int = PREFETCH_PAGES,
    defer_validation: bool = False,
) -> Iterator[PagePrefetcher]:
    """A PagePrefetcher of Sabito's pages in order (from `start`, a checkpoint, if
    given), fetched and validated by a background thread up to `depth` pages ahead of
    the caller, who takes them `batches()` at a time. Taking them ends early, even
    while a page is still on its way, once `should_stop()` is true. With
    `defer_validation`, from the first page on (see PagePrefetcher).

    The queue between the thread and the caller is bounded, so memory stays a few
    batches whatever the feed's length. An error while fetching (a SabitoError, say)
    is raised in the caller's thread, once the pages before it have been taken."""
    prefetcher = PagePrefetcher(
        sync_feed(client, business_id=business_id, updated_after=updated_after, start=start),
        validate=lambda records, fingerprints: validate_records(
            records, business_id=business_id, fingerprints=fingerprints
        ),
        depth=depth,
        should_stop=should_stop,
        defer_validation=defer_validation,
    )
    try:
        yield prefetcher
    finally:
        prefetcher.stop()


class PagePrefetcher:
    """Runs a page iterator in a daemon thread, at most `depth` pages ahead of the
    caller, who takes the pages in order, in batches (`batches`).

    `validate(records, fingerprints)` turns a page's records into ValidatedPage's
    `validated`. While `defer_validation` is true (the caller sets it between
    batches), a page whose records are fingerprinted is handed over unvalidated: on a
    re-sync nearly every record is stored already, and checking one costs more than
    finding its fingerprint in the database."""

    PAGE, END, ERROR = "page", "end", "error"
    # What `_next_page` returns when the wait it was given ran out.
    WAITED = object()

    # How often a caller waiting for a page looks at `should_stop`.
    STOP_POLL_SECONDS = 0.1

    def __init__(
        self,
        pages: Iterator[CustomerPage],
        *,
        validate: Callable[[list[Any], list[str] | None], list[dict[str, Any] | RejectedRecord]],
        depth: int = PREFETCH_PAGES,
        should_stop: Callable[[], bool] = lambda: False,
        defer_validation: bool = False,
    ) -> None:
        self._pages = pages
        self._validate = validate
        self._should_stop = should_stop
        self.defer_validation = defer_validation
        # Whether iterating ended because `should_stop` said so, not at the feed's end.
        self.stopped_early = False
        # (kind, what): (PAGE, a ValidatedPage), (END, None) or (ERROR, the exception).
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        # In the caller's context, so the client's lines (retries) carry the sync's ids.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._fetch,), name="sabito-prefetch", daemon=True
        )
        self._thread.start()

    def batches(self, *, max_records: int, page_wait: float = BATCH_PAGE_WAIT_SECONDS) -> Iterator[ValidatedBatch]:
        """The pages in batches of whole pages: a batch closes once it holds
        `max_records` records, when its next page has not come within `page_wait`
        seconds, when `should_stop()` turns true, or at the end of the feed.

        A fetching error ends iterating like the end of the feed, except that it is
        raised once the pages before it have been handed over as a last batch: what was
        fetched is written, and a resumed run starts after it."""
        pages: list[ValidatedPage] = []
        records = 0
        while True:
            try:
                page = self._next_page(until=time.monotonic() + page_wait if pages else math.inf)
            except Exception:
                if pages:
                    yield ValidatedBatch(pages)
                raise
            if page is None:
                if pages:
                    yield ValidatedBatch(pages)
                return
            if page is not self.WAITED:
                pages.append(page)
                records += len(page.validated)
                if records < max_records and not self._should_stop():
                    continue
            yield ValidatedBatch(pages)
            pages, records = [], 0

    def _next_page(self, *, until: float = math.inf) -> Any:  # a ValidatedPage, None or WAITED
        """The next page; None at the end of the feed or once `should_stop()` is true
        while waiting; WAITED at `until` (a `time.monotonic()` value) if nothing came."""
        while True:
            timeout = min(self.STOP_POLL_SECONDS, until - time.monotonic())
            if timeout <= 0:
                return self.WAITED
            try:
                kind, item = self._queue.get(timeout=timeout)
            except queue.Empty:
                if self._should_stop():
                    self.stopped_early = True
                    return None
                continue
            if kind == self.END:
                return None
            if kind == self.ERROR:
                raise item
            return item

    def stop(self) -> None:
        """Stop fetching (the caller is done, or failed) and wait briefly for the thread,
        which finishes its current request at most: it is a daemon, it never blocks exit."""
        self._stopping.set()
        self._thread.join(timeout=PREFETCH_STOP_WAIT_SECONDS)

    def _fetch(self) -> None:
        try:
            for page in self._pages:
                fingerprints = page.fingerprints
                records = page.records
                if fingerprints is None or not self.defer_validation:
                    records = self._validate(records, fingerprints)
                validated = ValidatedPage(
                    offset=page.offset, validated=records, resume_from=page.resume_from, fingerprints=fingerprints
                )
                if not self._put((self.PAGE, validated)):
                    return
            self._put((self.END, None))
        except BaseException as exc:  # handed over and raised in the caller's thread
            self._put((self.ERROR, exc))
        finally:
            close = getattr(self._pages, "close", None)
            if close is not None:
                close()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
