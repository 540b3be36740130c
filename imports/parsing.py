"""Cell values as spreadsheets and schedulers write them, turned into clean values.

Each parser returns the value or raises CellError with the reason to show next to
the line and column; none of them guesses (an ambiguous phone is left empty and
reported, never "fixed").
"""

import datetime as dt
import functools
import re

import phonenumbers
from django.conf import settings

from patients.phones import InvalidPhone, normalize_phone

_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_SLASHED = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_SERIAL = re.compile(r"\d{4,5}(\.0+)?")
_ISO_WITH_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]")
# Excel's day 0 is 1899-12-30 (it counts 1900 as a leap year).
EXCEL_EPOCH = dt.date(1899, 12, 30)
# Entries per cache of parsed values, here and in the engine. Enough for the
# values a file repeats (recall days, first names, a household's phone on
# adjacent rows); kept small because most cells of a big file are seen once, and
# each of those replaces an entry: the new entry outlives the rows it was read
# with, scattered among them, and a large cache churned that way kept freed
# memory from being reused — the import's memory grew with the file.
CACHE_SIZE = 1024


class CellError(ValueError):
    """A cell that cannot be read; the message is shown with its line and column."""


def parse_date(text: str, *, order: str | None = None) -> dt.date:
    """2026-03-01, 03/01/2026 (in the practice's order), 1-Mar-2026, Excel serials."""
    return _parse_date(text, order or settings.IMPORT_DATE_ORDER)  # "MDY" or "DMY"


# Cached: a file repeats its dates (a few hundred recall days, common birthdays)
# and the answer depends on the text and the order alone. A refusal is an
# exception, which is not cached, so a bad cell is read again each time, as before.
# The caches are small on purpose (CACHE_SIZE).
@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse_date(text: str, order: str) -> dt.date:
    value = text.strip()
    if not value:
        raise CellError("is empty")
    if _SERIAL.fullmatch(value):
        serial = int(float(value))
        if 1 <= serial <= 80000:  # 1900 … 2119
            return EXCEL_EPOCH + dt.timedelta(days=serial)
    value = value.split("T")[0].split(" ")[0] if _ISO_WITH_TIME.match(value) else value
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
    return _parse_phone(text, settings.PHONE_DEFAULT_REGION)


# Cached like the dates: a household shares a home phone, a visit list names the
# same person on many rows. Reading a number with `phonenumbers` costs about a
# tenth of a big import; a refusal (an exception) is not cached.
@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse_phone(text: str, region: str) -> str:
    if found := _north_american(text, region):
        return found
    try:
        return normalize_phone(text, region)
    except InvalidPhone as exc:
        raise CellError(str(exc).rstrip(".")) from exc


# The way nearly every North American file writes a number: (512) 555-0100,
# 512-555-0100, 512.555.0100, +1 512 555 0100. For these, phonenumbers.parse (over
# half the cost of a number) gives exactly PhoneNumber(1, the ten digits) — a
# test checks it — so that is built directly; the checks after it are
# normalize_phone's own. Anything else, or any number they refuse, goes through
# normalize_phone, which says why.
_NANP = re.compile(r"(?:\+?1[ .-]?)?(?:\(([2-9]\d\d)\)|([2-9]\d\d))[ .-]?(\d{3})[ .-]?(\d{4})")
_NANP_REGIONS = set(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(1, ()))
# is_valid_number first looks for the number's region among the +1 regions, the
# United States first; a number valid there is therefore valid, and checking the
# US alone halves the work. (Only while the metadata is ordered that way.)
_US = phonenumbers.PhoneMetadata.metadata_for_region("US")
_US_FIRST = (
    phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(1, ("",))[0] == "US"
    and _US is not None
    and _US.leading_digits is None
)


def _north_american(text: str, region: str) -> str:
    if region not in _NANP_REGIONS or not (match := _NANP.fullmatch(text.strip())):
        return ""
    area = match.group(1) or match.group(2)
    number = phonenumbers.PhoneNumber(
        country_code=1, national_number=int(area + match.group(3) + match.group(4))
    )
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        return ""
    if not (
        (_US_FIRST and phonenumbers.is_valid_number_for_region(number, "US"))
        or phonenumbers.is_valid_number(number)
    ):
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


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
