from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

# The project names its admin; the sabito_sync app leaves the host's admin site as it is.
admin.site.site_header = "NEXPro administration"
admin.site.site_title = "NEXPro admin"
admin.site.index_title = "Tenants, customers and the Sabito sync"

# The admin's "View site" leads to the API's documentation: the project has no pages of its own.
admin.site.site_url = "/api/docs/"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("sabito_sync.urls")),
]

# JSON error bodies for API paths (unknown endpoint, unhandled error); Django's pages elsewhere.
handler404 = "nexpro.errors.not_found"
handler500 = "nexpro.errors.server_error"
