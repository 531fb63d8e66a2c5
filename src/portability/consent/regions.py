"""Where users may grant consents: the EEA and the United Kingdom."""

from __future__ import annotations

from portability.consent.errors import InvalidRequestError, RegionNotServedError

__all__ = ["SERVED_REGIONS", "check_region"]

SERVED_REGIONS: frozenset[str] = frozenset(
    {
        # The 27 EU member states.
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        # The rest of the EEA.
        "IS", "LI", "NO",
        # The United Kingdom.
        "GB",
    }
)  # fmt: skip
"""ISO 3166-1 alpha-2 codes of the countries whose users the portability API serves."""


# Codes people write for served countries that ISO 3166-1 does not use for them: refused
# with the code to send (stored regions stay ISO, so they compare and filter alike).
_NOT_ISO = {"UK": ("the United Kingdom", "GB"), "EL": ("Greece", "GR")}


def check_region(region: str) -> str:
    """``region`` upper-cased, if users there may grant consents.

    Raises:
        InvalidRequestError: ``region`` is not a two-letter ISO 3166-1 code (``UK`` and
            ``EL`` are refused with the ISO code to use: ``GB``, ``GR``).
        RegionNotServedError: The country is outside the EEA and the UK.
    """
    code = region.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        raise InvalidRequestError(
            f"user_region {region!r} must be a two-letter ISO 3166-1 country code, e.g. 'DE'"
        )
    if code in _NOT_ISO:
        country, iso = _NOT_ISO[code]
        raise InvalidRequestError(
            f"user_region {region!r} is not an ISO 3166-1 code: use {iso!r} for {country}"
        )
    if code not in SERVED_REGIONS:
        raise RegionNotServedError(
            f"users in {code} cannot grant consents: the portability API serves only the EEA "
            "and the UK (GB); nothing of this user's data will be shared"
        )
    return code
