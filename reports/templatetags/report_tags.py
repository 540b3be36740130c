"""Links from a number to the list behind it, and numbers as people read them."""

from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import reverse

register = template.Library()


def _drill_url(context) -> str:
    """reverse() once per render: the dashboard has some 500 links, one per number."""
    if "reports_drill_url" not in context.render_context:
        context.render_context["reports_drill_url"] = reverse("reports:drilldown")
    return context.render_context["reports_drill_url"]


def _drill_parts(context) -> tuple[str, dict[tuple[str, Any], str]]:
    """Per render: the drill-down's address with the page's period already encoded
    (every link shares it), and a memo of each `name=value` pair encoded. The links
    are written as urlencode() would write them; encoding each in full was a third
    of the dashboard's rendering (5,600 links for 200 locations)."""
    cache = context.render_context
    if "reports_drill_parts" not in cache:
        period = urlencode({k: v for k, v in context["query"].items() if k != "location"})
        prefix = f"{_drill_url(context)}?{period}&" if period else f"{_drill_url(context)}?"
        cache["reports_drill_parts"] = (prefix, {})
    return cache["reports_drill_parts"]


@register.simple_tag(takes_context=True)
def drill(context, metric: str, location=None, **extra) -> str:
    """URL of the drill-down list for `metric` with the page's period (and a location)."""
    query = context["query"]
    if location is None:
        location = query.get("location")
    pairs = [("metric", metric)] + [(k, v) for k, v in extra.items() if v is not None]
    if location is not None:
        pairs.insert(0, ("location", location))
    prefix, encoded = _drill_parts(context)
    parts = []
    for pair in pairs:
        if pair[0] in query and pair[0] != "location":  # never: the period's own keys
            raise template.TemplateSyntaxError(f"drill: {pair[0]!r} is the period's")
        if pair not in encoded:
            encoded[pair] = urlencode([pair])
        parts.append(encoded[pair])
    return prefix + "&".join(parts)


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
