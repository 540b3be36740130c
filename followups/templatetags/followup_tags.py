from django import template

from followups.models import ContactAttempt
from followups.selectors import BUCKET_LABELS

register = template.Library()

_OUTCOMES = dict(ContactAttempt.Outcome.choices)


@register.filter
def outcome_label(value: str) -> str:
    """An annotated outcome code ("no_answer") as people read it ("No answer")."""
    return _OUTCOMES.get(value, value)


@register.filter
def bucket_label(value: str) -> str:
    return BUCKET_LABELS.get(value, value)
