"""Spreadsheet exports (issue #5): CSV and XLSX that stream and never run a formula.

A list page's export view narrows and filters rows with the page's own selector,
then hands `export_response` a header, a lazy iterator of rows and what was
asked for. This module does the rest the same way for every list:

- **Formula injection.** A spreadsheet treats a cell beginning with =, +, -, @ (and
  tab or carriage return, which some tools strip before looking) as a formula, so a
  patient named "=HYPERLINK(…)" could run in the office's Excel. `neutralise`
  prefixes such values with a single quote, in CSV and XLSX alike. There is no
  exception for phone numbers: "+15125550100" becomes "'+15125550100". A rule
  with a "looks like a phone" escape hatch is one an attacker can aim at, and the
  quote keeps the number text in Excel instead of turning it into 15125550100.
- **Memory.** Rows come from `QuerySet.iterator(chunk_size=CHUNK_SIZE)`, so a
  database cursor feeds the file a chunk at a time. CSV goes out as a
  StreamingHttpResponse; XLSX is written by openpyxl's write-only workbook (rows go
  to a temporary file as they are appended) and sent from that file.
- **Audit.** Every export is one ACCESS entry: who, from where, which list, the
  filters in force, how many rows and which format — written before the first
  byte goes out, so an interrupted download is still on record.
"""

import csv
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.http import FileResponse, HttpRequest, HttpResponseBadRequest, StreamingHttpResponse
from django.utils import timezone
from django.utils.text import slugify
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

FORMATS = {"csv": "CSV", "xlsx": "Excel"}
CHUNK_SIZE = 2000
# Leading characters that make Excel, LibreOffice or Google Sheets read a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# CSV rows are sent in pieces of about this many characters, not one row at a time.
_CSV_PIECE = 64 * 1024

Row = Sequence[Any]


def neutralise(value: Any) -> str:
    """The cell's text, with a quote in front when a spreadsheet would run it."""
    if value is None:
        return ""
    text = str(value)
    if text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def export_format(request: HttpRequest) -> str | None:
    """The requested format (CSV unless asked otherwise); None when it is not one we write."""
    fmt = request.GET.get("format", "csv")
    return fmt if fmt in FORMATS else None


def bad_format() -> HttpResponseBadRequest:
    return HttpResponseBadRequest("Unknown export format: use format=csv or format=xlsx.")


def export_filename(name: str, fmt: str) -> str:
    """'patients-2026-11-26.csv': a slug, the practice's date, the extension."""
    return f"{slugify(name) or 'export'}-{timezone.localdate():%Y-%m-%d}.{fmt}"


def log_export(
    request: HttpRequest,
    *,
    model: type[models.Model],
    view: str,
    title: str,
    fmt: str,
    rows: int,
    filters: dict[str, Any],
) -> LogEntry:
    """One ACCESS entry for a whole export.

    It names no single record (object_pk is empty): the entry stands for the list,
    and its additional_data says which list, with which filters, how many rows and
    in which format. The actor and address come from the request, as for every entry.
    """
    return LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(model),
        object_pk="",
        object_repr=f"Export of {title}: {rows} row{'s' if rows != 1 else ''}, {FORMATS[fmt]}",
        action=LogEntry.Action.ACCESS,
        actor=request.user if request.user.is_authenticated else None,
        actor_email=getattr(request.user, "email", None) or None,
        additional_data={"export": {"view": view, "format": fmt, "rows": rows, "filters": filters}},
    )


def export_response(
    request: HttpRequest,
    *,
    fmt: str,
    name: str,
    title: str,
    view: str,
    model: type[models.Model],
    filters: dict[str, Any],
    count: int,
    header: Row,
    rows: Iterable[Row],
) -> StreamingHttpResponse | FileResponse:
    """Log the export, then send `rows` under `header` as a CSV or XLSX download."""
    log_export(request, model=model, view=view, title=title, fmt=fmt, rows=count, filters=filters)
    filename = export_filename(name, fmt)
    response: StreamingHttpResponse | FileResponse
    if fmt == "xlsx":
        response = FileResponse(
            _xlsx_file(title, header, rows),
            as_attachment=True,
            filename=filename,
            content_type=XLSX_CONTENT_TYPE,
        )
    else:
        response = StreamingHttpResponse(
            _csv_pieces(header, rows), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Patient data: never kept by a browser or proxy cache.
    response["Cache-Control"] = "no-store"
    return response


class _Echo:
    """A file-like object whose write() hands the line back, for csv.writer."""

    def write(self, value: str) -> str:
        return value


def _csv_pieces(header: Row, rows: Iterable[Row]) -> Iterator[str]:
    # The byte-order mark makes Excel read the file as UTF-8 (names with accents).
    writer = csv.writer(_Echo())
    piece = ["\ufeff", writer.writerow([neutralise(v) for v in header])]
    size = 0
    for row in rows:
        line = writer.writerow([neutralise(v) for v in row])
        piece.append(line)
        size += len(line)
        if size >= _CSV_PIECE:
            yield "".join(piece)
            piece, size = [], 0
    yield "".join(piece)


def _xlsx_file(title: str, header: Row, rows: Iterable[Row]) -> Any:
    """A temporary file holding the workbook, rewound; deleted when the response closes it."""
    workbook = Workbook(write_only=True)
    # Sheet titles allow 31 characters and none of []:*?/\ .
    sheet = workbook.create_sheet(title=slugify(title)[:31] or "export")

    def cell(value: Any) -> WriteOnlyCell:
        # XML cannot carry most control characters (openpyxl would refuse the row);
        # they go first, so that what is left is what gets neutralised.
        text = ILLEGAL_CHARACTERS_RE.sub("", "" if value is None else str(value))
        c = WriteOnlyCell(sheet, value=neutralise(text))
        c.data_type = "s"  # always a string, never a formula or a number
        return c

    sheet.append([cell(v) for v in header])
    for row in rows:
        sheet.append([cell(v) for v in row])
    # Handed to FileResponse, which closes (and so deletes) it after the last byte.
    out = tempfile.TemporaryFile()  # noqa: SIM115
    workbook.save(out)
    out.seek(0)
    return out
