"""Links from a number to the list behind it, and numbers as people read them."""

from urllib.parse import urlencode

from django import template
from django.urls import reverse

register = template.Library()


def _drill_url(context) -> str:
    """reverse() once per render: the dashboard has some 500 links, one per number."""
    if "reports_drill_url" not in context.render_context:
        context.render_context["reports_drill_url"] = reverse("reports:drilldown")
    return context.render_context["reports_drill_url"]


@register.simple_tag(takes_context=True)
def drill(context, metric: str, location=None, **extra) -> str:
    """URL of the drill-down list for `metric` with the page's period (and a location)."""
    query = {k: v for k, v in context["query"].items() if k != "location"}
    if location is not None:
        query["location"] = location
    elif "location" in context["query"]:
        query["location"] = context["query"]["location"]
    query["metric"] = metric
    query.update({k: v for k, v in extra.items() if v is not None})
    return f"{_drill_url(context)}?{urlencode(query)}"


@register.simple_tag(takes_context=True)
def week_drill(context, metric: str, monday) -> str:
    """The drill-down of one week of a trend chart (a custom period, Monday–Sunday)."""
    import datetime as dt

    query = {"period": "custom", "start": monday.isoformat()}
    query["end"] = (monday + dt.timedelta(days=6)).isoformat()
    if "location" in context["query"]:
        query["location"] = context["query"]["location"]
    query["metric"] = metric
    return f"{_drill_url(context)}?{urlencode(query)}"


@register.filter
def pct(value) -> str:
    """0.4567 → '45.7%'; no rate (nothing to divide by) → an en dash."""
    if value is None:
        return "–"
    return f"{value * 100:.1f}%"


@register.filter
def days(value) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}"
