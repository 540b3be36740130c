"""Generates the demo data set that `manage.py seed_demo` loads.

`DemoSeeder` plans every patient in memory from the tables in `demo_data`, then
writes them in a few batches through `practicecrm.audit.bulk_create_audited`, so
the audit trail holds a CREATE entry for every row, as an import would leave.
Single rows (locations, staff, grants, catalogue, cadence rules, household links,
sharing) are saved one by one, which auditlog's signals record. Follow-ups come
last, from the history, through `followups.services.followups_backfill`; then the
front desk's recent calls about some of them.
"""

import datetime as dt
import itertools
import random
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from auditlog.context import auditlog_value, set_actor
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db.models import Count
from django.utils import timezone
from faker import Faker

from followups.models import CadenceRule, ContactAttempt, Discharge, Followup, FollowupType
from followups.selectors import WorklistFilters, worklist_counts
from followups.services import followups_backfill
from locations.access import CHANGE_PATIENTS, ROLE_PERMISSIONS
from locations.management import demo_data as demo
from locations.management.demo_pilot import seed_recall_history
from locations.models import WEEKDAYS, Location, LocationGrant, Role
from patients.models import (
    Appointment,
    AppointmentType,
    ChannelConsent,
    ExternalIdentifier,
    Household,
    Patient,
    Provider,
)
from patients.models import Channel as ConsentChannel
from patients.phones import normalize_phone
from patients.search import fold
from practicecrm.audit import bulk_create_audited, get_system_user, update_audited

User = get_user_model()
T = TypeVar("T")

DEFAULT_SEED = 2026
# Shares of all generated patients, unless the comment says otherwise.
HOUSEHOLD_SHARE = 0.15
SHARED_SHARE = 0.10
ESTABLISHED_SHARE = 0.80  # first visit 24–30 months ago; the rest joined since
LAPSED_SHARE = 0.22  # active patients who stopped coming: due or overdue for recall
UPCOMING_CHANCE = 0.29  # of active, still-attending patients: ~20% of everyone
EHR_MRN_SHARE = 0.93
ATTEMPTED_SHARE = 0.30  # of due and overdue follow-ups: someone already called or wrote
ASSIGNED_SHARE = 0.35  # of due and overdue follow-ups where a front desk works: assigned

Status = Patient.Status
Channel = Patient.PreferredChannel
Visit = Appointment.Status

STATUS_WEIGHTS = {Status.ACTIVE: 90, Status.INACTIVE: 5, Status.MOVED: 3.5, Status.DECEASED: 1.5}
CHANNEL_WEIGHTS = {Channel.SMS: 55, Channel.EMAIL: 30, Channel.CALL: 10, Channel.NONE: 5}
CONSENT_METHOD_WEIGHTS = {
    ChannelConsent.Method.VERBAL: 40,
    ChannelConsent.Method.WRITTEN: 25,
    ChannelConsent.Method.ONLINE: 20,
    ChannelConsent.Method.IMPORT: 15,
}
EMAIL_DOMAINS = {"example.com": 5, "example.net": 3, "example.org": 2}
# Age brackets, (low, high): weight, of patients who are not a household's children.
AGES = {
    demo.DENTAL: {(13, 17): 4, (18, 29): 17, (30, 44): 26, (45, 64): 30, (65, 79): 17, (80, 95): 6},
    demo.PHYSICAL_THERAPY: {
        (14, 17): 3, (18, 29): 14, (30, 44): 22, (45, 64): 35, (65, 79): 20, (80, 95): 6
    },
    demo.WELLNESS: {(21, 29): 12, (30, 44): 30, (45, 64): 38, (65, 85): 20},
}  # fmt: skip
HOUSEHOLDS: dict[str, dict[tuple[str, ...], int]] = {
    demo.DENTAL: {
        ("parent", "child"): 20,
        ("parent", "spouse"): 15,
        ("parent", "spouse", "child"): 25,
        ("parent", "child", "child"): 20,
        ("parent", "spouse", "child", "child"): 20,
    },
    demo.PHYSICAL_THERAPY: {("parent", "spouse"): 1},
    demo.WELLNESS: {("parent", "spouse"): 3, ("parent", "spouse", "child"): 1},
}
# How long ago (days, low–high) patients who no longer come had their last visit.
STOPPED_DAYS_AGO: dict[str, tuple[int, int]] = {
    Status.INACTIVE: (200, 700),
    Status.MOVED: (60, 500),
    Status.DECEASED: (30, 500),
    "lapsed": (150, 600),  # still active, just stopped booking: overdue for recall
}
# Where a shared patient is also seen: the sister clinic of the same kind, mostly.
SISTER_SITES = {
    "riverside-austin": "hillcrest-denver",
    "hillcrest-denver": "riverside-austin",
    "lakeside-seattle": "harbor-boston",
    "harbor-boston": "lakeside-seattle",
}
# What a shared patient had done at the other location (one of these series).
SHARED_VISITS = {
    demo.DENTAL: (("periodic-exam",), ("filling",)),
    demo.PHYSICAL_THERAPY: (
        ("pt-initial-evaluation", "pt-treatment-session", "pt-treatment-session"),
    ),
    demo.WELLNESS: (("wellness-consultation",),),
}
# What the booked-ahead patients are coming in for.
UPCOMING_TYPES = {
    demo.DENTAL: {"hygiene-cleaning": 75, "filling": 12, "periodic-exam": 8, "crown-prep": 5},
    demo.PHYSICAL_THERAPY: {
        "pt-treatment-session": 50,
        "pt-initial-evaluation": 30,
        "pt-re-evaluation": 20,
    },
    demo.WELLNESS: {"wellness-consultation": 65, "membership-review": 35},
}
# Letters NFKD does not take apart, for building ASCII e-mail addresses.
_ASCII = str.maketrans({"đ": "d", "ł": "l", "ø": "o", "æ": "ae", "œ": "oe", "ı": "i"})


def _pick(rng: random.Random, weighted: Mapping[T, float]) -> T:
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:])


class PhoneBook:
    """Hands out fictional numbers, NPA-555-0110…0199, the location's area codes first.

    Only 555-01xx is reserved for fiction, so a demo wired to a real SMS account
    can never text a real person. Past the last free number (some 25,000 of them)
    numbers repeat, which only the search box would notice.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._candidates: dict[tuple[str, ...], list[str]] = {}
        self._used: set[str] = set()
        self._issued: list[str] = []

    def take(self, area_codes: tuple[str, ...]) -> str:
        candidates = self._candidates.get(area_codes)
        if candidates is None:
            local = [f"+1{ac}555{n:04d}" for ac in area_codes for n in demo.PATIENT_LINE_NUMBERS]
            overflow = [
                f"+1{ac}555{n:04d}"
                for ac in demo.OVERFLOW_AREA_CODES
                for n in demo.PATIENT_LINE_NUMBERS
            ]
            self._rng.shuffle(local)
            self._rng.shuffle(overflow)
            # pop() takes from the end: local numbers first, then the overflow.
            candidates = self._candidates[area_codes] = overflow + local
        while candidates:
            number = candidates.pop()
            if number not in self._used:
                self._used.add(number)
                self._issued.append(number)
                # Through the same validation as a typed number, so the data is what
                # the forms would have stored.
                return normalize_phone(number)
        return self._rng.choice(self._issued)


@dataclass
class Site:
    """A created demo location and what generating its patients needs."""

    spec: demo.DemoLocation
    location: Location
    today: dt.date  # in the location's time zone
    providers: dict[str, list[Provider]] = field(default_factory=dict)  # by title
    recorders: list[Any] = field(default_factory=list)  # staff who record consent here
    front_desk: list[Any] = field(default_factory=list)  # who works the recall list here


@dataclass
class PatientPlan:
    """One patient to create, with the shape of their history."""

    patient: Patient
    site: Site
    age: int
    first_visit: dt.date
    stop: dt.date  # no history on or after this (local) day
    upcoming: bool = False
    shared: Site | None = None
    usual: dict[tuple[str, str], Provider] = field(default_factory=dict)


class DemoSeeder:
    """Builds the demo data set in memory, then writes it in a few audited batches."""

    def __init__(self, *, patients: int, seed: int) -> None:
        self.count = patients
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = timezone.now()
        self.phones = PhoneBook(self.rng)
        self.fakers: dict[str, Faker] = {}
        self.sites: dict[str, Site] = {}
        self.types: dict[str, AppointmentType] = {}
        self.type_specs = {spec.code: spec for spec in demo.APPOINTMENT_TYPES}
        self.emails: set[str] = set()
        self.appointments: list[Appointment] = []
        self.appointment_numbers = itertools.count(1)
        self.discharges: list[Discharge] = []
        # Its own stream for what follow-ups add, so the history stays what it was.
        self.recall_rng = random.Random(f"{seed}:followups")
        self.system_user: Any = None

    # --- the run ------------------------------------------------------------------

    def run(self) -> Counter[str]:
        """Create everything; call inside a transaction and `system_actor()`."""
        self.system_user = get_system_user()
        self._create_locations()
        self._create_staff()
        self._create_catalogue()
        plans, households = self._plan_patients()
        self._save_patients(plans, households)
        self._share_patients(plans)
        consents = bulk_create_audited(
            ChannelConsent, [c for plan in plans for c in self._consents(plan)]
        )
        external_ids = bulk_create_audited(ExternalIdentifier, self._external_ids(plans))
        for plan in plans:
            self._history(plan)
        bulk_create_audited(Appointment, self.appointments)
        bulk_create_audited(Discharge, self.discharges)
        # Follow-ups as the event services would have left them, had every visit
        # been entered through them; then what the front desk did about some.
        followups = followups_backfill(patient_ids=[plan.patient.pk for plan in plans])
        attempts = self._work_the_lists(plans, followups)
        messages = self._outreach(plans)
        history = seed_recall_history(self, _recorded_by)
        self._import_sources()

        counts: Counter[str] = Counter(
            locations=len(self.sites),
            staff=len(demo.USERS),
            patients=len(plans),
            households=len(households),
            consents=len(consents),
            external_ids=len(external_ids),
            appointments=len(self.appointments),
            discharges=len(self.discharges),
            followups=len(followups),
            attempts=len(attempts),
        )
        counts.update(messages)
        counts.update(history)
        counts.update(f"patient:{plan.patient.status}" for plan in plans)
        counts.update(f"visit:{appointment.status}" for appointment in self.appointments)
        counts.update(
            {
                f"followup:{status}": n
                for status, n in Followup.objects.values_list("status").annotate(n=Count("pk"))
            }
        )
        counts.update(self._worklist_counts())
        counts["patients_upcoming"] = len(
            {a.patient_id for a in self.appointments if a.start > self.now}
        )
        return counts

    def faker(self, locale: str) -> Faker:
        if locale not in self.fakers:
            # Names are all the demo takes from Faker; loading only the person
            # provider makes a locale ten times cheaper to set up.
            fake = Faker(locale, providers=["faker.providers.person"])
            # crc32, not hash(): str hashes change between processes.
            fake.seed_instance(self.seed + zlib.crc32(locale.encode()))
            self.fakers[locale] = fake
        return self.fakers[locale]

    # --- locations, staff, catalogue ---------------------------------------------------

    def _create_locations(self) -> None:
        for spec in demo.LOCATIONS:
            location = Location(
                name=spec.name,
                slug=spec.slug,
                time_zone=spec.time_zone,
                address_line1=spec.address_line1,
                address_line2=spec.address_line2,
                city=spec.city,
                region=spec.region,
                postal_code=spec.postal_code,
                phone=spec.phone,
                sms_from_number=spec.sms_from_number,
                email_from=spec.email_from,
                business_hours=spec.business_hours,
                module_recalls=True,
                module_appointment_reminders=spec.module_appointment_reminders,
                module_intake=spec.module_intake,
                module_memberships=spec.module_memberships,
                module_referrals=spec.module_referrals,
            )
            location.full_clean()
            location.save()
            today = self.now.astimezone(location.tz).date()
            self.sites[spec.slug] = Site(spec=spec, location=location, today=today)

    def _create_staff(self) -> None:
        for spec in demo.USERS:
            user = User(
                username=spec.username,
                first_name=spec.first_name,
                last_name=spec.last_name,
                email=spec.email,
                # Only the admin uses the Django admin; nobody else needs is_staff.
                is_staff=spec.is_superuser,
                is_superuser=spec.is_superuser,
            )
            try:
                validate_password(spec.password, user)
            except ValidationError as exc:
                raise CommandError(
                    f"Demo password of {spec.username}: {' '.join(exc.messages)}"
                ) from exc
            user.set_password(spec.password)
            user.save()
            for slug in spec.locations:
                site = self.sites[slug]
                # One create() per grant, never bulk_create: the grant's post_save
                # signal is what assigns the guardian permissions on the location.
                LocationGrant.objects.create(user=user, location=site.location, role=spec.role)
                if CHANGE_PATIENTS in ROLE_PERMISSIONS[spec.role]:
                    site.recorders.append(user)
                if spec.role == Role.FRONT_DESK:
                    site.front_desk.append(user)
        for site in self.sites.values():
            # Consents are recorded by the people at the desk; the admin only where
            # nobody else may edit patients.
            site.recorders = [u for u in site.recorders if not u.is_superuser] or site.recorders

    def _create_catalogue(self) -> None:
        for spec in demo.APPOINTMENT_TYPES:
            self.types[spec.code] = AppointmentType.objects.create(
                name=spec.name, code=spec.code, default_duration_minutes=spec.minutes
            )
        for person in demo.PROVIDERS:
            provider = Provider.objects.create(name=person.name, title=person.title)
            provider.locations.set([self.sites[slug].location for slug in person.locations])
            for slug in person.locations:
                self.sites[slug].providers.setdefault(person.title, []).append(provider)
        self._create_cadences()

    def _create_cadences(self) -> None:
        followup_types = {
            spec.code: FollowupType.objects.create(name=spec.name, code=spec.code, value=spec.value)
            for spec in demo.FOLLOWUP_TYPES
        }
        for spec in demo.CADENCES:
            value, unit = spec.interval
            rule = CadenceRule.objects.create(
                name=spec.name,
                event=spec.event,
                interval_value=value,
                interval_unit=unit,
                followup_type=followup_types[spec.followup_type],
                all_locations=False,
                outreach_plan=spec.outreach_plan,
                max_attempts=spec.max_attempts,
                lapse_after_days=spec.lapse_after_days,
            )
            # set() sends m2m_changed, which auditlog records as changes of the rule.
            rule.trigger_types.set([self.types[code] for code in spec.triggers])
            rule.satisfying_types.set([self.types[code] for code in spec.satisfying])
            rule.locations.set(
                [site.location for site in self.sites.values() if site.spec.kind == spec.kind]
            )

    # --- patients ----------------------------------------------------------------------

    def _plan_patients(self) -> tuple[list[PatientPlan], list[list[PatientPlan]]]:
        rng = self.rng
        sites = list(self.sites.values())
        shares = [site.spec.patient_share for site in sites]
        showcase_site = sites[0]
        showcase = []
        for first, preferred, last, language in demo.SHOWCASE_PATIENTS[: self.count]:
            plan = self._plan(
                showcase_site,
                first=first,
                last=last,
                preferred=preferred,
                language=language,
                age=rng.randint(25, 70),
                status=Status.ACTIVE,
                address=self._address(showcase_site),
                locale="en_US",
            )
            showcase.append(plan)

        households: list[list[PatientPlan]] = []
        others: list[PatientPlan] = []
        room = self.count - len(showcase)
        target = round(self.count * HOUSEHOLD_SHARE)
        while sum(map(len, households)) < target and room - len(others) >= 2:
            site = rng.choices(sites, weights=shares)[0]
            members = self._plan_household(site, room=room - len(others))
            households.append(members)
            others.extend(members)
        while len(others) < room:
            others.append(self._plan_single(rng.choices(sites, weights=shares)[0]))
        # Mix households in among everyone else so ids do not cluster by family.
        rng.shuffle(others)
        plans = showcase + others

        for plan in plans:
            if plan.age >= 13 and rng.random() < SHARED_SHARE:
                sister = SISTER_SITES.get(plan.site.spec.slug)
                if sister is None or rng.random() < 0.25:
                    sister = rng.choice([s for s in self.sites if s != plan.site.spec.slug])
                plan.shared = self.sites[sister]
        return plans, households

    def _plan_single(self, site: Site) -> PatientPlan:
        rng = self.rng
        status = _pick(rng, STATUS_WEIGHTS)
        if status == Status.DECEASED:
            age = rng.randint(68, 97)
        else:
            low, high = _pick(rng, AGES[site.spec.kind])
            age = rng.randint(low, high)
        locale = _pick(rng, dict(site.spec.name_locales))
        first, last = self._name(locale, female=rng.random() < 0.54)
        return self._plan(
            site,
            first=first,
            last=last,
            age=age,
            status=status,
            address=self._address(site),
            locale=locale,
        )

    def _plan_household(self, site: Site, *, room: int) -> list[PatientPlan]:
        """A family at one address; the first member is the reminder recipient."""
        rng = self.rng
        roles = _pick(rng, HOUSEHOLDS[site.spec.kind])[:room]
        has_children = "child" in roles
        locale = _pick(rng, dict(site.spec.name_locales))
        female = rng.random() < 0.6
        parent_age = rng.randint(27, 50) if has_children else rng.randint(25, 84)
        first, last = self._name(locale, female=female)
        address = self._address(site)
        home_phone = self.phones.take(site.spec.area_codes) if rng.random() < 0.35 else ""
        # Families move or leave together.
        status = _pick(rng, {Status.ACTIVE: 93, Status.MOVED: 4, Status.INACTIVE: 3})
        common: dict[str, Any] = {
            "last": last,
            "status": status,
            "address": address,
            "locale": locale,
            "home_phone": home_phone,
        }
        parent = self._plan(site, first=first, age=parent_age, **common)
        members = [parent]
        for role in roles[1:]:
            if role == "spouse":
                age = min(95, max(20, parent_age + rng.randint(-6, 6)))
                given, _ = self._name(locale, female=not female)
                members.append(self._plan(site, first=given, age=age, **common))
            else:
                age = rng.randint(0, min(17, parent_age - 19))
                given, _ = self._name(locale, female=rng.random() < 0.5)
                # Reminders for a child go to the primary contact, on the parent's channel.
                channel = parent.patient.preferred_channel
                members.append(self._plan(site, first=given, age=age, channel=channel, **common))
        return members

    def _name(self, locale: str, *, female: bool) -> tuple[str, str]:
        fake = self.faker(locale)
        if locale == "zh_CN":
            # Romanised: the demo's users search in Latin script.
            return fake.first_romanized_name(), fake.last_romanized_name()
        while True:
            first = fake.first_name_female() if female else fake.first_name_male()
            last = fake.last_name()
            # de_DE has a few "auch …" (alias) surnames nobody would type into a form.
            if not last.startswith("auch "):
                return first, last

    def _address(self, site: Site) -> dict[str, str]:
        rng = self.rng
        city, postal_code = rng.choice(site.spec.towns)
        unit = f"Apt {rng.randint(1, 30)}{rng.choice('ABCD')}" if rng.random() < 0.25 else ""
        return {
            "address_line1": f"{rng.randint(100, 9899)} {rng.choice(site.spec.streets)}",
            "address_line2": unit,
            "city": city,
            "region": site.spec.region,
            "postal_code": postal_code,
        }

    def _email(self, first: str, last: str) -> str:
        rng = self.rng

        def ascii_part(name: str) -> str:
            return re.sub(r"[^a-z0-9]", "", fold(name).translate(_ASCII))

        given, family = ascii_part(first) or "patient", ascii_part(last) or "demo"
        local = rng.choice(
            [f"{given}.{family}", f"{given[0]}{family}", f"{given}_{family}", f"{family}.{given}"]
        )
        domain = _pick(rng, EMAIL_DOMAINS)
        address = f"{local}@{domain}"
        while address in self.emails:
            address = f"{local}{rng.randint(2, 999)}@{domain}"
        self.emails.add(address)
        return address

    def _plan(
        self,
        site: Site,
        *,
        first: str,
        last: str,
        age: int,
        status: str,
        address: dict[str, str],
        locale: str,
        preferred: str | None = None,
        language: str | None = None,
        home_phone: str = "",
        channel: str | None = None,
    ) -> PatientPlan:
        """One patient: contact details, preferences and the window of their history."""
        rng = self.rng
        today = site.today
        date_of_birth = today - dt.timedelta(days=int(age * 365.25) + rng.randint(0, 364))

        mobile_chance = 0.6 if age < 18 else 0.72 if age >= 85 else 0.95
        mobile = (
            self.phones.take(site.spec.area_codes)
            if age >= 13 and rng.random() < mobile_chance
            else ""
        )
        if not home_phone and age >= 18 and rng.random() < (0.45 if age >= 65 else 0.08):
            home_phone = self.phones.take(site.spec.area_codes)
        email_chance = 0.0 if age < 16 else 0.6 if age >= 80 else 0.88
        email = self._email(first, last) if rng.random() < email_chance else ""
        if channel is None:
            channel = self._channel(mobile=mobile, email=email, phone=mobile or home_phone)

        if preferred is None:
            preferred = ""
            if first in demo.NICKNAMES and rng.random() < 0.45:
                preferred = demo.NICKNAMES[first]
            elif locale in ("vi_VN", "zh_CN") and age >= 13 and rng.random() < 0.35:
                preferred = rng.choice(demo.ENGLISH_NAMES)
        if language is None:
            language = "en"
            if locale in demo.LOCALE_LANGUAGE:
                spoken, chance = demo.LOCALE_LANGUAGE[locale]
                if rng.random() < chance:
                    language = spoken

        # The history window: when they first came, and when (if ever) they stopped.
        if rng.random() < ESTABLISHED_SHARE:
            first_visit = today - dt.timedelta(days=rng.randint(730, 900))
        else:
            first_visit = today - dt.timedelta(days=rng.randint(14, 729))
        # Nobody is booked before their first birthday.
        first_visit = max(first_visit, date_of_birth + dt.timedelta(days=365))
        stopped_days_ago = STOPPED_DAYS_AGO.get(status)
        if status == Status.ACTIVE and rng.random() < LAPSED_SHARE:
            stopped_days_ago = STOPPED_DAYS_AGO["lapsed"]
        stop = today
        if stopped_days_ago:
            stop = today - dt.timedelta(days=rng.randint(*stopped_days_ago))
            if stop <= first_visit < today:
                stop = first_visit + dt.timedelta(days=1)
        attending = status == Status.ACTIVE and stop == today and first_visit < today

        patient = Patient(
            first_name=first,
            last_name=last,
            preferred_name=preferred,
            date_of_birth=date_of_birth,
            mobile_phone=mobile,
            home_phone=home_phone,
            email=email,
            language=language,
            home_location=site.location,
            status=status,
            preferred_channel=channel,
            **address,
        )
        if age >= 13 and rng.random() < 0.01:
            patient.do_not_contact = True
            patient.do_not_contact_reason = rng.choice(demo.DO_NOT_CONTACT_REASONS)
        plan = PatientPlan(
            patient=patient,
            site=site,
            age=age,
            first_visit=first_visit,
            stop=stop,
            upcoming=attending and rng.random() < UPCOMING_CHANCE,
        )
        if mobile and rng.random() < 0.02:
            # Replied STOP to a reminder once; the SMS consent row records it too.
            patient.sms_opted_out_at = self._moment(plan)
            if channel == Channel.SMS:
                patient.preferred_channel = Channel.EMAIL if email else Channel.CALL
        return plan

    def _channel(self, *, mobile: str, email: str, phone: str) -> str:
        wanted = _pick(self.rng, CHANNEL_WEIGHTS)
        reachable = {
            Channel.SMS: bool(mobile),
            Channel.EMAIL: bool(email),
            Channel.CALL: bool(phone),
            Channel.NONE: True,
        }
        if reachable[wanted]:
            return wanted
        # Fall back to what the patient can actually be reached on.
        for channel in (Channel.SMS, Channel.EMAIL, Channel.CALL):
            if reachable[channel]:
                return channel
        return Channel.NONE

    def _moment(self, plan: PatientPlan) -> dt.datetime:
        """A past moment during opening hours while the patient was coming in."""
        rng = self.rng
        last_day = min(plan.stop, plan.site.today) - dt.timedelta(days=1)
        span = max(0, (last_day - plan.first_visit).days)
        day = plan.first_visit + dt.timedelta(days=rng.randint(0, span))
        at = dt.time(rng.randint(8, 17), rng.randrange(0, 60, 5))
        return min(
            dt.datetime.combine(day, at, tzinfo=plan.site.location.tz),
            self.now - dt.timedelta(hours=1),
        )

    def _save_patients(self, plans: list[PatientPlan], households: list[list[PatientPlan]]) -> None:
        household_rows = bulk_create_audited(
            Household, [Household(name=f"{m[0].patient.last_name} household") for m in households]
        )
        for household, members in zip(household_rows, households, strict=True):
            for member in members:
                member.patient.household = household
        for plan in plans:
            # bulk_create skips Patient.save(), which keeps the search columns.
            plan.patient.refresh_search_fields()
        bulk_create_audited(Patient, [plan.patient for plan in plans])
        for household, members in zip(household_rows, households, strict=True):
            # The primary contact can only point at a saved patient; a plain save()
            # is audited by auditlog's signal like any edit in the admin.
            household.primary_contact = members[0].patient
            household.save(update_fields=["primary_contact"])

    def _share_patients(self, plans: list[PatientPlan]) -> None:
        for plan in plans:
            if plan.shared is not None:
                # add() per patient rather than a bulk insert into the through
                # table: add() sends m2m_changed, which is what auditlog records.
                plan.patient.shared_with.add(plan.shared.location)

    def _consents(self, plan: PatientPlan) -> list[ChannelConsent]:
        rng = self.rng
        patient = plan.patient
        if plan.age < 13:
            return []  # the household's primary contact consents for young children
        rows = []
        if patient.sms_opted_out_at:
            rows.append(
                ChannelConsent(
                    patient=patient,
                    channel=ConsentChannel.SMS,
                    status=ChannelConsent.Status.REFUSED,
                    method=ChannelConsent.Method.SMS_KEYWORD,
                    recorded_at=patient.sms_opted_out_at,
                    recorded_by=self.system_user,
                    note="Replied STOP to a reminder.",
                )
            )
        elif patient.mobile_phone and (
            patient.preferred_channel == Channel.SMS or rng.random() < 0.85
        ):
            granted = patient.preferred_channel == Channel.SMS or rng.random() < 0.7
            rows.append(self._consent(plan, ConsentChannel.SMS, granted=granted))
        if patient.email and (patient.preferred_channel == Channel.EMAIL or rng.random() < 0.8):
            granted = patient.preferred_channel == Channel.EMAIL or rng.random() < 0.8
            rows.append(self._consent(plan, ConsentChannel.EMAIL, granted=granted))
        return rows

    def _consent(self, plan: PatientPlan, channel: str, *, granted: bool) -> ChannelConsent:
        return ChannelConsent(
            patient=plan.patient,
            channel=channel,
            status=ChannelConsent.Status.GRANTED if granted else ChannelConsent.Status.REFUSED,
            method=_pick(self.rng, CONSENT_METHOD_WEIGHTS),
            recorded_at=self._moment(plan),
            recorded_by=self.rng.choice(plan.site.recorders),
        )

    def _external_ids(self, plans: list[PatientPlan]) -> list[ExternalIdentifier]:
        # Eight-digit EHR numbers, unique per system as the constraint demands.
        numbers = self.rng.sample(range(10_000_000, 100_000_000), len(plans))
        return [
            ExternalIdentifier(patient=plan.patient, system="ehr_mrn", value=str(number))
            for plan, number in zip(plans, numbers, strict=True)
            if self.rng.random() < EHR_MRN_SHARE
        ]

    # --- appointments -------------------------------------------------------------------

    def _history(self, plan: PatientPlan) -> None:
        kind = plan.site.spec.kind
        if plan.first_visit < plan.stop:
            if kind == demo.DENTAL:
                self._dental_history(plan)
            elif kind == demo.PHYSICAL_THERAPY:
                self._pt_history(plan)
            else:
                self._wellness_history(plan)
        if plan.shared is not None:
            self._shared_visits(plan, plan.shared)
        if plan.upcoming:
            self._upcoming(plan)

    def _dental_history(self, plan: PatientPlan) -> None:
        """A new-patient exam, then hygiene about every six months (four for some)."""
        rng, site = self.rng, plan.site
        exam = self._book(plan, site, plan.first_visit, "comprehensive-exam", Visit.COMPLETED)
        if exam is None:
            return
        interval = 120 if rng.random() < 0.12 else 182
        day = self._local_day(exam) + dt.timedelta(days=rng.randint(0, 21))
        visits = 0
        while True:
            status = self._past_status(kind=demo.DENTAL)
            with_exam = status == Visit.COMPLETED and visits % 2 == 1
            cleaning = self._book(
                plan, site, day, "hygiene-cleaning", status, reserve=30 if with_exam else 0
            )
            if cleaning is None:
                return
            done = self._local_day(cleaning)
            if with_exam:
                # The yearly exam is booked straight after the cleaning.
                self._book_after(plan, site, cleaning, "periodic-exam")
            if status != Visit.COMPLETED and rng.random() < 0.7:
                day = done + dt.timedelta(days=rng.randint(4, 21))  # rebooked
                continue
            if status == Visit.COMPLETED and rng.random() < 0.12:
                follow_up = done + dt.timedelta(days=rng.randint(10, 45))
                code = "crown-prep" if rng.random() < 0.2 else "filling"
                self._book(plan, site, follow_up, code, self._past_status(kind=demo.DENTAL))
            visits += 1
            day = done + dt.timedelta(days=interval + rng.randint(-21, 28))

    def _pt_history(self, plan: PatientPlan) -> None:
        """One to three episodes of care: evaluation, sessions, re-evaluations, discharge."""
        rng = self.rng
        day = plan.first_visit
        while day < plan.stop:
            day = self._pt_episode(plan, day)
            if rng.random() > 0.4:
                return
            day += dt.timedelta(days=rng.randint(90, 320))

    def _pt_episode(self, plan: PatientPlan, day: dt.date) -> dt.date:
        rng, site = self.rng, plan.site
        evaluation = self._book(plan, site, day, "pt-initial-evaluation", Visit.COMPLETED)
        if evaluation is None:
            return day
        start = self._local_day(evaluation)
        weeks = rng.randint(3, 8)
        offsets = rng.choice([(2,), (0, 3), (0, 3), (0, 2, 4)])  # days within a week
        next_reevaluation = start + dt.timedelta(days=14)
        last = start
        for week in range(weeks):
            for offset in offsets:
                visit_day = start + dt.timedelta(days=2 + 7 * week + offset)
                code = "pt-treatment-session"
                if visit_day >= next_reevaluation:
                    code = "pt-re-evaluation"
                    next_reevaluation += dt.timedelta(days=28)
                booked = self._book(
                    plan, site, visit_day, code, self._past_status(kind=site.spec.kind)
                )
                if booked is None:
                    return last
                last = self._local_day(booked)
        if rng.random() < 0.8:  # the rest stop coming before they are discharged
            discharged = self._book(
                plan,
                site,
                last + dt.timedelta(days=rng.randint(2, 7)),
                "pt-discharge-visit",
                Visit.COMPLETED,
            )
            if discharged is not None:
                day = self._local_day(discharged)
                self.discharges.append(
                    Discharge(
                        patient=plan.patient,
                        location=site.location,
                        discharged_on=day,
                        recorded_by=self.recall_rng.choice(site.recorders),
                    )
                )
                if self.recall_rng.random() < 0.55:
                    # Back two weeks later to check the home program holds up.
                    recheck = day + dt.timedelta(days=rng.randint(12, 20))
                    status = self._past_status(kind=site.spec.kind)
                    self._book(plan, site, recheck, "pt-re-evaluation", status)
        return last

    def _wellness_history(self, plan: PatientPlan) -> None:
        """Consultations every two to four months; members also have a yearly review."""
        rng, site = self.rng, plan.site
        first = self._book(plan, site, plan.first_visit, "wellness-consultation", Visit.COMPLETED)
        if first is None:
            return
        day = self._local_day(first)
        review = day + dt.timedelta(days=365) if rng.random() < 0.45 else None
        while True:
            day += dt.timedelta(days=rng.randint(60, 120))
            if review is not None and review <= day:
                self._book(
                    plan, site, review, "membership-review", self._past_status(kind=demo.WELLNESS)
                )
                review += dt.timedelta(days=365)
            booked = self._book(
                plan, site, day, "wellness-consultation", self._past_status(kind=demo.WELLNESS)
            )
            if booked is None:
                return

    def _shared_visits(self, plan: PatientPlan, site: Site) -> None:
        """A few visits at the other location the patient is shared with."""
        rng = self.rng
        start = max(plan.first_visit, site.today - dt.timedelta(days=540))
        before = min(plan.stop, site.today)
        if start >= before:
            return
        day = start + dt.timedelta(days=rng.randint(0, (before - start).days))
        codes = rng.choice(SHARED_VISITS[site.spec.kind])
        for code in codes:
            booked = self._book(plan, site, day, code, Visit.COMPLETED, until=before)
            if booked is None:
                return
            day = self._local_day(booked) + dt.timedelta(days=rng.randint(3, 5))

    def _upcoming(self, plan: PatientPlan) -> None:
        rng, site = self.rng, plan.site
        day = site.today + dt.timedelta(days=rng.randint(7, 56))
        code = _pick(rng, UPCOMING_TYPES[site.spec.kind])
        # Patients confirm from the reminder a few days ahead; some confirmed at booking.
        soon = (day - site.today).days <= 14
        confirmed = rng.random() < (0.6 if soon else 0.15)
        status = Visit.CONFIRMED if confirmed else Visit.SCHEDULED
        self._book(plan, site, day, code, status, upcoming=True)

    def _past_status(self, *, kind: str) -> str:
        # PT series see more cancellations and no-shows than twice-yearly cleanings.
        weights = (82, 10, 8) if kind == demo.PHYSICAL_THERAPY else (86, 8, 6)
        return self.rng.choices([Visit.COMPLETED, Visit.CANCELLED, Visit.NO_SHOW], weights)[0]

    def _book(
        self,
        plan: PatientPlan,
        site: Site,
        day: dt.date,
        code: str,
        status: str,
        *,
        until: dt.date | None = None,
        upcoming: bool = False,
        reserve: int = 0,
    ) -> Appointment | None:
        """An appointment on the first open day from `day`, within the location's hours.

        A visit in the history must fall before `until` (default: the day the
        patient stopped coming) and before today; otherwise it is not booked and
        None is returned, which ends the series. `reserve` keeps minutes free after
        it for a visit booked back to back.
        """
        hours = site.location.business_hours
        while WEEKDAYS[day.weekday()] not in hours:
            day += dt.timedelta(days=1)
        if not upcoming and day >= min(until or plan.stop, site.today):
            return None
        opens, closes = (_minutes(h) for h in hours[WEEKDAYS[day.weekday()]])
        minutes = self.type_specs[code].minutes
        slots = max(0, (closes - opens - minutes - reserve) // 15)
        start_minute = opens + 15 * self.rng.randint(0, slots)
        at = dt.time(start_minute // 60, start_minute % 60)
        start = dt.datetime.combine(day, at, tzinfo=site.location.tz)
        return self._appointment(plan, site, code, start, status)

    def _book_after(
        self, plan: PatientPlan, site: Site, previous: Appointment, code: str
    ) -> Appointment:
        return self._appointment(plan, site, code, previous.end, previous.status)

    def _appointment(
        self, plan: PatientPlan, site: Site, code: str, start: dt.datetime, status: str
    ) -> Appointment:
        spec = self.type_specs[code]
        # Most history came in from the scheduling system; the rest was typed in.
        imported = self.rng.random() < 0.75
        number = next(self.appointment_numbers)
        appointment = Appointment(
            patient=plan.patient,
            location=site.location,
            provider=self._provider(plan, site, spec),
            appointment_type=self.types[code],
            start=start,
            end=start + dt.timedelta(minutes=spec.minutes),
            status=status,
            source=Appointment.Source.IMPORT if imported else Appointment.Source.MANUAL,
            external_system="scheduler" if imported else "",
            external_id=f"SCH-{number:07d}" if imported else "",
        )
        self.appointments.append(appointment)
        return appointment

    def _provider(
        self, plan: PatientPlan, site: Site, spec: demo.DemoAppointmentType
    ) -> Provider | None:
        """The patient's usual clinician for this kind of visit, now and then another."""
        rng = self.rng
        title = spec.titles[0] if rng.random() < 0.6 else rng.choice(spec.titles)
        candidates = site.providers.get(title) or [
            p for t in spec.titles for p in site.providers.get(t, [])
        ]
        if not candidates:
            return None
        key = (site.spec.slug, title)
        usual = plan.usual.get(key)
        if usual is None:
            usual = plan.usual[key] = rng.choice(candidates)
        return usual if rng.random() < 0.85 else rng.choice(candidates)

    @staticmethod
    def _local_day(appointment: Appointment) -> dt.date:
        return appointment.start.date()  # start is built in the location's zone

    # --- follow-ups ----------------------------------------------------------------------

    def _import_sources(self) -> None:
        """The old tool the Austin office keeps beside PracticeCRM (imports/demo/*.csv)."""
        from imports.models import ImportSource

        for site in self.sites.values():
            if site.location.slug == "riverside-austin":
                ImportSource.objects.create(
                    name="Riverside recall spreadsheet",
                    system="riverside-sheet",
                    location=site.location,
                    recall_type=FollowupType.objects.filter(code="hygiene-recall").first(),
                )

    def _outreach(self, plans: list[PatientPlan]) -> Counter[str]:
        """Reminder configuration, what went out last fortnight, and what is planned.

        The past is written as the engine would have left it (reminders sent and
        delivered, a few unreachable phones, replies waiting for staff); the future
        is planned by the engine itself, so it shows exactly what it will send.
        """
        from reminders.models import InboundMessage, OutboundMessage, OutreachPlan
        from reminders.models import ReminderSchedule as Schedule
        from reminders.planning import plan_all
        from reminders.templating import render

        for name, steps in demo.OUTREACH_PLANS.items():
            OutreachPlan.objects.get_or_create(name=name, defaults={"steps": steps})
        for site in self.sites.values():
            if site.spec.kind == demo.PHYSICAL_THERAPY and "pt-initial-evaluation" in self.types:
                Schedule.objects.create(
                    location=site.location,
                    appointment_type=self.types["pt-initial-evaluation"],
                    steps=demo.PT_EVALUATION_REMINDERS,
                )
        rng = random.Random(f"{self.seed}:outreach")
        patients = {plan.patient.pk: plan.patient for plan in plans}
        rows: list[OutboundMessage] = []
        inbound: list[tuple[InboundMessage, Patient]] = []
        for appointment in self.appointments:
            location = appointment.location
            ago = self.now - appointment.start
            patient = patients[appointment.patient_id]
            if not (
                location.module_appointment_reminders
                and dt.timedelta(hours=2) < ago < dt.timedelta(days=14)
                and patient.mobile_phone
                and patient.status == Patient.Status.ACTIVE
                and not patient.do_not_contact
            ):
                continue
            sent_at = appointment.start - dt.timedelta(days=2)
            text = render(
                kind="appointment_reminder",
                channel="sms",
                language=patient.language,
                location=location,
                first_name=patient.preferred_name or patient.first_name,
                when=appointment.start,
            )
            unreachable = rng.random() < 0.04
            rows.append(
                OutboundMessage(
                    idempotency_key=f"appt:{appointment.pk}:{appointment.start.astimezone(dt.UTC):%Y%m%dT%H%MZ}:2880m:sms",
                    kind="appointment_reminder",
                    channel="sms",
                    step="2880m:sms",
                    patient=patient,
                    recipient=patient,
                    location=location,
                    appointment=appointment,
                    to=patient.mobile_phone,
                    sender=location.sms_from_number,
                    body=text.body,
                    scheduled_for=sent_at,
                    sent_at=sent_at,
                    attempts=3 if unreachable else 1,
                    status="undelivered" if unreachable else "delivered",
                    error_code="30003" if unreachable else "",
                    needs_attention=unreachable,
                    reason="Phone unreachable after several tries" if unreachable else "",
                    provider_id=f"SM{rng.getrandbits(128):032x}",
                )
            )
            if rng.random() < 0.05:
                inbound.append(
                    (
                        InboundMessage(
                            provider_id=f"SM{rng.getrandbits(128):032x}",
                            from_number=patient.mobile_phone,
                            to_number=location.sms_from_number,
                            body=rng.choice(demo.INBOX_REPLIES),
                            location=location,
                            action=InboundMessage.Action.INBOX,
                            received_at=sent_at + dt.timedelta(minutes=rng.randint(3, 600)),
                            read_at=None
                            if rng.random() < 0.5
                            else sent_at + dt.timedelta(hours=20),
                        ),
                        patient,
                    )
                )
        OutboundMessage.objects.bulk_create(rows, batch_size=1000)
        InboundMessage.objects.bulk_create([message for message, _ in inbound])
        InboundMessage.patients.through.objects.bulk_create(
            InboundMessage.patients.through(inboundmessage_id=message.pk, patient_id=patient.pk)
            for message, patient in inbound
        )
        plan_all(now=self.now)
        counts: Counter[str] = Counter(messages_history=len(rows), replies=len(inbound))
        counts.update(
            {
                f"message:{status}": n
                for status, n in OutboundMessage.objects.values_list("status").annotate(
                    n=Count("pk")
                )
            }
        )
        return counts

    def _work_the_lists(self, plans: list[PatientPlan], followups: list[Followup]) -> list[Any]:
        """Recent calls and messages about some due follow-ups, and who works which.

        About a third of the patients due or overdue at a location, and who may be
        contacted, had one or two attempts in the last weeks — one call covers
        every recall they are due for there, and each of those follow-ups logs it.
        None reached the rules' max attempts, nor booked (a booking would be in the
        history). Some patients are assigned to a front-desk colleague.
        """
        rng = self.recall_rng
        plan_of = {plan.patient.pk: plan for plan in plans}
        site_of = {site.location.pk: site for site in self.sites.values()}
        due_now: dict[tuple[int, int], list[Followup]] = defaultdict(list)
        for followup in followups:
            site, patient = site_of[followup.location_id], plan_of[followup.patient_id].patient
            is_due = followup.status == Followup.Status.OPEN and followup.due_date <= site.today
            if is_due and not patient.contact_blockers:  # else on nobody's worklist
                due_now[followup.patient_id, followup.location_id].append(followup)

        attempts: dict[Any, list[ContactAttempt]] = defaultdict(list)  # by staff member
        assigned: dict[Any, list[int]] = defaultdict(list)
        for (patient_id, location_id), theirs in due_now.items():
            site, patient = site_of[location_id], plan_of[patient_id].patient
            if rng.random() < ATTEMPTED_SHARE:
                staff = rng.choice(site.front_desk or site.recorders)
                tries = self._tries(min(f.due_date for f in theirs), patient, site)
                attempts[staff] += [
                    ContactAttempt(
                        followup=followup, location_id=followup.location_id, staff=staff, **attempt
                    )
                    for followup in theirs
                    for attempt in tries
                ]
            if site.front_desk and rng.random() < ASSIGNED_SHARE:
                assigned[rng.choice(site.front_desk)] += [followup.pk for followup in theirs]

        for staff, rows in attempts.items():
            # Written as the colleague who logged them, as the "log attempt" button would.
            with _recorded_by(staff):
                bulk_create_audited(ContactAttempt, rows)
                update_audited(
                    Followup.objects.filter(pk__in={row.followup.pk for row in rows}),
                    status=Followup.Status.CONTACTED,
                )
        for user, pks in assigned.items():
            update_audited(Followup.objects.filter(pk__in=pks), assigned_to=user)
        return [row for rows in attempts.values() for row in rows]

    def _tries(self, due: dt.date, patient: Patient, site: Site) -> list[dict[str, Any]]:
        """One or two tries on distinct days, the fields of a ContactAttempt each."""
        rng = self.recall_rng
        # From two weeks before the due date (recall outreach starts early), and
        # within the last five weeks.
        earliest = max(due, site.today - dt.timedelta(days=21)) - dt.timedelta(days=14)
        span = (site.today - earliest).days
        days = sorted(rng.sample(range(span + 1), k=min(span + 1, rng.choice((1, 1, 2)))))
        tries = []
        for index, offset in enumerate(days):
            at = dt.datetime.combine(
                earliest + dt.timedelta(days=offset),
                dt.time(rng.randint(9, 16), rng.randrange(0, 60, 5)),
                tzinfo=site.location.tz,
            )
            if at >= self.now:  # today, later than now: earlier this morning then
                at = self.now - dt.timedelta(minutes=rng.randint(20, 150))
            last = index == len(days) - 1
            channel, outcome, phone = self._attempt_kind(patient, may_decline=last)
            note = rng.choice(demo.ATTEMPT_NOTES.get(outcome, ("",)))
            tries.append(
                {
                    "channel": channel,
                    "outcome": outcome,
                    "note": note,
                    "phone": phone,
                    "attempted_at": at,
                }
            )
        return tries

    def _attempt_kind(self, patient: Patient, *, may_decline: bool) -> tuple[str, str, str]:
        """(channel, outcome, number) on the way the patient prefers, mostly."""
        rng = self.recall_rng
        Outcome, How = ContactAttempt.Outcome, ContactAttempt.Channel
        preferred = patient.preferred_channel
        if preferred == Channel.SMS and patient.mobile_phone and rng.random() < 0.6:
            return How.SMS, Outcome.NO_ANSWER, patient.mobile_phone  # no reply (yet)
        if preferred == Channel.EMAIL and patient.email and rng.random() < 0.6:
            return How.EMAIL, Outcome.NO_ANSWER, ""
        phone = patient.mobile_phone or patient.home_phone
        if not phone:
            return How.LETTER, Outcome.NO_ANSWER, ""
        outcomes = {Outcome.NO_ANSWER: 40, Outcome.LEFT_MESSAGE: 40}
        if may_decline:
            outcomes[Outcome.DECLINED] = 20
        outcome = _pick(rng, outcomes)
        return (How.VOICEMAIL if outcome == Outcome.LEFT_MESSAGE else How.CALL), outcome, phone

    def _worklist_counts(self) -> Counter[str]:
        """Per location, what its Today page counts in each bucket (as seen by the admin)."""
        admin = User.objects.get(username=next(u.username for u in demo.USERS if u.is_superuser))
        counts: Counter[str] = Counter()
        for slug, site in self.sites.items():
            filters = WorklistFilters(location=site.location)
            for bucket, n in worklist_counts(user=admin, filters=filters, today=site.today).items():
                counts[f"worklist:{slug}:{bucket}"] = n
        return counts


@contextmanager
def _recorded_by(user: Any) -> Iterator[None]:
    """Audit entries inside the block name `user`; the surrounding actor returns after.

    auditlog's set_actor() leaves its actor in the context variable when it ends,
    so the variable is restored by hand (as practicecrm.audit.system_actor does).
    """
    token = auditlog_value.set({})
    try:
        with set_actor(user):
            yield
    finally:
        auditlog_value.reset(token)
