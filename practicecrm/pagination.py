"""A paginator for lists whose length the page has already counted."""

from django.core.paginator import Paginator


class CountedPaginator(Paginator):
    """A paginator told how many rows there are, instead of asking with COUNT(*).

    Today and Messages count every tab in one aggregate query for their tab
    headers; the list shown is one of those tabs, so its length is known and a
    second COUNT(*) over the same rows would only repeat the most expensive read.

    Today's counts stop at a cap: `more` says the list holds more rows than
    `count`, and the pages then reach only the first `count` (count_label "1,000+").
    """

    def __init__(self, object_list, per_page: int, *, count: int, more: bool = False) -> None:
        super().__init__(object_list, per_page)
        self._known_count = count
        self.more = more

    @property
    def count_label(self) -> str:
        return f"{self._known_count:,}+" if self.more else f"{self._known_count:,}"

    @property
    def count(self) -> int:  # type: ignore[override]  # a cached_property upstream
        return self._known_count
