"""The import: parse each row, match it to a patient, and upsert — repeatably.

- Matching: the source's own patient id (ExternalIdentifier with the source's
  `system`) when the file has one; else the folded full name + date of birth. A
  person who looks like someone on file with small differences (same birth date,
  same phone or email or last name, another spelling) is a *duplicate suspect*:
  imported as a new record and listed for a human to merge — never merged here.
- Upsert: only mapped, non-empty cells change a record; an unchanged row writes
  nothing (no save, no audit entry, no follow-up, no appointment), so importing
  the same file twice changes nothing.
- Safety: a row that cannot be read is rejected with its line, column and reason
  and nothing of it is written; other rows go in. New patients are written in
  chunks through the audited bulk helper; appointments through the same
  services as staff edits, so follow-ups and reminders follow them.
- A dry run does all of it in a transaction that is rolled back.
"""

import datetime as dt
import functools
import itertools
import queue
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from auditlog.context import disable_auditlog
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, Lookup, Q
from django.db.models.base import ModelState
from django.db.models.lookups import In
from django.utils import timezone

from followups.models import Followup
from imports.mapping import FIELDS
from imports.models import ImportSource, SourceRecallDate
from imports.parsing import (
    CACHE_SIZE,
    CellError,
    parse_date,
    parse_datetime,
    parse_email,
    parse_phone,
    parse_time,
    split_name,
)
from imports.readers import Table
from locations.access import CHANGE_PATIENTS, locations_for
from locations.models import Location
from patients.models import Appointment, AppointmentType, ExternalIdentifier, Patient, Provider
from patients.phones import phone_search_digits
from patients.search import fold
from patients.selectors import patients_visible_to
from practicecrm.audit import bulk_create_audited, copy_insert

CHUNK = 2000
# Parsed chunks the reading thread may hold ready (_parsed); 0 parses in line.
READ_AHEAD = 2
ANALYZE_FIRST = 5000  # rows imported before the first _refresh_statistics()
PATIENT_FIELDS = (
    "first_name",
    "last_name",
    "preferred_name",
    "date_of_birth",
    "mobile_phone",
    "home_phone",
    "email",
    "address_line1",
    "city",
    "region",
    "postal_code",
    "language",
)
APPOINTMENT_STATUS = {
    "scheduled": Appointment.Status.SCHEDULED,
    "booked": Appointment.Status.SCHEDULED,
    "confirmed": Appointment.Status.CONFIRMED,
    "completed": Appointment.Status.COMPLETED,
    "complete": Appointment.Status.COMPLETED,
    "done": Appointment.Status.COMPLETED,
    "attended": Appointment.Status.COMPLETED,
    "checked out": Appointment.Status.COMPLETED,
    "seen": Appointment.Status.COMPLETED,
    "cancelled": Appointment.Status.CANCELLED,
    "canceled": Appointment.Status.CANCELLED,
    "no show": Appointment.Status.NO_SHOW,
    "noshow": Appointment.Status.NO_SHOW,
    "no-show": Appointment.Status.NO_SHOW,
    "missed": Appointment.Status.NO_SHOW,
    "dna": Appointment.Status.NO_SHOW,
}
LANGUAGES = (
    {fold(label): code for code, label in Patient.Language.choices}
    | {code: code for code in Patient.Language.values}
    | {"espanol": "es", "spanish": "es"}
)
SAMPLE_LIMIT = 25
REPORT_LIMIT = 2000
# The import folds names through a cache of its own, small like the parsers'
# (imports.parsing.CACHE_SIZE). patients.search.fold's is the whole process's, and
# large: a file's one-off names (each last name, each full name for the search
# column) would fill it, and the import's memory would grow with the file up to
# that cache's size. Repeated names (first names, a household's) still hit here.
_fold = functools.lru_cache(maxsize=CACHE_SIZE)(fold.__wrapped__)


@dataclass
class Row:
    line: int
    patient: dict[str, Any] = field(default_factory=dict)
    external_id: str = ""
    location: Location | None = None
    appointment: dict[str, Any] | None = None
    next_recall: dt.date | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    # Folded first and last name and the birth date: who the row is. Set by
    # _parse once the birth date is read (asked for often, so computed once).
    key: tuple = ()


@dataclass
class Report:
    counts: Counter = field(default_factory=Counter)
    rejected: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    suspects: list[dict] = field(default_factory=list)
    changes: list[dict] = field(default_factory=list)

    def note(self, kind: str, line: int, column: str, reason: str) -> None:
        """Keep the first REPORT_LIMIT of a kind; the counts hold the totals."""
        found = getattr(self, kind)
        if len(found) < REPORT_LIMIT:
            found.append({"line": line, "column": column, "reason": reason})

    def as_dict(self) -> dict:
        return {
            "counts": dict(self.counts),
            "rejected": self.rejected[:REPORT_LIMIT],
            "warnings": self.warnings[:REPORT_LIMIT],
            "suspects": self.suspects[:REPORT_LIMIT],
            "changes": self.changes[:SAMPLE_LIMIT],
        }


class Importer:
    """Import one table from one source with one mapping (header → field)."""

    def __init__(
        self,
        *,
        source: ImportSource,
        headers: list[str],
        mapping: dict[str, str],
        dry_run: bool,
        today: dt.date | None = None,
        progress: Callable[[int], None] | None = None,
        user=None,
    ) -> None:
        # With a user (the web pages), rows reach only the patients and locations
        # that user may change; the nightly command runs as the system, for all.
        self.user = user
        self.source = source
        self.dry_run = dry_run
        self.progress = progress
        self.headers = headers
        self.column = {
            target: (index, header)
            for index, header in enumerate(headers)
            if (target := mapping.get(header)) in FIELDS
        }
        self.report = Report()
        # A calendar export has visits and names but no birth dates: it can only add
        # visits to people already on file, found by their exact name at the location.
        self.by_name_only = "date_of_birth" not in self.column
        self.locations = self._locations()
        self.types = {fold(t.name): t for t in AppointmentType.objects.all()} | {
            fold(t.code): t for t in AppointmentType.objects.all()
        }
        self.providers = {fold(p.name): p for p in Provider.objects.all()}
        # Rows are parsed on a thread of their own (_parsed), which must never
        # query: what parsing reads from the database is read here, once.
        self.default_location = source.location
        self.make_patient = _maker(Patient)
        self.make_external_id = _maker(ExternalIdentifier)
        self.make_recall_date = _maker(SourceRecallDate)
        self.date_order = settings.IMPORT_DATE_ORDER
        self.limits = {
            target: getattr(Patient._meta.get_field(target), "max_length", None) or 200
            for target in ("preferred_name", "address_line1", "city", "region", "postal_code")
        }
        # People created by this chunk, by key: a file with one row per visit names
        # the same person many times. Earlier chunks are already in the database
        # (committed, or inside the dry run's transaction), so memory stays flat.
        self.created: dict[tuple, Patient] = {}
        # The tables rows were added to since the last _refresh_statistics().
        self.grown: set[type[models.Model]] = set()
        self.today = today or timezone.localdate()

    # --- the run -------------------------------------------------------------------

    def run(self, table: Table) -> Report:
        if self.dry_run:
            # Everything is written and rolled back, so later rows see earlier ones
            # exactly as in the import; the audit entries, which would be rolled
            # back too, are not built at all.
            with transaction.atomic(), disable_auditlog():
                self._all(table.rows)
                transaction.set_rollback(True)
        else:
            self._all(table.rows)
        return self.report

    def _all(self, rows: Iterator[tuple[int, list[str]]]) -> None:
        done, analyze_at = 0, ANALYZE_FIRST
        for chunk in self._parsed(rows):
            with transaction.atomic():
                self._chunk(chunk)
            done += len(chunk)
            if done >= analyze_at:
                _refresh_statistics(self.grown)
                self.grown = set()
                analyze_at *= 2
            if self.progress:
                self.progress(done)

    # --- reading a row ---------------------------------------------------------------

    def _parsed(self, rows: Iterator[tuple[int, list[str]]]) -> Iterator[list[Row]]:
        """The rows in parsed chunks, read and parsed on a thread while this one writes.

        Parsing is pure Python and the writing mostly waits for PostgreSQL (psycopg
        lets go of the GIL while it waits), so the two overlap: the next chunk is
        ready when the database has finished with the last. At most READ_AHEAD
        parsed chunks wait, so memory stays flat. An error while reading (a broken quote
        deep in the file) is raised here, in the order the rows came in.
        """
        if not READ_AHEAD:
            for chunk in _batched(rows, CHUNK):
                yield [self._parse(line, cells) for line, cells in chunk]
            return
        ready: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        stop = threading.Event()

        def offer(item: object) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                for chunk in _batched(rows, CHUNK):
                    if not offer([self._parse(line, cells) for line, cells in chunk]):
                        return
                offer(None)
            except BaseException as exc:  # handed to the writing thread, raised there
                offer(exc)

        reader = threading.Thread(target=read, name="import-reader", daemon=True)
        reader.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            reader.join()

    def _header(self, target: str) -> str:
        return self.column[target][1] if target in self.column else FIELDS[target][0]

    def _parse(self, line: int, cells: list[str]) -> Row:
        row = Row(line=line)
        # Each mapped cell, cleaned once. PostgreSQL text cannot hold NUL; no one
        # types one, so it is dropped.
        found = {
            target: cells[index].replace("\x00", "").strip()
            for target, (index, _) in self.column.items()
            if index < len(cells)
        }
        get = lambda target: found.get(target, "")  # noqa: E731

        def fail(target: str, reason: str) -> None:
            row.errors.append((self._header(target), reason))

        def warn(target: str, reason: str) -> None:
            row.warnings.append((self._header(target), reason))

        first, last = get("first_name"), get("last_name")
        split = True
        if (not first or not last) and get("full_name"):
            try:
                first, last = split_name(get("full_name"))
            except CellError as exc:
                # Its reason says what is missing; "no first name" for "Madonna" would not.
                fail("full_name", str(exc))
                split = False
        if split and not first:
            fail("first_name" if "first_name" in self.column else "full_name", "no first name")
        if split and not last:
            fail("last_name" if "last_name" in self.column else "full_name", "no last name")
        row.patient.update(first_name=first[:100], last_name=last[:100])
        if not self.by_name_only:
            try:
                dob = parse_date(get("date_of_birth"), order=self.date_order)
                if dob > self.today:
                    fail("date_of_birth", f"“{get('date_of_birth')}” is in the future")
                row.patient["date_of_birth"] = dob
                row.key = (_fold(first[:100]), _fold(last[:100]), dob)
            except CellError as exc:
                fail("date_of_birth", f"date of birth {exc}")
        for target in ("mobile_phone", "home_phone"):
            try:
                if value := parse_phone(get(target)):
                    row.patient[target] = value
            except CellError as exc:
                warn(target, f"{exc}; left empty")
        try:
            if value := parse_email(get("email")):
                row.patient["email"] = value
        except CellError as exc:
            warn("email", f"{exc}; left empty")
        for target, limit in self.limits.items():
            if value := get(target):
                if len(value) > limit:
                    warn(target, f"is longer than {limit} characters; left as it was")
                else:
                    row.patient[target] = value
        if raw := get("language"):
            if code := LANGUAGES.get(_fold(raw)):
                row.patient["language"] = code
            else:
                warn("language", f"“{raw}” is not a language we send in; left as it was")
        row.external_id = get("external_id")[:100]
        row.location = self.default_location
        if raw := get("location"):
            row.location = self.locations.get(_fold(raw))
            if row.location is None:
                known = ", ".join(sorted({loc.name for loc in self.locations.values()}))
                fail("location", f"“{raw}” is not one of the locations ({known})")
        if get("appointment_date"):
            self._parse_appointment(row, get, fail)
        if raw := get("next_recall"):
            try:
                row.next_recall = parse_date(raw, order=self.date_order)
            except CellError as exc:
                fail("next_recall", f"next recall {exc}")
        return row

    def _parse_appointment(self, row: Row, get, fail) -> None:
        location = row.location or self.default_location
        try:
            day, at = parse_datetime(get("appointment_date"))
        except CellError as exc:
            fail("appointment_date", f"appointment {exc}")
            return
        if get("appointment_time"):
            try:
                at = parse_time(get("appointment_time"))
            except CellError as exc:  # named in its own column, not the date's
                fail("appointment_time", f"appointment {exc}")
                return
        if at is None:
            fail("appointment_time", "the appointment has no time")
            return
        start = dt.datetime.combine(day, at, tzinfo=location.tz)
        # A wall time that does not exist (a DST gap) is refused, never shifted.
        if start.astimezone(dt.UTC).astimezone(location.tz).replace(tzinfo=None) != start.replace(
            tzinfo=None
        ):
            fail("appointment_time", f"{at:%H:%M} does not exist on {day} in {location.time_zone}")
            return
        raw_type = get("appointment_type")
        visit_type = self.types.get(_fold(raw_type)) if raw_type else None
        if visit_type is None:
            known = ", ".join(sorted({t.name for t in self.types.values()})[:12])
            fail(
                "appointment_type",
                f"“{raw_type}” is not an appointment type ({known})"
                if raw_type
                else "the appointment has no type",
            )
            return
        end = start + dt.timedelta(minutes=visit_type.default_duration_minutes)
        if raw_end := get("appointment_end"):
            try:
                end = dt.datetime.combine(day, parse_time(raw_end), tzinfo=location.tz)
            except CellError as exc:
                fail("appointment_end", f"end {exc}")
                return
            if end <= start:
                fail("appointment_end", "the appointment ends before it starts")
                return
        raw_status = _fold(get("appointment_status"))
        status = APPOINTMENT_STATUS.get(raw_status) if raw_status else Appointment.Status.SCHEDULED
        if status is None:
            fail("appointment_status", f"“{get('appointment_status')}” is not a status we know")
            return
        provider = self.providers.get(_fold(get("provider"))) if get("provider") else None
        row.appointment = {
            "external_id": get("appointment_id")[:100],
            "start": start,
            "end": end,
            "appointment_type": visit_type,
            "status": status,
            "provider": provider,
            "location": location,
        }

    def _allowed_locations(self):
        if self.user is None:
            return Location.objects.all()
        return locations_for(self.user, CHANGE_PATIENTS)

    def _patients(self):
        """Who a row may match: never a merged duplicate, never beyond the user's reach."""
        if self.user is None:
            return Patient.objects.filter(merged_into__isnull=True)
        return patients_visible_to(self.user, CHANGE_PATIENTS)

    def _locations(self) -> dict[str, Location]:
        found: dict[str, Location] = {}
        for location in self._allowed_locations():
            for name in (location.name, location.slug, location.city):
                if name:
                    found.setdefault(fold(name), location)
        return found

    # --- writing a chunk -----------------------------------------------------------

    def _chunk(self, rows: list[Row]) -> None:
        self.created = {}
        good = []
        for row in rows:
            if row.errors:
                self.report.counts["rejected"] += 1
                for column, reason in row.errors:
                    self.report.note("rejected", row.line, column, reason)
            else:
                good.append(row)
            for column, reason in row.warnings:
                self.report.counts["warnings"] += 1
                self.report.note("warnings", row.line, column, reason)
        if self.by_name_only:
            self._visits_by_name(good)
            return
        matched = self._match(good)
        for row in [r for r in good if matched[r.line][1] == "out of reach"]:
            good.remove(row)
            self.report.counts["rejected"] += 1
            self.report.note(
                "rejected",
                row.line,
                self._header("external_id"),
                f"“{row.external_id}” is a patient you cannot change here (another location)",
            )
        new: list[tuple[Row, Patient]] = []
        new_by_external: dict[str, Patient] = {}
        links: list[ExternalIdentifier] = []
        # Patients that already hold an id of this source are not given a second one.
        on_file = [p.pk for p, _ in matched.values() if p is not None and p.pk]
        linked = set(
            ExternalIdentifier.objects.filter(
                _any_of("patient_id", on_file), system=self.source.system
            ).values_list("patient_id", flat=True)
            if on_file
            else ()
        )
        for row in good:
            patient, how = matched[row.line]
            if patient is None:
                # Named again in this chunk (one row per visit): _match could not know,
                # as nobody here is written yet; a second record would also break the
                # one-external-id-per-system constraint and lose the whole chunk.
                patient = new_by_external.get(row.external_id) or self.created.get(row.key)
                if patient is not None:
                    matched[row.line] = (patient, "earlier row")
            if patient is None:
                patient = self._new_patient(row)
                self.created[row.key] = patient
                if row.external_id:
                    new_by_external[row.external_id] = patient
                new.append((row, patient))
                self.report.counts["duplicate_suspect" if how == "suspect" else "new"] += 1
            elif patient.pk is None:
                self._fill(patient, row)  # a person named again before being written
                self.report.counts["unchanged"] += 1
            else:
                changes = self._fill(patient, row)
                if row.external_id and how != "external id" and patient.pk not in linked:
                    # Found by name and birth date: remember the source's id for it, so
                    # next week's file finds this record even after a name change.
                    changes[f"id in {self.source.name}"] = ["", row.external_id]
                    links.append(self._external_id(patient, row.external_id))
                    linked.add(patient.pk)
                if changes:
                    if set(changes) & set(PATIENT_FIELDS):
                        patient.save()
                    self.report.counts["updated"] += 1
                    if len(self.report.changes) < SAMPLE_LIMIT:
                        self.report.changes.append(
                            {"line": row.line, "patient": str(patient), "changes": changes}
                        )
                else:
                    self.report.counts["unchanged"] += 1
        if new:
            self.grown |= {Patient, ExternalIdentifier}
            bulk_create_audited(Patient, [patient for _, patient in new])
            bulk_create_audited(
                ExternalIdentifier,
                [self._external_id(p, row.external_id) for row, p in new if row.external_id],
            )
        if links:
            self.grown.add(ExternalIdentifier)
            bulk_create_audited(ExternalIdentifier, links)
        recalls = []
        for row in good:
            patient = matched[row.line][0] or self.created[row.key]
            if row.appointment is not None:
                self._appointment(row, patient)
            if row.next_recall is not None:
                recalls.append((row, patient))
        if recalls:
            self._recalls(recalls)

    def _visits_by_name(self, rows: list[Row]) -> None:
        """Appointments of a file without birth dates, for patients found by name."""
        for row in rows:
            first, last = row.patient["first_name"], row.patient["last_name"]
            location = (row.appointment or {}).get("location") or self.source.location
            wanted = (_fold(first), _fold(last))
            same = [
                p
                for p in self._patients()
                .filter(search_name__contains=_fold(last))
                .filter(Q(home_location=location) | Q(shared_with=location))
                .distinct()
                if (_fold(p.first_name), _fold(p.last_name)) == wanted
                or (_fold(p.preferred_name), _fold(p.last_name)) == wanted
            ]
            name = f"{first} {last}"
            if len(same) != 1:
                self.report.counts["rejected"] += 1
                self.report.note(
                    "rejected",
                    row.line,
                    self._header("full_name" if "full_name" in self.column else "last_name"),
                    f"no patient named “{name}” at {location}; add them first, "
                    "or import a file with dates of birth"
                    if not same
                    else f"{len(same)} patients are named “{name}” at {location}; "
                    "a date-of-birth column tells them apart",
                )
                continue
            self.report.counts["unchanged"] += 1
            if row.appointment is not None:
                self._appointment(row, same[0])

    def _match(self, rows: list[Row]) -> dict[int, tuple[Patient | None, str]]:
        """line → (the patient this row is, or None for a new one; how it matched)."""
        # Two index lookups (the source's ids, then those patients within reach)
        # rather than one join, whose plan goes wrong while a big import outgrows
        # the table's statistics.
        external_ids = {r.external_id for r in rows if r.external_id}
        known = dict(
            ExternalIdentifier.objects.filter(
                _any_of("value", external_ids), system=self.source.system
            ).values_list("value", "patient_id")
            if external_ids
            else ()
        )
        reachable = self._in_bulk(set(known.values()))
        by_external = {value: reachable[pk] for value, pk in known.items() if pk in reachable}
        # An id the source gave a patient this user cannot change (or a merged one).
        out_of_reach = set(known) - set(by_external)
        by_name = [
            r
            for r in rows
            if r.external_id not in out_of_reach
            and not (r.external_id and r.external_id in by_external)
            and r.key not in self.created
        ]
        # Everyone born on those days, as plain values: for a new file that is most
        # of the work, and a full record is built only for the people matched. Only
        # those who are, or resemble, a row are kept: a big table has many more
        # people born on a chunk's days than the chunk has rows, and memory must
        # stay the chunk's, not grow with the table.
        by_key: dict[tuple, list[int]] = defaultdict(list)
        by_dob: dict[dt.date, list[tuple]] = defaultdict(list)
        keys = {r.key for r in by_name}
        born_on: dict[dt.date, list[Row]] = defaultdict(list)
        for r in by_name:
            born_on[r.key[2]].append(r)
        candidates = (
            self._patients()
            .filter(_any_of("date_of_birth", born_on))
            .values_list("pk", "first_name", "last_name", "date_of_birth", "mobile_phone", "email")
        )
        for pk, first, last, born, mobile, email in candidates if by_name else ():
            folded_last = _fold(last)
            if (key := (_fold(first), folded_last, born)) in keys:
                by_key[key].append(pk)
            candidate = (pk, folded_last, mobile, email.lower())
            if any(_resembles(candidate, r) for r in born_on[born]):
                by_dob[born].append(candidate)
        found: dict[int, list[int]] = {}
        for row in by_name:
            same = by_key.get(row.key, [])
            found[row.line] = same or [c[0] for c in by_dob[row.key[2]] if _resembles(c, row)]
        records = self._in_bulk({pk for line, pks in found.items() for pk in pks[:5]})
        result: dict[int, tuple[Patient | None, str]] = {}
        for row in rows:
            if row.external_id in out_of_reach:
                result[row.line] = (None, "out of reach")
            elif row.external_id and row.external_id in by_external:
                result[row.line] = (by_external[row.external_id], "external id")
            elif row.key in self.created:
                result[row.line] = (self.created[row.key], "earlier row")
            elif len(by_key.get(row.key, [])) == 1:
                result[row.line] = (records[by_key[row.key][0]], "name and date of birth")
            elif not found[row.line]:
                result[row.line] = (None, "new")
            else:
                result[row.line] = (None, "suspect")
                if len(self.report.suspects) < REPORT_LIMIT:
                    self.report.suspects.append(
                        {
                            "line": row.line,
                            "name": f"{row.patient['first_name']} {row.patient['last_name']}",
                            "date_of_birth": row.key[2].isoformat(),
                            "resembles": [
                                {"id": pk, "name": str(records[pk])} for pk in found[row.line][:5]
                            ],
                        }
                    )
        return result

    def _in_bulk(self, pks: set[int]) -> dict[int, Patient]:
        """Patients within reach by id (QuerySet.in_bulk, with one array parameter)."""
        if not pks:
            return {}
        return {p.pk: p for p in self._patients().filter(_any_of("pk", pks)).order_by()}

    def _new_patient(self, row: Row) -> Patient:
        location = row.location or self.default_location
        patient = self.make_patient(home_location_id=location.pk, **row.patient)
        _refresh_search_fields(patient)
        return patient

    def _external_id(self, patient: Patient, value: str) -> ExternalIdentifier:
        return self.make_external_id(patient_id=patient.pk, system=self.source.system, value=value)

    @staticmethod
    def _fill(patient: Patient, row: Row) -> dict[str, list[str]]:
        """Set the row's non-empty values; returns what changed (field → [before, after])."""
        changes = {}
        for name, value in row.patient.items():
            before = getattr(patient, name)
            if value != before:
                changes[name] = [str(before), str(value)]
                setattr(patient, name, value)
        return changes

    def _appointment(self, row: Row, patient: Patient) -> None:
        from followups.services import appointment_changed

        data = dict(row.appointment or {})
        external_id = data.pop("external_id")
        existing = None
        if external_id:
            existing = Appointment.objects.filter(
                external_system=self.source.system, external_id=external_id
            ).first()
            if existing is not None and existing.patient_id != patient.pk:
                self.report.note(
                    "rejected",
                    row.line,
                    self._header("appointment_id"),
                    f"appointment “{external_id}” belongs to another patient",
                )
                self.report.counts["appointments_rejected"] += 1
                return
        if existing is None:
            existing = Appointment.objects.filter(
                patient=patient, location=data["location"], start=data["start"]
            ).first()
        previous = existing.status if existing else None
        appointment = existing or Appointment(
            patient=patient,
            source=Appointment.Source.IMPORT,
            external_system=self.source.system if external_id else "",
            external_id=external_id,
        )
        if existing is not None and all(getattr(existing, k) == v for k, v in data.items()):
            self.report.counts["appointments_unchanged"] += 1
            return
        for name, value in data.items():
            setattr(appointment, name, value)
        try:
            with transaction.atomic():
                appointment.full_clean()
                appointment.save()
                appointment_changed(appointment=appointment, previous_status=previous)
        except (ValidationError, IntegrityError) as exc:
            reason = "; ".join(getattr(exc, "messages", [str(exc)]))
            self.report.note("rejected", row.line, self._header("appointment_date"), reason)
            self.report.counts["appointments_rejected"] += 1
            return
        self.report.counts["appointments_updated" if existing else "appointments_new"] += 1
        if not existing:
            self.grown.add(Appointment)

    def _recalls(self, rows: list[tuple[Row, Patient]]) -> None:
        """Keep the old tool's dates for reconciliation; open a follow-up where none is.

        One query for the chunk's kept dates, one bulk insert for the new ones.
        """
        patient_ids = [p.pk for _, p in rows]
        # What the dry run would keep is rolled back unread: nothing in its report
        # depends on these dates, so it does not write them (a tenth of its work).
        if not self.dry_run:
            self._keep_recall_dates(rows, patient_ids)
        recall_type = self.source.recall_type
        if recall_type is None:
            return
        from followups.services import followup_create

        active = set(
            Followup.objects.filter(
                _any_of("patient_id", patient_ids),
                followup_type=recall_type,
                status__in=[
                    Followup.Status.OPEN,
                    Followup.Status.CONTACTED,
                    Followup.Status.SCHEDULED,
                ],
            ).values_list("patient_id", flat=True)
        )
        for row, patient in rows:
            if patient.pk in active:
                continue
            assert row.next_recall is not None
            followup_create(
                patient=patient,
                followup_type=recall_type,
                location=row.location or self.source.location,
                due_date=row.next_recall,
                reason=f"Next recall from {self.source.name}",
                by=None,
                source=Followup.Source.IMPORT,
            )
            active.add(patient.pk)
            self.report.counts["recalls_opened"] += 1

    def _keep_recall_dates(self, rows: list[tuple[Row, Patient]], patient_ids: list[int]) -> None:
        kept = {
            patient_id: (pk, due, location_id)
            for pk, patient_id, due, location_id in SourceRecallDate.objects.filter(
                _any_of("patient_id", patient_ids), source=self.source
            ).values_list("pk", "patient_id", "due_date", "location_id")
        }
        new: dict[int, SourceRecallDate] = {}
        for row, patient in rows:
            location = row.location or self.source.location
            assert row.next_recall is not None
            if patient.pk in new:  # named twice in the chunk: the later row wins
                new[patient.pk].due_date, new[patient.pk].location_id = row.next_recall, location.pk
            elif patient.pk not in kept:
                new[patient.pk] = self.make_recall_date(
                    patient_id=patient.pk,
                    source_id=self.source.pk,
                    location_id=location.pk,
                    due_date=row.next_recall,
                )
            elif kept[patient.pk][1:] != (row.next_recall, location.pk):
                SourceRecallDate.objects.filter(pk=kept[patient.pk][0]).update(
                    due_date=row.next_recall, location=location, updated_at=timezone.now()
                )
                kept[patient.pk] = (kept[patient.pk][0], row.next_recall, location.pk)
        if new:
            self.grown.add(SourceRecallDate)
            recall_dates = list(new.values())
            copy_insert(SourceRecallDate, recall_dates) or SourceRecallDate.objects.bulk_create(
                recall_dates
            )


def _refresh_search_fields(patient: Patient) -> None:
    """Patient.refresh_search_fields() (a test holds them equal), for a new patient.

    Without the process-wide fold cache: a full name is folded once and never
    again, and keeping 100,000 of them made memory grow with the file.
    """
    patient.search_name = fold.__wrapped__(
        f"{patient.first_name} {patient.preferred_name} {patient.last_name}"
    )
    patient.search_phones = " ".join(
        filter(None, (phone_search_digits(p) for p in (patient.mobile_phone, patient.home_phone)))
    )


def _resembles(candidate: tuple, row: Row) -> bool:
    """Same last name, mobile or email as (pk, folded last name, mobile, lower-case email)."""
    _, last, mobile, email = candidate
    values = row.patient
    return bool(
        last == row.key[1]
        or (values.get("mobile_phone") and mobile == values["mobile_phone"])
        or (values.get("email") and email == values["email"])
    )


# The columns the import's lookups and foreign-key checks filter on, per table.
LOOKUP_COLUMNS: dict[type[models.Model], tuple[str, ...]] = {
    Patient: ("id", "date_of_birth", "home_location_id", "merged_into_id"),
    ExternalIdentifier: ("patient_id", "system", "value"),
    SourceRecallDate: ("patient_id", "source_id"),
    Appointment: ("id", "patient_id", "location_id", "start", "external_system", "external_id"),
}


def _refresh_statistics(grown: set[type[models.Model]]) -> None:
    """ANALYZE the tables an import fills, at 5,000 rows, 10,000, 20,000, …

    A first import can make a table many times larger within a minute, long
    before autovacuum notices. On statistics that still say "nearly empty" the
    planner reads whole tables for the matching queries and for the foreign-key
    checks at each commit, and an import that should take seconds per 10,000
    rows takes minutes. Doubling the interval keeps the cost to a handful of
    ANALYZE runs however big the file. (Inside the dry run's transaction it sees
    that transaction's own rows, and is rolled back with it.)

    Only the tables rows were added to (a practice's appointment table can be far
    bigger than the file), and only the columns the import looks rows up by: the
    table's size is updated all the same, and the other columns' statistics
    (the patient table's names, addresses and the upper(email) index — five
    sixths of the work) are autovacuum's to refresh after the import: an ANALYZE
    of some columns leaves its count of changed rows as it was.
    """
    if connection.vendor != "postgresql" or not grown:
        return
    quote = connection.ops.quote_name
    tables = [
        f"{quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)})"
        for model, columns in LOOKUP_COLUMNS.items()
        if model in grown
    ]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE " + ", ".join(tables))


class _AnyOf(Lookup):
    """`column = ANY(%s)`: a whole chunk's values as one array parameter.

    PostgreSQL plans it exactly as the IN list Django writes (it turns an IN list
    into this itself), but Django and psycopg no longer build, and psycopg no
    longer parses, a statement with a thousand placeholders for every chunk.
    """

    lookup_name = "any_of"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", [*params, self.rhs]


def _any_of(name: str, values: Iterable) -> Lookup:
    """filter(name__in=values), with one parameter on PostgreSQL."""
    if connection.vendor == "postgresql":
        return _AnyOf(F(name), list(values))
    return In(F(name), list(values))


def _maker(model: type[models.Model]) -> Callable[..., Any]:
    """A function making model(**values) for column values by attname, faster.

    Model.__init__ walks every field and sends pre_init/post_init for each of the
    200,000-odd objects of a big import, which cost more than writing them. With
    no receiver for those signals and no callable default, an instance is its
    defaults plus the values, which is all __init__ would have made of it.
    """
    fields = model._meta.concrete_fields
    if (
        any(callable(f.default) for f in fields if f.has_default())
        or models.signals.pre_init.has_listeners(model)
        or models.signals.post_init.has_listeners(model)
    ):
        return model
    defaults = {f.attname: f.get_default() for f in fields}

    def make(**values: Any) -> Any:
        instance = model.__new__(model)
        instance.__dict__.update(defaults)
        instance.__dict__.update(values)
        instance._state = ModelState()
        return instance

    return make


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
