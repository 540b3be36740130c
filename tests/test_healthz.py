"""/healthz: the load balancer's view of the database and the broker.

These run against the real PostgreSQL and Redis that `make test` points at; the
broker failure is a real connection refused, from a port nothing listens on.
"""

import socket
from contextlib import contextmanager

import pytest
from django.urls import reverse

from practicecrm.celery import app as celery_app
from tests.factories import PatientFactory


@contextmanager
def broker_at(url: str, settings, monkeypatch):
    """Point the Celery app (already configured at import) at another broker, then back."""
    # Celery prefers this variable over its configuration; make sure it is not set.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    previous = celery_app.conf.broker_url
    settings.CELERY_BROKER_URL = url
    celery_app.conf.broker_url = url
    try:
        yield
    finally:
        celery_app.conf.broker_url = previous


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_it_reports_ok_with_the_real_database_and_broker(client):
    assert celery_app.conf.broker_url.startswith("redis://"), "run through `make test` (Redis)"
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_it_fails_with_503_when_the_broker_is_unreachable(client, settings, monkeypatch):
    with broker_at(f"redis://127.0.0.1:{closed_port()}/0", settings, monkeypatch):
        response = client.get(reverse("healthz"))
    assert response.status_code == 503
    assert response.json() == {"status": "fail", "database": "ok", "broker": "fail"}
    # The real broker is back for whatever runs next.
    assert client.get(reverse("healthz")).status_code == 200


@pytest.mark.django_db
def test_it_answers_anonymous_visitors_without_patient_data(client):
    patient = PatientFactory(first_name="Imogen", last_name="Quartermaine")
    response = client.get(reverse("healthz"))
    assert response.status_code == 200  # not a redirect to the login page
    assert response["Content-Type"] == "application/json"
    body = response.content.decode()
    assert set(response.json()) == {"status", "database", "broker"}
    for secret in (patient.last_name, patient.email, patient.mobile_phone, "redis://", "postgres"):
        assert secret not in body
    assert "sessionid" not in response.cookies
