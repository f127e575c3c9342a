"""Safe Pachca markdown from untrusted alert text.

Pachca renders `**bold**`, `*italic*`, `~~strike~~`, `[text](url)`, code spans and fences, and
turns `@nickname` / `<@id>` into mentions. Alert labels and annotations come from anyone who can
write a Prometheus rule, so none of that may take effect from them: prose is backslash-escaped
(CommonMark), mentions are broken, and label values go into code spans, where nothing is
interpreted and a copy-paste gives the exact value.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

_SPECIAL = re.compile(r"([\\`*_~\[\]()<>#|!])")
_MENTION = re.compile(r"@(?=\w)")
ZERO_WIDTH_SPACE = "\u200b"


class Md(str):
    """Text that is already safe markdown; the template layer passes it through unescaped."""

    __slots__ = ()


def escape(text: str) -> Md:
    """Untrusted prose as literal text: no formatting, links or mentions can take effect."""
    escaped = _SPECIAL.sub(r"\\\1", text)
    return Md(_MENTION.sub("@" + ZERO_WIDTH_SPACE, escaped))


def code(text: str) -> Md:
    """An inline code span that shows `text` exactly, whatever backticks it holds."""
    flat = text.replace("\r", " ").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat.strip() else ""
    return Md(f"{fence}{pad}{flat}{pad}{fence}")


def safe_url(url: str) -> str | None:
    """`url` if it is an absolute http(s) URL, with characters that could end a markdown link
    target percent-encoded; None otherwise (javascript:, relative, garbage)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return quote(url, safe="/:?&=%#@!$'*+,;~-._")


def link(text: str, url: str) -> Md:
    """`[text](url)` with escaped text, or the escaped text alone if the URL is not safe."""
    target = safe_url(url)
    label = escape(text)
    return Md(f"[{label}]({target})") if target else label


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"
