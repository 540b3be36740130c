"""Running an import of one file: the batch record, the audit entry, the report."""

import hashlib
from collections.abc import Callable
from pathlib import Path

from auditlog.models import LogEntry
from django.db import transaction
from django.utils import timezone

from imports.engine import Importer, Report
from imports.mapping import problems, suggest
from imports.models import ImportBatch, ImportSource
from imports.readers import UnreadableFile, open_table


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def mapping_for(source: ImportSource, headers: list[str]) -> dict[str, str]:
    """The source's saved mapping for headers it knows; suggestions for the rest."""
    suggested = suggest(headers)
    return {h: source.mapping.get(h, suggested[h]) for h in headers}


def import_file(
    *,
    source: ImportSource,
    path: Path,
    file_name: str = "",
    mapping: dict[str, str] | None = None,
    dry_run: bool,
    by=None,
    started: Callable[[ImportBatch], None] | None = None,
) -> ImportBatch:
    """Dry-run or import one file; the batch holds counts and the report.

    Raises UnreadableFile (nothing written) when the file is not a usable table.
    `started` is told the batch as soon as it exists, so a page can follow its
    rows_done while the import runs.
    """
    file_name = file_name or path.name
    table = open_table(path, name=file_name)
    mapping = mapping or mapping_for(source, table.headers)
    if found := problems(mapping):
        raise UnreadableFile(" ".join(found))
    batch, progress = batch_start(
        source=source, path=path, file_name=file_name, mapping=mapping, dry_run=dry_run, by=by
    )
    if started:
        started(batch)
    importer = Importer(
        source=source,
        headers=table.headers,
        mapping=mapping,
        dry_run=dry_run,
        progress=progress,
        user=importing_user(by),
    )
    report = importer.run(table)
    if not dry_run:
        with transaction.atomic():
            source.mapping = mapping
            source.save(update_fields=["mapping"])
    rows = sum(
        report.counts[k] for k in ("new", "updated", "unchanged", "duplicate_suspect", "rejected")
    )
    return batch_finish(batch, report, rows_done=rows)


def importing_user(by):
    """The person an import acts for (their reach limits it); None for the system."""
    return by if getattr(by, "is_authenticated", False) else None


def batch_start(
    *, source: ImportSource, path: Path, file_name: str, mapping: dict, dry_run: bool, by
) -> tuple[ImportBatch, Callable[[int], None] | None]:
    """The batch record of one file, and the progress callback a real import reports to."""
    batch = ImportBatch.objects.create(
        source=source,
        file_name=file_name[:255],
        sha256=sha256_of(path),
        size=path.stat().st_size,
        mapping=mapping,
        dry_run=dry_run,
        status=ImportBatch.Status.PREVIEW if dry_run else ImportBatch.Status.RUNNING,
        created_by=by,
    )

    def progress(rows: int) -> None:
        ImportBatch.objects.filter(pk=batch.pk).update(rows_done=rows)

    return batch, None if dry_run else progress


def batch_finish(batch: ImportBatch, report: Report, *, rows_done: int) -> ImportBatch:
    """Record the outcome; a real import is also one audit entry (who, file, counts)."""
    batch.counts = dict(report.counts)
    batch.report = report.as_dict()
    batch.finished_at = timezone.now()
    batch.rows_done = rows_done
    if not batch.dry_run:
        batch.status = ImportBatch.Status.DONE
    batch.save()
    if not batch.dry_run:
        _audit(batch)
    return batch


def _audit(batch: ImportBatch) -> None:
    """One entry for the whole import: who, which file (name and hash), mapping, counts."""
    from practicecrm.audit import _entry

    entry = _entry(batch, LogEntry.Action.CREATE, None)
    entry.changes = {
        "import": [
            "",
            f"{batch.file_name} (sha256 {batch.sha256[:12]}…) from {batch.source}: "
            + ", ".join(f"{k} {v}" for k, v in sorted(batch.counts.items())),
        ]
    }
    entry.additional_data = {"mapping": batch.mapping, "counts": batch.counts}
    entry.save()
