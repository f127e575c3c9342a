"""Time zones as configured: IANA names, checked once when settings or rules load."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def known_zone(value: str) -> str:
    """`value` if it names a time zone; ValueError saying what to write otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name like Europe/Moscow"
        ) from exc
    return value
