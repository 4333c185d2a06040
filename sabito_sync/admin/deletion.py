"""Deleting mappings, directly or with their tenant: refused while any of them syncs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import quote, unquote
from django.http import HttpResponseRedirect
from django.urls import reverse

from ..models import SabitoMapping, SyncRun
from ..services import mappings as mapping_service
from ..services.mappings import SyncIsRunning

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    # The mixin goes before `ModelAdmin` in an admin's bases and calls on it: say so
    # to the type checker, without changing the bases at run time.
    _ModelAdminBase = ModelAdmin[Any]
else:
    _ModelAdminBase = object


class MappingDeletionMixin(_ModelAdminBase):
    """Deleting mappings, directly or with the tenant that holds them, is refused
    while any of them syncs (`mappings.ensure_no_sync_running`), on the delete page
    and in the bulk action alike.

    Runs cannot be deleted one by one (they are the audit trail), which would make
    Django refuse to delete a mapping or tenant that has any ("your account doesn't
    have permission to delete: sync runs"). Whoever may delete the mapping may take
    its history with it."""

    def mappings_deleted_with(self, objs) -> list[SabitoMapping]:
        raise NotImplementedError

    def deletion_refusal(self, objs) -> str | None:
        try:
            mapping_service.ensure_no_sync_running(
                mappings=self.mappings_deleted_with(objs),
                to=f"delete the {self.opts.verbose_name} (pause the mapping meanwhile)",
            )
        except SyncIsRunning as exc:
            return str(exc)
        return None

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(str(SyncRun._meta.verbose_name))
        return deleted, model_count, perms_needed, protected

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and self.has_delete_permission(request, obj) and (refusal := self.deletion_refusal([obj])):
            self.message_user(request, refusal, messages.ERROR)
            change_url = reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[quote(obj.pk)],
                current_app=self.admin_site.name,
            )
            return HttpResponseRedirect(change_url)
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            # django-stubs allows None values; Django's get_actions never holds one.
            _, name, description = actions["delete_selected"]  # type: ignore[misc]
            actions["delete_selected"] = (type(self).delete_selected_unless_syncing, name, description)
        return actions

    def delete_selected_unless_syncing(self, request, queryset):
        refusal = self.deletion_refusal(queryset)
        if refusal:
            self.message_user(request, refusal, messages.ERROR)
            return None
        return delete_selected(self, request, queryset)
