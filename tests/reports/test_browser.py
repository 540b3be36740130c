"""Real browser: open the recall dashboard, change the period, follow a number to its list.

Uses tests/test_browser.py's chromium set-up; screenshots land in test-results/
(pytest-playwright's --output).
"""

import datetime as dt
import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import Page, expect

from locations.models import Role
from tests.factories import PASSWORD, LocationFactory, PatientFactory, staff
from tests.reports.conftest import Builder
from tests.test_browser import (  # noqa: F401  (fixtures)
    browser_context_args,
    browser_type_launch_args,
    require_chromium,
)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_follows_a_dashboard_number_to_its_patients(live_server, request):
    require_chromium()
    build = Builder()
    today, now = timezone.localdate(), timezone.now()
    # On the server's calendar: "This week" is the server's, a booking's day its
    # location's, and between the two zones' midnights (05:00–06:00 UTC on a Monday
    # for New York and Chicago) a booking made now fell on last week.
    austin = LocationFactory(
        name="Riverside Dental — Austin", slug="riverside-austin", time_zone=settings.TIME_ZONE
    )
    denver = LocationFactory(name="Hillcrest Dental — Denver", slug="hillcrest-denver")
    staff(Role.PRACTICE_MANAGER, austin, denver, username="manager", first_name="Mia")
    # Booked from recall this week: a call 3 days before the booking, today.
    booked = build.followup(
        austin,
        due=today - dt.timedelta(days=20),
        patient=PatientFactory(home_location=austin, first_name="Zoë", last_name="Núñez"),
    )
    build.attempt(booked, now - dt.timedelta(days=3))
    build.book(booked, recorded=now)
    # Due two months ago, contacted then: only in a longer period.
    old = build.followup(
        denver,
        due=today - dt.timedelta(days=60),
        patient=PatientFactory(home_location=denver, first_name="Amara", last_name="Okafor"),
    )
    build.attempt(old, now - dt.timedelta(days=58))

    page: Page = request.getfixturevalue("page")
    page.set_default_timeout(10_000)
    shots = Path(request.config.getoption("--output"))
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("manager")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", name="Recall dashboard", level=1)).to_be_visible()
    expect(page.get_by_role("img", name="Recall outreach and bookings per week")).to_be_visible()

    page.get_by_label("Period", exact=True).select_option(label="This week")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"period=week"))
    kpis = page.locator(".kpis")
    expect(kpis.get_by_role("link", name="1 Booked from recall")).to_be_visible()
    page.screenshot(path=shots / "reports-dashboard.png", full_page=True)

    kpis.get_by_role("link", name="1 Booked from recall").click()
    expect(page.get_by_role("heading", name="Booked from recall", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Zoë Núñez")).to_be_visible()
    expect(page.get_by_text("Okafor")).to_have_count(0)
    expect(page.get_by_label("Period", exact=True)).to_have_value("week")
    page.screenshot(path=shots / "reports-drilldown.png", full_page=True)

    # A custom period back to the old contact: Denver's follow-up is counted there.
    page.get_by_label("Period", exact=True).select_option(label="Custom dates")
    page.get_by_label("From").fill((today - dt.timedelta(days=70)).isoformat())
    page.get_by_label("To").fill(today.isoformat())
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("link", name="Amara Okafor")).to_have_count(0)  # not booked
    page.goto(
        f"{live_server.url}/reports/list/?metric=contacted&period=custom"
        f"&start={(today - dt.timedelta(days=70)).isoformat()}&end={today.isoformat()}"
    )
    expect(page.get_by_role("link", name="Amara Okafor")).to_be_visible()
    expect(page.get_by_role("link", name="Zoë Núñez")).to_be_visible()
