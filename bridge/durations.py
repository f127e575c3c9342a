"""Durations as people write them in config: `90s`, `15m`, `1h30m`, `1d`, or plain seconds."""

from __future__ import annotations

import functools
import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`; raises ValueError with the accepted forms when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 15m, 1h, 1d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; use seconds or forms like 30s, 15m, 1h, 1d")
    return total


@functools.lru_cache(maxsize=256)
def rule_seconds(text: str) -> float:
    """`parse_duration` of a duration written in the rules (checked when they were loaded),
    parsed once: the scheduler asks for a route's reminder and escalation times for every open
    incident it looks at (nearly a tenth of a first tick's time at 10,000 of them)."""
    return parse_duration(text)
