"""The dashboard's long tables, written in Python (reports.templatetags.report_tags),
give the HTML the template language wrote for them, byte for byte — escaping,
rates and links included."""

from django.template import Context, Template

from reports.metrics import RecallLine, ReminderLine

# The markup the tags replaced, as it stood in templates/reports/dashboard.html and
# templates/reports/_reminder_row.html.
RECALL = """{% load l10n report_tags %}{% localize off %}      {% for line in lines %}
      <tr>
        <th scope="row">{{ line.label }}</th>
        <td class="num"><a href="{% drill 'due' line.key %}">{{ line.due }}</a></td>
        <td class="num"><a href="{% drill 'overdue' line.key %}">{{ line.overdue }}</a></td>
        <td class="num"><a href="{% drill 'lapsed' line.key %}">{{ line.lapsed }}</a></td>
        <td class="num"><a href="{% drill 'contacted' line.key %}">{{ line.contacted }}</a></td>
        <td class="num"><a href="{% drill 'booked' line.key %}">{{ line.booked }}</a></td>
        <td class="num"><a href="{% drill 'converted' line.key %}" aria-label="{{ line.converted }} of {{ line.contacted }} contacted">{{ line.conversion|pct }}</a></td>
        <td class="num">{{ line.avg_overdue|days }}</td>
      </tr>
      {% endfor %}{% endlocalize %}"""  # noqa: E501
STAFF = """{% load l10n report_tags %}{% localize off %}    {% for line in lines %}
      <tr><th scope="row">{{ line.label }}</th>
        <td class="num"><a href="{% drill 'staff_contacted' staff=line.key %}">{{ line.contacted }}</a></td>
        <td class="num"><a href="{% drill 'staff_converted' staff=line.key %}">{{ line.converted }}</a></td>
        <td class="num">{{ line.conversion|pct }}</td></tr>
    {% endfor %}{% endlocalize %}"""  # noqa: E501
REMINDER = """{% load l10n report_tags %}{% localize off %}{% for line in lines %}<tr>
  <th scope="row">{{ line.label }}</th>
  <td class="num"><a href="{% drill 'sent' line.key %}">{{ line.sent }}</a></td>
  <td class="num"><a href="{% drill 'delivered' line.key %}">{{ line.delivered }}</a> <span class="muted small">{{ line.delivery_rate|pct }}</span></td>
  <td class="num"><a href="{% drill 'failed' line.key %}">{{ line.failed }}</a></td>
  <td class="num"><a href="{% drill 'suppressed' line.key %}">{{ line.suppressed }}</a></td>
  <td class="num"><a href="{% drill 'confirmed' line.key %}">{{ line.confirmed }}</a> of <a href="{% drill 'reminded' line.key %}">{{ line.reminded }}</a> <span class="muted small">{{ line.confirmation_rate|pct }}</span></td>
  <td class="num">{{ line.reminded_noshow_rate|pct }} <span class="muted small">(<a href="{% drill 'reminded_noshow' line.key %}">{{ line.reminded_noshow }}</a>/<a href="{% drill 'reminded_outcome' line.key %}">{{ line.reminded_outcome }}</a>)</span></td>
  <td class="num">{{ line.unreminded_noshow_rate|pct }} <span class="muted small">(<a href="{% drill 'unreminded_noshow' line.key %}">{{ line.unreminded_noshow }}</a>/<a href="{% drill 'unreminded_outcome' line.key %}">{{ line.unreminded_outcome }}</a>)</span></td>
  <td class="num"><a href="{% drill 'opt_outs' line.key %}">{{ line.opt_outs }}</a></td>
  <td class="num"><a href="{% drill 'unanswered' line.key %}">{{ line.unanswered }}</a></td>
</tr>
{% endfor %}{% endlocalize %}"""  # noqa: E501

QUERIES = [
    {"period": "4w"},
    {"period": "custom", "start": "2026-03-01", "end": "2026-03-14", "location": "7"},
]


def _render(source: str, **context) -> str:
    return Template(source).render(Context(context))


def test_the_recall_and_staff_rows_are_the_templates(db):
    lines = [
        RecallLine(7, "Dr. O'Neil & <Sons>", 12, 3, 1, 9, 4, 3, 6.25),
        RecallLine(8, "Quiet", 0, 0, 0, 0, 0, 0, None),
        RecallLine(None, "Total", 1234567, 0, 0, 1, 1, 1, 0.0),
    ]
    for query in QUERIES:
        assert _render(RECALL, lines=lines, query=query) == _render(
            "{% load report_tags %}      {% recall_rows lines %}", lines=lines, query=query
        )
        assert _render(STAFF, lines=lines, query=query) == _render(
            "{% load report_tags %}    {% staff_rows lines %}", lines=lines, query=query
        )


def test_the_reminder_rows_are_the_templates(db):
    lines = [
        ReminderLine(7, "Smile & <Co>", *range(1, 14)),
        ReminderLine(8, "Nothing yet"),
        ReminderLine(None, "All locations", 5, 5, 0, 0, 0, 0, 0, 3, 1, 2, 0, 0, 9),
    ]
    for query in QUERIES:
        expected = _render(REMINDER, lines=lines, query=query)
        assert expected.count("<tr>") == 3
        assert expected == _render(
            "{% load report_tags %}{% reminder_rows lines %}", lines=lines, query=query
        )
        assert expected.split("<tr>")[-1] == _render(
            "{% load report_tags %}{% reminder_row line None %}", line=lines[-1], query=query
        ).removeprefix("<tr>")
