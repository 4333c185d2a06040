"""The mapping form."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from ..models import SabitoMapping
from ..services import mappings as mapping_service
from ..services.mappings import SyncIsRunning


class SabitoMappingForm(forms.ModelForm):
    """Re-pointing a mapping (another business or tenant) waits for its running sync;
    said here so the operator sees it on the form (the service refuses it anyway)."""

    class Meta:
        model = SabitoMapping
        fields = ["business_name", "sabito_business_id", "tenant", "is_active"]

    def clean(self):
        cleaned = super().clean()
        repointed = {"sabito_business_id", "tenant"} & set(self.changed_data)
        if self.instance.pk and repointed:
            try:
                mapping_service.ensure_no_sync_running(
                    mappings=[self.instance], to="change its Sabito business or tenant"
                )
            except SyncIsRunning as exc:
                raise ValidationError(str(exc)) from None
        return cleaned
