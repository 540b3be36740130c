"""Phone numbers: everything stored is E.164, everything typed is accepted."""

import functools

import phonenumbers
from django.conf import settings
from phonenumbers import NumberParseException, ValidationResult

_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "the country code is not valid",
    ValidationResult.TOO_SHORT: "it has too few digits",
    ValidationResult.TOO_LONG: "it has too many digits",
    ValidationResult.INVALID_LENGTH: "it has the wrong number of digits for its region",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "it lacks an area code",
}
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "the country code is not valid",
    NumberParseException.NOT_A_NUMBER: "it is not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too few digits after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "it has too few digits",
    NumberParseException.TOO_LONG: "it has too many digits",
}


class InvalidPhone(ValueError):
    """Raised with a sentence a front-desk user can act on."""


def normalize_phone(raw: str, region: str | None = None) -> str:
    """Return `raw` as E.164 (+15125550100) or raise InvalidPhone with the reason."""
    region = region or settings.PHONE_DEFAULT_REGION
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        reason = _PARSE_REASONS.get(exc.error_type, "it could not be read")
        raise InvalidPhone(f"“{text}” is not a valid phone number: {reason}.") from exc
    result = phonenumbers.is_possible_number_with_reason(number)
    if result != ValidationResult.IS_POSSIBLE:
        reason = _REASONS.get(result, "it could not be read")
        raise InvalidPhone(f"“{text}” is not a valid phone number: {reason}.")
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(
            f"“{text}” is not a valid phone number: no such number exists in its region."
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def format_phone(e164: str) -> str:
    """Human form of a stored number: national format at home, international abroad."""
    if not e164:
        return ""
    return _format_phone(e164, settings.PHONE_DEFAULT_REGION)


# Pages show the same numbers again and again (a worklist of 25 rows, each twice),
# and parsing one costs a quarter of a millisecond: remembered, per home region.
@functools.lru_cache(maxsize=4096)
def _format_phone(e164: str, home: str) -> str:
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return e164
    region = phonenumbers.region_code_for_number(number)
    fmt = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if region == home
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return phonenumbers.format_number(number, fmt)


def phone_search_digits(e164: str) -> str:
    """Digit strings a stored number can be found by: with and without country code."""
    if not e164:
        return ""
    if len(e164) == 12 and e164.startswith("+1"):
        national = e164[2:]  # North America: +1 and ten digits, no parsing needed
    else:
        national = str(phonenumbers.parse(e164, None).national_number)
    return f"{e164.lstrip('+')} {national}"
