from django.urls import path

from patients import merge_views, views

app_name = "patients"

urlpatterns = [
    path("", views.patient_list, name="list"),
    path("export/", views.patient_export, name="export"),
    path("new/", views.patient_create, name="create"),
    path("<int:pk>/", views.patient_detail, name="detail"),
    path("<int:pk>/timeline/", views.patient_timeline, name="timeline"),
    path("<int:pk>/edit/", views.patient_edit, name="edit"),
    path("<int:pk>/preferences/", views.patient_preferences, name="preferences"),
    path("<int:pk>/household/", views.patient_household, name="household"),
    path("<int:pk>/merge/", merge_views.patient_merge_view, name="merge"),
    path("<int:pk>/appointments/new/", views.appointment_create, name="appointment_create"),
    path("appointments/<int:pk>/edit/", views.appointment_edit, name="appointment_edit"),
]
