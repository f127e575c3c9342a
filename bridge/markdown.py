r"""Safe Pachca markdown from untrusted alert text.

Pachca's markdown (its guide, "Форматирование текста") has bold (`**`, `__`), italic (`*`,
`_`), strike (`~~`), links `[text](url)`, code spans and fences, and turns `@nickname` /
`<@id>` into mentions. Alert labels and annotations come from anyone who can write a Prometheus
rule, so none of that may take effect from them; and since the guide does not say whether
backslash escapes are honoured, nothing here relies on them (an unhonoured `\_` would show in
every snake_case name). Instead, alert text keeps every character as written where it cannot form
markup (`node_exporter`, `lag > 30s`, `(5m)`, ` * `, `#`, `-`, `|`), and where it could:

- an emphasis, strike or code delimiter (`*`, `_`, `~`, a backtick) is shown as its look-alike
  (`∗` U+2217, `ˍ` U+02CD, `˜` U+02DC, `ˋ` U+02CB), which no markdown engine takes for markup;
- a link (`](`), an autolink or mention (`<x`, `<@`), a mention (`@name`) and a backslash escape
  (`\` before punctuation) are split by an invisible U+200B zero-width space.

So the message reads the same whether or not Pachca honours backslashes, and a copy-paste of a
label value (always in a code span) gives the exact value. tests/pachca_markdown.py is a
reference parser of that subset that the tests hold this to.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, urlsplit

ZERO_WIDTH_SPACE = "\u200b"
# delimiter -> the look-alike shown where the delimiter could open or close markup
LOOKALIKES = {"*": "\u2217", "_": "\u02cd", "~": "\u02dc", "`": "\u02cb"}
# a link's `](`, an autolink's or mention's `<x`/`<@`, a backslash escape, a mention's `@name`
# (at the end of the text too: what the template writes next may complete them)
# (the leading lookahead lets the engine skip, at C speed, every character that starts none)
_BREAK_AFTER = re.compile(
    r"(?=[\]<\\@])"
    r"(?:(\])(?=\(|$)|(<)(?=[A-Za-z@]|$)|(\\)(?=[!-/:-@\[-`{-~]|$)|(@)(?=[\w.-]|$))"
)
_DELIMITER = re.compile(r"[*_~`]")


class Md(str):
    """Text that is already safe markdown; the template layer passes it through unescaped."""

    __slots__ = ()


def _blank(char: str) -> bool:
    """Whitespace as markdown's flanking rules see it (the ends of a text are not: the
    template's own delimiters may stand there)."""
    return char != "" and (char.isspace() or unicodedata.category(char) == "Zs")


def _inert(char: str, before: str, after: str) -> bool:
    """Whether delimiter `char` between `before` and `after` can neither open nor close
    markup: ` * ` between blanks, `_` inside a word (`node_exporter`), a lone `~`."""
    if char == "`":
        return False  # code spans need no flanking
    if char == "~":  # strike needs `~~`; the templates never write a `~` of their own
        return before != "~" and after != "~"
    if _blank(before) and _blank(after):
        return True
    return char == "_" and before.isalnum() and after.isalnum()


def escape(text: str) -> Md:
    """Untrusted prose as literal text: no formatting, links or mentions can take effect.
    (Regular expressions find the few characters that matter: rendering escapes every label
    and annotation of every alert, and a Python loop over each character took 9 % of the
    bridge's CPU in a profiled storm; this is 4.5x faster on a typical annotation.)"""

    def swap(found: re.Match[str]) -> str:
        char, index = found.group(), found.start()
        before = text[index - 1] if index else ""
        return char if _inert(char, before, text[index + 1 : index + 2]) else LOOKALIKES[char]

    swapped = _DELIMITER.sub(swap, text)
    return Md(_BREAK_AFTER.sub(lambda m: m.group(0) + ZERO_WIDTH_SPACE, swapped))


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
    """`[text](url)` with escaped text, or the escaped text alone if the URL is not safe.
    Brackets in the text become parentheses (an unbalanced one would end the link early), line
    breaks spaces (a blank line would too)."""
    target = safe_url(url)
    if target:
        text = " ".join(text.replace("[", "(").replace("]", ")").split())
    label = escape(text)
    return Md(f"[{label}]({target})") if target else label


def one_line(text: str) -> str:
    """`text` on one line, without edge blanks: what may stand between bold markers."""
    return " ".join(text.split())


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"
