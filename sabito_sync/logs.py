"""The guide's log lines: every one starts with LOG_PREFIX, so operators can grep one word.

The lines that more than one interface writes are written here, once.
"""

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
