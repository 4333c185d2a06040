"""The "Who may do what" table of the API's page (docs/api.md), cell by cell, against the running code.

Every row of the table has a recipe here (and every recipe a row, so the two cannot
drift apart). Each cell is tried as that kind of caller: an allowed action must
succeed and do what it says, a refused one must answer as the cell says and change
nothing. A platform operator holds exactly the permission the cell names; an
operator holding any other sabito_sync permission (except one Django lets imply it)
is refused, so no cell passes by accident of holding too much.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.test import Client
from rest_framework.test import APIClient

from sabito_sync.models import Membership, SabitoMapping, SyncRun
from tests.api_fixtures import (  # noqa: F401 (fixtures)
    MAPPINGS,
    OPERATOR_PERMISSIONS,
    STATUS,
    SYNC_ALL,
    fresh_throttle_history,
    grant,
    inline_worker,
    make_caller,
    mapping_url,
    queued_run,
    run_url,
    runs_url,
    sync_one_url,
)
from tests.factories import SabitoMappingFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

API_PAGE = Path(__file__).resolve().parent.parent / "docs" / "api.md"
COLUMNS = ("Anonymous", "Staff flag only", "Member", "Tenant admin", "Platform operator", "Superuser")
# Django's own rule, which the API follows: who may change may also view.
IMPLIED_BY = {"view_sabitomapping": {"change_sabitomapping"}}


def readme_table() -> dict[str, list[str]]:
    section = API_PAGE.read_text().split("## Who may do what", 1)[1].split("\n#", 1)[0]
    header, *rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["Action", *COLUMNS]
    table = {}
    for row in rows:
        action, *cells = [cell.strip() for cell in row.strip("|").split("|")]
        table[action] = cells
    return table


@dataclass
class World:
    tenant: object
    other_tenant: object
    mapping: SabitoMapping
    # A run waiting for a worker (queued from the admin), of another mapping of the tenant.
    run: SyncRun

    def snapshot(self):
        return list(
            SabitoMapping.objects.order_by("pk").values_list(
                "pk", "sabito_business_id", "business_name", "tenant_id", "is_active"
            )
        ) + list(SyncRun.objects.order_by("pk").values_list("pk", "status", "cancel_requested_at"))


@dataclass(frozen=True)
class Recipe:
    call: Callable  # (client, world) -> response
    allowed_status: int
    # What an allowed call must have done; None for reads.
    effect: Callable[[World], bool] | None = None
    admin: bool = False


def mapping_row(world):
    return SabitoMapping.objects.filter(pk=world.mapping.pk).first()


def synced_once_over_the_api(world) -> bool:
    return world.mapping.runs.filter(trigger=SyncRun.Trigger.API, status=SyncRun.Status.SUCCEEDED).count() == 1


def run_cancelled(world) -> bool:
    return SyncRun.objects.get(pk=world.run.pk).status == SyncRun.Status.CANCELLED


API = {
    "`GET /api/sabito/sync/status`": Recipe(lambda c, w: c.get(STATUS), 200),
    "`GET /api/sabito/mappings`": Recipe(lambda c, w: c.get(MAPPINGS), 200),
    "`GET /api/sabito/mappings/<id>`": Recipe(lambda c, w: c.get(mapping_url(w.mapping)), 200),
    "`GET /api/sabito/mappings/<id>/runs`": Recipe(lambda c, w: c.get(runs_url(w.mapping)), 200),
    "`GET /api/sabito/runs/<id>`": Recipe(lambda c, w: c.get(run_url(w.run)), 200),
    "`POST /api/sabito/sync`": Recipe(
        lambda c, w: c.post(SYNC_ALL, {"fullSync": True}, format="json"), 200, synced_once_over_the_api
    ),
    "`POST /api/sabito/sync/<id>`": Recipe(
        lambda c, w: c.post(sync_one_url(w.mapping), {"fullSync": True}, format="json"), 200, synced_once_over_the_api
    ),
    "`POST /api/sabito/runs/<id>/cancel`": Recipe(lambda c, w: c.post(f"{run_url(w.run)}/cancel"), 202, run_cancelled),
    "`PATCH /api/sabito/mappings/<id>` `businessName`, `isActive` (rename, pause, resume)": Recipe(
        lambda c, w: c.patch(mapping_url(w.mapping), {"businessName": "Renamed", "isActive": False}, format="json"),
        200,
        lambda w: (mapping_row(w).business_name, mapping_row(w).is_active) == ("Renamed", False),
    ),
    # Permission comes before the body: nothing to change still needs the right to change.
    "`PATCH /api/sabito/mappings/<id>` with an empty body": Recipe(
        lambda c, w: c.patch(mapping_url(w.mapping), {}, format="json"), 200
    ),
    "`PATCH /api/sabito/mappings/<id>` changing nothing (the values it has)": Recipe(
        lambda c, w: c.patch(
            mapping_url(w.mapping),
            {"businessName": w.mapping.business_name, "sabitoBusinessId": w.mapping.sabito_business_id},
            format="json",
        ),
        200,
    ),
    "`POST /api/sabito/mappings` (connect a business)": Recipe(
        lambda c, w: c.post(MAPPINGS, {"sabitoBusinessId": "biz-new", "businessName": "New"}, format="json"),
        201,
        lambda w: SabitoMapping.objects.filter(sabito_business_id="biz-new", tenant=w.tenant).exists(),
    ),
    "`PATCH /api/sabito/mappings/<id>` `sabitoBusinessId` (re-point)": Recipe(
        lambda c, w: c.patch(mapping_url(w.mapping), {"sabitoBusinessId": "biz-elsewhere"}, format="json"),
        200,
        lambda w: mapping_row(w).sabito_business_id == "biz-elsewhere",
    ),
    "`PATCH /api/sabito/mappings/<id>` `tenantId` (move)": Recipe(
        lambda c, w: c.patch(mapping_url(w.mapping), {"tenantId": str(w.other_tenant.pk)}, format="json"),
        200,
        lambda w: mapping_row(w).tenant_id == w.other_tenant.pk,
    ),
    "`DELETE /api/sabito/mappings/<id>`": Recipe(
        lambda c, w: c.delete(mapping_url(w.mapping)), 200, lambda w: mapping_row(w) is None
    ),
}


def admin_change_form(world, **changes):
    mapping = world.mapping
    form = {
        "business_name": mapping.business_name,
        "sabito_business_id": mapping.sabito_business_id,
        "tenant": str(mapping.tenant_id),
        "is_active": "on",
    }
    return form | changes


def both_lists(client):
    """The mappings list, unless the run history answers differently (then that answer)."""
    runs = client.get("/admin/sabito_sync/syncrun/")
    return client.get("/admin/sabito_sync/sabitomapping/") if runs.status_code == 200 else runs


ADMIN = {
    "Admin: mappings list and run history": Recipe(lambda c, w: both_lists(c), 200, admin=True),
    "Admin: sync buttons and actions": Recipe(
        lambda c, w: c.post(f"/admin/sabito_sync/sabitomapping/{w.mapping.pk}/sync/full/"),
        302,
        lambda w: w.mapping.runs.filter(trigger=SyncRun.Trigger.ADMIN, status=SyncRun.Status.SUCCEEDED).count() == 1,
        admin=True,
    ),
    "Admin: cancel a run": Recipe(
        lambda c, w: c.post(f"/admin/sabito_sync/syncrun/{w.run.pk}/cancel/"), 302, run_cancelled, admin=True
    ),
    "Admin: add a mapping": Recipe(
        lambda c, w: c.post(
            "/admin/sabito_sync/sabitomapping/add/",
            {"business_name": "New", "sabito_business_id": "biz-new", "tenant": str(w.tenant.pk), "is_active": "on"},
        ),
        302,
        lambda w: SabitoMapping.objects.filter(sabito_business_id="biz-new").exists(),
        admin=True,
    ),
    "Admin: change a mapping's business id or tenant": Recipe(
        lambda c, w: c.post(
            f"/admin/sabito_sync/sabitomapping/{w.mapping.pk}/change/",
            admin_change_form(w, sabito_business_id="biz-elsewhere", tenant=str(w.other_tenant.pk)),
        ),
        302,
        lambda w: (mapping_row(w).sabito_business_id, mapping_row(w).tenant_id) == ("biz-elsewhere", w.other_tenant.pk),
        admin=True,
    ),
    "Admin: delete a mapping": Recipe(
        lambda c, w: c.post(f"/admin/sabito_sync/sabitomapping/{w.mapping.pk}/delete/", {"post": "yes"}),
        302,
        lambda w: mapping_row(w) is None,
        admin=True,
    ),
}
RECIPES = API | ADMIN
TABLE = readme_table()


def test_the_table_and_the_recipes_name_the_same_actions():
    assert list(TABLE) == list(RECIPES)


@pytest.fixture
def world(db, fake_sabito, inline_worker):
    """Sync requests run at once (`inline_worker`), so an allowed one shows its effect."""
    tenant = TenantFactory(name="Tenant One")
    mapping = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-1", business_name="Business One")
    # The run to cancel waits on a paused mapping of its own: a sync of `mapping` (or of
    # every active mapping) would join a run of it that no worker ever takes.
    waiting = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-2", business_name="Paused", is_active=False)
    return World(
        tenant=tenant,
        other_tenant=TenantFactory(name="Tenant Two"),
        mapping=mapping,
        run=queued_run(waiting),
    )


def api_client(make_caller, world, column: str, permissions=()):
    if column == "Anonymous":
        client = APIClient()
        client.credentials(HTTP_X_TENANT_ID=str(world.tenant.pk))
        return client
    kind = {
        "Staff flag only": {"role": None, "staff": True},
        "Member": {"role": Membership.Role.MEMBER},
        "Tenant admin": {"role": Membership.Role.ADMIN},
        "Platform operator": {"role": None, "permissions": permissions},
        "Superuser": {"role": None, "is_superuser": True},
    }[column]
    return make_caller(world.tenant, **kind).client


def admin_client(world, column: str, permissions=()):
    client = Client()
    if column == "Anonymous":
        return client
    kind = {
        "Staff flag only": {"is_staff": True},
        "Member": {},
        "Tenant admin": {},
        "Platform operator": {"is_staff": True},
        "Superuser": {"is_staff": True, "is_superuser": True},
    }[column]
    user = UserFactory(**kind)
    user.save()  # the factory sets the password after saving; the session checks the stored one
    if column in ("Member", "Tenant admin"):
        role = Membership.Role.MEMBER if column == "Member" else Membership.Role.ADMIN
        Membership.objects.create(user=user, tenant=world.tenant, role=role)
    grant(user, *permissions)
    client.force_login(user)
    return client


def expect(cell: str) -> tuple[bool, str | None, str | None]:
    """(allowed, the refusal's answer ("401", "403", "login"), the named permission)."""
    match = re.fullmatch(r"(✓|✗)(?: (401|403|login))?(?: `(\w+)`)?", cell)
    assert match, f"unreadable cell {cell!r}"
    return match.group(1) == "✓", match.group(2), match.group(3)


def check(recipe: Recipe, client, world: World, cell: str) -> None:
    allowed, refusal, _ = expect(cell)
    before = world.snapshot()
    response = recipe.call(client, world)
    if allowed:
        assert response.status_code == recipe.allowed_status, response.content[:300]
        if recipe.effect is not None:
            assert recipe.effect(world)
        return
    if refusal == "login":
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    else:
        assert response.status_code == int(refusal or 403), response.content[:300]
        if not recipe.admin:
            body = response.json()
            assert body["success"] is False and body["message"]
    assert world.snapshot() == before, "a refused request changed something"


CELLS = [(action, column) for action in TABLE for column in COLUMNS]


@pytest.mark.parametrize("action,column", CELLS, ids=[f"{a[:40]}|{c}" for a, c in CELLS])
def test_each_cell_of_the_table_holds(make_caller, world, action, column):
    recipe = RECIPES[action]
    cell = TABLE[action][COLUMNS.index(column)]
    _, _, permission = expect(cell)
    permissions = [permission] if permission else []
    client = (
        admin_client(world, column, permissions)
        if recipe.admin
        else api_client(make_caller, world, column, permissions)
    )
    check(recipe, client, world, cell)


OPERATOR_ROWS = [action for action in TABLE if expect(TABLE[action][COLUMNS.index("Platform operator")])[2]]


@pytest.mark.parametrize("action", OPERATOR_ROWS)
def test_an_operator_without_the_named_permission_is_refused(make_caller, world, action):
    recipe = RECIPES[action]
    named = expect(TABLE[action][COLUMNS.index("Platform operator")])[2]
    others = [
        codename
        for codename in OPERATOR_PERMISSIONS
        if codename != named and codename not in IMPLIED_BY.get(named, set())
    ]
    for codename in others:
        client = (
            admin_client(world, "Platform operator", [codename])
            if recipe.admin
            else api_client(make_caller, world, "Platform operator", [codename])
        )
        before = world.snapshot()
        response = recipe.call(client, world)
        assert response.status_code == 403, (codename, response.content[:300])
        assert world.snapshot() == before


# What a refused person reads, word for word: each action's refusal names who may.
REFUSALS = {
    "READ": "Only members of this tenant, or platform operators with the sabito_sync.view_sabitomapping "
    "permission, may read its Sabito mappings and syncs.",
    "MANAGE": "Only admins of this tenant, or platform operators with the sabito_sync.change_sabitomapping "
    "permission, may rename, pause, resume or sync its Sabito mappings, or cancel their syncs.",
    "CONNECT": "Only platform operators with the sabito_sync.add_sabitomapping permission may connect a Sabito "
    "business to a tenant; ask one to create the mapping.",
    "REPOINT": "Only platform operators with the sabito_sync.change_sabitomapping permission may change a "
    "mapping's Sabito business or tenant.",
    "DELETE": "Only platform operators with the sabito_sync.delete_sabitomapping permission may delete a "
    "Sabito mapping.",
}


@pytest.mark.parametrize("action", sorted(REFUSALS))
def test_each_refusal_says_exactly_who_may(db, action):
    from sabito_sync.services.access import Action, ActionRefused, ensure_may

    stranger = UserFactory()
    with pytest.raises(ActionRefused) as refused:
        ensure_may(stranger, Action[action], tenant=TenantFactory())

    assert str(refused.value) == REFUSALS[action]


def test_a_member_patching_a_mapping_reads_the_manage_refusal(make_caller, world):
    member = api_client(make_caller, world, "Member")

    response = member.patch(f"/api/sabito/mappings/{world.mapping.pk}", {"isActive": False}, format="json")

    assert response.status_code == 403
    assert response.json() == {"success": False, "message": REFUSALS["MANAGE"], "errors": {}}


def test_a_record_of_who_did_something_names_the_user_or_the_platform(db):
    from sabito_sync.services.access import actor_name

    assert actor_name(UserFactory(username="ada")) == "ada"
    assert actor_name(None) == "the platform"  # a management command, a scheduled task


def test_nobody_signed_in_may_do_anything_in_a_tenant_and_nobody_is_a_member_of_no_tenant(db):
    from django.contrib.auth.models import AnonymousUser

    from sabito_sync.services.access import Action, may, tenant_role

    member = UserFactory()
    tenant = TenantFactory()
    Membership.objects.create(user=member, tenant=tenant, role=Membership.Role.ADMIN)

    assert [may(AnonymousUser(), action, tenant=tenant) for action in Action] == [False] * len(Action)
    assert tenant_role(AnonymousUser(), tenant) is None
    assert tenant_role(member, None) is None and tenant_role(member, tenant) == Membership.Role.ADMIN
