"""What a column can mean, and the mapping suggested from a file's header names."""

import re

from patients.search import fold

# target → (label, header names it is recognised by, folded)
FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "external_id": (
        "Patient id in the source",
        (
            "id",
            "patient id",
            "patient no",
            "patient number",
            "mrn",
            "chart",
            "chart number",
            "chart no",
            "account",
            "account number",
            "external id",
            "pt id",
        ),
    ),
    "full_name": (
        "Full name",
        ("name", "patient", "patient name", "full name", "client", "subject", "title"),
    ),
    "first_name": ("First name", ("first name", "first", "given name", "fname", "forename")),
    "last_name": ("Last name", ("last name", "last", "surname", "family name", "lname")),
    "preferred_name": ("Preferred name", ("preferred name", "nickname", "goes by")),
    "date_of_birth": (
        "Date of birth",
        ("dob", "date of birth", "birth date", "birthdate", "birthday", "d o b"),
    ),
    "mobile_phone": (
        "Mobile phone",
        ("cell", "cell phone", "mobile", "mobile phone", "cell number", "mobile number", "sms"),
    ),
    "home_phone": ("Home phone", ("phone", "home phone", "home", "telephone", "tel", "landline")),
    "email": ("Email", ("email", "e mail", "email address", "e mail address")),
    "address_line1": (
        "Address",
        ("address", "street", "address 1", "address line 1", "street address"),
    ),
    "city": ("City", ("city", "town")),
    "region": ("State / region", ("state", "province", "region", "st")),
    "postal_code": ("ZIP / postal code", ("zip", "zip code", "postal code", "postcode", "zipcode")),
    "language": ("Language", ("language", "preferred language", "lang")),
    "location": ("Location", ("location", "office", "clinic", "practice", "site", "branch")),
    "appointment_id": (
        "Appointment id in the source",
        ("appointment id", "appt id", "visit id", "event id", "booking id"),
    ),
    "appointment_date": (
        "Appointment date (and time)",
        (
            "appt date",
            "appointment date",
            "date",
            "start date",
            "visit date",
            "appointment",
            "start",
        ),
    ),
    "appointment_time": (
        "Appointment time",
        ("appt time", "time", "start time", "appointment time"),
    ),
    "appointment_end": ("Appointment end time", ("end time", "end", "finish", "appt end")),
    "appointment_type": (
        "Appointment type",
        (
            "type",
            "appt type",
            "appointment type",
            "procedure",
            "service",
            "visit type",
            "reason",
            "description",
        ),
    ),
    "appointment_status": ("Appointment status", ("status", "appt status", "appointment status")),
    "provider": (
        "Provider",
        ("provider", "doctor", "dentist", "hygienist", "therapist", "clinician"),
    ),
    "next_recall": (
        "Next recall due (the old tool's)",
        (
            "next recall",
            "recall date",
            "recall due",
            "next due",
            "due date",
            "recall",
            "next visit due",
        ),
    ),
}
IGNORE = ""


def normalise_header(header: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", fold(header)).split())


_BY_NAME = {name: target for target, (_, names) in FIELDS.items() for name in names}


def suggest(headers: list[str]) -> dict[str, str]:
    """header → target for every header we recognise (each target used once)."""
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for header in headers:
        target = _BY_NAME.get(normalise_header(header), IGNORE)
        if target and target not in used:
            mapping[header] = target
            used.add(target)
        else:
            mapping[header] = IGNORE
    return mapping


def problems(mapping: dict[str, str]) -> list[str]:
    """Why a mapping cannot import anything (empty list: it can)."""
    targets = {t for t in mapping.values() if t}
    found = []
    has_name = "full_name" in targets or {"first_name", "last_name"} <= targets
    if not targets:
        found.append("No column is mapped to anything PracticeCRM holds.")
    elif not has_name:
        found.append("Map a full-name column, or both first and last name.")
    if targets and "date_of_birth" not in targets and "appointment_date" not in targets:
        found.append("Map the date of birth: it is how people are told apart.")
    if "appointment_time" in targets and "appointment_date" not in targets:
        found.append("An appointment time needs an appointment date column.")
    return found
