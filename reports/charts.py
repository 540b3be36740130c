"""Charts drawn on the server as SVG: readable without JavaScript, printable.

Each chart has a <title> and <desc> (what it shows, in words) and role="img";
the page puts the same numbers in a table beside it, for screen readers and for
anyone who wants the exact figures. Colours come from classes in reports.css, so
the Content-Security-Policy (no inline styles) holds.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 16, 40


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[int]
    css: str  # series-1, series-2… (fill colours in reports.css)


def _nice_max(value: int) -> int:
    """A round top for the axis: 1, 2, 5, 10, 20, 50… at least `value`."""
    top, step = 1, 0
    while top < value:
        top = int(top * (2.5 if step % 3 == 1 else 2))
        step += 1
    return top


def bar_chart(
    *, chart_id: str, title: str, desc: str, labels: Sequence[str], series: Sequence[Series]
) -> SafeString:
    """Grouped bars, one group per label (week), one bar per series."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((v for s in series for v in s.values), default=0))
    groups = max(len(labels), 1)
    group_w = plot_w / groups
    bar_w = max(2.0, (group_w * 0.75) / max(len(series), 1))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    for i in range(5):  # gridlines and axis labels at 0, ¼, ½, ¾, 1 of the top
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        label = f"{value:g}" if value == int(value) else f"{value:.1f}"
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    every = max(1, round(groups / 9))  # at most ~9 week labels under the axis
    for g, label in enumerate(labels):
        x0 = LEFT + g * group_w + (group_w - bar_w * len(series)) / 2
        for s_index, s in enumerate(series):
            value = s.values[g] if g < len(s.values) else 0
            h = plot_h * value / top if top else 0
            x = x0 + s_index * bar_w
            parts.append(
                f'<rect class="bar {s.css}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" '
                f'width="{bar_w - 1:.1f}" height="{h:.1f}">'
                f"<title>{escape(s.name)}, {escape(label)}: {value}</title></rect>"
            )
        if g % every == 0:
            cx = LEFT + g * group_w + group_w / 2
            parts.append(
                f'<text class="axis" x="{cx:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append(
        f'<line class="baseline" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
        f'y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>'
    )
    # Legend along the bottom edge.
    x = LEFT
    for s in series:
        parts.append(
            f'<rect class="bar {s.css}" x="{x}" y="{HEIGHT - 14}" width="10" height="10"/>'
        )
        parts.append(f'<text class="legend" x="{x + 14}" y="{HEIGHT - 5}">{escape(s.name)}</text>')
        x += 24 + 7 * len(s.name)
    parts.append("</svg>")
    # Safe: every text put in above went through escape().
    return mark_safe("".join(parts))
