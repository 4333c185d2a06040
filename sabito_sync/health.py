"""Kept for host projects whose settings name `sabito_sync.health.ProbeMiddleware` or
`sabito_sync.health:HeartbeatScheduler` (1.0): both live in `sabito_sync.ops.health`."""

from .ops.health import HeartbeatScheduler, ProbeMiddleware

__all__ = ["HeartbeatScheduler", "ProbeMiddleware"]
