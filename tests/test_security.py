"""Login lockout, session lifetime, CSRF, no state change on GET, and response headers."""

import re
import time

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from patients.models import Patient
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/login/"


def login(client, username: str, password: str, **extra):
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def comparable(html: str, username: str) -> str:
    """The page minus what legitimately differs between two requests: the CSRF token
    (fresh each time) and the username the form echoes back."""
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)
    return html.replace(f'value="{username}"', 'value="…"')


# --- login and lockout -------------------------------------------------------------------


def test_it_logs_in_with_the_right_password(client, front_desk):
    response = login(client, "frontdesk", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("home")


def test_it_answers_an_unknown_user_exactly_like_a_wrong_password(client, front_desk):
    known = login(client, "frontdesk", "wrong password!")
    unknown = login(client, "nosuchperson", "wrong password!")
    assert known.status_code == unknown.status_code == 200
    assert comparable(known.content.decode(), "frontdesk") == comparable(
        unknown.content.decode(), "nosuchperson"
    )
    assert "Please enter a correct username and password" in known.content.decode()


def test_it_locks_a_username_out_after_the_failure_limit(client, front_desk):
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        assert login(client, "frontdesk", "wrong password!").status_code == 200
    locked = login(client, "frontdesk", "wrong password!")
    assert locked.status_code == 429
    assert "Sign-in paused" in locked.content.decode()
    # Even the right password is refused now.
    again = login(client, "frontdesk", PASSWORD)
    assert again.status_code == 429
    assert "_auth_user_id" not in client.session


def test_it_locks_out_an_unknown_username_the_same_way(client, front_desk):
    responses = {}
    for username in ("frontdesk", "nosuchperson"):
        for _ in range(settings.AXES_FAILURE_LIMIT):
            response = login(client, username, "wrong password!")
        responses[username] = response
    known, unknown = responses["frontdesk"], responses["nosuchperson"]
    assert known.status_code == unknown.status_code == 429
    assert comparable(known.content.decode(), "frontdesk") == comparable(
        unknown.content.decode(), "nosuchperson"
    )


def test_it_locks_the_username_only_from_the_failing_address(front_desk):
    attacker, colleague = Client(REMOTE_ADDR="198.51.100.1"), Client(REMOTE_ADDR="10.0.0.7")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(attacker, "frontdesk", "wrong password!")
    assert AccessAttempt.objects.filter(username="frontdesk").exists()
    assert login(colleague, "frontdesk", PASSWORD).status_code == 302


def test_it_validates_passwords_for_length_and_commonness(front_desk):
    for weak in ("short1!", "password1234", "123456789012"):
        with pytest.raises(ValidationError):
            validate_password(weak, front_desk)
    validate_password(PASSWORD, front_desk)


# --- session lifetime ----------------------------------------------------------------------


def backdate_session(client, *, idle: float = 0, age: float = 0) -> None:
    session = client.session
    now = time.time()
    session["_session_last_seen"] = now - idle
    session["_session_started"] = now - age
    session.save()


def test_it_keeps_an_active_session(client, front_desk):
    client.force_login(front_desk)
    client.get(reverse("patients:list"))
    backdate_session(client, idle=settings.SESSION_IDLE_TIMEOUT - 30)
    assert client.get(reverse("patients:list")).status_code == 200


def test_it_signs_out_after_the_idle_timeout(client, front_desk):
    client.force_login(front_desk)
    client.get(reverse("patients:list"))
    backdate_session(client, idle=settings.SESSION_IDLE_TIMEOUT + 1)
    response = client.get(reverse("patients:list"))
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next=%2Fpatients%2F"
    assert "_auth_user_id" not in client.session
    page = client.get(response["Location"])
    assert "You were signed out after a period of inactivity." in page.content.decode()


def test_it_reads_the_idle_timeout_from_settings(client, front_desk, settings):
    settings.SESSION_IDLE_TIMEOUT = 60
    client.force_login(front_desk)
    client.get(reverse("patients:list"))
    backdate_session(client, idle=61)
    assert client.get(reverse("patients:list")).status_code == 302


def test_it_signs_out_at_the_maximum_session_age_however_active(client, front_desk):
    client.force_login(front_desk)
    client.get(reverse("patients:list"))
    backdate_session(client, idle=1, age=settings.SESSION_COOKIE_AGE + 1)
    response = client.get(reverse("patients:list"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    page = client.get(response["Location"])
    assert "Your session reached its maximum length." in page.content.decode()


def test_it_defaults_to_a_15_minute_idle_timeout():
    assert settings.SESSION_IDLE_TIMEOUT == 15 * 60
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE


# --- no state change without POST and a CSRF token ---------------------------------------------


def test_it_logs_out_only_by_post(client, front_desk):
    client.force_login(front_desk)
    assert client.get(reverse("logout")).status_code == 405
    assert "_auth_user_id" in client.session
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


def test_it_changes_nothing_on_get_even_with_form_data_in_the_query(
    client, front_desk, north_patient
):
    client.force_login(front_desk)
    url = reverse("patients:edit", args=[north_patient.pk])
    response = client.get(
        url, {"first_name": "Hacked", "home_location": north_patient.home_location_id}
    )
    assert response.status_code == 200
    north_patient.refresh_from_db()
    assert north_patient.first_name == "Zoë"
    household = reverse("patients:household", args=[north_patient.pk])
    assert client.get(household, {"create": "1"}).status_code == 200
    north_patient.refresh_from_db()
    assert north_patient.household is None


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_it_refuses_other_methods_on_forms(client, front_desk, north_patient, method):
    client.force_login(front_desk)
    url = reverse("patients:edit", args=[north_patient.pk])
    assert getattr(client, method)(url).status_code == 405


def test_it_refuses_a_post_without_a_csrf_token(front_desk, north_patient):
    client = Client(enforce_csrf_checks=True)
    client.force_login(front_desk)
    url = reverse("patients:household", args=[north_patient.pk])
    response = client.post(url, {"create": "1"})
    assert response.status_code == 403
    north_patient.refresh_from_db()
    assert north_patient.household is None
    assert client.post(reverse("logout")).status_code == 403
    assert client.post(LOGIN, {"username": "frontdesk", "password": PASSWORD}).status_code == 403


def test_it_accepts_a_post_with_the_csrf_token(front_desk, north_patient):
    client = Client(enforce_csrf_checks=True)
    client.force_login(front_desk)
    url = reverse("patients:household", args=[north_patient.pk])
    page = client.get(url).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(url, {"create": "1", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Patient.objects.get(pk=north_patient.pk).household is not None


# --- headers ----------------------------------------------------------------------------------


@pytest.fixture
def patient_page(client, front_desk, north_patient):
    client.force_login(front_desk)
    return client.get(north_patient.get_absolute_url())


def test_it_forbids_framing_and_sniffing_on_patient_pages(patient_page):
    assert patient_page["X-Frame-Options"] == "DENY"
    assert patient_page["X-Content-Type-Options"] == "nosniff"
    assert patient_page["Referrer-Policy"] == "same-origin"


def test_it_sends_a_strict_content_security_policy(patient_page):
    csp = dict(
        directive.strip().split(" ", 1)
        for directive in patient_page["Content-Security-Policy"].split(";")
        if directive.strip()
    )
    assert csp["frame-ancestors"] == "'none'"
    assert csp["default-src"] == "'self'"
    assert "unsafe-inline" not in csp["script-src"]
    assert csp["object-src"] == "'none'"


def test_it_keeps_patient_pages_out_of_caches(client, front_desk, north_patient):
    client.force_login(front_desk)
    pk = north_patient.pk
    for url in [
        reverse("patients:list"),
        reverse("patients:detail", args=[pk]),
        reverse("patients:timeline", args=[pk]),
        reverse("patients:edit", args=[pk]),
        reverse("patients:preferences", args=[pk]),
    ]:
        cache_control = client.get(url)["Cache-Control"]
        assert "no-store" in cache_control, url
        assert "private" in cache_control, url


def test_it_sends_hsts_when_served_over_https(client, front_desk, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    client.force_login(front_desk)
    response = client.get(reverse("patients:list"), secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_it_marks_cookies_httponly_and_samesite(client, front_desk):
    response = login(client, "frontdesk", PASSWORD)
    session_cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session_cookie["httponly"]
    assert session_cookie["samesite"] == "Lax"
    assert session_cookie["expires"] == ""  # ends with the browser


def test_it_does_not_rewrite_the_session_on_every_request(client, front_desk):
    client.force_login(front_desk)
    client.get(reverse("patients:list"))
    first = client.session["_session_last_seen"]
    client.get(reverse("patients:list"))
    assert client.session["_session_last_seen"] == first  # within the same minute
