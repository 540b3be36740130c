"""Cell values as spreadsheets and schedulers write them, turned into clean values.

Each parser returns the value or raises CellError with the reason to show next to
the line and column; none of them guesses (an ambiguous phone is left empty and
reported, never "fixed").
"""

import datetime as dt
import re

from django.conf import settings

from patients.phones import InvalidPhone, normalize_phone

_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_SLASHED = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
# Excel's day 0 is 1899-12-30 (it counts 1900 as a leap year).
EXCEL_EPOCH = dt.date(1899, 12, 30)


class CellError(ValueError):
    """A cell that cannot be read; the message is shown with its line and column."""


def parse_date(text: str, *, order: str | None = None) -> dt.date:
    """2026-03-01, 03/01/2026 (in the practice's order), 1-Mar-2026, Excel serials."""
    value = text.strip()
    order = order or settings.IMPORT_DATE_ORDER  # "MDY" or "DMY"
    if not value:
        raise CellError("is empty")
    if re.fullmatch(r"\d{4,5}(\.0+)?", value):
        serial = int(float(value))
        if 1 <= serial <= 80000:  # 1900 … 2119
            return EXCEL_EPOCH + dt.timedelta(days=serial)
    value = value.split("T")[0].split(" ")[0] if re.match(r"\d{4}-\d\d-\d\d[T ]", value) else value
    # The two shapes nearly every file uses, without trying format after format.
    if match := _ISO.fullmatch(value):
        parts = [int(p) for p in match.groups()]
    elif match := _SLASHED.fullmatch(value):
        a, b, year = (int(p) for p in match.groups())
        parts = [year, a, b] if order == "MDY" else [year, b, a]
    else:
        parts = []
    if parts:
        try:
            day = dt.date(*parts)
        except ValueError:
            example = "03/01/2026" if order == "MDY" else "01/03/2026"
            raise CellError(f"“{text}” is not a date (use 2026-03-01 or {example})") from None
        if day.year < 1900:
            raise CellError(f"“{text}” is before 1900")
        return day
    formats = ["%Y-%m-%d", "%Y/%m/%d", "%d-%b-%Y", "%d %b %Y", "%b %d %Y", "%B %d %Y"]
    formats += (
        ["%m/%d/%Y", "%m-%d-%Y", "%m.%d.%Y", "%m/%d/%y"]
        if order == "MDY"
        else ["%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y", "%d/%m/%y"]
    )
    cleaned = value.replace(",", "")
    for fmt in formats:
        try:
            day = dt.datetime.strptime(cleaned, fmt).date()  # noqa: DTZ007 (a date, no zone)
        except ValueError:
            continue
        if day.year < 1900:
            raise CellError(f"“{text}” is before 1900")
        return day
    example = "03/01/2026" if order == "MDY" else "01/03/2026"
    raise CellError(f"“{text}” is not a date (use 2026-03-01 or {example})")


def parse_time(text: str) -> dt.time:
    """9:30, 09:30, 9:30 AM, 2:15pm, 14:15:00, Excel fractions of a day (0.375)."""
    value = text.strip().upper().replace(".", "")
    if not value:
        raise CellError("is empty")
    if re.fullmatch(r"0?\.\d+|0", text.strip()):
        # The stripped text: str.strip() drops separators (\x1f…) that float() refuses.
        minutes = round(float(text.strip()) * 24 * 60)
        return dt.time(minutes // 60 % 24, minutes % 60)
    for fmt in ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M%p", "%I %p", "%I%p"):
        try:
            return dt.datetime.strptime(value, fmt).time()  # noqa: DTZ007 (a wall time)
        except ValueError:
            continue
    raise CellError(f"“{text}” is not a time (use 09:30 or 9:30 AM)")


def parse_datetime(text: str) -> tuple[dt.date, dt.time | None]:
    """A date with an optional time in one cell: "2026-03-01 09:30", "3/1/2026 9:30 AM"."""
    value = text.strip().replace("T", " ", 1) if re.match(r"\d{4}-\d\d-\d\dT", text) else text
    parts = value.split(None, 1)
    if len(parts) == 2 and re.search(r"\d:\d\d|[AaPp][Mm]$", parts[1]):
        return parse_date(parts[0]), parse_time(parts[1].removesuffix("Z"))
    return parse_date(value), None


def parse_phone(text: str) -> str:
    """E.164, or CellError (an invalid number is reported and left empty, never guessed)."""
    if not text.strip():
        return ""
    try:
        return normalize_phone(text)
    except InvalidPhone as exc:
        raise CellError(str(exc).rstrip(".")) from exc


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def parse_email(text: str) -> str:
    value = text.strip()
    if value and not _EMAIL.match(value):
        raise CellError(f"“{text}” is not an email address")
    return value.lower()


def split_name(text: str) -> tuple[str, str]:
    """One "Name" column: "Núñez, José" or "José Núñez" → (first, last)."""
    value = " ".join(text.split())
    if not value:
        raise CellError("is empty")
    if "," in value:
        last, _, first = value.partition(",")
        first, last = first.strip(), last.strip()
    else:
        first, _, last = value.rpartition(" ")
        if not first:
            raise CellError(f"“{text}” has no last name")
    if not first or not last:
        raise CellError(f"“{text}” needs both a first and a last name")
    return first, last
