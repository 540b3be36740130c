"""Turning what a user types into the search box into a query."""

import datetime as dt
import functools
import re
import unicodedata
from dataclasses import dataclass

_PHONEISH = re.compile(r"^[\d\s().+\-/]+$")
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%m/%d/%Y",
    "%m/%d/%y",
    "%m-%d-%Y",
    "%d.%m.%Y",
    "%b %d %Y",
    "%d %b %Y",
    "%B %d %Y",
    "%d %B %Y",
)


# Letters that Unicode does not decompose into a base letter plus an accent, and
# typographic apostrophes, mapped to what people type on a US keyboard.
_NO_DECOMPOSITION = str.maketrans(
    {
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ı": "i",
        "þ": "th",
        "ð": "d",
        "’": "'",
        "‘": "'",
        "ʼ": "'",
    }
)


@functools.lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Lower-case, accent-free, single-spaced: "  José  O’Núñez" → "jose o'nunez".

    Cached: an import folds the same first and last names many thousand times.
    """
    if text.isascii():  # nothing to decompose or translate
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text.translate(_NO_DECOMPOSITION))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def parse_date(text: str) -> dt.date | None:
    cleaned = text.strip().replace(",", "")
    for fmt in _DATE_FORMATS:
        try:
            day = dt.datetime.strptime(cleaned, fmt).date()  # noqa: DTZ007 (a date, no zone)
        except ValueError:
            continue
        if "%y" in fmt and day > dt.date.today():  # noqa: DTZ011
            # "03/07/55" is a birth date: 1955, not strptime's 2055.
            day = day.replace(year=day.year - 100)
        return day
    return None


@dataclass(frozen=True)
class SearchQuery:
    """One of: a date of birth, phone digits, or folded name tokens."""

    dob: dt.date | None = None
    phone_digits: str = ""
    name_tokens: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.dob or self.phone_digits or self.name_tokens)


def parse_query(text: str) -> SearchQuery:
    text = (text or "").strip()[:100]
    if not text:
        return SearchQuery()
    dob = parse_date(text)
    if dob:
        return SearchQuery(dob=dob)
    digits = re.sub(r"\D", "", text)
    if _PHONEISH.match(text) and len(digits) >= 4:
        # A national number typed with a leading 1 or +1 still matches: stored
        # numbers are searchable with and without their country code.
        return SearchQuery(phone_digits=digits)
    return SearchQuery(name_tokens=tuple(fold(text).split()))
