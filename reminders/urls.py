from django.urls import path

from reminders import staff_views, views

app_name = "reminders"

urlpatterns = [
    path("twilio/status/", views.twilio_status, name="twilio_status"),
    path("twilio/inbound/", views.twilio_inbound, name="twilio_inbound"),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    # --- What staff see: the Messages page and its two actions
    path("messages/", staff_views.message_list, name="messages"),
    path("messages/<int:pk>/handled/", staff_views.message_handled, name="message_handled"),
    path("replies/<int:pk>/read/", staff_views.reply_read, name="reply_read"),
]
