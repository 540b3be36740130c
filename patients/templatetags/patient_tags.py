from auditlog.models import LogEntry
from django import template

from patients.phones import format_phone

register = template.Library()


@register.filter
def phone(value: str) -> str:
    """+15125550142 → (512) 555-0142."""
    return format_phone(value)


@register.filter
def tel(value: str) -> str:
    return f"tel:{value}" if value else ""


_ACTIONS = {
    LogEntry.Action.CREATE: "created",
    LogEntry.Action.UPDATE: "changed",
    LogEntry.Action.DELETE: "removed",
    LogEntry.Action.ACCESS: "viewed",
}


@register.filter
def entry_verb(entry: LogEntry) -> str:
    return _ACTIONS.get(entry.action, "changed")


@register.filter
def entry_subject(entry: LogEntry) -> str:
    """What the entry is about, in words: "Patient record", "SMS consent"…"""
    model = entry.content_type.model
    if model == "patient":
        return "Patient record"
    if model == "channelconsent":
        return entry.object_repr.split(":")[0]
    if model == "appointment":
        return f"Appointment {entry.object_repr}"
    if model == "externalidentifier":
        return f"External id {entry.object_repr}"
    if model == "followup":
        return f"Follow-up {entry.object_repr}"
    if model == "contactattempt":
        return f"Contact attempt ({entry.object_repr})"
    return entry.object_repr


@register.filter
def get_item(mapping: dict, key: str):
    return mapping.get(key)


_SYSTEMS = {"ehr_mrn": "EHR MRN", "scheduler": "Scheduler id", "spreadsheet": "Spreadsheet id"}


@register.filter
def system_label(system: str) -> str:
    """ehr_mrn → "EHR MRN"; unknown source systems are shown as stored."""
    return _SYSTEMS.get(system, system)
