"""The audit-trail browser (admin log entry list) asks nothing whose cost grows
with the trail: capped counts, no year list, no DISTINCT over every entry."""

import re

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from patients.models import Appointment, Patient
from practicecrm.admin_audit import LargeTablePaginator
from tests.factories import PatientFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = "admin:auditlog_logentry_changelist"


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    return client


def _page(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def test_it_counts_a_short_trail_exactly(superuser_client, north):
    PatientFactory.create_batch(3, home_location=north)
    response = superuser_client.get(reverse(URL))
    assert response.status_code == 200
    total = LogEntry.objects.count()
    assert f"{total} log entries" in _page(response)
    assert "about" not in _page(response).split('class="paginator"')[1][:200]


def test_it_estimates_a_long_trail_and_says_so(superuser_client, north, monkeypatch):
    PatientFactory.create_batch(12, home_location=north)
    monkeypatch.setattr(LargeTablePaginator, "EXACT_UP_TO", 5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE auditlog_logentry")
    response = superuser_client.get(reverse(URL))
    assert response.status_code == 200
    paginator = response.context["cl"].paginator
    assert paginator.estimated is True
    assert paginator.count >= 6  # never below what the capped count saw
    assert f"about {paginator.count} log entries" in _page(response)


def test_its_queries_do_not_scan_the_trail(superuser_client, north):
    PatientFactory.create_batch(5, home_location=north)
    with CaptureQueriesContext(connection) as ctx:
        assert superuser_client.get(reverse(URL)).status_code == 200
    sql = " ".join(q["sql"] for q in ctx.captured_queries)
    assert "DISTINCT" not in sql.upper()  # no resource-type or year list from the entries
    assert "DATE_TRUNC" not in sql.upper()
    # The one count is capped: COUNT(*) over a LIMITed subquery.
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1 and "LIMIT 10001" in counts[0].upper()


def test_it_offers_every_audited_kind_of_record_as_a_filter(superuser_client, north):
    response = superuser_client.get(reverse(URL))
    page = _page(response)
    for model in (Patient, Appointment):
        ct = ContentType.objects.get_for_model(model)
        assert f"?resource_type={ct.pk}" in page
    patient = PatientFactory(home_location=north)
    ct = ContentType.objects.get_for_model(Patient)
    response = superuser_client.get(reverse(URL), {"resource_type": ct.pk})
    shown = {entry.content_type_id for entry in response.context["cl"].result_list}
    assert shown == {ct.pk}
    assert str(patient) in _page(response)


def test_it_offers_no_facet_counts_and_counts_only_a_narrowed_list(superuser_client, north):
    PatientFactory.create_batch(2, home_location=north)
    page = _page(superuser_client.get(reverse(URL)))
    assert "Show counts" not in page
    assert "results (" not in page  # the whole trail is not counted in the search bar
    ct = ContentType.objects.get_for_model(Patient)
    narrowed = _page(superuser_client.get(reverse(URL), {"resource_type": ct.pk}))
    assert "2 results (" in narrowed
