"""The Server-Timing header: how long the app took, and SQL time only when asked."""

import re

import pytest
from django.urls import reverse

from tests.factories import PatientFactory


@pytest.mark.django_db
def test_it_says_how_long_the_app_took(client, front_desk, north):
    client.force_login(front_desk)
    response = client.get(reverse("patients:list"))
    assert response.status_code == 200
    assert re.fullmatch(r"app;dur=\d+\.\d", response["Server-Timing"])


@pytest.mark.django_db
def test_it_times_anonymous_pages_too(client):
    response = client.get(reverse("login"))
    assert response["Server-Timing"].startswith("app;dur=")


@pytest.mark.django_db
def test_it_adds_sql_time_and_query_count_when_asked(client, settings, front_desk, north):
    settings.SERVER_TIMING_DB = True
    PatientFactory(home_location=north)
    client.force_login(front_desk)
    response = client.get(reverse("patients:list"))
    timing = response["Server-Timing"]
    assert re.fullmatch(
        r'app;dur=[\d.]+, db;dur=[\d.]+, queries;desc="(\d+)", cpu;dur=[\d.]+', timing
    )
    queries = int(re.search(r'queries;desc="(\d+)"', timing)[1])
    assert queries >= 3  # the session, the user, the page's own reads
