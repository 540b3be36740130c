"""The permission matrix: every URL × every role × own and other location.

The tables below are the specification; the tests only read them. A cell is the
expected response: a status code, `302>where` for a redirect (see REDIRECTS:
login, the admin's login, home, the patient list), or `own/other` where the view
takes an object (a patient, an appointment, a cadence rule) and the answer depends on whether
it belongs to the user's location. Every staff user holds their role at North;
"other" objects belong to South. The admin is also a Django superuser (the admin
site needs it), which must widen nothing: see the tests below the matrix.

A new URL pattern without a row here fails `test_it_covers_every_named_url`.
"""

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Permission
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from followups.models import CadenceRule, Followup, FollowupType
from imports.models import ImportBatch, ImportSource, ImportUpload
from locations.models import Location, Role
from patients.models import Appointment, AppointmentType, Patient, Provider
from reminders.models import (
    InboundMessage,
    MessageTemplate,
    OutboundMessage,
    OutreachPlan,
    ReminderSchedule,
)
from reminders.services import UNSUBSCRIBE_SALT
from tests.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    CadenceRuleFactory,
    FollowupTypeFactory,
    GrantFactory,
    LocationFactory,
    PatientFactory,
    ProviderFactory,
    UserFactory,
    staff,
)

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "no_grant", "front_desk", "care_staff", "manager", "admin")

GET_MATRIX = """
view                        anonymous   no_grant    front_desk  care_staff  manager     admin
home                        302>login   200         302>today   302>today   302>today   302>today
healthz                     200         200         200         200         200         200
login                       200         302>home    302>home    302>home    302>home    302>home
logout                      405         405         405         405         405         405
admin:index                 302>alogin  302>alogin  302>alogin  302>alogin  302>alogin  200
patients:list               302>login   200         200         200         200         200
patients:export             302>login   200         200         200         200         200
patients:create             302>login   404         200         404         200         200
patients:detail             302>login   404         200/404     200/404     200/404     200/404
patients:timeline           302>login   404         200/404     200/404     200/404     200/404
patients:edit               302>login   404         200/404     404         200/404     200/404
patients:preferences        302>login   404         200/404     404         200/404     200/404
patients:household          302>login   404         200/404     404         200/404     200/404
patients:merge              302>login   404         200/404     404         200/404     200/404
patients:appointment_create 302>login   404         200/404     404         200/404     200/404
patients:appointment_edit   302>login   404         200/404     404         200/404     200/404
followups:today             302>login   200         200         200         200         200
followups:export            302>login   200         200         200         200         200
followups:log_attempt       405         405         405/405     405/405     405/405     405/405
followups:snooze            405         405         405/405     405/405     405/405     405/405
followups:dismiss           405         405         405/405     405/405     405/405     405/405
followups:assign            405         405         405/405     405/405     405/405     405/405
followups:reopen            405         405         405/405     405/405     405/405     405/405
followups:create            302>login   404         200/404     404         200/404     200/404
followups:discharge         302>login   404         200/404     404         200/404     200/404
followups:rules             302>login   404         404         404         200         200
reminders:twilio_status     405         405         405         405         405         405
reminders:twilio_inbound    405         405         405         405         405         405
reminders:unsubscribe       200         200         200         200         200         200
reminders:messages          302>login   200         200         200         200         200
reminders:messages_export   302>login   200         200         200         200         200
reminders:message_handled   405         405         405/405     405/405     405/405     405/405
reminders:reply_read        405         405         405/405     405/405     405/405     405/405
followups:rule_create       302>login   404         404         404         404         200
followups:rule_edit         302>login   404         404         404         404         200/404
reminders:setup             302>login   404         404         404         200         200
reminders:location_edit     302>login   404         404         404         404         200/404
reminders:schedule_create   302>login   404         404         404         404         200/404
reminders:schedule_edit     302>login   404         404         404         404         200/404
reminders:plans             302>login   404         404         404         200         200
reminders:plan_create       302>login   404         404         404         404         200
reminders:plan_edit         302>login   404         404         404         404         200/404
reminders:templates         302>login   404         404         404         200         200
reminders:template_create   302>login   404         404         404         404         200/404
reminders:template_edit     302>login   404         404         404         404         200/404
reminders:template_reset    302>login   404         404         404         404         200/404
imports:batches             302>login   404         404         404         200         200
imports:upload              302>login   404         404         404         200         200
imports:mapping             302>login   404         404         404         200/404     200/404
imports:preview             302>login   404         404         404         200/404     200/404
imports:confirm             405         405         405         405         405         405
imports:progress            302>login   404         404         404         200/404     200/404
imports:batch               302>login   404         404         404         200/404     200/404
imports:report              302>login   404         404         404         200/404     200/404
imports:reconciliation      302>login   404         404         404         200         200
reports:dashboard           302>login   404         404         404         200         200
reports:drilldown           302>login   404         404         404         200         200
reports:pilot               302>login   404         404         404         200         200
reports:pilot_export        302>login   404         404         404         200         200
"""

# A valid form for each state-changing view. "302" (no target) means the change was
# saved; every other answer must leave the database exactly as it was. For
# patients:create, "other" means filing the new patient at South: the form refuses
# it (200, re-rendered with the error) and nothing is created.
POST_MATRIX = """
view                        anonymous   no_grant    front_desk  care_staff  manager     admin
patients:create             302>login   404         302/200     404         302/200     302/200
patients:edit               302>login   404         302/404     404         302/404     302/404
patients:preferences        302>login   404         302/404     404         302/404     302/404
patients:household          302>login   404         302/404     404         302/404     302/404
patients:merge              302>login   404         302/404     404         302/404     302/404
patients:appointment_create 302>login   404         302/404     404         302/404     302/404
patients:appointment_edit   302>login   404         302/404     404         302/404     302/404
followups:rule_create       302>login   404         404         404         404         302/200
followups:log_attempt       302>login   404         302/404     404         302/404     302/404
followups:snooze            302>login   404         302/404     404         302/404     302/404
followups:dismiss           302>login   404         302/404     404         302/404     302/404
followups:assign            302>login   404         302/404     404         302/404     302/404
followups:reopen            302>login   404         302/404     404         302/404     302/404
followups:create            302>login   404         302/404     404         302/404     302/404
followups:discharge         302>login   404         302/404     404         302/404     302/404
followups:rule_edit         302>login   404         404         404         404         302/404
reminders:message_handled   302>login   404         302/404     404         302/404     302/404
reminders:reply_read        302>login   404         302/404     404         302/404     302/404
reminders:location_edit     302>login   404         404         404         404         302/404
reminders:schedule_create   302>login   404         404         404         404         302/404
reminders:schedule_edit     302>login   404         404         404         404         302/404
reminders:plan_create       302>login   404         404         404         404         302
reminders:plan_edit         302>login   404         404         404         404         302/404
reminders:template_create   302>login   404         404         404         404         302/404
reminders:template_edit     302>login   404         404         404         404         302/404
reminders:template_reset    302>login   404         404         404         404         302/404
imports:upload              302>login   404         404         404         302/200     302/200
imports:mapping             302>login   404         404         404         302/404     302/404
imports:confirm             302>login   404         404         404         302/404     302/404
"""

# Where a `302>name` cell redirects to.
REDIRECTS = {
    "login": "login",
    "alogin": "admin:login",
    "home": "home",
    "list": "patients:list",
    "today": "followups:today",
}

# Which object each URL's <pk> is; views not listed take no object.
OBJECT_OF = {
    "patients:detail": "patient",
    "patients:timeline": "patient",
    "patients:edit": "patient",
    "patients:preferences": "patient",
    "patients:household": "patient",
    "patients:merge": "patient",
    "patients:appointment_create": "patient",
    "patients:appointment_edit": "appointment",
    "followups:rule_edit": "rule",
    "followups:log_attempt": "followup",
    "followups:snooze": "followup",
    "followups:dismiss": "followup",
    "followups:assign": "followup",
    "followups:reopen": "closed_followup",
    "followups:create": "patient",
    "followups:discharge": "patient",
    "reminders:message_handled": "message",
    "reminders:reply_read": "reply",
    "reminders:location_edit": "location",
    "reminders:schedule_create": "location",
    "reminders:schedule_edit": "schedule",
    "reminders:plan_edit": "plan",
    "reminders:template_create": "location",
    "reminders:template_edit": "template",
    "reminders:template_reset": "template",
    "imports:mapping": "upload",
    "imports:preview": "upload",
    "imports:confirm": "upload",
    "imports:progress": "upload",
    "imports:batch": "batch",
    "imports:report": "batch",
}
# Views that only read: they have no POST row.
# Views that only take POST: a GET is refused (405) before anything is looked up.
POST_ONLY = {
    "followups:log_attempt",
    "followups:snooze",
    "followups:dismiss",
    "followups:reopen",
    "followups:assign",
    "reminders:message_handled",
    "reminders:reply_read",
    "imports:confirm",
}
READ_ONLY = {
    "patients:list",
    "patients:detail",
    "patients:timeline",
    "followups:rules",
    "followups:today",
    "reminders:setup",
    "reminders:plans",
    "reminders:templates",
    "reminders:messages",
    # Exports (issue #5): the list pages' answers, as a file.
    "patients:export",
    "followups:export",
    "reminders:messages_export",
    # Imports (issue #5): the list, the dry run, the progress, a batch and its report.
    "imports:batches",
    "imports:preview",
    "imports:progress",
    "imports:batch",
    "imports:report",
    # The side-by-side reconciliation: another location (?location=) is a 404,
    # tested in tests/imports/test_reconciliation.py.
    "imports:reconciliation",
    # Recall dashboard and pilot report (issue #6): read-only; another location
    # (?location=) is a 404, tested in tests/reports/test_views.py.
    "reports:dashboard",
    "reports:drilldown",
    "reports:pilot",
    "reports:pilot_export",
}


def parse_matrix(text: str) -> dict[str, dict[str, str]]:
    header, *rows = (line.split() for line in text.strip().splitlines())
    assert tuple(header[1:]) == ROLES, "matrix columns must be the roles, in order"
    return {row[0]: dict(zip(ROLES, row[1:], strict=True)) for row in rows}


GET = parse_matrix(GET_MATRIX)
POST = parse_matrix(POST_MATRIX)


def matrix_cases(matrix: dict[str, dict[str, str]]):
    for view, cells in matrix.items():
        for role, cell in cells.items():
            own, _, other = cell.partition("/")
            if view in OBJECT_OF or other:
                yield pytest.param(view, role, "own", own, id=f"{view}-{role}-own")
                yield pytest.param(view, role, "other", other or own, id=f"{view}-{role}-other")
            else:
                yield pytest.param(view, role, None, own, id=f"{view}-{role}")


@dataclass
class World:
    """Two locations with a patient and an appointment each; staff work at North."""

    north: Location
    south: Location
    own_patient: Patient
    other_patient: Patient
    own_appointment: Appointment
    other_appointment: Appointment
    visit: AppointmentType
    north_provider: Provider
    south_provider: Provider
    users: dict[str, Any]
    # Cadence rules scoped to one location each (same type and trigger: no overlap).
    own_rule: CadenceRule
    other_rule: CadenceRule
    # An open follow-up and a dismissed one (of another type) for each patient.
    own_followup: Followup
    other_followup: Followup
    own_closed_followup: Followup
    other_closed_followup: Followup
    exam: FollowupType
    # Outreach setup: each location's default reminder schedule and own SMS reminder
    # text, and a recall plan named by each location's rule.
    own_schedule: ReminderSchedule
    other_schedule: ReminderSchedule
    own_template: MessageTemplate
    other_template: MessageTemplate
    own_plan: OutreachPlan
    other_plan: OutreachPlan
    # A failed SMS needing attention and an unread inbox reply at each location.
    own_message: OutboundMessage
    other_message: OutboundMessage
    own_reply: InboundMessage
    other_reply: InboundMessage
    # Imports: a source per location, with an uploaded file already dry-run, and a
    # finished import.
    own_source: ImportSource
    other_source: ImportSource
    own_upload: ImportUpload
    other_upload: ImportUpload
    own_batch: ImportBatch
    other_batch: ImportBatch

    @property
    def own_location(self) -> Location:
        return self.north

    @property
    def other_location(self) -> Location:
        return self.south

    def target(self, view: str, which: str | None):
        kind = OBJECT_OF.get(view)
        return getattr(self, f"{which}_{kind}") if kind and which else None

    def login(self, client, role: str):
        user = self.users[role]
        if user is not None:
            client.force_login(user)
        return user

    def url(self, view: str, which: str | None) -> str:
        if view == "reminders:unsubscribe":
            # Public: the signed token in the email link is the whole access rule.
            token = signing.dumps({"p": self.own_patient.pk}, salt=UNSUBSCRIBE_SALT)
            return reverse(view, args=[token])
        obj = self.target(view, which)
        return reverse(view, args=[obj.pk]) if obj else reverse(view)


def make_user(role: str, location: Location):
    if role == "anonymous":
        return None
    if role == "no_grant":
        return UserFactory(username="nogrant")
    if role == "everything":
        # Every role at North: the strongest user who still has no business at South.
        user = UserFactory(username="everything")
        for each in Role:
            GrantFactory(user=user, location=location, role=each)
        return user
    if role == "admin":
        # The practice's admin also runs the Django admin, as the demo accounts do.
        return staff(Role.ADMIN, location, username="admin", is_staff=True, is_superuser=True)
    roles = {
        "front_desk": Role.FRONT_DESK,
        "care_staff": Role.CARE_STAFF,
        "manager": Role.PRACTICE_MANAGER,
    }
    return staff(roles[role], location, username=role)


def make_rule(name: str, visit: AppointmentType, location: Location, plan: str) -> CadenceRule:
    recall = FollowupTypeFactory(name="Hygiene recall", code="hygiene-recall")
    return CadenceRuleFactory(
        name=name,
        followup_type=recall,
        outreach_plan=plan,
        all_locations=False,
        trigger_types=[visit],
        satisfying_types=[visit],
        locations=[location],
    )


def make_followup(patient: Patient, type_code: str, status: str) -> Followup:
    due = timezone.localdate() - dt.timedelta(days=3)
    return Followup.objects.create(
        patient=patient,
        followup_type=FollowupTypeFactory(code=type_code, name=type_code.replace("-", " ")),
        location=patient.home_location,
        status=status,
        due_date=due,
        lapses_on=due + dt.timedelta(days=180),
        dismissed_reason="Moved away" if status == "dismissed" else "",
    )


def make_message(patient: Patient) -> OutboundMessage:
    return OutboundMessage.objects.create(
        idempotency_key=f"matrix:{patient.pk}",
        kind=OutboundMessage.Kind.RECALL,
        channel=OutboundMessage.Channel.SMS,
        patient=patient,
        recipient=patient,
        location=patient.home_location,
        to="+15125550100",
        sender="+15125550199",
        body="Time for your visit.",
        scheduled_for=timezone.now() - dt.timedelta(days=1),
        status=OutboundMessage.Status.FAILED,
        reason="The carrier blocked it as spam; not retried",
        error_code="30007",
        needs_attention=True,
    )


def make_reply(patient: Patient) -> InboundMessage:
    reply = InboundMessage.objects.create(
        provider_id=f"SMmatrix{patient.pk}",
        from_number="+15125550100",
        to_number="+15125550199",
        body="Can I come on Friday instead?",
        location=patient.home_location,
        action=InboundMessage.Action.INBOX,
        received_at=timezone.now(),
    )
    reply.patients.add(patient)
    return reply


ONE_STEP = [{"minutes_before": 1440, "channel": "sms"}]
PLAN_STEP = [{"days": 0, "channel": "sms"}]


def make_template(location: Location) -> MessageTemplate:
    return MessageTemplate.objects.create(
        kind="appointment_reminder",
        channel="sms",
        language="en",
        location=location,
        body="{location_name}: see you {date} at {time}.",
    )


IMPORT_CSV = 'Patient Name,DOB\n"Núñez, Zoë",1990-01-02\n'
IMPORT_MAPPING = {"Patient Name": "full_name", "DOB": "date_of_birth"}


def make_imports(north: Location, south: Location) -> dict[str, Any]:
    """Per location: a source, an upload (its file on disk, dry-run once) and an import."""
    made: dict[str, Any] = {}
    for which, location in (("own", north), ("other", south)):
        source = ImportSource.objects.create(
            name=f"{location.name} sheet", system=f"{location.slug}-sheet", location=location
        )
        preview = ImportBatch.objects.create(
            source=source, file_name="sheet.csv", sha256="0" * 64, size=1, mapping=IMPORT_MAPPING
        )
        upload = ImportUpload.objects.create(
            source=source,
            file_name="sheet.csv",
            headers=list(IMPORT_MAPPING),
            mapping=IMPORT_MAPPING,
            preview=preview,
            total_rows=1,
        )
        upload.path.parent.mkdir(parents=True, exist_ok=True)
        upload.path.write_text(IMPORT_CSV, encoding="utf-8")
        made[f"{which}_source"] = source
        made[f"{which}_upload"] = upload
        made[f"{which}_batch"] = ImportBatch.objects.create(
            source=source,
            file_name="sheet.csv",
            sha256="0" * 64,
            size=1,
            dry_run=False,
            status=ImportBatch.Status.DONE,
            counts={"new": 1},
            report={"rejected": [{"line": 3, "column": "DOB", "reason": "date of birth is empty"}]},
        )
    return made


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    """Built once for the module, like Django's setUpTestData: inside a transaction
    that is rolled back at the end, while each test runs in its own savepoint."""
    media = override_settings(MEDIA_ROOT=tmp_path_factory.mktemp("media"))
    with django_db_blocker.unblock(), transaction.atomic(), media:
        north = LocationFactory(
            name="North Clinic",
            slug="north",
            time_zone="America/New_York",
            go_live_date=timezone.localdate() - dt.timedelta(weeks=3),
        )
        south = LocationFactory(name="South Clinic", slug="south", time_zone="America/Los_Angeles")
        visit = AppointmentTypeFactory(name="Hygiene", code="hygiene")
        own_patient = PatientFactory(home_location=north, first_name="Zoë", last_name="Núñez")
        other_patient = PatientFactory(home_location=south, first_name="Amara", last_name="Okafor")
        yield World(
            north=north,
            south=south,
            own_patient=own_patient,
            other_patient=other_patient,
            own_appointment=AppointmentFactory(patient=own_patient, appointment_type=visit),
            other_appointment=AppointmentFactory(patient=other_patient, appointment_type=visit),
            visit=visit,
            north_provider=ProviderFactory(name="Dr North", locations=[north]),
            south_provider=ProviderFactory(name="Dr South", locations=[south]),
            users={role: make_user(role, north) for role in (*ROLES, "everything")},
            own_rule=make_rule("North recall", visit, north, "North plan"),
            other_rule=make_rule("South recall", visit, south, "South plan"),
            own_followup=make_followup(own_patient, "hygiene-recall", "open"),
            other_followup=make_followup(other_patient, "hygiene-recall", "open"),
            own_closed_followup=make_followup(own_patient, "exam-recall", "dismissed"),
            other_closed_followup=make_followup(other_patient, "exam-recall", "dismissed"),
            exam=FollowupTypeFactory(name="Exam recall", code="exam-recall"),
            own_schedule=ReminderSchedule.objects.create(location=north, steps=ONE_STEP),
            other_schedule=ReminderSchedule.objects.create(location=south, steps=ONE_STEP),
            own_template=make_template(north),
            other_template=make_template(south),
            own_plan=OutreachPlan.objects.create(name="North plan", steps=PLAN_STEP),
            other_plan=OutreachPlan.objects.create(name="South plan", steps=PLAN_STEP),
            own_message=make_message(own_patient),
            other_message=make_message(other_patient),
            own_reply=make_reply(own_patient),
            other_reply=make_reply(other_patient),
            **make_imports(north, south),
        )
        transaction.set_rollback(True)


def assert_cell(response, cell: str) -> None:
    status, _, target = cell.partition(">")
    assert response.status_code == int(status), response.content[:300]
    if target:
        assert response["Location"].split("?")[0] == reverse(REDIRECTS[target])


# --- the valid POST body and the observable state of each state-changing view -------


def patient_form_data(patient: Patient, **overrides) -> dict:
    data = {
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "preferred_name": patient.preferred_name,
        "date_of_birth": patient.date_of_birth.isoformat(),
        "status": patient.status,
        "mobile_phone": patient.mobile_phone,
        "home_phone": patient.home_phone,
        "email": patient.email,
        "address_line1": "",
        "address_line2": "",
        "city": "",
        "region": "",
        "postal_code": "",
        "home_location": patient.home_location_id,
    }
    return {**data, **overrides}


PREFERENCES = {
    "preferred_channel": "email",
    "language": "es",
    "sms_consent": "",
    "email_consent": "granted",
    "call_consent": "",
    "consent_method": "written",
    "do_not_contact_reason": "",
}


def appointment_form_data(appointment: Appointment, **overrides) -> dict:
    local = appointment.local_start
    data = {
        "location": appointment.location_id,
        "appointment_type": appointment.appointment_type_id,
        "provider": "",
        "date": local.date().isoformat(),
        "start_time": local.strftime("%H:%M"),
        "end_time": appointment.local_end.strftime("%H:%M"),
        "status": appointment.status,
    }
    return {**data, **overrides}


def rule_form_data(rule: CadenceRule, **overrides) -> dict:
    data = {
        "name": rule.name,
        "event": rule.event,
        "trigger_types": [t.pk for t in rule.trigger_types.all()],
        "interval_value": rule.interval_value,
        "interval_unit": rule.interval_unit,
        "followup_type": rule.followup_type_id,
        "satisfying_types": [t.pk for t in rule.satisfying_types.all()],
        "locations": [loc.pk for loc in rule.locations.all()],
        "outreach_plan": rule.outreach_plan,
        "max_attempts": rule.max_attempts,
        "lapse_after_days": rule.lapse_after_days,
        "is_active": "on",
    }
    return {**data, **overrides}


def post_body(view: str, world: World, which: str | None) -> dict:
    target = world.target(view, which)
    if view in READ_ONLY:
        return {}
    if view == "patients:create":
        home = world.north if which == "own" else world.south
        return {
            **patient_form_data(
                world.own_patient,
                first_name="Matrix",
                last_name="Newcomer",
                mobile_phone="(512) 867-5309",
                home_location=home.pk,
            ),
            **PREFERENCES,
        }
    if view == "patients:edit":
        return patient_form_data(target, first_name="Renamed")
    if view == "patients:preferences":
        return PREFERENCES
    if view == "patients:household":
        return {"create": "1"}
    if view == "patients:merge":
        # A second record at North to merge into the target, which survives.
        duplicate = PatientFactory(home_location=world.north, last_name="Duplicate")
        return {"other": duplicate.pk, "survivor": target.pk}
    if view == "patients:appointment_create":
        return {
            "location": target.home_location_id,
            "appointment_type": world.visit.pk,
            "provider": "",
            "date": "2026-05-04",
            "start_time": "09:00",
            "end_time": "09:30",
            "status": "scheduled",
        }
    if view == "patients:appointment_edit":
        return appointment_form_data(target, status="completed")
    if view == "followups:rule_create":
        # A discharge rule, so it cannot overlap the world's rules; "other" scopes it to South.
        where = world.north if which == "own" else world.south
        return rule_form_data(
            world.own_rule, name="Matrix rule", event="discharged", locations=[where.pk]
        )
    if view == "followups:rule_edit":
        return rule_form_data(target, name="Renamed rule")
    if view == "reminders:location_edit":
        return {
            "quiet_hours_start": "09:00",
            "quiet_hours_end": "19:00",
            "cap_per_day": 1,
            "cap_per_week": 3,
            "module_recalls": "on",
        }
    if view in ("reminders:schedule_create", "reminders:schedule_edit"):
        steps = {
            "steps-TOTAL_FORMS": "1",
            "steps-INITIAL_FORMS": "0",
            "steps-0-amount": "3",
            "steps-0-unit": "hours",
            "steps-0-channel": "sms",
        }
        return {"appointment_type": world.visit.pk, "is_active": "on", **steps}
    if view in ("reminders:plan_create", "reminders:plan_edit"):
        steps = {
            "steps-TOTAL_FORMS": "1",
            "steps-INITIAL_FORMS": "0",
            "steps-0-amount": "-7",
            "steps-0-channel": "email",
        }
        return {"name": "Matrix plan", "is_active": "on", **steps}
    if view in ("reminders:template_create", "reminders:template_edit"):
        return {
            "kind": "recall",
            "channel": "sms",
            "language": "en",
            "body": "{location_name}: time to book. Call {location_phone}.",
        }
    if view == "reminders:template_reset":
        return {}
    if view == "followups:log_attempt":
        return {"channel": "call", "outcome": "no_answer"}
    if view == "followups:snooze":
        return {"until": (timezone.localdate() + dt.timedelta(days=10)).isoformat()}
    if view == "followups:dismiss":
        return {"reason": "Moved to another practice"}
    if view == "followups:reopen":
        return {}
    if view == "followups:assign":
        return {"assigned_to": world.users["front_desk"].pk}
    if view == "followups:create":
        return {
            "followup_type": world.exam.pk,
            "location": target.home_location_id,
            "due_date": timezone.localdate().isoformat(),
            "reason": "Asked for a call",
        }
    if view == "followups:discharge":
        return {"location": target.home_location_id, "discharged_on": "2026-11-01"}
    if view in ("reminders:message_handled", "reminders:reply_read"):
        return {}
    if view == "imports:upload":
        # "other" names South's source, which the form does not offer.
        source = world.own_source if which == "own" else world.other_source
        upload = SimpleUploadedFile("sheet.csv", IMPORT_CSV.encode(), content_type="text/csv")
        return {"source": source.pk, "file": upload}
    if view == "imports:mapping":
        return {"col_0": "full_name", "col_1": "date_of_birth"}
    if view == "imports:confirm":
        return {}
    raise AssertionError(f"no POST body for {view}")


def state(view: str, world: World, which: str | None):
    """What a successful POST to `view` changes, read fresh from the database."""
    target = world.target(view, which)
    if view in READ_ONLY:
        return None
    if view == "patients:create":
        return Patient.objects.filter(last_name="Newcomer").count()
    if view == "patients:appointment_create":
        return target.appointments.count()
    if view == "patients:merge":
        return target.merged_records.count()
    if view == "followups:rule_create":
        return CadenceRule.objects.filter(name="Matrix rule").count()
    if view == "imports:upload":
        return ImportUpload.objects.count()
    if view == "imports:mapping":
        return ImportUpload.objects.get(pk=target.pk).preview_id
    if view == "imports:confirm":
        return ImportUpload.objects.get(pk=target.pk).import_requested_at
    if view == "followups:log_attempt":
        return target.attempts.count()
    if view == "followups:create":
        return target.followups.count()
    if view == "followups:discharge":
        return target.discharges.count()
    if view == "reminders:schedule_create":
        return ReminderSchedule.objects.filter(location=target).count()
    if view == "reminders:plan_create":
        return OutreachPlan.objects.filter(name="Matrix plan").count()
    if view == "reminders:template_create":
        return MessageTemplate.objects.filter(location=target).count()
    if view == "reminders:template_reset":
        return MessageTemplate.objects.filter(pk=target.pk).exists()
    target.refresh_from_db()
    if view == "reminders:location_edit":
        return target.quiet_hours_start
    if view == "reminders:schedule_edit":
        return target.steps
    if view == "reminders:plan_edit":
        return target.name
    if view == "reminders:template_edit":
        return target.body
    if view == "patients:edit":
        return target.first_name
    if view == "patients:preferences":
        return (target.preferred_channel, target.language, list(target.consents.values()))
    if view == "patients:household":
        return target.household_id
    if view == "patients:appointment_edit":
        return target.status
    if view == "followups:rule_edit":
        return target.name
    if view == "followups:snooze":
        return target.snoozed_until
    if view == "followups:assign":
        return target.assigned_to_id
    if view in ("followups:dismiss", "followups:reopen"):
        return target.status
    if view == "reminders:message_handled":
        return target.handled_at
    if view == "reminders:reply_read":
        return target.read_at
    raise AssertionError(f"no state for {view}")


# --- the matrix -----------------------------------------------------------------------


@pytest.mark.parametrize(("view", "role", "which", "cell"), matrix_cases(GET))
def test_it_answers_get_as_the_matrix_says(client, world, view, role, which, cell):
    world.login(client, role)
    response = client.get(world.url(view, which))
    assert_cell(response, cell)


@pytest.mark.parametrize(("view", "role", "which", "cell"), matrix_cases(POST))
def test_it_answers_post_as_the_matrix_says(client, world, view, role, which, cell):
    world.login(client, role)
    before = state(view, world, which)
    response = client.post(world.url(view, which), post_body(view, world, which))
    assert_cell(response, cell)
    after = state(view, world, which)
    if cell == "302":
        assert after != before, "an allowed POST must save the change"
    else:
        assert after == before, "a refused POST must change nothing"


def named_urls(patterns=None, namespace: str = ""):
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from named_urls(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield f"{namespace}{pattern.name}"


def test_it_covers_every_named_url():
    names = set(named_urls())
    # The Django admin's own pages are guarded by its staff check as a whole; the
    # matrix pins that check through admin:index.
    app_names = {name for name in names if not name.startswith("admin:")}
    assert "admin:index" in names
    missing = app_names - set(GET)
    assert not missing, f"add rows to GET_MATRIX for {sorted(missing)}"
    assert set(GET) <= names, "GET_MATRIX names a URL that no longer exists"
    staff_apps = ("patients:", "followups:", "reminders:", "imports:", "reports:")
    app_views = {name for name in app_names if name.startswith(staff_apps)}
    # Twilio's webhooks and the emailed unsubscribe link are not staff pages.
    app_views -= {"reminders:twilio_status", "reminders:twilio_inbound", "reminders:unsubscribe"}
    assert app_views - READ_ONLY == set(POST), "every state-changing view needs a POST row"


# --- IDOR: another location's object, or none at all, is a plain 404 -----------------


def refused_status(view: str, method: str) -> int:
    # A method the view never takes is refused (405) before anything is looked up.
    wrong_method = (method == "post" and view in READ_ONLY) or (
        method == "get" and view in POST_ONLY
    )
    return 405 if wrong_method else 404


@pytest.mark.parametrize("view", sorted(OBJECT_OF))
@pytest.mark.parametrize("method", ["get", "post"])
def test_it_answers_404_for_another_locations_object(client, world, view, method):
    world.login(client, "everything")
    body = post_body(view, world, "other") if method == "post" else None
    before = state(view, world, "other") if method == "post" else None
    response = getattr(client, method)(world.url(view, "other"), body)
    assert response.status_code == refused_status(view, method)
    assert "Okafor" not in response.content.decode()
    if method == "post":
        assert state(view, world, "other") == before


@pytest.mark.parametrize("view", sorted(OBJECT_OF))
@pytest.mark.parametrize("method", ["get", "post"])
def test_it_answers_404_for_an_object_that_does_not_exist(client, world, view, method):
    world.login(client, "everything")
    missing = uuid.UUID(int=987654321) if OBJECT_OF[view] == "upload" else 987654321
    response = getattr(client, method)(reverse(view, args=[missing]), {})
    assert response.status_code == refused_status(view, method)


@pytest.mark.parametrize("view", sorted(READ_ONLY))
def test_it_refuses_post_on_read_only_views(client, world, view):
    world.login(client, "everything")
    url = reverse(view) if view == "patients:list" else world.url(view, "own")
    entries = LogEntry.objects.count()
    assert client.post(url, {}).status_code == 405
    assert LogEntry.objects.count() == entries


def test_it_lets_the_strongest_north_user_reach_every_north_object(client, world):
    world.login(client, "everything")
    for view in sorted(set(OBJECT_OF) - POST_ONLY):
        assert client.get(world.url(view, "own")).status_code == 200, view


# --- what a grant does and does not cover --------------------------------------------


def test_it_ignores_a_global_view_permission(client, world):
    user = UserFactory(username="global")
    user.user_permissions.add(Permission.objects.get(codename="view_patients"))
    user.user_permissions.add(Permission.objects.get(codename="change_patients"))
    client.force_login(user)
    assert user.has_perm("locations.view_patients")  # Django itself would say yes
    assert list(client.get(reverse("patients:list")).context["page"].object_list) == []
    assert client.get(world.url("patients:detail", "own")).status_code == 404
    assert client.get(world.url("patients:edit", "own")).status_code == 404
    assert client.get(reverse("patients:create")).status_code == 404


def test_it_shows_a_superuser_without_grants_no_patients(client, world):
    user = UserFactory(username="root", is_superuser=True, is_staff=True)
    client.force_login(user)
    assert client.get(reverse("home")).status_code == 200  # the friendly empty page
    assert list(client.get(reverse("patients:list")).context["page"].object_list) == []
    assert client.get(world.url("patients:detail", "own")).status_code == 404
    assert client.get(world.url("patients:appointment_edit", "own")).status_code == 404
    assert client.get(reverse("admin:index")).status_code == 200


def test_it_shows_a_patient_shared_with_the_users_location(client, world):
    world.other_patient.shared_with.add(world.north)
    world.login(client, "front_desk")
    listed = client.get(reverse("patients:list")).context["page"].object_list
    assert world.other_patient in listed
    assert client.get(world.url("patients:detail", "other")).status_code == 200
    assert client.get(world.url("patients:edit", "other")).status_code == 200


def test_it_hides_a_patient_again_when_sharing_ends(client, world):
    world.other_patient.shared_with.add(world.north)
    world.other_patient.shared_with.remove(world.north)
    world.login(client, "front_desk")
    assert client.get(world.url("patients:detail", "other")).status_code == 404


def test_it_needs_change_appointments_at_the_appointments_own_location(client, world):
    # North's patient was seen at South. North front desk sees the visit on the
    # patient's page but may not edit South's appointment book.
    at_south = AppointmentFactory(
        patient=world.own_patient, location=world.south, appointment_type=world.visit
    )
    world.login(client, "front_desk")
    assert client.get(world.url("patients:detail", "own")).status_code == 200
    url = reverse("patients:appointment_edit", args=[at_south.pk])
    assert client.get(url).status_code == 404
    response = client.post(url, appointment_form_data(at_south, status="completed"))
    assert response.status_code == 404
    at_south.refresh_from_db()
    assert at_south.status == "scheduled"


def test_it_lets_front_desk_at_the_appointments_location_edit_it(client, world):
    # Care staff at North (sees the patient) and front desk at South (keeps South's book).
    at_south = AppointmentFactory(
        patient=world.own_patient, location=world.south, appointment_type=world.visit
    )
    user = staff(Role.CARE_STAFF, world.north, username="both")
    GrantFactory(user=user, location=world.south, role=Role.FRONT_DESK)
    client.force_login(user)
    url = reverse("patients:appointment_edit", args=[at_south.pk])
    response = client.post(url, appointment_form_data(at_south, status="completed"))
    assert response.status_code == 302
    assert response["Location"] == world.url("patients:detail", "own")
    at_south.refresh_from_db()
    assert at_south.status == "completed"
    # …but not North's, where they are care staff only.
    north_url = reverse("patients:appointment_edit", args=[world.own_appointment.pk])
    assert client.get(north_url).status_code == 404


def test_it_refuses_to_record_an_appointment_at_a_location_without_the_grant(client, world):
    world.login(client, "front_desk")
    body = post_body("patients:appointment_create", world, "own") | {"location": world.south.pk}
    response = client.post(world.url("patients:appointment_create", "own"), body)
    assert response.status_code == 200
    assert "location" in response.context["form"].errors
    assert world.own_patient.appointments.count() == 1


def test_it_hides_patients_of_an_inactive_location(client, world):
    Location.objects.filter(pk=world.north.pk).update(is_active=False)
    world.login(client, "front_desk")
    assert client.get(world.url("patients:detail", "own")).status_code == 404


def test_it_refuses_an_inactive_user_even_with_a_grant(client, world):
    user = staff(Role.FRONT_DESK, world.north, username="former", is_active=False)
    client.force_login(user)
    response = client.get(world.url("patients:detail", "own"))
    assert response.status_code == 302


# --- no grant at all -------------------------------------------------------------------


def test_it_shows_a_friendly_page_to_a_user_without_grants(client, world):
    world.login(client, "no_grant")
    response = client.get(reverse("home"))
    assert response.status_code == 200
    assert "You don't have access to any location yet" in response.content.decode()
    listing = client.get(reverse("patients:list"))
    assert listing.status_code == 200
    assert list(listing.context["page"].object_list) == []
    assert "Núñez" not in listing.content.decode()


def test_it_offers_add_and_edit_only_to_roles_that_may(client, world):
    world.login(client, "care_staff")
    listing = client.get(reverse("patients:list")).content.decode()
    assert reverse("patients:create") not in listing
    page = client.get(world.url("patients:detail", "own")).content.decode()
    assert world.url("patients:edit", "own") not in page
    assert world.url("patients:appointment_create", "own") not in page
