"""python manage.py import_file --source NAME PATH [--dry-run]: the nightly file drop."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imports.management.common import patient_summary, source_named
from imports.readers import UnreadableFile
from imports.services import import_file
from practicecrm.audit import system_actor


class Command(BaseCommand):
    help = "Import (or dry-run) a CSV/XLSX file from a named source, with its saved mapping."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--source", required=True, help="Source name, e.g. “Old spreadsheet”.")
        parser.add_argument(
            "--location", help="Slug of the default location (needed for a new source)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Report only; write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file.")
        source = source_named(options["source"], options["location"])
        with system_actor():
            try:
                batch = import_file(source=source, path=path, dry_run=options["dry_run"])
            except UnreadableFile as exc:
                raise CommandError(f"{path.name}: {exc}") from exc
        counts = batch.counts
        summary = patient_summary(counts)
        appointments = sum(v for k, v in counts.items() if k.startswith("appointments_"))
        verb = "Dry run of" if options["dry_run"] else "Imported"
        self.stdout.write(
            f"{verb} {path.name} from {source}: {summary}; {appointments} appointment rows."
        )
        for rejection in batch.report.get("rejected", [])[:20]:
            self.stderr.write(
                f"  line {rejection['line']}, {rejection['column']}: {rejection['reason']}"
            )
        if counts.get("rejected"):
            raise SystemExit(2)
