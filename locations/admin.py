"""Admin for locations, staff and their per-location role grants."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from locations.models import Location, LocationGrant


class LocationGrantInline(admin.TabularInline):
    model = LocationGrant
    extra = 1
    autocomplete_fields = ["user"]


class UserGrantInline(admin.TabularInline):
    model = LocationGrant
    extra = 1
    fields = ["location", "role"]
    verbose_name = "role at a location"
    verbose_name_plural = "roles at locations (what this person may see and do, and where)"


@admin.register(Location)
class LocationAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "time_zone",
        "phone",
        "module_recalls",
        "module_appointment_reminders",
        "is_active",
    ]
    list_filter = ["is_active", "time_zone"]
    search_fields = ["name", "slug", "city"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [LocationGrantInline]
    fieldsets = [
        (None, {"fields": ["name", "slug", "time_zone", "go_live_date", "is_active"]}),
        (
            "Address and phone",
            {
                "fields": [
                    "address_line1",
                    "address_line2",
                    "city",
                    "region",
                    "postal_code",
                    "phone",
                ]
            },
        ),
        (
            "Sending identity",
            {"fields": ["sms_from_number", "sms_messaging_service_sid", "email_from"]},
        ),
        (
            "Hours and modules",
            {
                "fields": [
                    "business_hours",
                    "module_recalls",
                    "module_appointment_reminders",
                    "module_intake",
                    "module_memberships",
                    "module_referrals",
                    "shadow_mode",
                ]
            },
        ),
    ]


@admin.register(LocationGrant)
class LocationGrantAdmin(admin.ModelAdmin):
    list_display = ["user", "role", "location", "created_at"]
    list_filter = ["role", "location"]
    search_fields = ["user__username", "user__first_name", "user__last_name", "location__name"]
    autocomplete_fields = ["user"]


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class StaffAdmin(UserAdmin):
    """Staff accounts. What a person may see comes only from their roles at
    locations (the inline below); Django's groups and model permissions are left
    out of the form because they grant nothing in the app (see locations.access)."""

    inlines = [UserGrantInline]
    list_display = ["username", "first_name", "last_name", "email", "is_active", "is_staff"]
    fieldsets = [
        (None, {"fields": ["username", "password"]}),
        ("Personal info", {"fields": ["first_name", "last_name", "email"]}),
        (
            "Account",
            {
                "fields": ["is_active", "is_staff", "is_superuser", "last_login", "date_joined"],
                "description": "Staff status and superuser open this admin site only; "
                "patients are reached through roles at locations.",
            },
        ),
    ]
    readonly_fields = ["last_login", "date_joined"]

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting an account would blank the actor of every audit entry it made;
        # people who leave are deactivated ("Active" off) instead.
        return False
