"""The guide's log lines: every one starts with LOG_PREFIX, so operators can grep one
word. The lines that more than one interface writes, written once; the plain log's
formatter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

LOG_PREFIX = "[Sabito Sync]"

Mappings = TypeVar("Mappings", bound=list[Any])


def fan_out(logger: logging.Logger, find_mappings: Callable[[], Mappings]) -> Mappings:
    """The mappings a sync of all tenants goes through (in this process or as one task
    each), found by `find_mappings` between the two lines that announce it."""
    logger.info("%s Starting sync for all tenants...", LOG_PREFIX)
    mappings = find_mappings()
    logger.info("%s Found %d tenant mappings to sync", LOG_PREFIX, len(mappings))
    return mappings


def log_all_completed(logger: logging.Logger, *, total_tenants: int, created: int, updated: int, errors: int) -> None:
    """The guide's summary of a sync of all tenants, in this process or across a fan-out's tasks."""
    logger.info(
        "%s All tenants sync completed: { totalTenants: %d, totalCreated: %d, totalUpdated: %d, totalErrors: %d }",
        LOG_PREFIX,
        total_tenants,
        created,
        updated,
        errors,
    )


def _control_escapes(*, keep: str = "") -> dict[int, str]:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    codes = [*range(0x20), *range(0x7F, 0xA0)]
    return {code: named.get(chr(code), f"\\x{code:02x}") for code in codes if chr(code) not in keep}


# C0 and C1 control characters and DEL as escapes (`\n`, `\x1b`): in a message every one,
# in a traceback all but its line breaks.
MESSAGE_ESCAPES = _control_escapes()
TRACEBACK_ESCAPES = _control_escapes(keep="\n")


def escape_controls(text: str) -> str:
    """`text` with its control characters escaped, for a line a person reads."""
    return text.translate(MESSAGE_ESCAPES)


class PlainFormatter(logging.Formatter):
    """The plain log's formatter: a record's message has its control characters escaped,
    so no value from outside (a business name, a record from Sabito, an error body) can
    start a forged line of its own or drive the reader's terminal."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape_controls(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def formatException(self, ei: Any) -> str:
        return super().formatException(ei).translate(TRACEBACK_ESCAPES)
