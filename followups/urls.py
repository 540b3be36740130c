from django.urls import path

from followups import views

app_name = "followups"

urlpatterns = [
    # --- Today worklist and follow-up actions
    path("today/", views.today, name="today"),
    path("today/export/", views.today_export, name="export"),
    path("<int:pk>/attempt/", views.log_attempt, name="log_attempt"),
    path("<int:pk>/snooze/", views.snooze, name="snooze"),
    path("<int:pk>/dismiss/", views.dismiss, name="dismiss"),
    path("<int:pk>/assign/", views.assign, name="assign"),
    path("<int:pk>/reopen/", views.reopen, name="reopen"),
    path("patient/<int:pk>/new/", views.followup_create, name="create"),
    path("patient/<int:pk>/discharge/", views.discharge, name="discharge"),
    # --- Cadence rules
    path("rules/", views.rules, name="rules"),
    path("rules/new/", views.rule_create, name="rule_create"),
    path("rules/<int:pk>/edit/", views.rule_edit, name="rule_edit"),
]
