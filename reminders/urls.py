from django.urls import path

from reminders import setup_views, staff_views, views

app_name = "reminders"

urlpatterns = [
    path("twilio/status/", views.twilio_status, name="twilio_status"),
    path("twilio/inbound/", views.twilio_inbound, name="twilio_inbound"),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    # --- What staff see: the Messages page and its two actions
    path("messages/", staff_views.message_list, name="messages"),
    path("messages/export/", staff_views.message_export, name="messages_export"),
    path("messages/<int:pk>/handled/", staff_views.message_handled, name="message_handled"),
    path("replies/<int:pk>/read/", staff_views.reply_read, name="reply_read"),
    # --- Outreach setup: location rules, reminder schedules, recall plans, templates
    path("setup/", setup_views.setup, name="setup"),
    path("setup/<int:pk>/edit/", setup_views.location_edit, name="location_edit"),
    path("setup/<int:pk>/schedules/new/", setup_views.schedule_create, name="schedule_create"),
    path("setup/schedules/<int:pk>/edit/", setup_views.schedule_edit, name="schedule_edit"),
    path("setup/plans/", setup_views.plans, name="plans"),
    path("setup/plans/new/", setup_views.plan_create, name="plan_create"),
    path("setup/plans/<int:pk>/edit/", setup_views.plan_edit, name="plan_edit"),
    path("setup/templates/", setup_views.template_list, name="templates"),
    path("setup/<int:pk>/templates/new/", setup_views.template_create, name="template_create"),
    path("setup/templates/<int:pk>/edit/", setup_views.template_edit, name="template_edit"),
    path("setup/templates/<int:pk>/reset/", setup_views.template_reset, name="template_reset"),
]
