"""Links from a number to the list behind it, and numbers as people read them."""

import html
from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

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
    return _drill(context, metric, location, **extra)


def _drill(context, metric: str, location=None, **extra) -> str:
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


# The dashboard's long tables — a row per location (twice) and per staff member:
# 1,200 rows and 5,600 links for an admin of 200 locations. Written here, as the
# admin's change list writes its rows (items_for_result), rather than by the
# template language, which spent about 10 µs per link and per number on them.
# The HTML is the same the template wrote, byte for byte (tests/reports).


def _a(url: str, text: Any, aria: str | None = None) -> str:
    # html.escape is what django.utils.html.escape calls, without its lazy-string
    # wrapper (a third of these rows' cost); a count needs no escaping.
    label = f' aria-label="{html.escape(aria)}"' if aria is not None else ""
    shown = text if type(text) is int else html.escape(str(text))
    return f'<a href="{html.escape(url)}"{label}>{shown}</a>'


def _recall_row(context, line, key) -> str:
    def cell(metric: str) -> str:
        return f'<td class="num">{_a(_drill(context, metric, key), getattr(line, metric))}</td>'

    conversion = _a(
        _drill(context, "converted", key),
        pct(line.conversion),
        f"{line.converted} of {line.contacted} contacted",
    )
    return (
        f'\n      <tr>\n        <th scope="row">{html.escape(str(line.label))}</th>'
        + "".join(f"\n        {cell(m)}" for m in ("due", "overdue", "lapsed", "contacted"))
        + f"\n        {cell('booked')}"
        + f'\n        <td class="num">{conversion}</td>'
        + f'\n        <td class="num">{days(line.avg_overdue)}</td>\n      </tr>\n      '
    )


@register.simple_tag(takes_context=True)
def recall_rows(context, lines) -> SafeString:
    """The rows of "Recall by location"."""
    return mark_safe("".join(_recall_row(context, line, line.key) for line in lines))


@register.simple_tag(takes_context=True)
def staff_rows(context, lines) -> SafeString:
    """The rows of "Conversion by staff member"."""
    return mark_safe(
        "".join(
            f'\n      <tr><th scope="row">{html.escape(str(line.label))}</th>'
            f'\n        <td class="num">'
            f"{_a(_drill(context, 'staff_contacted', staff=line.key), line.contacted)}</td>"
            f'\n        <td class="num">'
            f"{_a(_drill(context, 'staff_converted', staff=line.key), line.converted)}</td>"
            f'\n        <td class="num">{pct(line.conversion)}</td></tr>\n    '
            for line in lines
        )
    )


@register.simple_tag(takes_context=True)
def reminder_row(context, line, key) -> SafeString:
    """A row of "Reminder effectiveness" (key: its location; None for the total)."""

    def a(metric: str) -> str:
        return _a(_drill(context, metric, key), getattr(line, metric))

    def rate(value) -> str:
        return f'<span class="muted small">{pct(value)}</span>'

    return mark_safe(
        f'<tr>\n  <th scope="row">{html.escape(str(line.label))}</th>'
        f'\n  <td class="num">{a("sent")}</td>'
        f'\n  <td class="num">{a("delivered")} {rate(line.delivery_rate)}</td>'
        f'\n  <td class="num">{a("failed")}</td>'
        f'\n  <td class="num">{a("suppressed")}</td>'
        f'\n  <td class="num">{a("confirmed")} of {a("reminded")}'
        f" {rate(line.confirmation_rate)}</td>"
        f'\n  <td class="num">{pct(line.reminded_noshow_rate)} <span class="muted small">'
        f"({a('reminded_noshow')}/{a('reminded_outcome')})</span></td>"
        f'\n  <td class="num">{pct(line.unreminded_noshow_rate)} <span class="muted small">'
        f"({a('unreminded_noshow')}/{a('unreminded_outcome')})</span></td>"
        f'\n  <td class="num">{a("opt_outs")}</td>'
        f'\n  <td class="num">{a("unanswered")}</td>\n</tr>\n'
    )


@register.simple_tag(takes_context=True)
def reminder_rows(context, lines) -> SafeString:
    return mark_safe("".join(reminder_row(context, line, line.key) for line in lines))
