"""Customers, with what the Sabito sync wrote shown read-only."""

from __future__ import annotations

from django.contrib import admin

from ..models import Customer


class FromSabitoFilter(admin.SimpleListFilter):
    title = "from Sabito"
    parameter_name = "from_sabito"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(sabito_customer_id__isnull=False)
        if self.value() == "no":
            return queryset.filter(sabito_customer_id__isnull=True)
        return queryset


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "email",
        "tenant",
        "phone",
        "city",
        "country",
        "from_sabito",
        "sabito_customer_id",
        "updated_at",
    ]
    list_filter = ["tenant", FromSabitoFilter]
    list_select_related = ["tenant"]
    search_fields = ["name", "email", "sabito_customer_id"]
    autocomplete_fields = ["tenant"]
    # Owned by the sync: an edit here would be overwritten (or would break matching)
    # at the next run.
    sabito_fields = ["sabito_customer_id", "sabito_business_id", "sabito_source_referral_id", "sabito_source_type"]
    readonly_fields = [*sabito_fields, "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "email", "phone", "how_did_you_hear"]}),
        ("Address", {"fields": ["address", "city", "state", "country"]}),
        ("Sabito", {"fields": [*sabito_fields], "description": "Written by the Sabito sync; read-only."}),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="From Sabito", boolean=True, ordering="sabito_customer_id")
    def from_sabito(self, customer):
        return customer.sabito_customer_id is not None
