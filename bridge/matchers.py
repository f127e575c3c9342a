"""Alertmanager-style label matchers: `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`.

Regexes are anchored at both ends, as in Alertmanager. A missing label matches as "".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class MatchType(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


class MatcherSyntaxError(ValueError):
    """A matcher string that does not parse; the message names the column."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("=~", "!~", "!=", "=")  # longest first
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


@dataclass(frozen=True)
class Matcher:
    name: str
    type: MatchType
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.type is MatchType.EQUAL:
            return actual == self.value
        if self.type is MatchType.NOT_EQUAL:
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.type is MatchType.REGEX else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.type.value}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher; raises MatcherSyntaxError saying what is wrong and at which column."""
    s = text.strip()
    offset = len(text) - len(text.lstrip())
    name_match = _NAME.match(s)
    if not name_match:
        raise MatcherSyntaxError(f"column {offset + 1}: expected a label name in {text!r}")
    pos = name_match.end()
    while pos < len(s) and s[pos] == " ":
        pos += 1
    operator = next((op for op in _OPERATORS if s.startswith(op, pos)), None)
    if operator is None:
        raise MatcherSyntaxError(
            f"column {offset + pos + 1}: expected one of = != =~ !~ after "
            f"{name_match.group()!r} in {text!r}"
        )
    pos += len(operator)
    while pos < len(s) and s[pos] == " ":
        pos += 1
    value = _parse_value(s[pos:], text, offset + pos)
    kind = MatchType(operator)
    pattern = None
    if kind in (MatchType.REGEX, MatchType.NOT_REGEX):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise MatcherSyntaxError(f"invalid regex {value!r} in {text!r}: {exc}") from exc
    return Matcher(name_match.group(), kind, value, pattern)


def _parse_value(rest: str, text: str, column: int) -> str:
    if not rest.startswith('"'):
        if any(ch in rest for ch in '"{},'):
            raise MatcherSyntaxError(f"column {column + 1}: unquoted value with quotes or braces")
        return rest.strip()
    out: list[str] = []
    i = 1
    while i < len(rest):
        ch = rest[i]
        if ch == "\\":
            if i + 1 >= len(rest) or rest[i + 1] not in _ESCAPES:
                raise MatcherSyntaxError(f"column {column + i + 1}: bad escape in {text!r}")
            out.append(_ESCAPES[rest[i + 1]])
            i += 2
            continue
        if ch == '"':
            if rest[i + 1 :].strip():
                raise MatcherSyntaxError(
                    f"column {column + i + 2}: unexpected text after the closing quote in {text!r}"
                )
            return "".join(out)
        out.append(ch)
        i += 1
    raise MatcherSyntaxError(f"column {column + 1}: unterminated quoted value in {text!r}")
