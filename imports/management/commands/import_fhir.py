"""python manage.py import_fhir --source NAME PATH [--dry-run]: a FHIR R4 Bundle (JSON)."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imports.fhir import import_fhir_bundle
from imports.management.common import patient_summary, source_named
from imports.readers import UnreadableFile
from practicecrm.audit import system_actor


class Command(BaseCommand):
    help = "Import (or dry-run) a FHIR R4 Bundle of Patient and Appointment resources."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--source", required=True, help="Source name, e.g. “Clinic EHR”.")
        parser.add_argument(
            "--location", help="Slug of the default location (needed for a new source)."
        )
        parser.add_argument(
            "--identifier-system",
            default="",
            help="The Patient.identifier system that is the source's id "
            "(default: the source's saved one, else each patient's first).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Report only; write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file.")
        source = source_named(options["source"], options["location"])
        with system_actor():
            try:
                batch = import_fhir_bundle(
                    source=source,
                    path=path,
                    dry_run=options["dry_run"],
                    identifier_system=options["identifier_system"],
                )
            except UnreadableFile as exc:
                raise CommandError(f"{path.name}: {exc}") from exc
        counts = batch.counts
        patients = patient_summary(counts)
        appointments = ", ".join(
            f"{counts.get(f'appointments_{key}', 0)} {key}"
            for key in ("new", "updated", "unchanged", "rejected")
        )
        verb = "Dry run of" if options["dry_run"] else "Imported"
        self.stdout.write(
            f"{verb} {path.name} from {source}: patients {patients}; "
            f"appointments {appointments}; {counts.get('fhir_skipped', 0)} other resources skipped."
        )
        for rejection in batch.report.get("rejected", [])[:20]:
            self.stderr.write(
                f"  entry {rejection['line']}, {rejection['column']}: {rejection['reason']}"
            )
        if counts.get("rejected") or counts.get("appointments_rejected"):
            raise SystemExit(2)
