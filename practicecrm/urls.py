from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from practicecrm import views

admin.site.site_header = "PracticeCRM administration"
admin.site.site_title = "PracticeCRM admin"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("patients/", include("patients.urls")),
    path("followups/", include("followups.urls")),
    path("reminders/", include("reminders.urls")),
    path("imports/", include("imports.urls")),
    path("reports/", include("reports.urls")),
    path("admin/", admin.site.urls),
]
