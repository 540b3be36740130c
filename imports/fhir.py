"""FHIR R4 Bundles (JSON) of Patient and Appointment resources, imported as rows.

A bundle is turned into the rows a scheduler export would have — synthetic
headers named after the FHIR elements ("Patient.birthDate", "Appointment.start")
and a fixed mapping — and given to the same Importer as a spreadsheet, so
matching, the repeatable upsert, rejections and the audit trail are identical.

- Every Patient is one row; every Appointment is one row naming its patient (as
  in a scheduler export). Patient rows go first, so an Appointment row always
  finds the person its Patient row wrote, and the Appointment rows' patient
  outcome (always "unchanged") is not counted as a patient: the counts say what
  happened to each Patient and to each Appointment.
- "line" in the report is the entry's number in the bundle (1 = the first entry).
- Only contact and scheduling data is read: Appointment.description, comment,
  reasonCode/reasonReference and every clinical resource are ignored — we never
  hold clinical content. Resources other than Patient and Appointment are skipped
  and counted.
- A bundle is read whole (json.load), capped by IMPORT_MAX_BYTES like any upload.
"""

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from imports.engine import Importer, Report
from imports.models import ImportBatch, ImportSource
from imports.readers import Table, UnreadableFile
from locations.models import Location
from patients.models import AppointmentType
from patients.search import fold

BUNDLE_TYPES = ("collection", "transaction", "searchset")

# Synthetic header → Importer target. The headers are what a rejection names.
MAPPING: dict[str, str] = {
    "Patient.identifier": "external_id",
    "Patient.name.given": "first_name",
    "Patient.name.family": "last_name",
    "Patient.name (usual)": "preferred_name",
    "Patient.birthDate": "date_of_birth",
    "Patient.telecom (mobile)": "mobile_phone",
    "Patient.telecom (home)": "home_phone",
    "Patient.telecom (email)": "email",
    "Patient.address.line": "address_line1",
    "Patient.address.city": "city",
    "Patient.address.state": "region",
    "Patient.address.postalCode": "postal_code",
    "Patient.communication.language": "language",
    "Appointment.identifier": "appointment_id",
    "Appointment.start": "appointment_date",
    "Appointment.end": "appointment_end",
    "Appointment.serviceType": "appointment_type",
    "Appointment.status": "appointment_status",
    "Appointment.participant (practitioner)": "provider",
}
HEADERS = list(MAPPING)
_COLUMN = {target: index for index, target in enumerate(MAPPING.values())}

# FHIR Appointment.status → the status cell our Importer reads. Proposed, pending
# and waitlisted appointments are not booked: importing them would send reminders
# for a visit nobody confirmed, so they are left out (and said so).
STATUS = {
    "booked": "scheduled",
    "arrived": "confirmed",
    "checked-in": "confirmed",
    "fulfilled": "completed",
    "cancelled": "cancelled",
    "noshow": "no show",
    # A record made by mistake: cancelled, so reminders for it stop and nothing counts it.
    "entered-in-error": "cancelled",
}
NOT_BOOKED = ("proposed", "pending", "waitlist")
FULL_DATE = re.compile(r"\d{4}-\d\d-\d\d")


@dataclass
class Bundle:
    """A bundle as rows for the Importer, and what was left out of it, and why."""

    patient_rows: list[tuple[int, list[str]]] = field(default_factory=list)
    appointment_rows: list[tuple[int, list[str]]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    # Appointments refused before the Importer sees them (no patient, no start…).
    rejected: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)


def read_bundle(path: Path, *, name: str = "") -> dict[str, Any]:
    """The bundle as JSON, or UnreadableFile saying why it is not one."""
    name = name or path.name
    size = path.stat().st_size
    limit = settings.IMPORT_MAX_BYTES
    if size == 0:
        raise UnreadableFile(f"“{name}” is empty.")
    if size > limit:
        raise UnreadableFile(
            f"“{name}” is {size / 1_000_000:.1f} MB; the limit is {limit / 1_000_000:.0f} MB."
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"“{name}” is not UTF-8 text, so it is not FHIR JSON.") from exc
    except json.JSONDecodeError as exc:
        raise UnreadableFile(
            f"“{name}” is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise UnreadableFile(f"“{name}” is JSON but not a FHIR resource (no resourceType).")
    if data["resourceType"] != "Bundle":
        raise UnreadableFile(
            f"“{name}” is a single {data['resourceType']} resource; "
            "export a Bundle of Patient and Appointment resources."
        )
    if data.get("type") not in BUNDLE_TYPES:
        raise UnreadableFile(
            f"“{name}” is a Bundle of type “{data.get('type')}”; "
            f"we import {', '.join(BUNDLE_TYPES)} bundles."
        )
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        raise UnreadableFile(f"“{name}”: Bundle.entry is not a list.")
    kinds = {_resource(e).get("resourceType") for e in entries}
    if not kinds & {"Patient", "Appointment"}:
        raise UnreadableFile(f"“{name}” has no Patient or Appointment resources.")
    return data


def convert(data: dict[str, Any], *, location: Location, identifier_system: str = "") -> Bundle:
    """Rows for the Importer from a bundle read by read_bundle."""
    bundle = Bundle()
    entries = data.get("entry", [])
    patients: dict[str, tuple[int, dict]] = {}  # reference or fullUrl → (entry, resource)
    for number, entry in enumerate(entries, start=1):
        resource = _resource(entry)
        if resource.get("resourceType") == "Patient":
            for key in _keys(entry, resource):
                patients.setdefault(key, (number, resource))
    patient_cells: dict[int, list[str]] = {}
    refused: dict[int, str] = {}  # Patient entry → why it was refused
    types = _known_types()
    for number, entry in enumerate(entries, start=1):
        resource = _resource(entry)
        kind = resource.get("resourceType")
        if kind == "Patient":
            bundle.counts["fhir_patients"] += 1
            birth = _str(resource.get("birthDate"))
            # FHIR allows "1974" and "1974-12"; the spreadsheet parser would read a
            # bare year as an Excel serial number, so a partial date stops here.
            if birth and not FULL_DATE.fullmatch(birth):
                refused[number] = f"birth date “{birth}” is not a full date (YYYY-MM-DD)"
                bundle.counts["rejected"] += 1
                bundle.rejected.append(
                    {"line": number, "column": "Patient.birthDate", "reason": refused[number]}
                )
                continue
            cells = _patient_cells(resource, identifier_system)
            patient_cells[number] = cells
            bundle.patient_rows.append((number, cells))
        elif kind == "Appointment":
            bundle.counts["fhir_appointments"] += 1
            _appointment(
                bundle,
                number,
                resource,
                patients,
                patient_cells,
                refused,
                location,
                types,
                identifier_system,
            )
        else:
            bundle.counts["fhir_skipped"] += 1
            what = f"{kind}/{resource.get('id', '')}" if kind else "an entry with no resource"
            bundle.warnings.append(
                {
                    "line": number,
                    "column": "resourceType",
                    "reason": f"{what} is not a Patient or Appointment; skipped",
                }
            )
    return bundle


def _resource(entry: object) -> dict:
    resource = entry.get("resource") if isinstance(entry, dict) else None
    return resource if isinstance(resource, dict) else {}


def _keys(entry: dict, resource: dict) -> list[str]:
    """How an Appointment may refer to this Patient: Patient/<id>, or its fullUrl."""
    keys = []
    if isinstance(resource.get("id"), str):
        keys.append(f"Patient/{resource['id']}")
    if isinstance(entry.get("fullUrl"), str):
        keys.append(entry["fullUrl"])
    return keys


def _list(value: object) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _patient_cells(resource: dict, identifier_system: str) -> list[str]:
    cells = [""] * len(HEADERS)

    def put(target: str, value: str) -> None:
        cells[_COLUMN[target]] = value

    identifiers = [i for i in _list(resource.get("identifier")) if _str(i.get("value"))]
    chosen = next(
        (i for i in identifiers if identifier_system and i.get("system") == identifier_system),
        identifiers[0] if identifiers else None,
    )
    # Without an identifier, the resource id is the source's id for the person.
    put("external_id", _str(chosen.get("value")) if chosen else _str(resource.get("id")))

    names = _list(resource.get("name"))
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    given = [_str(g) for g in name.get("given", []) if _str(g)] if name else []
    put("first_name", given[0] if given else "")
    put("last_name", _str(name.get("family")))
    usual = next((n for n in names if n.get("use") == "usual"), None)
    usual_given = [_str(g) for g in usual.get("given", []) if _str(g)] if usual else []
    if usual_given and usual_given[0] != (given[0] if given else ""):
        put("preferred_name", usual_given[0])
    put("date_of_birth", _str(resource.get("birthDate")))

    for point in _list(resource.get("telecom")):
        value, use, system = _str(point.get("value")), point.get("use"), point.get("system")
        if not value or use == "old":
            continue
        if system == "phone" and use == "mobile" and not cells[_COLUMN["mobile_phone"]]:
            put("mobile_phone", value)
        elif system == "phone" and use in ("home", None) and not cells[_COLUMN["home_phone"]]:
            put("home_phone", value)
        elif system == "email" and not cells[_COLUMN["email"]]:
            put("email", value)

    addresses = [a for a in _list(resource.get("address")) if a.get("use") != "old"]
    address = next(
        (a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else {}
    )
    lines = address.get("line", []) if address else []
    put(
        "address_line1",
        ", ".join(_str(x) for x in lines if _str(x)) if isinstance(lines, list) else "",
    )
    put("city", _str(address.get("city")) if address else "")
    put("region", _str(address.get("state")) if address else "")
    put("postal_code", _str(address.get("postalCode")) if address else "")

    put("language", _language(resource))
    return cells


def _language(resource: dict) -> str:
    """The preferred communication language as a bare code ("en-US" → "en")."""
    spoken = _list(resource.get("communication"))
    chosen = next((c for c in spoken if c.get("preferred") is True), spoken[0] if spoken else None)
    language = chosen.get("language") if chosen else None
    if not isinstance(language, dict):
        return ""
    for coding in _list(language.get("coding")):
        if code := _str(coding.get("code")):
            return code.split("-")[0].lower()
    return _str(language.get("text"))


def _known_types() -> dict[str, str]:
    types: dict[str, str] = {}
    for t in AppointmentType.objects.all():
        types[fold(t.name)] = t.name
        types[fold(t.code)] = t.name
    return types


def _type_name(resource: dict, types: dict[str, str]) -> str:
    """The first serviceType/appointmentType text, display or code we know as a type.

    None known: the first candidate, so the Importer's rejection names it.
    """
    concepts = _list(resource.get("serviceType"))
    if isinstance(resource.get("appointmentType"), dict):
        concepts.append(resource["appointmentType"])
    candidates = []
    for concept in concepts:
        candidates.append(_str(concept.get("text")))
        for coding in _list(concept.get("coding")):
            candidates += [_str(coding.get("display")), _str(coding.get("code"))]
    candidates = [c for c in candidates if c]
    return next((c for c in candidates if fold(c) in types), candidates[0] if candidates else "")


def _instant(value: object) -> dt.datetime | None:
    """A FHIR instant (with its offset), or None."""
    text = _str(value)
    if len(text) < 16 or "T" not in text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _appointment(
    bundle: Bundle,
    number: int,
    resource: dict,
    patients: dict[str, tuple[int, dict]],
    patient_cells: dict[int, list[str]],
    refused: dict[int, str],
    location: Location,
    types: dict[str, str],
    identifier_system: str,
) -> None:
    def refuse(column: str, reason: str) -> None:
        bundle.rejected.append({"line": number, "column": column, "reason": reason})
        bundle.counts["appointments_rejected"] += 1

    status = _str(resource.get("status"))
    if status in NOT_BOOKED:
        bundle.counts["appointments_not_booked"] += 1
        bundle.warnings.append(
            {
                "line": number,
                "column": "Appointment.status",
                "reason": f"“{status}” is not booked yet; the appointment was left out",
            }
        )
        return
    if status not in STATUS:
        refuse("Appointment.status", f"“{status}” is not an Appointment status")
        return
    references = [
        _str(actor.get("reference"))
        for p in _list(resource.get("participant"))
        if isinstance(actor := p.get("actor"), dict)
    ]
    patient_refs = [r for r in references if r.startswith("urn:") or "Patient/" in r]
    found = next((patients[_short(r)] for r in patient_refs if _short(r) in patients), None)
    if found is None:
        named = f" ({', '.join(patient_refs)})" if patient_refs else ""
        refuse(
            "Appointment.participant",
            f"its patient{named} is not a Patient in this bundle",
        )
        return
    if found[0] in refused:
        refuse("Appointment.participant", f"its patient (entry {found[0]}) was refused")
        return
    start, end = _instant(resource.get("start")), _instant(resource.get("end"))
    if start is None:
        refuse(
            "Appointment.start", f"“{_str(resource.get('start'))}” is not an instant with an offset"
        )
        return
    if resource.get("end") and end is None:
        refuse("Appointment.end", f"“{_str(resource.get('end'))}” is not an instant with an offset")
        return
    # The row names its patient as the Patient row does (id, name, birth date) and
    # nothing more, so the patient's own warnings are not repeated per visit.
    identity = patient_cells.get(found[0]) or _patient_cells(found[1], identifier_system)
    cells = [""] * len(HEADERS)
    for target in ("external_id", "first_name", "last_name", "date_of_birth"):
        cells[_COLUMN[target]] = identity[_COLUMN[target]]

    def put(target: str, value: str) -> None:
        cells[_COLUMN[target]] = value

    identifiers = [i for i in _list(resource.get("identifier")) if _str(i.get("value"))]
    put(
        "appointment_id",
        _str(identifiers[0].get("value")) if identifiers else _str(resource.get("id")),
    )
    # The Importer reads wall times in the location's zone: convert the instant there.
    local_start = start.astimezone(location.tz)
    put("appointment_date", local_start.strftime("%Y-%m-%d %H:%M:%S"))
    if end is not None:
        put("appointment_end", end.astimezone(location.tz).strftime("%H:%M:%S"))
    put("appointment_type", _type_name(resource, types))
    put("appointment_status", STATUS[status])
    practitioners = [
        _str(actor.get("display"))
        for p in _list(resource.get("participant"))
        if isinstance(actor := p.get("actor"), dict)
        and "Practitioner/" in _str(actor.get("reference"))
    ]
    put("provider", next((p for p in practitioners if p), ""))
    bundle.appointment_rows.append((number, cells))


def _short(reference: str) -> str:
    """ "http://server/fhir/Patient/1/_history/2" → "Patient/1"; urn:uuid: as it is."""
    if reference.startswith("urn:"):
        return reference
    parts = reference.split("/")
    if "Patient" in parts:
        at = len(parts) - 1 - parts[::-1].index("Patient")
        if at + 1 < len(parts):
            return f"Patient/{parts[at + 1]}"
    return reference


class FhirImporter(Importer):
    """The spreadsheet Importer, run over the Patient rows, then the Appointment rows."""

    def run_bundle(self, bundle: Bundle) -> Report:
        self._appointment_rows = bundle.appointment_rows
        self.run(Table(headers=HEADERS, rows=iter(bundle.patient_rows), kind="fhir"))
        return self.report

    def _all(self, rows: Iterator[tuple[int, list[str]]]) -> None:
        # Called once by run(), inside the dry run's transaction when there is one.
        super()._all(rows)
        patient_rows = sum(self.report.counts[k] for k in PATIENT_OUTCOMES)
        before = Counter(self.report.counts)
        progress = self.progress
        if progress is not None:
            self.progress = lambda done: progress(patient_rows + done)
        super()._all(iter(self._appointment_rows))
        self.progress = progress
        # An Appointment row's patient is the one its Patient row already wrote, so
        # its patient outcome ("unchanged") is not counted again; a row refused
        # whole (its patient's birth date unreadable, an unknown type) is an
        # appointment refused.
        refused = self.report.counts["rejected"] - before["rejected"]
        for key in PATIENT_OUTCOMES:
            self.report.counts[key] = before[key]
        self.report.counts["appointments_rejected"] += refused
        self.report.counts = +self.report.counts  # drop the zeros

    _appointment_rows: list[tuple[int, list[str]]] = []


PATIENT_OUTCOMES = ("new", "updated", "unchanged", "duplicate_suspect", "rejected")


def run(
    *,
    source: ImportSource,
    bundle: Bundle,
    dry_run: bool,
    progress: Callable[[int], None] | None = None,
    user=None,
) -> Report:
    """Import converted rows with the same rules as a spreadsheet; FHIR notes added."""
    importer = FhirImporter(
        source=source,
        headers=HEADERS,
        mapping=MAPPING,
        dry_run=dry_run,
        progress=progress,
        user=user,
    )
    report = importer.run_bundle(bundle)
    report.counts.update(bundle.counts)
    report.rejected.extend(bundle.rejected)
    report.warnings.extend(bundle.warnings)
    report.counts["warnings"] += len(bundle.warnings)
    report.counts = +report.counts
    return report


def import_fhir_bundle(
    *,
    source: ImportSource,
    path: Path,
    dry_run: bool,
    by=None,
    file_name: str = "",
    identifier_system: str = "",
    started: Callable[[ImportBatch], None] | None = None,
) -> ImportBatch:
    """Dry-run or import one FHIR Bundle; the batch holds counts and the report.

    Raises UnreadableFile (nothing written) when the file is not a usable bundle.
    `identifier_system` picks which Patient.identifier is the source's id (e.g. the
    EHR's MRN system URI); without it, the source's saved one, else the first.
    """
    from imports.services import batch_finish, batch_start, importing_user

    identifier_system = identifier_system or source.fhir_identifier_system
    file_name = file_name or path.name
    bundle = convert(
        read_bundle(path, name=file_name),
        location=source.location,
        identifier_system=identifier_system,
    )
    batch, progress = batch_start(
        source=source, path=path, file_name=file_name, mapping=MAPPING, dry_run=dry_run, by=by
    )
    if started:
        started(batch)
    report = run(
        source=source,
        bundle=bundle,
        dry_run=dry_run,
        progress=progress,
        user=importing_user(by),  # as import_file: only the patients they may change
    )
    rows = len(bundle.patient_rows) + bundle.counts["fhir_appointments"]
    return batch_finish(batch, report, rows_done=rows)
