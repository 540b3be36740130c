"""Real browser: sign in, find a patient, change how they want to be reached; work Today.

Playwright drives Debian's chromium (/usr/bin/chromium, which `make browser` and
.ci/run install); the playwright package never downloads a browser of its own.
Screenshots of each step land in test-results/ (pytest-playwright's --output).
"""

import datetime as dt
import os
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from followups.models import Followup, FollowupType
from locations.models import Role
from patients import services
from patients.models import Channel, ChannelConsent
from tests.factories import PASSWORD, LocationFactory, PatientFactory, staff

# Playwright's sync API runs an event loop in the test thread for the rest of the
# session, and Django's async-safety check then refuses the (synchronous) ORM calls
# of this and every later test. Nothing here is async code touching the ORM.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


def require_chromium() -> None:
    """Skip on a laptop without chromium; in CI a missing browser is a failure."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: `make browser` (as root) or `apt-get install chromium`"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the browser test: {reason}", pytrace=False)
    pytest.skip(reason)


def test_it_fails_in_ci_when_chromium_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser test"):
        require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="is missing"):
        require_chromium()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_changes_the_preferred_channel_in_a_real_browser(live_server, request):
    require_chromium()
    north = LocationFactory(name="North Clinic", slug="north", time_zone="America/New_York")
    staff(Role.FRONT_DESK, north, username="frontdesk", first_name="Fran", last_name="Desk")
    patient = PatientFactory(
        home_location=north,
        first_name="Zoë",
        last_name="Núñez",
        mobile_phone="+15125550142",
        email="zoe.nunez@example.test",
    )
    for channel in (Channel.SMS, Channel.EMAIL):
        services.consent_set(
            patient=patient,
            channel=channel,
            status=ChannelConsent.Status.GRANTED,
            method=ChannelConsent.Method.WRITTEN,
            by=None,
        )
    # A second patient, so that the search visibly narrows the list.
    PatientFactory(home_location=north, first_name="Amara", last_name="Okafor")

    # Requested only now, so a missing chromium fails or skips above, not in setup.
    page: Page = request.getfixturevalue("page")
    page.set_default_timeout(10_000)
    shots = Path(request.config.getoption("--output"))

    def shot(name: str) -> None:
        page.screenshot(path=shots / f"browser-{name}.png", full_page=True)

    page.goto(f"{live_server.url}/login/")
    shot("1-login")
    page.get_by_label("Username").fill("frontdesk")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # Staff land on Today; the patient search is one click away.
    expect(page.get_by_role("heading", name="Today", level=1)).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Patients").click()
    expect(page.get_by_role("heading", name="Patients", level=1)).to_be_visible()
    results = page.locator("#results")
    expect(results).to_contain_text("Okafor")

    # Typed without accents, key by key: htmx swaps the results in as the user types.
    page.get_by_label("Search").press_sequentially("nune", delay=40)
    expect(results).not_to_contain_text("Okafor")
    patient_link = results.get_by_role("link", name="Núñez, Zoë")
    expect(patient_link).to_be_visible()
    shot("2-search")

    patient_link.click()
    expect(page.get_by_role("heading", name="Zoë Núñez", level=1)).to_be_visible()
    expect(page.get_by_test_id("preferred-channel")).to_have_text("SMS")
    shot("3-patient")

    page.get_by_role("link", name="Edit preferences").click()
    expect(page.get_by_role("heading", name="Preferences of")).to_be_visible()
    page.get_by_label("Preferred channel").select_option(label="Email")
    shot("4-preferences")
    page.get_by_role("button", name="Save preferences").click()

    expect(page.get_by_role("status")).to_contain_text("Communication preferences saved.")
    expect(page.locator(".preferred")).to_have_text("Prefers Email")
    change = page.locator("#timeline .timeline-change").filter(has_text="preferred channel")
    expect(change).to_have_count(1)
    expect(change).to_contain_text("changed by Fran Desk")
    expect(change).to_contain_text("Preferred channel: SMS → Email")
    shot("5-saved")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_logs_an_attempt_from_the_today_worklist_in_a_real_browser(live_server, request):
    require_chromium()
    north = LocationFactory(name="North Clinic", slug="north", time_zone="America/New_York")
    staff(Role.FRONT_DESK, north, username="frontdesk", first_name="Fran", last_name="Desk")
    recall = FollowupType.objects.create(name="Hygiene recall", code="hygiene-recall", value=80)
    patient = PatientFactory(
        home_location=north, first_name="Zoë", last_name="Núñez", mobile_phone="+15125550142"
    )
    due = timezone.localdate() - dt.timedelta(days=40)
    followup = Followup.objects.create(
        patient=patient,
        followup_type=recall,
        location=north,
        due_date=due,
        lapses_on=due + dt.timedelta(days=180),
    )

    page: Page = request.getfixturevalue("page")
    page.set_default_timeout(10_000)
    shots = Path(request.config.getoption("--output"))
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("frontdesk")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Today", level=1)).to_be_visible()
    row = page.locator(f"#followup-{followup.pk}")
    expect(row).to_contain_text("Núñez, Zoë")
    expect(row).to_contain_text("Overdue")
    expect(row).to_contain_text("No attempts yet")
    page.screenshot(path=shots / "browser-today-1.png", full_page=True)

    url_before = page.url
    row.get_by_text("Log attempt").click()
    row.get_by_label("How").select_option(label="Phone call")
    row.get_by_label("Outcome").select_option(label="No answer")
    row.get_by_label("Note").fill("Rang at 9")
    row.get_by_role("button", name="Save").click()

    # The row is swapped in place by htmx: same page, updated row.
    row = page.locator(f"#followup-{followup.pk}")
    expect(row).to_contain_text("Logged: No answer")
    expect(row).to_contain_text("1 attempt")
    assert page.url == url_before
    page.screenshot(path=shots / "browser-today-2.png", full_page=True)

    row.get_by_role("link", name="Núñez, Zoë").click()
    followups = page.locator("#followups-heading").locator("xpath=ancestor::section")
    expect(followups).to_contain_text("No answer")
    expect(followups).to_contain_text("Rang at 9")
    expect(page.locator("#timeline")).to_contain_text("Contact attempt")
    page.screenshot(path=shots / "browser-today-3.png", full_page=True)
