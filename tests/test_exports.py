"""CSV and XLSX exports of the patient list, Today and the outbox (issue #5, "Export")."""

import csv
import datetime as dt
import io
import itertools

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from followups.models import Followup, FollowupType
from locations.models import Role
from patients.models import Patient
from practicecrm.exports import neutralise
from reminders.models import InboundMessage, OutboundMessage
from tests.factories import OutboundMessageFactory, PatientFactory, staff

pytestmark = pytest.mark.django_db

_keys = itertools.count()


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def csv_rows(response) -> list[list[str]]:
    text = body_of(response).decode("utf-8")
    assert text.startswith("\ufeff"), "Excel needs the byte-order mark to read UTF-8"
    return list(csv.reader(io.StringIO(text[1:])))


def xlsx_rows(response) -> list[list]:
    sheet = load_workbook(io.BytesIO(body_of(response))).active
    assert sheet is not None
    for row in sheet.iter_rows():
        for cell in row:
            # Strings only: never a formula ("f") nor a number Excel would reformat.
            assert cell.data_type == "s" or cell.value is None
    return [[cell.value for cell in row] for row in sheet.iter_rows()]


def column(rows: list[list], name: str) -> list:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


def export_entries():
    return LogEntry.objects.filter(action=LogEntry.Action.ACCESS, object_pk="")


def make_followup(patient, followup_type, *, days_overdue=5) -> Followup:
    due = timezone.localdate() - dt.timedelta(days=days_overdue)
    return Followup.objects.create(
        patient=patient,
        followup_type=followup_type,
        location=patient.home_location,
        due_date=due,
        lapses_on=due + dt.timedelta(days=180),
    )


@pytest.fixture
def recall(db):
    return FollowupType.objects.create(name="Hygiene recall", code="hygiene-recall", value=80)


# --- Neutralising cells --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=x", "'\t=x"),
        ("\r=x", "'\r=x"),
        (
            '=HYPERLINK("http://evil.example","Click")',
            '\'=HYPERLINK("http://evil.example","Click")',
        ),
        # A phone number in E.164 is text that starts with "+": neutralised like the
        # rest (no "looks like a phone" exception to aim at), and Excel keeps it text.
        ("+15125550100", "'+15125550100"),
        ("Núñez", "Núñez"),
        ("O'Brien", "O'Brien"),
        ("a=b", "a=b"),
        ("2026-03-01", "2026-03-01"),
        ("", ""),
        (None, ""),
        (3, "3"),
    ],
)
def test_it_neutralises_cells_a_spreadsheet_would_run(value, expected):
    assert neutralise(value) == expected


# --- The patient list ----------------------------------------------------------------


def test_it_exports_the_patient_list_as_csv(client, front_desk, north):
    PatientFactory(
        home_location=north,
        first_name="=HYPERLINK(1)",
        last_name="Núñez",
        date_of_birth=dt.date(1984, 3, 7),
        mobile_phone="+15125550100",
        email="pepe@example.test",
    )
    client.force_login(front_desk)
    response = client.get(reverse("patients:export"), {"format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "no-store" in response["Cache-Control"]
    today = timezone.localdate().isoformat()
    assert response["Content-Disposition"] == f'attachment; filename="patients-{today}.csv"'
    rows = csv_rows(response)
    assert rows[0][:4] == ["Last name", "First name", "Preferred name", "Date of birth"]
    assert rows[1][:5] == ["Núñez", "'=HYPERLINK(1)", "", "1984-03-07", "'+15125550100"]
    assert rows[1][5:] == ["pepe@example.test", "SMS", "", "North Clinic", "Active"]


def test_it_exports_the_patient_list_as_xlsx(client, front_desk, north):
    PatientFactory(home_location=north, last_name="@SUM(A1)", first_name="Ana")
    client.force_login(front_desk)
    response = client.get(reverse("patients:export"), {"format": "xlsx"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.openxmlformats")
    assert "patients-" in response["Content-Disposition"]
    assert response["Content-Disposition"].endswith('.xlsx"')
    rows = xlsx_rows(response)
    assert rows[0][0] == "Last name"
    assert rows[1][:2] == ["'@SUM(A1)", "Ana"]
    assert column(rows, "Mobile phone")[0].startswith("'+1512555")


def test_it_drops_characters_xlsx_cannot_hold(client, front_desk, north):
    PatientFactory(home_location=north, last_name="\x01=cmd", first_name="Ana")
    client.force_login(front_desk)
    rows = xlsx_rows(client.get(reverse("patients:export"), {"format": "xlsx"}))
    # The control character goes first, so what is left is still neutralised.
    assert rows[1][0] == "'=cmd"


def test_it_exports_only_patients_of_the_users_locations(
    client, front_desk, north_patient, south_patient
):
    client.force_login(front_desk)
    rows = csv_rows(client.get(reverse("patients:export")))
    assert column(rows, "Last name") == ["Núñez"]
    # Asking for the other location by id gives what the page gives: all of mine.
    rows = csv_rows(client.get(reverse("patients:export"), {"location": south_patient.pk}))
    assert "Okafor" not in column(rows, "Last name")
    rows = csv_rows(
        client.get(reverse("patients:export"), {"location": south_patient.home_location.pk})
    )
    assert column(rows, "Last name") == ["Núñez"]


def test_it_exports_a_shared_patient_as_the_list_shows_it(
    client, front_desk, north, north_patient, south_patient
):
    south_patient.shared_with.add(north)
    client.force_login(front_desk)
    rows = csv_rows(client.get(reverse("patients:export"), {"location": north.pk}))
    assert sorted(column(rows, "Last name")) == ["Núñez", "Okafor"]


def test_it_exports_the_patient_search_and_filters(client, front_desk, north):
    PatientFactory(home_location=north, first_name="Zoë", last_name="Müller")
    PatientFactory(home_location=north, first_name="Zoe", last_name="Miller", status="moved")
    PatientFactory(home_location=north, first_name="Ana", last_name="Lopez")
    client.force_login(front_desk)
    rows = csv_rows(client.get(reverse("patients:export"), {"q": "zoe"}))
    assert sorted(column(rows, "Last name")) == ["Miller", "Müller"]
    rows = csv_rows(client.get(reverse("patients:export"), {"q": "zoe", "status": "moved"}))
    assert column(rows, "Last name") == ["Miller"]
    assert column(rows, "Status") == ["Moved away"]


def test_it_records_an_export_as_one_access_entry(client, front_desk, north):
    PatientFactory.create_batch(3, home_location=north, last_name="Lopez")
    client.force_login(front_desk)
    body_of(
        client.get(
            reverse("patients:export"),
            {"format": "xlsx", "q": "lopez", "location": north.pk},
            REMOTE_ADDR="10.1.2.3",
        )
    )
    entry = export_entries().get()
    assert entry.actor == front_desk
    assert entry.remote_addr == "10.1.2.3"
    assert entry.content_type.model_class() is Patient
    assert entry.object_repr == "Export of the patient list: 3 rows, Excel"
    assert entry.additional_data == {
        "export": {
            "view": "patients:list",
            "format": "xlsx",
            "rows": 3,
            "filters": {"q": "lopez", "location": "North Clinic", "status": ""},
        }
    }


def test_it_refuses_an_unknown_format(client, front_desk):
    client.force_login(front_desk)
    response = client.get(reverse("patients:export"), {"format": "pdf"})
    assert response.status_code == 400
    assert not export_entries().exists()


def test_it_sends_anonymous_users_to_log_in(client):
    response = client.get(reverse("patients:export"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    assert not export_entries().exists()


def test_it_exports_nothing_to_a_user_without_grants(client, no_grant, north_patient):
    client.force_login(no_grant)
    assert csv_rows(client.get(reverse("patients:export")))[1:] == []


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_it_exports_patients_in_a_fixed_number_of_queries(client, front_desk, north, fmt):
    def queries_for(n: int) -> int:
        PatientFactory.create_batch(n - Patient.objects.count(), home_location=north)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(reverse("patients:export"), {"format": fmt})
            body_of(response)
        return len(ctx.captured_queries)

    client.force_login(front_desk)
    queries_for(1)  # warm: the session and the content type cache
    assert queries_for(3) == queries_for(40)


def test_it_links_the_export_with_the_current_search(client, front_desk, north_patient):
    client.force_login(front_desk)
    page = client.get(reverse("patients:list"), {"q": "nunez", "status": "active"})
    html = page.content.decode()
    assert f"{reverse('patients:export')}?q=nunez&amp;status=active&amp;format=csv" in html
    assert f"{reverse('patients:export')}?q=nunez&amp;status=active&amp;format=xlsx" in html


# --- Today -----------------------------------------------------------------------


def test_it_exports_every_page_of_today(client, front_desk, north, recall):
    for n in range(30):
        make_followup(PatientFactory(home_location=north, last_name=f"P{n:02}"), recall)
    client.force_login(front_desk)
    response = client.get(reverse("followups:export"), {"format": "xlsx"})
    assert response.status_code == 200
    rows = xlsx_rows(response)
    assert len(rows) == 31  # the header and all 30, not the page's 25
    assert set(column(rows, "Follow-up")) == {"Hygiene recall"}
    assert set(column(rows, "Bucket")) == {"Due"}
    entry = export_entries().get()
    assert entry.content_type.model_class() is Followup
    assert entry.additional_data["export"]["rows"] == 30
    assert entry.additional_data["export"]["view"] == "followups:today"


def test_it_exports_todays_bucket_and_location_only(
    client, north, south, north_patient, south_patient, recall
):
    user = staff(Role.FRONT_DESK, north, south, username="both")
    make_followup(north_patient, recall, days_overdue=1)
    make_followup(south_patient, recall, days_overdue=60)
    late_north = PatientFactory(home_location=north, last_name="Late")
    make_followup(late_north, recall, days_overdue=60)
    client.force_login(user)
    rows = csv_rows(client.get(reverse("followups:export"), {"bucket": "overdue"}))
    assert sorted(column(rows, "Last name")) == ["Late", "Okafor"]
    rows = csv_rows(
        client.get(reverse("followups:export"), {"bucket": "overdue", "location": north.pk})
    )
    assert column(rows, "Last name") == ["Late"]
    assert column(rows, "Location") == ["North Clinic"]
    assert export_entries().last().additional_data["export"]["filters"]["bucket"] == "overdue"


def test_it_never_exports_another_locations_follow_ups(
    client, front_desk, north_patient, south_patient, recall
):
    make_followup(north_patient, recall)
    make_followup(south_patient, recall)
    client.force_login(front_desk)
    rows = csv_rows(
        client.get(reverse("followups:export"), {"location": south_patient.home_location.pk})
    )
    assert column(rows, "Last name") == ["Núñez"]


def test_it_shows_last_attempts_in_the_locations_time_zone(client, south, south_patient, recall):
    followup = make_followup(south_patient, recall)
    followup.attempts.create(
        channel="call",
        outcome="no_answer",
        attempted_at=dt.datetime(2026, 3, 2, 18, 30, tzinfo=dt.UTC),
    )
    user = staff(Role.FRONT_DESK, south, username="west")
    client.force_login(user)
    rows = csv_rows(client.get(reverse("followups:export")))
    assert column(rows, "Last attempt") == ["2026-03-02 10:30 PST"]
    assert column(rows, "Last outcome") == ["No answer"]
    assert column(rows, "Attempts") == ["1"]


def test_it_exports_today_in_a_fixed_number_of_queries(client, front_desk, north, recall):
    def queries_for(n: int) -> int:
        while Followup.objects.count() < n:
            make_followup(PatientFactory(home_location=north), recall)
        with CaptureQueriesContext(connection) as ctx:
            body_of(client.get(reverse("followups:export")))
        return len(ctx.captured_queries)

    client.force_login(front_desk)
    queries_for(1)  # warm: the session and the content type cache
    assert queries_for(3) == queries_for(40)


def test_it_answers_today_export_without_grants_as_today_does(client, no_grant):
    client.force_login(no_grant)
    response = client.get(reverse("followups:export"))
    assert response.status_code == 200
    assert "You don't have access to any location yet" in response.content.decode()
    assert not export_entries().exists()


def test_it_links_todays_export_with_its_filters(client, front_desk, north_patient, recall):
    make_followup(north_patient, recall)
    client.force_login(front_desk)
    html = client.get(reverse("followups:today"), {"bucket": ""}).content.decode()
    assert f"{reverse('followups:export')}?bucket=&amp;format=csv" in html


# --- The outbox ----------------------------------------------------------------------


def test_it_exports_the_outbox_tab_with_its_filters(client, front_desk, north_patient):
    OutboundMessageFactory(patient=north_patient, status="delivered")
    OutboundMessageFactory(
        patient=north_patient,
        channel="email",
        to="=cmd@example.test",
        status="failed",
        reason="Mailbox full",
    )
    client.force_login(front_desk)
    rows = csv_rows(
        client.get(reverse("reminders:messages_export"), {"tab": "all", "channel": "email"})
    )
    assert column(rows, "Channel") == ["Email"]
    assert column(rows, "To") == ["'=cmd@example.test"]
    assert column(rows, "Note") == ["Failed: Mailbox full"]
    assert "Body" not in rows[0]  # the message text stays on the page
    filters = export_entries().get().additional_data["export"]["filters"]
    assert filters == {"tab": "all", "location": "", "channel": "email"}


def test_it_exports_outbox_times_in_the_locations_zone(client, south, south_patient):
    OutboundMessageFactory(
        patient=south_patient, scheduled_for=dt.datetime(2026, 7, 1, 16, 0, tzinfo=dt.UTC)
    )
    client.force_login(staff(Role.FRONT_DESK, south, username="west"))
    response = client.get(reverse("reminders:messages_export"), {"tab": "all", "format": "xlsx"})
    rows = xlsx_rows(response)
    assert column(rows, "When") == ["2026-07-01 09:00 PDT"]
    assert column(rows, "To")[0].startswith("'+1")


def test_it_never_exports_another_locations_messages(
    client, front_desk, north_patient, south_patient
):
    OutboundMessageFactory(patient=north_patient)
    OutboundMessageFactory(patient=south_patient)
    client.force_login(front_desk)
    rows = csv_rows(
        client.get(
            reverse("reminders:messages_export"),
            {"tab": "all", "location": south_patient.home_location.pk},
        )
    )
    assert column(rows, "Last name") == ["Núñez"]


def test_it_exports_the_replies_tab(client, front_desk, north_patient):
    reply = InboundMessage.objects.create(
        provider_id=f"SM{next(_keys)}",
        from_number="+15125550101",
        to_number="+15125550199",
        body="-Can I come Friday?",
        location=north_patient.home_location,
        action=InboundMessage.Action.INBOX,
        received_at=timezone.now(),
    )
    reply.patients.add(north_patient)
    client.force_login(front_desk)
    response = client.get(reverse("reminders:messages_export"), {"tab": "replies"})
    assert "replies-" in response["Content-Disposition"]
    rows = csv_rows(response)
    assert column(rows, "Message") == ["'-Can I come Friday?"]
    assert column(rows, "Patients") == ["Núñez, Zoë"]
    assert column(rows, "Read") == ["Unread"]
    assert export_entries().get().content_type.model_class() is InboundMessage


def test_it_exports_the_outbox_in_a_fixed_number_of_queries(client, front_desk, north_patient):
    def queries_for(n: int) -> int:
        while OutboundMessage.objects.count() < n:
            OutboundMessageFactory(
                patient=PatientFactory(home_location=north_patient.home_location)
            )
        with CaptureQueriesContext(connection) as ctx:
            body_of(client.get(reverse("reminders:messages_export"), {"tab": "all"}))
        return len(ctx.captured_queries)

    client.force_login(front_desk)
    queries_for(1)  # warm: the session and the content type cache
    assert queries_for(3) == queries_for(40)


def test_it_links_the_outbox_export_with_its_tab(client, front_desk, north_patient):
    OutboundMessageFactory(patient=north_patient)
    client.force_login(front_desk)
    html = client.get(reverse("reminders:messages"), {"tab": "all"}).content.decode()
    assert f"{reverse('reminders:messages_export')}?tab=all&amp;format=xlsx" in html
