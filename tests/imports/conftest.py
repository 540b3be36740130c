"""Fixtures shared by the import tests: the demo practice and its old spreadsheet source.

Modules that import into another location (test_views, test_fhir, …) define their
own `source`, which takes precedence over this one.
"""

import pytest

from imports.models import ImportSource
from tests.factories import FollowupTypeFactory, LocationFactory


@pytest.fixture
def austin(db):
    return LocationFactory(name="Riverside Dental — Austin", slug="riverside-austin", city="Austin")


@pytest.fixture
def source(austin):
    return ImportSource.objects.create(
        name="Old spreadsheet",
        system="old-spreadsheet",
        location=austin,
        recall_type=FollowupTypeFactory(code="hygiene-recall", name="Hygiene recall"),
    )
