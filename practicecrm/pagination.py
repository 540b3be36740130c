"""Counting lists cheaply, and a paginator for lists whose length is already known."""

import contextlib
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import DatabaseError, connection
from django.db.models import QuerySet

# The planner settings count_each(nested_loops=True) turns off for its statement.
NESTED_LOOPS_ONLY = ("enable_hashjoin", "enable_mergejoin")


def count_each(
    querysets: Sequence[QuerySet], *, limit: int | None = None, nested_loops: bool = False
) -> list[int]:
    """COUNT(*) of each queryset, in one statement.

    With `limit`, each count reads no further than `limit` + 1 rows, so a count
    above `limit` says "more" without visiting every row (Today's tabs). A
    queryset that can match nothing (an empty IN list) counts 0 without SQL.

    `nested_loops=True` plans the statement with PostgreSQL's hash and merge joins
    off (`NESTED_LOOPS_ONLY`), for counts whose rows each probe a few index entries
    and stop at `limit`: see followups.selectors.worklist_tab_counts for when the
    planner gets that wrong.
    """
    parts: list[str] = []
    params: list[Any] = []
    for n, qs in enumerate(querysets):
        rows = qs.order_by().values("pk")
        if limit is not None:
            rows = rows[: limit + 1]
        try:
            sql, p = rows.query.sql_with_params()
        except EmptyResultSet:
            parts.append("0")
            continue
        parts.append(f"(SELECT count(*) FROM ({sql}) AS counted_{n})")
        params.extend(p)
    sql = "SELECT " + ", ".join(parts)
    with connection.cursor() as cursor:
        if not nested_loops or connection.vendor != "postgresql":
            cursor.execute(sql, params)
            return list(cursor.fetchone())
        # For this statement only. When it fails inside a transaction, the RESETs
        # cannot run, and the transaction's rollback undoes the SETs instead.
        for setting in NESTED_LOOPS_ONLY:
            cursor.execute(f"SET {setting} = off")
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchone())
        finally:
            with contextlib.suppress(DatabaseError):
                for setting in NESTED_LOOPS_ONLY:
                    cursor.execute(f"RESET {setting}")


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
