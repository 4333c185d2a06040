"""Who may do what with Sabito mappings, one definition for the API, the admin and the
services. Tenant roles (`Membership`) act inside their own tenant; platform operators
act in any tenant through Django's model permissions on `SabitoMapping`, and only they
connect, re-point or delete a mapping (one Sabito API key reads every business).
`is_staff` grants nothing here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from django.contrib.auth.models import AnonymousUser

from ..models import Membership, Tenant

if TYPE_CHECKING:
    # django-stubs' placeholder for the user model: its mypy plugin makes it the
    # project's AUTH_USER_MODEL (the model `request.user` is typed with).
    from django.contrib.auth.models import _User

# A user as Django's authentication hands them over (`request.user`): the project's
# user model, or the anonymous user.
User: TypeAlias = "_User | AnonymousUser"
# The user acting, or None for the platform itself (a management command, a
# scheduled task), which is trusted.
Actor: TypeAlias = "_User | AnonymousUser | None"

APP_LABEL = "sabito_sync"


@dataclass(frozen=True)
class Rule:
    # Tenant roles that may do it inside their own tenant.
    roles: frozenset[str]
    # Any one of these model permissions lets an operator do it in any tenant.
    permissions: tuple[str, ...]
    # The refusal, saying who may.
    refusal: str


class Action(enum.Enum):
    READ = Rule(
        roles=frozenset({Membership.Role.ADMIN, Membership.Role.MEMBER}),
        permissions=(f"{APP_LABEL}.view_sabitomapping", f"{APP_LABEL}.change_sabitomapping"),
        refusal="Only members of this tenant, or platform operators with the sabito_sync.view_sabitomapping "
        "permission, may read its Sabito mappings and syncs.",
    )
    MANAGE = Rule(
        roles=frozenset({Membership.Role.ADMIN}),
        permissions=(f"{APP_LABEL}.change_sabitomapping",),
        refusal="Only admins of this tenant, or platform operators with the sabito_sync.change_sabitomapping "
        "permission, may rename, pause, resume or sync its Sabito mappings, or cancel their syncs.",
    )
    CONNECT = Rule(
        roles=frozenset(),
        permissions=(f"{APP_LABEL}.add_sabitomapping",),
        refusal="Only platform operators with the sabito_sync.add_sabitomapping permission may connect a Sabito "
        "business to a tenant; ask one to create the mapping.",
    )
    REPOINT = Rule(
        roles=frozenset(),
        permissions=(f"{APP_LABEL}.change_sabitomapping",),
        refusal="Only platform operators with the sabito_sync.change_sabitomapping permission may change a "
        "mapping's Sabito business or tenant.",
    )
    DELETE = Rule(
        roles=frozenset(),
        permissions=(f"{APP_LABEL}.delete_sabitomapping",),
        refusal="Only platform operators with the sabito_sync.delete_sabitomapping permission may delete a "
        "Sabito mapping.",
    )


class ActionRefused(Exception):
    """The actor may not do this; the message says who may."""


# Holding any of these makes a user a platform operator, who may name any tenant
# (each action still checks its own permission).
OPERATOR_PERMISSIONS = tuple(f"{APP_LABEL}.{verb}_sabitomapping" for verb in ("view", "add", "change", "delete"))


class Unknown(enum.Enum):
    """The type of `UNKNOWN` (a one-member enum, so type checkers can tell it from a role)."""

    UNKNOWN = "unknown"


# Passed as `role` when the caller has not looked the role up yet.
UNKNOWN = Unknown.UNKNOWN

# A role argument: the user's role in the tenant, None (no membership) or UNKNOWN.
RoleArg: TypeAlias = str | Literal[Unknown.UNKNOWN] | None


def tenant_role(user: User, tenant: Tenant | None) -> str | None:
    """The user's role in the tenant, or None without a membership."""
    if tenant is None or not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, tenant=tenant).values_list("role", flat=True).first()


def is_platform_operator(user: User) -> bool:
    return any(user.has_perm(permission) for permission in OPERATOR_PERMISSIONS)


def may(user: User, action: Action, *, tenant: Tenant | None, role: RoleArg = UNKNOWN) -> bool:
    """Whether `user` may do `action` in `tenant`. `role` is the user's role there
    when already known (None: not a member), to spare a query."""
    rule = action.value
    if role is UNKNOWN:
        role = tenant_role(user, tenant)
    if role in rule.roles:
        return True
    return any(user.has_perm(permission) for permission in rule.permissions)


def ensure_may(actor: Actor, action: Action, *, tenant: Tenant | None, role: RoleArg = UNKNOWN) -> None:
    """Raise `ActionRefused` unless `actor` may do `action` in `tenant`. An actor of
    None is the platform itself (management commands, scheduled tasks): trusted."""
    if actor is not None and not may(actor, action, tenant=tenant, role=role):
        raise ActionRefused(action.value.refusal)


def actor_name(actor: Actor) -> str:
    """Who did it, as the log and the run's notes say it."""
    return actor.get_username() if actor is not None else "the platform"
