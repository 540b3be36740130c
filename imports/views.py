"""Import pages: upload → column mapping → dry-run preview → import (in Celery) → report.

A FHIR bundle skips the column mapping: its dry run runs on upload.

Access: managers and admins of the source's location (imports.selectors); anyone
else gets a 404, as for another location's source, upload or batch.
"""

import csv
import io
from collections.abc import Iterator

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from imports import selectors, uploads
from imports.forms import MappingForm, UploadForm
from imports.mapping import FIELDS, problems
from imports.models import ImportBatch, ImportUpload
from imports.readers import UnreadableFile
from practicecrm import exports
from practicecrm.http import HtmxHttpRequest

COUNT_LABELS = (
    ("new", "New"),
    ("updated", "Updated"),
    ("unchanged", "Unchanged"),
    ("duplicate_suspect", "Duplicate suspects"),
    ("rejected", "Rejected"),
)
APPOINTMENT_LABELS = (
    ("appointments_new", "New"),
    ("appointments_updated", "Updated"),
    ("appointments_unchanged", "Unchanged"),
    ("appointments_rejected", "Rejected"),
)


def _require_import_access(request: HttpRequest) -> None:
    if not selectors.can_import(user=request.user):
        raise Http404("You cannot import at any location.")


def _report_context(request: HttpRequest, batch: ImportBatch) -> dict:
    """Counts, rejected rows, warnings, suspects (linked when the user may see the
    patient they resemble) and sample changes of a batch, for `_report.html`."""
    report = batch.report or {}
    counts = batch.counts or {}
    suspects = report.get("suspects", [])
    ids = {r["id"] for s in suspects for r in s.get("resembles", [])}
    visible = selectors.visible_patient_ids(user=request.user, ids=ids)
    is_fhir = any(k.startswith("fhir_") for k in counts)
    rejected = report.get("rejected", [])
    if is_fhir:
        # The Importer's refusals and the bundle reader's, in the bundle's order.
        rejected = sorted(rejected, key=lambda r: r["line"])
    return {
        "batch": batch,
        "counts": [(key, label, counts.get(key, 0)) for key, label in COUNT_LABELS],
        "appointment_counts": [
            (key, label, counts.get(key, 0)) for key, label in APPOINTMENT_LABELS
        ],
        "has_appointments": any(k.startswith("appointments_") for k in counts),
        "recalls_opened": counts.get("recalls_opened", 0),
        "rejected": rejected,
        "warnings": report.get("warnings", []),
        "suspects": [
            {
                **s,
                "resembles": [{**r, "visible": r["id"] in visible} for r in s["resembles"]],
            }
            for s in suspects
        ],
        "changes": report.get("changes", []),
        # A FHIR batch names an entry's number in the bundle, not a line of a file.
        "line_label": "Entry" if is_fhir else "Line",
    }


def _fhir_counts(batch: ImportBatch) -> dict[str, int]:
    """What a bundle held: Patient, Appointment and other resources (empty for a table)."""
    counts = batch.counts or {}
    return {key: counts.get(f"fhir_{key}", 0) for key in ("patients", "appointments", "skipped")}


def _only(sources) -> int | None:
    pks = list(sources.values_list("pk", flat=True)[:2])
    return pks[0] if len(pks) == 1 else None


# --- the steps ---------------------------------------------------------------------


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    _require_import_access(request)
    sources = selectors.source_list(user=request.user)
    form = UploadForm(
        request.POST or None,
        request.FILES or None,
        sources=sources,
        locations=selectors.import_locations(user=request.user),
        # The usual case is next week's file from the one source there is.
        initial={"source": request.GET.get("source") or _only(sources)},
    )
    if request.method == "POST" and form.is_valid():
        stored = None
        try:
            # One transaction: a refused file leaves no new source behind either.
            with transaction.atomic():
                source = form.cleaned_data["source"]
                system = form.cleaned_data["identifier_system"]
                if source is None:
                    source = form.new_source()
                    source.save()
                elif system and system != source.fhir_identifier_system:
                    # Remembered, like the column mapping: next week's bundle uses it.
                    source.fhir_identifier_system = system
                    source.save(update_fields=["fhir_identifier_system"])
                stored = uploads.upload_store(
                    source=source, file=form.cleaned_data["file"], by=request.user
                )
                if stored.kind == ImportUpload.Kind.FHIR:
                    # No columns to match: straight to the dry run.
                    uploads.upload_preview(upload=stored, by=request.user)
        except UnreadableFile as exc:
            if stored is not None:
                stored.path.unlink(missing_ok=True)
            form.add_error("file", str(exc))
        else:
            if stored.kind == ImportUpload.Kind.FHIR:
                return redirect("imports:preview", stored.pk)
            return redirect("imports:mapping", stored.pk)
    return render(request, "imports/upload.html", {"form": form})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def mapping(request: HttpRequest, pk) -> HttpResponse:
    upload = selectors.upload_get(user=request.user, pk=pk)
    if upload.import_requested_at:
        return redirect("imports:progress", upload.pk)
    if upload.kind == ImportUpload.Kind.FHIR:
        return _fhir_mapping(request, upload)
    form = MappingForm(request.POST or None, headers=upload.headers, mapping=upload.mapping)
    current = form.mapping() if form.is_bound and form.is_valid() else upload.mapping
    found = problems(current)
    if request.method == "POST" and form.is_valid() and not found:
        try:
            uploads.upload_preview(upload=upload, mapping=current, by=request.user)
        except (UnreadableFile, FileNotFoundError) as exc:
            message = str(exc) if isinstance(exc, UnreadableFile) else "The file is gone."
            form.add_error(None, message + " Upload it again.")
        else:
            return redirect("imports:preview", upload.pk)
    columns = [
        (field, upload.samples[i] if i < len(upload.samples) else [])
        for i, field in enumerate(form.rows())
    ]
    context = {"upload": upload, "form": form, "columns": columns, "problems": found}
    return render(request, "imports/mapping.html", context)


def _fhir_mapping(request: HttpRequest, upload: ImportUpload) -> HttpResponse:
    """A bundle has no columns to match: the dry run, or the way to run it again."""
    if request.method == "GET" and upload.preview is not None:
        return redirect("imports:preview", upload.pk)
    error = ""
    if request.method == "POST":
        try:
            uploads.upload_preview(upload=upload, by=request.user)
        except (UnreadableFile, FileNotFoundError) as exc:
            error = str(exc) if isinstance(exc, UnreadableFile) else "The file is gone."
            error += " Upload it again."
        else:
            return redirect("imports:preview", upload.pk)
    return render(request, "imports/fhir_mapping.html", {"upload": upload, "error": error})


@require_safe
@never_cache
@login_required
def preview(request: HttpRequest, pk) -> HttpResponse:
    upload = selectors.upload_get(user=request.user, pk=pk)
    if upload.preview is None:
        return redirect("imports:mapping", upload.pk)
    if upload.import_requested_at:
        return redirect("imports:progress", upload.pk)
    mapped = [(h, FIELDS[t][0]) for h, t in upload.mapping.items() if t in FIELDS]
    context = {
        "upload": upload,
        "mapped": mapped,
        "is_fhir": upload.kind == ImportUpload.Kind.FHIR,
        "fhir_counts": _fhir_counts(upload.preview),
        **_report_context(request, upload.preview),
    }
    return render(request, "imports/preview.html", context)


@require_POST
@login_required
def confirm(request: HttpRequest, pk) -> HttpResponse:
    upload = selectors.upload_get(user=request.user, pk=pk)
    if upload.preview is None:
        messages.error(request, "Preview the import (dry run) before importing.")
        return redirect("imports:mapping", upload.pk)
    uploads.upload_request_import(upload=upload)
    return redirect("imports:progress", upload.pk)


@require_safe
@never_cache
@login_required
def progress(request: HtmxHttpRequest, pk) -> HttpResponse:
    upload = selectors.upload_get(user=request.user, pk=pk)
    batch = upload.batch
    done = batch is not None and batch.status == ImportBatch.Status.DONE
    failed = bool(upload.error) or (batch is not None and batch.status == ImportBatch.Status.FAILED)
    total = upload.total_rows or 0
    rows = batch.rows_done if batch else 0
    context = {
        "upload": upload,
        "rows_done": min(rows, total) if total else rows,
        "total": total,
        "percent": 100 if done else (round(100 * rows / total) if total else 0),
        "done": done,
        "failed": failed,
        "running": not done and not failed and bool(upload.import_requested_at),
    }
    if done and batch is not None:
        context.update(_report_context(request, batch))
    template = "imports/_progress.html" if request.htmx else "imports/progress.html"
    return render(request, template, context)


# --- history and reports -----------------------------------------------------------------


@require_safe
@never_cache
@login_required
def batches(request: HttpRequest) -> HttpResponse:
    _require_import_access(request)
    page = Paginator(selectors.batch_list(user=request.user), 25).get_page(request.GET.get("page"))
    rows = [(b, [b.counts.get(key, 0) for key, _ in COUNT_LABELS]) for b in page.object_list]
    context = {"page": page, "rows": rows, "count_labels": [label for _, label in COUNT_LABELS]}
    return render(request, "imports/batch_list.html", context)


@require_safe
@never_cache
@login_required
def batch(request: HttpRequest, pk: int) -> HttpResponse:
    found = selectors.batch_get(user=request.user, pk=pk)
    return render(request, "imports/batch_detail.html", _report_context(request, found))


def _report_rows(report: dict) -> Iterator[tuple]:
    for r in report.get("rejected", []):
        yield r["line"], r["column"], r["reason"], "rejected: not imported"
    for w in report.get("warnings", []):
        yield w["line"], w["column"], w["reason"], "imported, with a warning"
    for s in report.get("suspects", []):
        alike = "; ".join(f"{r['name']} (#{r['id']})" for r in s.get("resembles", []))
        reason = f"{s['name']}, born {s['date_of_birth']}, looks like {alike}"
        yield s["line"], "", reason, "duplicate suspect: imported as new, to merge by hand"


@require_safe
@never_cache
@login_required
def report(request: HttpRequest, pk: int) -> HttpResponse:
    found = selectors.batch_get(user=request.user, pk=pk)
    rows = list(_report_rows(found.report or {}))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(("line", "column", "reason", "outcome"))
    writer.writerows(tuple(exports.neutralise(v) for v in row) for row in rows)
    # Suspects carry patient names (the file's and ours): reading them is access.
    if found.report.get("suspects"):
        exports.log_export(
            request,
            model=ImportBatch,
            view="imports:report",
            title=f"import report of {found.file_name}",
            fmt="csv",
            rows=len(rows),
            filters={"batch": found.pk},
        )
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    name = exports.export_filename(f"import-report-{found.pk}", "csv")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response
