"""The period and location pickers of the dashboard and the pilot report."""

import datetime as dt
from typing import Any

from django import forms

PERIODS = {
    "week": "This week",
    "4w": "Last 4 weeks",
    "quarter": "Last quarter",
    "custom": "Custom dates",
}
MAX_DAYS = 366


def period_bounds(key: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """First and last day of a named period, counted back from `today`."""
    if key == "week":
        return today - dt.timedelta(days=today.weekday()), today
    if key == "quarter":
        # The last complete calendar quarter: in February, October–December.
        first_this = dt.date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        end = first_this - dt.timedelta(days=1)
        return dt.date(end.year, end.month - 2, 1), end
    return today - dt.timedelta(days=27), today


class PeriodForm(forms.Form):
    """Which period and which of the user's locations; a bad date never becomes a 500."""

    period = forms.ChoiceField(choices=PERIODS.items(), initial="4w", required=False)
    start = forms.DateField(
        label="From",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter a date such as 2026-03-01."},
    )
    end = forms.DateField(
        label="To",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter a date such as 2026-03-31."},
    )

    def __init__(self, *args: Any, today: dt.date, **kwargs: Any):
        # The location picker is not a field: another location's id is a 404 (the
        # view resolves it through reports.selectors), not a form error.
        super().__init__(*args, **kwargs)
        self.today = today

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        key = data.get("period") or "4w"
        data["period"] = key
        if key != "custom":
            data["start"], data["end"] = period_bounds(key, self.today)
            return data
        start, end = data.get("start"), data.get("end")
        if start is None:
            self.add_error("start", "Give the first day of the period.")
        if end is None:
            self.add_error("end", "Give the last day of the period.")
        if start and end:
            if end < start:
                self.add_error("end", "The last day must not be before the first day.")
            elif (end - start).days >= MAX_DAYS:
                self.add_error("end", "Choose at most a year (366 days).")
        return data


class PilotForm(forms.Form):
    """How many weeks each side of go-live (locations are picked like the dashboard's)."""

    weeks = forms.TypedChoiceField(
        coerce=int,
        choices=[(n, f"{n} weeks") for n in (4, 6, 8, 12, 16)],
        initial=8,
        required=False,
        empty_value=None,
        label="Weeks each side",
    )
