import datetime as dt

import pytest
from django.contrib.sessions.models import Session
from django.utils import timezone

from practicecrm.tasks import clear_expired_sessions


@pytest.mark.django_db
def test_it_clears_only_expired_sessions():
    now = timezone.now()
    Session.objects.create(session_key="old", session_data="", expire_date=now - dt.timedelta(1))
    Session.objects.create(session_key="live", session_data="", expire_date=now + dt.timedelta(1))

    result = clear_expired_sessions.apply()

    assert result.get() == 1
    assert list(Session.objects.values_list("session_key", flat=True)) == ["live"]
