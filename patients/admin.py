"""Admin for reference data. Patients and appointments are deliberately not here:
they are reached only through the app's pages, which enforce location access and
log every view."""

from django.contrib import admin

from patients.models import AppointmentType, Provider


@admin.register(AppointmentType)
class AppointmentTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "default_duration_minutes", "is_active"]
    search_fields = ["name", "code"]
    prepopulated_fields = {"code": ["name"]}


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["name", "title", "is_active"]
    list_filter = ["is_active", "locations"]
    search_fields = ["name"]
    filter_horizontal = ["locations"]
