"""The API's routes, mounted under /api/ by the project. Paths are the guide's,
without trailing slashes."""

from django.urls import path

from .api import views as api

app_name = "sabito_sync"

urlpatterns = [
    path("sabito/sync", api.SyncAllApi.as_view(), name="sync-all"),
    # Before <mappingId>, which would otherwise take "status" as an id.
    path("sabito/sync/status", api.SyncStatusApi.as_view(), name="sync-status"),
    # <str:…> rather than <uuid:…>: a malformed id answers a 400 saying so, not a bare 404.
    path("sabito/sync/<str:mappingId>", api.SyncMappingApi.as_view(), name="sync-mapping"),
    path("sabito/mappings", api.MappingListApi.as_view(), name="mapping-list"),
    path("sabito/mappings/<str:mappingId>", api.MappingDetailApi.as_view(), name="mapping-detail"),
    path("sabito/mappings/<str:mappingId>/runs", api.MappingRunsApi.as_view(), name="mapping-runs"),
    path("sabito/runs/<str:runId>", api.RunDetailApi.as_view(), name="run-detail"),
    path("sabito/runs/<str:runId>/cancel", api.RunCancelApi.as_view(), name="run-cancel"),
]
