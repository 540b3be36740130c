"""Real browser: upload the demo spreadsheet → match columns → dry run → import → report.

Uses tests/test_browser.py's chromium set-up. The worker's part is played by the
test: the page queues the task, the test runs it, and htmx polling shows the end.
Screenshots of each step land in test-results/ (pytest-playwright's --output).
"""

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from imports import tasks
from imports.models import ImportBatch
from locations.models import Role
from patients.models import Patient
from tests.factories import PASSWORD, FollowupTypeFactory, LocationFactory, staff
from tests.test_browser import (  # noqa: F401  (fixtures)
    browser_context_args,
    browser_type_launch_args,
    require_chromium,
)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SPREADSHEET = (
    Path(__file__).resolve().parents[2] / "imports" / "demo" / "riverside-old-spreadsheet.csv"
)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_imports_the_demo_spreadsheet_in_a_real_browser(
    live_server, request, settings, tmp_path, monkeypatch
):
    require_chromium()
    settings.MEDIA_ROOT = tmp_path / "media"
    queued: list[str] = []
    monkeypatch.setattr(tasks.run_import, "delay", queued.append)
    austin = LocationFactory(
        name="Riverside Dental — Austin", slug="riverside-austin", city="Austin"
    )
    staff(Role.PRACTICE_MANAGER, austin, username="manager", first_name="Mia", last_name="Ng")
    FollowupTypeFactory(code="hygiene-recall", name="Hygiene recall")

    page: Page = request.getfixturevalue("page")
    page.set_default_timeout(10_000)
    shots = Path(request.config.getoption("--output"))

    def shot(name: str) -> None:
        page.screenshot(path=shots / f"imports-{name}.png", full_page=True)

    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("manager")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Imports").click()
    expect(page.get_by_role("heading", name="Imports", level=1)).to_be_visible()
    page.get_by_role("link", name="Import the first file").click()

    # 1. Upload, naming a new source.
    page.get_by_label("New source name").fill("Old spreadsheet")
    page.get_by_label("Location").select_option(label="Riverside Dental — Austin")
    page.get_by_label("Recall follow-up type").select_option(label="Hygiene recall")
    page.get_by_label("File (CSV, Excel .xlsx or FHIR bundle .json)").set_input_files(
        str(SPREADSHEET)
    )
    shot("1-upload")
    page.get_by_role("button", name="Upload", exact=True).click()

    # 2. Mapping: suggested from the headers, with sample values.
    expect(page.get_by_role("heading", name="Match the columns")).to_be_visible()
    expect(page.get_by_label("DOB")).to_have_value("date_of_birth")
    expect(page.get_by_label("Chart #")).to_have_value("external_id")
    expect(page.get_by_text("RD-1001")).to_be_visible()
    shot("2-mapping")
    page.get_by_role("button", name="Preview (dry run)").click()

    # 3. Dry run: counts and the rejected row; nothing written.
    expect(page.get_by_role("heading", name="Dry run: what the import would do")).to_be_visible()
    expect(page.locator(".import-count-new dd")).to_have_text("7")
    expect(page.locator(".import-count-rejected dd")).to_have_text("1")
    expect(page.get_by_role("cell", name="date of birth is empty")).to_be_visible()
    assert not Patient.objects.exists()
    shot("3-dry-run")
    page.get_by_role("button", name="Import 8 rows").click()

    # 4. Progress: queued; the worker runs it; htmx polling shows the end.
    expect(page.get_by_role("progressbar", name="Rows imported")).to_be_visible()
    expect(page.get_by_text("Queued: waiting for the import worker")).to_be_visible()
    shot("4-progress")
    assert len(queued) == 1
    tasks.run_import(queued[0])
    expect(page.get_by_text("Import finished: 8 rows read")).to_be_visible()
    shot("5-done")
    assert Patient.objects.count() == 7

    # 5. The report.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the report (CSV)").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "8,DOB,date of birth is empty,rejected: not imported" in text
    page.get_by_role("link", name="All imports").click()
    expect(page.locator(".batch-table tbody tr")).to_have_count(ImportBatch.objects.count())
    shot("6-list")
