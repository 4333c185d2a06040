"""The guide's log lines: every one starts with LOG_PREFIX, so operators can grep one word.

The lines that more than one interface writes are written here, once.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

LOG_PREFIX = "[Sabito Sync]"

Mappings = TypeVar("Mappings", bound=list)


def fan_out(logger: logging.Logger, find_mappings: Callable[[], Mappings]) -> Mappings:
    """The mappings a sync of all tenants goes through (in this process or as one task
    each), found by `find_mappings` between the two lines that announce it."""
    logger.info("%s Starting sync for all tenants...", LOG_PREFIX)
    mappings = find_mappings()
    logger.info("%s Found %d tenant mappings to sync", LOG_PREFIX, len(mappings))
    return mappings
