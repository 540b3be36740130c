"""Production settings: `check --deploy` is clean with the production environment and
warns without it; with DEBUG=False, errors show the friendly pages, never debug output.

Settings are read from the environment once, at import, so the deploy checks run
`manage.py` in a subprocess with the environment under test.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

BASE_DIR = Path(settings.BASE_DIR)
# What decides the deploy checks; cleared from the inherited environment so that
# each test states exactly what it runs with. The browser test sets the last one
# for this process, and Django rightly refuses it in a deployment (async.E001).
DEPLOY_VARS = (
    "DEBUG",
    "HTTPS",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)
HTTPS_WARNINGS = ("security.W004", "security.W008", "security.W012", "security.W016")


def production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEPLOY_VARS}
    env.update(
        DEBUG="False",
        HTTPS="true",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="crm.example.com",
        DATABASE_URL=os.environ.get(
            "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/practicecrm"
        ),
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    env.update(overrides)
    return env


def check_deploy(env: dict[str, str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def test_it_passes_check_deploy_with_the_production_environment():
    env = production_env()
    assert len(env["SECRET_KEY"]) >= 50
    code, output = check_deploy(env)
    assert code == 0, output
    assert "System check identified no issues (0 silenced)." in output
    assert "WARNING" not in output
    assert "security." not in output


def test_it_warns_when_production_runs_without_https():
    code, output = check_deploy(production_env(HTTPS="false"))
    assert code == 1
    for warning in HTTPS_WARNINGS:
        assert warning in output
    # Only the HTTPS switch is off: the key, DEBUG and hosts are still fine.
    assert "security.W009" not in output
    assert "security.W018" not in output


def test_it_warns_with_the_embedded_defaults():
    env = {k: v for k, v in os.environ.items() if k not in DEPLOY_VARS}
    code, output = check_deploy(env)
    assert code == 1
    # The embedded run's key is marked insecure, and nothing forces HTTPS.
    for warning in ("security.W009", *HTTPS_WARNINGS):
        assert warning in output


def test_it_warns_when_debug_is_on_in_production():
    code, output = check_deploy(production_env(DEBUG="True"))
    assert code == 1
    assert "security.W018" in output


# Phrases of Django's technical 404/500 pages that must never reach a browser.
DEBUG_MARKERS = (
    "Page not found at",
    "Using the URLconf",
    "URLconf defined in",
    "Django tried these URL patterns",
    "DEBUG = True",
    "Traceback",
    "practicecrm.urls",
)


def assert_friendly_404(response) -> str:
    assert response.status_code == 404
    assert [t.name for t in response.templates][:1] == ["404.html"]
    html = response.content.decode()
    assert "<h1>Not found</h1>" in html
    assert "belongs to a location you don't have access to" in html
    for marker in DEBUG_MARKERS:
        assert marker not in html
    return html


@pytest.mark.django_db
def test_it_shows_the_friendly_404_without_debug_details(client, settings):
    settings.DEBUG = False
    assert_friendly_404(client.get("/no-such-page/"))


@pytest.mark.django_db
def test_it_shows_the_same_404_for_another_locations_patient(
    client, settings, front_desk, south_patient
):
    settings.DEBUG = False
    client.force_login(front_desk)
    html = assert_friendly_404(client.get(reverse("patients:detail", args=[south_patient.pk])))
    # Neither the patient nor the internal reason for the 404 is on the page.
    assert south_patient.last_name not in html
    assert "No such patient" not in html
