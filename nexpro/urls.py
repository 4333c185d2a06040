from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

# The admin's "View site" leads to the API's documentation: the project has no pages of its own.
admin.site.site_url = "/api/docs/"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("sabito_sync.urls")),
]

# JSON error bodies for API paths (unknown endpoint, unhandled error); Django's pages elsewhere.
handler404 = "sabito_sync.api.not_found"
handler500 = "sabito_sync.api.server_error"
