"""Template context shared by every page."""

from functools import cached_property

from django.http import HttpRequest

from followups.selectors import can_read_rules
from imports.selectors import can_import
from locations.access import VIEW_REPORTS, holds_anywhere
from reminders.selectors import unread_reply_count


class Nav:
    """What the main navigation offers the user, computed only when a template asks,
    from the grants the page has already read (locations.access.location_grants)."""

    def __init__(self, user) -> None:
        self.user = user

    @cached_property
    def can_read_rules(self) -> bool:
        return can_read_rules(user=self.user)

    @cached_property
    def can_read_outreach_setup(self) -> bool:
        # Managers read the setup of their locations; admins (who also hold
        # VIEW_REPORTS) change it.
        return holds_anywhere(self.user, VIEW_REPORTS)

    @cached_property
    def can_view_reports(self) -> bool:
        # The same grant as the outreach setup's reading: managers and admins.
        return self.can_read_outreach_setup

    @cached_property
    def can_import(self) -> bool:
        return can_import(user=self.user)

    @cached_property
    def unread_replies(self) -> int:
        return unread_reply_count(user=self.user)


def nav(request: HttpRequest) -> dict[str, Nav]:
    # Kept on the request: a page rendered in several templates still asks once.
    cached = getattr(request, "_nav", None)
    if cached is None:
        cached = Nav(request.user)
        setattr(request, "_nav", cached)  # noqa: B010
    return {"nav": cached}
