"""factory_boy factories shared by every test module."""

import datetime as dt
import re

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from followups.models import CadenceRule, ContactAttempt, Followup, FollowupType
from locations.models import Location, LocationGrant, Role
from patients.models import (
    Appointment,
    AppointmentType,
    Channel,
    ChannelConsent,
    Household,
    Patient,
    Provider,
)
from patients.search import fold

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class LocationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Location
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Clinic {n}")
    slug = factory.Sequence(lambda n: f"clinic-{n}")
    time_zone = "America/Chicago"
    phone = "+15125550100"


class GrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LocationGrant

    user = factory.SubFactory(UserFactory)
    location = factory.SubFactory(LocationFactory)
    role = Role.FRONT_DESK


def staff(role: str, *locations: Location, **user_kwargs):
    """A user holding `role` at each of `locations`."""
    user = UserFactory(**user_kwargs)
    for location in locations:
        GrantFactory(user=user, location=location, role=role)
    return user


class HouseholdFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Household

    name = factory.Sequence(lambda n: f"Household {n}")


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    date_of_birth = factory.Faker("date_of_birth", minimum_age=1, maximum_age=95)
    mobile_phone = factory.Sequence(lambda n: f"+1512555{n % 10000:04d}")
    email = factory.LazyAttribute(
        lambda p: re.sub(r"[^a-z0-9.]", "", fold(f"{p.first_name}.{p.last_name}")) + "@example.test"
    )
    home_location = factory.SubFactory(LocationFactory)


class AppointmentTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AppointmentType
        django_get_or_create = ("code",)

    name = factory.Sequence(lambda n: f"Visit type {n}")
    code = factory.Sequence(lambda n: f"visit-{n}")


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider
        skip_postgeneration_save = True

    name = factory.Faker("name")
    title = "DDS"

    @factory.post_generation
    def locations(obj, create, extracted, **kwargs):
        if create and extracted:
            obj.locations.set(extracted)


class AppointmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Appointment

    patient = factory.SubFactory(PatientFactory)
    location = factory.LazyAttribute(lambda a: a.patient.home_location)
    appointment_type = factory.SubFactory(AppointmentTypeFactory)
    start = factory.LazyFunction(lambda: dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC))
    end = factory.LazyAttribute(lambda a: a.start + dt.timedelta(minutes=30))


class ChannelConsentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChannelConsent

    patient = factory.SubFactory(PatientFactory)
    channel = Channel.SMS
    status = ChannelConsent.Status.GRANTED
    method = ChannelConsent.Method.VERBAL
    recorded_at = factory.LazyFunction(timezone.now)


class FollowupTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FollowupType
        django_get_or_create = ("code",)

    name = factory.Sequence(lambda n: f"Recall {n}")
    code = factory.Sequence(lambda n: f"recall-{n}")
    value = 50


class CadenceRuleFactory(factory.django.DjangoModelFactory):
    """A rule; pass trigger_types=[…], satisfying_types=[…], locations=[…] as lists."""

    class Meta:
        model = CadenceRule
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Rule {n}")
    followup_type = factory.SubFactory(FollowupTypeFactory)
    interval_value = 6
    interval_unit = CadenceRule.Unit.MONTHS
    lapse_after_days = 180
    max_attempts = 3

    @factory.post_generation
    def trigger_types(obj, create, extracted, **kwargs):
        if create and extracted:
            obj.trigger_types.set(extracted)

    @factory.post_generation
    def satisfying_types(obj, create, extracted, **kwargs):
        if create and extracted:
            obj.satisfying_types.set(extracted)

    @factory.post_generation
    def locations(obj, create, extracted, **kwargs):
        if create and extracted:
            obj.locations.set(extracted)


class FollowupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Followup

    patient = factory.SubFactory(PatientFactory)
    followup_type = factory.SubFactory(FollowupTypeFactory)
    location = factory.LazyAttribute(lambda f: f.patient.home_location)
    due_date = factory.LazyFunction(timezone.localdate)
    lapses_on = factory.LazyAttribute(lambda f: f.due_date + dt.timedelta(days=180))


class ContactAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContactAttempt

    followup = factory.SubFactory(FollowupFactory)
    channel = ContactAttempt.Channel.CALL
    outcome = ContactAttempt.Outcome.NO_ANSWER
    attempted_at = factory.LazyFunction(timezone.now)


class OutboundMessageFactory(factory.django.DjangoModelFactory):
    """An SMS appointment reminder due now, to the patient's mobile from North's number."""

    class Meta:
        model = "reminders.OutboundMessage"

    idempotency_key = factory.Sequence(lambda n: f"test-message-{n}")
    kind = "appointment_reminder"
    channel = "sms"
    patient = factory.SubFactory(PatientFactory)
    location = factory.LazyAttribute(lambda m: m.patient.home_location)
    to = factory.LazyAttribute(lambda m: m.patient.mobile_phone)
    sender = "+15125550100"
    body = factory.Sequence(lambda n: f"North Clinic: see you tomorrow at 9:00 AM (#{n}).")
    scheduled_for = factory.LazyFunction(timezone.now)
