"""How fetched pages become the batches the sync writes: whole pages, closed at the
batch's size, when the run is asked to stop, when the next page is slow to come, or
at a fetching error, after handing over what came before it."""

import threading
import time

import pytest

from sabito_sync.engine.client import CustomerPage, SabitoError
from sabito_sync.engine.prefetch import PagePrefetcher


def page(offset: int, size: int = 10) -> CustomerPage:
    return CustomerPage(
        offset=offset, records=list(range(offset, offset + size)), resume_from={"offset": offset + size, "tail": []}
    )


def prefetcher(pages, **kwargs) -> PagePrefetcher:
    return PagePrefetcher(iter(pages), validate=lambda records, _fingerprints: list(records), depth=10, **kwargs)


def offsets(batches) -> list[list[int]]:
    return [[page.offset for page in batch.pages] for batch in batches]


def test_a_batch_is_whole_pages_closed_once_it_holds_enough_records():
    pages = prefetcher([page(offset) for offset in range(0, 100, 10)])

    batches = list(pages.batches(max_records=25))

    assert offsets(batches) == [[0, 10, 20], [30, 40, 50], [60, 70, 80], [90]]
    assert [len(batch.validated) for batch in batches] == [30, 30, 30, 10]
    assert batches[0].resume_from == {"offset": 30, "tail": []}  # after the batch's last page


def test_a_stop_request_closes_the_batch_after_the_page_at_hand():
    pages = prefetcher([page(offset) for offset in range(0, 100, 10)], should_stop=lambda: True)

    first = next(pages.batches(max_records=1000))

    assert offsets([first]) == [[0]]


def test_a_stop_request_while_waiting_for_a_page_hands_over_what_was_gathered():
    more, asked = threading.Event(), threading.Event()

    def fetched():
        yield page(0)
        yield page(10)
        more.wait(timeout=5)  # Sabito taking its time with the third page
        yield page(20)

    pages = PagePrefetcher(
        fetched(), validate=lambda records, _fingerprints: list(records), depth=10, should_stop=asked.is_set
    )
    threading.Timer(0.3, asked.set).start()

    batches = list(pages.batches(max_records=1000))
    more.set()
    pages.stop()

    assert offsets(batches) == [[0, 10]] and pages.stopped_early


def test_a_fetching_error_comes_after_the_pages_before_it():
    def fetched():
        yield page(0)
        yield page(10)
        raise SabitoError("Sabito answered HTTP 503 at offset 20")

    batches = prefetcher(fetched()).batches(max_records=1000)

    assert offsets([next(batches)]) == [[0, 10]]
    with pytest.raises(SabitoError, match="offset 20"):
        next(batches)


def test_a_page_slow_to_come_leaves_the_batch_before_it_to_be_written():
    def fetched():
        yield page(0)
        yield page(10)
        time.sleep(0.5)  # Sabito taking its time
        yield page(20)

    batches = list(prefetcher(fetched()).batches(max_records=1000, page_wait=0.2))

    assert offsets(batches) == [[0, 10], [20]]
