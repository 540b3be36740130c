"""The words of outgoing messages: allow-listed placeholders, defaults, SMS segments.

Templates use `{first_name}`-style placeholders and nothing else — no template
language, so a template can never reach a field it was not meant to (a diagnosis,
a provider's specialty). Message text stays minimum-necessary: who, where, when
and how to answer.
"""

import datetime as dt
import math
import re
from dataclasses import dataclass

from django.db.models import Max
from django.db.models.functions import Length
from django.utils import formats, translation

from locations.models import Location
from reminders.models import Channel, Kind, MessageTemplate

PLACEHOLDERS = {
    "first_name": "The patient's first (or preferred) name",
    "location_name": "The location's name",
    "location_phone": "The location's phone number",
    "location_address": "The location's street address and city",
    "date": "The appointment or due date, e.g. Tue, Dec 1",
    "time": "The appointment time, e.g. 9:30 AM",
    "confirm_instructions": "How to confirm, e.g. Reply C to confirm.",
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
MAX_SMS_SEGMENTS = 2
# Kinds that are only ever an SMS answer to an SMS.
SMS_ONLY_KINDS = {Kind.CONFIRMATION_REPLY, Kind.HELP_REPLY, Kind.OPT_OUT_CONFIRMATION}

# The practice-wide defaults, also written as editable rows by a data migration.
# Plain ASCII punctuation keeps English SMS in the 160-character GSM alphabet.
DEFAULTS: dict[tuple[str, str, str], tuple[str, str]] = {
    (Kind.APPOINTMENT_REMINDER, Channel.SMS, "en"): (
        "",
        "{location_name}: Hi {first_name}, see you {date} at {time}. "
        "{confirm_instructions} Questions: {location_phone}. Reply STOP to opt out.",
    ),
    (Kind.APPOINTMENT_REMINDER, Channel.EMAIL, "en"): (
        "Your appointment on {date} at {location_name}",
        "Hi {first_name},\n\nThis is a reminder of your appointment at {location_name} "
        "on {date} at {time}.\n\n{location_address}\n\nNeed to change it? Call us at "
        "{location_phone}.\n\n{location_name}",
    ),
    (Kind.RECALL, Channel.SMS, "en"): (
        "",
        "{location_name}: Hi {first_name}, it's time to book your next visit. "
        "Call {location_phone} to find a time. Reply STOP to opt out.",
    ),
    (Kind.RECALL, Channel.EMAIL, "en"): (
        "Time to book your next visit at {location_name}",
        "Hi {first_name},\n\nIt's time to book your next visit at {location_name}. "
        "Call us at {location_phone} and we'll find a time that suits you.\n\n"
        "{location_address}\n\n{location_name}",
    ),
    (Kind.CONFIRMATION_REPLY, Channel.SMS, "en"): (
        "",
        "{location_name}: Thanks {first_name}, your visit on {date} at {time} is confirmed.",
    ),
    (Kind.HELP_REPLY, Channel.SMS, "en"): (
        "",
        "{location_name} appointment reminders. Call {location_phone}, {location_address}. "
        "Reply STOP to opt out.",
    ),
    (Kind.OPT_OUT_CONFIRMATION, Channel.SMS, "en"): (
        "",
        "{location_name}: You will no longer get texts from us. Reply START to opt back in. "
        "Call {location_phone} with questions.",
    ),
    (Kind.APPOINTMENT_REMINDER, Channel.SMS, "es"): (
        "",
        "{location_name}: Hola {first_name}, le esperamos el {date} a las {time}. "
        "{confirm_instructions} Preguntas: {location_phone}. STOP para no recibir mensajes.",
    ),
    (Kind.APPOINTMENT_REMINDER, Channel.EMAIL, "es"): (
        "Su cita el {date} en {location_name}",
        "Hola {first_name}:\n\nLe recordamos su cita en {location_name} el {date} a las "
        "{time}.\n\n{location_address}\n\nPara cambiarla, llame al {location_phone}.\n\n"
        "{location_name}",
    ),
    (Kind.RECALL, Channel.SMS, "es"): (
        "",
        "{location_name}: Hola {first_name}, es hora de reservar su siguiente visita. "
        "Llame al {location_phone}. STOP para no recibir mensajes.",
    ),
    (Kind.RECALL, Channel.EMAIL, "es"): (
        "Es hora de reservar su siguiente visita en {location_name}",
        "Hola {first_name}:\n\nEs hora de reservar su siguiente visita en {location_name}. "
        "Llame al {location_phone} y buscaremos una hora.\n\n{location_address}\n\n"
        "{location_name}",
    ),
    (Kind.HELP_REPLY, Channel.SMS, "es"): (
        "",
        "{location_name}: recordatorios de citas. Llame al {location_phone}, "
        "{location_address}. STOP para no recibir mensajes.",
    ),
    (Kind.OPT_OUT_CONFIRMATION, Channel.SMS, "es"): (
        "",
        "{location_name}: Ya no le enviaremos mensajes de texto. Responda START para volver "
        "a recibirlos. Preguntas: {location_phone}.",
    ),
    (Kind.CONFIRMATION_REPLY, Channel.SMS, "es"): (
        "",
        "{location_name}: Gracias {first_name}, su visita del {date} a las {time} "
        "queda confirmada.",
    ),
}
CONFIRM_INSTRUCTIONS = {"en": "Reply C to confirm.", "es": "Responda C para confirmar."}
# Numeric in Spanish: abbreviated day names there carry accents ("sáb"), which would
# switch the whole SMS to the 67-character UCS-2 parts.
DATE_FORMATS = {"en": "D, M j", "es": "d/m/Y"}
TIME_FORMATS = {"en": "g:i A", "es": "H:i"}


class TemplateError(ValueError):
    """A template that cannot be saved, with the sentence to show next to it."""


def placeholders_in(text: str) -> list[str]:
    return _PLACEHOLDER.findall(text)


def check_placeholders(text: str) -> None:
    unknown = [name for name in placeholders_in(text) if name.strip() not in PLACEHOLDERS]
    if unknown:
        raise TemplateError(
            f"{{{unknown[0]}}} is not a placeholder you can use. "
            f"Allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}."
        )
    stray = _PLACEHOLDER.sub("", text)
    if "{" in stray or "}" in stray:
        raise TemplateError("A brace is not closed: write placeholders as {first_name}.")


def fill(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1).strip(), ""), text)


# GSM 03.38: the basic alphabet costs one septet a character, the extension two.
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")


# Typographic characters outside GSM-7 that would turn a whole SMS into 67-character
# UCS-2 parts, and their plain equivalents.
_GSM_FRIENDLY = str.maketrans(
    {"—": "-", "–": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "\u00a0": " "}
)


def gsm_friendly(text: str) -> str:
    """Swap dashes, curly quotes and the like for their GSM-7 equivalents."""
    return text.translate(_GSM_FRIENDLY)


def sms_segments(text: str) -> int:
    """How many SMS parts a text is billed and delivered as (GSM-7 or UCS-2)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        units, single, multi = sum(2 if c in _GSM_EXTENDED else 1 for c in text), 160, 153
    else:
        units, single, multi = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / multi)


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    template: MessageTemplate | None


def template_for(
    *, kind: str, channel: str, language: str, location: Location | None
) -> tuple[str, str, MessageTemplate | None]:
    """The template to use: location's own, else the default, in the patient's
    language, else English. Returns (subject, body, row or None for built-in)."""
    rows = {
        (row.language, row.location_id): row
        for row in MessageTemplate.objects.filter(
            kind=kind, channel=channel, language__in={language, "en"}
        ).filter(location__in=[location] if location else [])
        | MessageTemplate.objects.filter(
            kind=kind, channel=channel, language__in={language, "en"}, location__isnull=True
        )
    }
    for lang in dict.fromkeys([language, "en"]):
        for where in ([location.pk] if location else []) + [None]:
            row = rows.get((lang, where))
            if row is not None:
                return row.subject, row.body, row
        if (kind, channel, lang) in DEFAULTS:
            subject, body = DEFAULTS[(kind, channel, lang)]
            return subject, body, None
    raise LookupError(f"No template for {kind} by {channel}.")


def template_language(*, kind: str, channel: str, language: str, location) -> str:
    """The language the template chosen for this patient is written in."""
    _, _, row = template_for(kind=kind, channel=channel, language=language, location=location)
    if row is not None:
        return row.language
    return language if (kind, channel, language) in DEFAULTS else "en"


def values_for(
    *,
    location: Location,
    first_name: str,
    language: str,
    channel: str,
    when: dt.datetime | dt.date | None = None,
) -> dict[str, str]:
    """Placeholder values; dates and times on the location's clock, in the language."""
    values = {
        "first_name": first_name,
        "location_name": location.name,
        "location_phone": _phone_display(location.phone),
        "location_address": ", ".join(filter(None, [location.address_line1, location.city])),
        "date": "",
        "time": "",
        "confirm_instructions": (
            CONFIRM_INSTRUCTIONS.get(language, CONFIRM_INSTRUCTIONS["en"])
            if channel == Channel.SMS
            else ""
        ),
    }
    if when is not None:
        with translation.override(language):
            if isinstance(when, dt.datetime):
                local = when.astimezone(location.tz)
                values["date"] = formats.date_format(local, DATE_FORMATS.get(language, "Y-m-d"))
                values["time"] = formats.time_format(local, TIME_FORMATS.get(language, "H:i"))
            else:
                values["date"] = formats.date_format(when, DATE_FORMATS.get(language, "Y-m-d"))
    return values


def _phone_display(phone: str) -> str:
    # +15125550100 → (512) 555-0100 for North American numbers; others as stored.
    if len(phone) == 12 and phone.startswith("+1"):
        return f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"
    return phone


def render(
    *,
    kind: str,
    channel: str,
    language: str,
    location: Location,
    first_name: str,
    when: dt.datetime | dt.date | None = None,
    found: tuple | None = None,
) -> Rendered:
    """The message's words. `found` is `template_for`'s answer when the caller already
    has it (a send batch looks each template up once)."""
    subject, body, row = found or template_for(
        kind=kind, channel=channel, language=language, location=location
    )
    lang = (
        row.language
        if row is not None
        else (language if (kind, channel, language) in DEFAULTS else "en")
    )
    values = values_for(
        location=location, first_name=first_name, language=lang, channel=channel, when=when
    )
    text = fill(body, values).strip()
    return Rendered(
        subject=fill(subject, values).strip(),
        body=gsm_friendly(text) if channel == Channel.SMS else text,
        template=row,
    )


def longest_values(*, location: Location | None, language: str, channel: str) -> dict[str, str]:
    """The longest values a placeholder takes, for the two-segment check.

    First names come from the patients on file (the demo data on a new system);
    locations from the location (or the longest location for a default template);
    dates and times from the longest weekday/month spellings.
    """
    from patients.models import Patient

    longest_name = Patient.objects.aggregate(n=Max(Length("first_name")))["n"] or 12
    locations = [location] if location else list(Location.objects.all()) or [Location(name="")]

    def longest(values):
        return max(values, key=len, default="")

    values = {
        "first_name": "W" * max(longest_name, 12),
        "location_name": longest(loc.name for loc in locations),
        "location_phone": longest(_phone_display(loc.phone) for loc in locations)
        or "(000) 000-0000",
        "location_address": longest(
            ", ".join(filter(None, [loc.address_line1, loc.city])) for loc in locations
        ),
        "confirm_instructions": CONFIRM_INSTRUCTIONS.get(language, CONFIRM_INSTRUCTIONS["en"])
        if channel == Channel.SMS
        else "",
    }
    # Every day of a leap year at 12:59 — the longest day and month names there are.
    dates = [
        dt.datetime(2028, 1, 1, 12, 59, tzinfo=dt.UTC) + dt.timedelta(days=n) for n in range(366)
    ]
    with translation.override(language):
        values["date"] = longest(
            formats.date_format(d, DATE_FORMATS.get(language, "Y-m-d")) for d in dates
        )
        values["time"] = longest(
            formats.time_format(d + dt.timedelta(hours=h), TIME_FORMATS.get(language, "H:i"))
            for d in dates[:1]
            for h in range(24)
        )
    return values


def validate_template(
    *, kind: str, channel: str, language: str, location: Location | None, subject: str, body: str
) -> None:
    """Refuse a template that uses other placeholders or is too long for two SMS."""
    if channel == Channel.EMAIL and kind in SMS_ONLY_KINDS:
        raise TemplateError("This kind of message is an SMS reply; it has no email version.")
    check_placeholders(subject)
    check_placeholders(body)
    if channel == Channel.SMS:
        values = longest_values(location=location, language=language, channel=channel)
        longest = gsm_friendly(fill(body, values))
        parts = sms_segments(longest)
        if parts > MAX_SMS_SEGMENTS:
            raise TemplateError(
                f"With the longest names, address and date on file this SMS is {parts} parts "
                f"({len(longest)} characters); keep it to {MAX_SMS_SEGMENTS}. "
                "Shorten the text, or avoid characters outside the basic SMS alphabet "
                "(curly quotes, some accents), which cut each part to 67 characters."
            )
