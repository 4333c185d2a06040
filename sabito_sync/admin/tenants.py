"""Tenants and their memberships."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count

from ..models import Membership, SabitoMapping, Tenant
from .deletion import MappingDeletionMixin


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


class SabitoMappingInline(admin.TabularInline):
    model = SabitoMapping
    extra = 0
    fields = ["business_name", "sabito_business_id", "is_active"]
    show_change_link = True


@admin.register(Tenant)
class TenantAdmin(MappingDeletionMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "member_count", "mapping_count", "created_at"]
    # Explicit, because the counts' GROUP BY drops the model's default ordering.
    ordering = ["name"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]
    inlines = [MembershipInline, SabitoMappingInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=Count("memberships", distinct=True),
                mapping_total=Count("sabito_mappings", distinct=True),
            )
        )

    def mappings_deleted_with(self, tenants) -> list[SabitoMapping]:
        return list(SabitoMapping.objects.filter(tenant__in=[tenant.pk for tenant in tenants]))

    @admin.display(description="Members", ordering="member_total")
    def member_count(self, tenant):
        return tenant.member_total

    @admin.display(description="Sabito mappings", ordering="mapping_total")
    def mapping_count(self, tenant):
        return tenant.mapping_total


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    list_select_related = ["user", "tenant"]
    search_fields = ["user__username", "user__email", "tenant__name", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]
    readonly_fields = ["created_at"]
