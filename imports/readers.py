"""Reading an uploaded table: CSV (any delimiter, UTF-8 ± BOM, Windows-1252) or XLSX.

Everything streams — one row at a time from the file on disk — so a 100,000-row
file costs no more memory than a 100-row one. A file that is not a table is
refused here, with a sentence for the person who uploaded it, before anything is
written.
"""

import codecs
import csv
import datetime as dt
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"


class UnreadableFile(ValueError):
    """The file cannot be imported at all; the message says why, in plain words."""


@dataclass
class Table:
    headers: list[str]
    # (line number as the person sees it in their spreadsheet, cells)
    rows: Iterator[tuple[int, list[str]]]
    kind: str  # "csv" or "xlsx"
    encoding: str = ""
    delimiter: str = ""


def open_table(path: Path, *, name: str = "") -> Table:
    """Open a CSV or XLSX file and return its headers and a row iterator."""
    name = name or path.name
    size = path.stat().st_size
    limit = settings.IMPORT_MAX_BYTES
    if size == 0:
        raise UnreadableFile(f"“{name}” is empty.")
    if size > limit:
        raise UnreadableFile(
            f"“{name}” is {size / 1_000_000:.1f} MB; the limit is {limit / 1_000_000:.0f} MB. "
            "Split it, or ask your administrator to raise IMPORT_MAX_BYTES."
        )
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if zipfile.is_zipfile(path):
        return _open_xlsx(path, name)
    if head.startswith((b"\xd0\xcf\x11\xe0", b"%PDF", b"\x89PNG", b"PK")) or b"\x00" in head:
        raise UnreadableFile(
            f"“{name}” is not a text table (CSV) or an Excel .xlsx file. "
            "In your spreadsheet, use File → Save as → CSV or Excel Workbook (.xlsx)."
        )
    return _open_csv(path, name, head)


def _open_csv(path: Path, name: str, head: bytes) -> Table:
    encoding = _encoding(path, head, name)
    sample = head.decode(encoding, errors="ignore")
    try:
        dialect = csv.Sniffer().sniff(sample.split("\n", 50)[0] + "\n", delimiters=DELIMITERS)
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    handle = path.open(encoding=encoding, newline="")
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        headers = next(reader)
    except StopIteration:
        handle.close()
        raise UnreadableFile(f"“{name}” has no rows.") from None
    except csv.Error as exc:
        handle.close()
        raise UnreadableFile(f"“{name}” is not a readable CSV table: {exc}.") from exc
    headers = [h.strip() for h in headers]
    if len([h for h in headers if h]) < 2:
        handle.close()
        raise UnreadableFile(
            f"“{name}” does not look like a table: its first line should name the columns "
            "(e.g. First Name, Last Name, DOB), separated by commas or semicolons."
        )

    def rows() -> Iterator[tuple[int, list[str]]]:
        line = 1
        with handle:
            try:
                for cells in reader:
                    if any(c.strip() for c in cells):
                        yield reader.line_num, [c.strip() for c in cells]
                    line = reader.line_num
            except csv.Error as exc:
                # A quote opened and never closed swallows the rest of the file into
                # one cell: refused like a file that is not a table, not a crash.
                raise UnreadableFile(
                    f"“{name}” is not a readable CSV table from line {line + 1}: {exc}."
                ) from exc

    return Table(headers=headers, rows=rows(), kind="csv", encoding=encoding, delimiter=delimiter)


def _encoding(path: Path, head: bytes, name: str) -> str:
    """UTF-8 (with or without BOM) if the whole file is valid UTF-8, else Windows-1252."""
    candidates = ["utf-8-sig"] if head.startswith(codecs.BOM_UTF8) else ["utf-8", "cp1252"]
    for encoding in candidates:
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with path.open("rb") as handle:
                # 64 KiB at a time: each block's decoded text is thrown away, and a
                # block of accented text decodes to up to four times its size.
                while chunk := handle.read(1 << 16):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
    raise UnreadableFile(
        f"“{name}” has characters that are neither UTF-8 nor Windows-1252. "
        "Save it again as “CSV UTF-8”."
    )


def _open_xlsx(path: Path, name: str) -> Table:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    # A file object, not the path: openpyxl refuses a path that does not end in
    # .xlsx, and an upload is kept under a name with no extension.
    handle = path.open("rb")
    try:
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
        handle.close()
        raise UnreadableFile(f"“{name}” is not an Excel .xlsx workbook we can read.") from exc

    def close() -> None:
        workbook.close()
        handle.close()  # the workbook does not close a file it was given

    sheet = workbook.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    try:
        headers = [_cell(v).strip() for v in next(rows)]
    except StopIteration:
        close()
        raise UnreadableFile(f"The first sheet of “{name}” is empty.") from None
    if len([h for h in headers if h]) < 2:
        close()
        raise UnreadableFile(
            f"The first row of “{name}”'s first sheet should name the columns "
            "(e.g. First Name, Last Name, DOB)."
        )

    def iterate() -> Iterator[tuple[int, list[str]]]:
        try:
            for number, values in enumerate(rows, start=2):
                cells = [_cell(v).strip() for v in values]
                if any(cells):
                    yield number, cells
        finally:
            close()

    return Table(headers=headers, rows=iterate(), kind="xlsx")


def _cell(value: object) -> str:
    """An Excel cell as the text a person would type: dates ISO, whole numbers bare."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ") if value.time() != dt.time(0) else value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
