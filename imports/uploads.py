"""The import pages' writes: keep an uploaded file, dry-run it, import it in the background.

The engine (imports.services.import_file) does the reading, matching and writing;
this module carries one uploaded file through the steps a person takes on the pages.
A FHIR bundle (a .json file, or one that starts with "{") takes the same steps
without the column mapping: imports.fhir reads its fixed fields.
"""

import contextlib
from functools import partial
from pathlib import Path

from auditlog.context import auditlog_value, set_actor
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from imports import fhir
from imports.models import ImportBatch, ImportSource, ImportUpload
from imports.readers import UnreadableFile, open_table
from imports.services import import_file, mapping_for

SAMPLES = 3


def is_fhir(path: Path, *, name: str) -> bool:
    """A FHIR bundle by its name (.json) or its first character ("{"; no table starts so)."""
    if name.lower().endswith(".json"):
        return True
    with path.open("rb") as f:
        start = f.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()
    return start.startswith(b"{")


def upload_store(*, source: ImportSource, file: UploadedFile, by) -> ImportUpload:
    """Keep an uploaded file for import, with its headers and a few sample values.

    Raises UnreadableFile when it is not a table (or a FHIR bundle) we can import;
    then nothing is kept.
    """
    upload = ImportUpload(source=source, file_name=Path(file.name or "upload").name[:255])
    upload.uploaded_by = by
    upload.path.parent.mkdir(parents=True, exist_ok=True)
    with upload.path.open("wb") as out:
        for chunk in file.chunks():
            out.write(chunk)
    if is_fhir(upload.path, name=upload.file_name):
        try:
            fhir.read_bundle(upload.path, name=upload.file_name)
        except UnreadableFile:
            upload.path.unlink(missing_ok=True)
            raise
        upload.kind = ImportUpload.Kind.FHIR
        upload.save()
        return upload
    try:
        table = open_table(upload.path, name=upload.file_name)
        first = []
        try:
            for _, cells in table.rows:
                first.append(cells)
                if len(first) == SAMPLES:
                    break
        finally:
            # Closes the file (CSV) or workbook (XLSX) behind the row iterator.
            with contextlib.suppress(AttributeError):
                table.rows.close()  # type: ignore[attr-defined]
    except (UnreadableFile, UnicodeDecodeError) as exc:
        upload.path.unlink(missing_ok=True)
        if isinstance(exc, UnreadableFile):
            raise
        raise UnreadableFile(f"“{upload.file_name}” could not be read as text.") from exc
    upload.headers = table.headers
    upload.samples = [
        [row[i] if i < len(row) else "" for row in first] for i in range(len(table.headers))
    ]
    upload.mapping = mapping_for(source, table.headers)
    upload.save()
    return upload


def upload_preview(
    *, upload: ImportUpload, mapping: dict[str, str] | None = None, by
) -> ImportBatch:
    """Dry-run the upload with this mapping (rolled back: nothing is written).

    A FHIR bundle needs no mapping. Raises UnreadableFile when the mapping cannot
    import anything (or the bundle is not a usable one).
    """
    if upload.kind == ImportUpload.Kind.FHIR:
        batch = fhir.import_fhir_bundle(
            source=upload.source,
            path=upload.path,
            file_name=upload.file_name,
            dry_run=True,
            by=by,
        )
        mapping = {}
    else:
        assert mapping is not None, "a spreadsheet is previewed with a mapping"
        batch = import_file(
            source=upload.source,
            path=upload.path,
            file_name=upload.file_name,
            mapping=mapping,
            dry_run=True,
            by=by,
        )
    upload.mapping = mapping
    upload.preview = batch
    upload.total_rows = batch.rows_done
    upload.save(update_fields=["mapping", "preview", "total_rows"])
    return batch


def upload_request_import(*, upload: ImportUpload) -> bool:
    """Queue the import of a previewed upload, once; False when it was already queued.

    The conditional UPDATE is the claim: two clicks (or two tabs) queue one import.
    """
    from imports.tasks import run_import

    claimed = ImportUpload.objects.filter(
        pk=upload.pk, import_requested_at__isnull=True, preview__isnull=False
    ).update(import_requested_at=timezone.now())
    if claimed:
        transaction.on_commit(partial(run_import.delay, str(upload.pk)))
    return bool(claimed)


def upload_import(*, upload_id: str) -> ImportBatch | None:
    """Import the upload with its previewed mapping, recorded as the person who asked."""
    upload = ImportUpload.objects.select_related("source", "uploaded_by", "batch").get(pk=upload_id)
    if upload.batch is not None and upload.batch.status == ImportBatch.Status.DONE:
        return upload.batch  # a redelivered task: the work is done

    def started(batch: ImportBatch) -> None:
        ImportUpload.objects.filter(pk=upload.pk).update(batch=batch)

    # The audit trail names the person who confirmed the import, not the worker.
    token = auditlog_value.set({})
    try:
        with set_actor(upload.uploaded_by):
            if upload.kind == ImportUpload.Kind.FHIR:
                batch = fhir.import_fhir_bundle(
                    source=upload.source,
                    path=upload.path,
                    file_name=upload.file_name,
                    dry_run=False,
                    by=upload.uploaded_by,
                    started=started,
                )
            else:
                batch = import_file(
                    source=upload.source,
                    path=upload.path,
                    file_name=upload.file_name,
                    mapping=upload.mapping,
                    dry_run=False,
                    by=upload.uploaded_by,
                    started=started,
                )
    except (UnreadableFile, FileNotFoundError) as exc:
        _failed(upload, str(exc) if isinstance(exc, UnreadableFile) else "The file is gone.")
        return None
    except Exception:
        _failed(upload, "The import stopped unexpectedly; rows before the stop are imported.")
        raise
    finally:
        auditlog_value.reset(token)
    # Read: the report and the records hold what the file said; the file can go.
    upload.path.unlink(missing_ok=True)
    return batch


def _failed(upload: ImportUpload, reason: str) -> None:
    ImportUpload.objects.filter(pk=upload.pk).update(error=reason)
    batch_id = ImportUpload.objects.filter(pk=upload.pk).values_list("batch", flat=True).first()
    if batch_id:
        ImportBatch.objects.filter(pk=batch_id).update(
            status=ImportBatch.Status.FAILED, finished_at=timezone.now()
        )
