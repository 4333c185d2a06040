"""Fetching ahead: the next pages arrive, validated, while the current one is written.

Writing a page is mostly waiting for the database, fetching one mostly waiting for
Sabito; done one after the other a sync takes the sum of both, done side by side
only the longer.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterator

from .client import CustomerPage, SabitoClient
from .records import RejectedRecord, validate_records

# Pages fetched and validated ahead of the one being written; the thread doing it
# gets this long to notice a stop (it may be inside a request) before it is left behind.
PREFETCH_PAGES = 2
PREFETCH_STOP_WAIT_SECONDS = 1.0


@dataclass
class ValidatedPage:
    """A page of Sabito records, each already turned into its Customer values (a dict)
    or the RejectedRecord saying why it cannot be, in the page's order."""

    offset: int
    validated: list[dict | RejectedRecord]
    # The feed position after this page (`CustomerPage.resume_from`): the checkpoint
    # a run stores once the page is written.
    resume_from: dict | None = None


@contextmanager
def prefetched_pages(
    client: SabitoClient,
    *,
    business_id: str,
    updated_after: datetime | None,
    start: dict | None = None,
    should_stop: Callable[[], bool] = lambda: False,
):
    """Sabito's pages in order (from `start`, a checkpoint, if given), fetched and
    validated by a background thread up to PREFETCH_PAGES ahead of the page being
    written. Iterating ends early, even while a page is still on its way, once
    `should_stop()` is true.

    The queue between the thread and the caller is bounded, so memory stays a few
    pages whatever the feed's length. An error while fetching (a SabitoError, say)
    is raised here, in the caller's thread, when the caller reaches that page."""
    pages = client.iter_customer_pages(business_id=business_id, updated_after=updated_after, start=start)
    prefetcher = PagePrefetcher(
        pages, validate=lambda records: validate_records(records, business_id=business_id), should_stop=should_stop
    )
    try:
        yield prefetcher
    finally:
        prefetcher.stop()


class PagePrefetcher:
    """Runs a page iterator in a daemon thread, at most `depth` pages ahead of the
    caller, who iterates the prefetcher to get the pages in order."""

    PAGE, END, ERROR = "page", "end", "error"

    # How often a caller waiting for a page looks at `should_stop`.
    STOP_POLL_SECONDS = 0.25

    def __init__(
        self,
        pages: Iterator[CustomerPage],
        *,
        validate: Callable[[list], list],
        depth: int = PREFETCH_PAGES,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        self._pages = pages
        self._validate = validate
        self._should_stop = should_stop
        # Whether iterating ended because `should_stop` said so, not at the feed's end.
        self.stopped_early = False
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        # In the caller's context, so the client's lines (retries) carry the sync's ids.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._fetch,), name="sabito-prefetch", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[ValidatedPage]:
        while True:
            try:
                kind, item = self._queue.get(timeout=self.STOP_POLL_SECONDS)
            except queue.Empty:
                if self._should_stop():
                    self.stopped_early = True
                    return
                continue
            if kind == self.END:
                return
            if kind == self.ERROR:
                raise item
            yield item

    def stop(self) -> None:
        """Stop fetching (the caller is done, or failed) and wait briefly for the thread,
        which finishes its current request at most: it is a daemon, it never blocks exit."""
        self._stopping.set()
        self._thread.join(timeout=PREFETCH_STOP_WAIT_SECONDS)

    def _fetch(self) -> None:
        try:
            for page in self._pages:
                validated = ValidatedPage(
                    offset=page.offset, validated=self._validate(page.records), resume_from=page.resume_from
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

    def _put(self, item) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
