from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("list/", views.drilldown, name="drilldown"),
    path("pilot/", views.pilot_report, name="pilot"),
    path("pilot/export/", views.pilot_export, name="pilot_export"),
]
