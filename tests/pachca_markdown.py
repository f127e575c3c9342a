"""A reference parser of Pachca's documented markdown subset, for tests: what in a message
would take effect as markup.

Pachca's guide ("Форматирование текста") lists bold (`**x**`, `__x__`), italic (`*x*`, `_x_`),
strike (`~~x~~`), links (`[text](url)`), code spans and fenced code blocks; lists, quotes,
headings and tables stay plain text. Its API guide adds mentions: `@nickname` and `<@id>`. The
guide is silent on details, so this parser takes the strictest reading that any common engine
has: CommonMark's flanking rules for emphasis and strike (markdown-it, the usual engine), code
spans between equal backtick runs, autolinks `<scheme:...>`, and backslash escapes (CommonMark
honours them; if Pachca does, an alert's `\\[` would lose its backslash, which is an effect too).

`parse(text)` returns the nodes found, as (kind, start, end) over `text`; `visible(text)` what
a reader sees with no markup taking effect: the text without zero-width spaces.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

ZERO_WIDTH = "\u200b"


@dataclass(frozen=True)
class Node:
    kind: str  # bold, italic, strike, code, fence, link, autolink, mention, escape
    start: int
    end: int


def _space(char: str) -> bool:
    return char == "" or char.isspace() or unicodedata.category(char) == "Zs"


def _punct(char: str) -> bool:
    return char != "" and unicodedata.category(char)[0] in "PS"


def _flanking(text: str, start: int, end: int) -> tuple[bool, bool]:
    """CommonMark: is the delimiter run text[start:end] left-flanking, right-flanking?"""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    left = not _space(after) and (not _punct(after) or _space(before) or _punct(before))
    right = not _space(before) and (not _punct(before) or _space(after) or _punct(after))
    return left, right


def _can(text: str, start: int, end: int) -> tuple[bool, bool]:
    """(can open, can close) for the run, with `_`'s extra intraword rule."""
    left, right = _flanking(text, start, end)
    if text[start] != "_":
        return left, right
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return left and (not right or _punct(before)), right and (not left or _punct(after))


FENCE = re.compile(r"^```[^`\n]*\n.*?^```\s*$", re.MULTILINE | re.DOTALL)
CODE_RUN = re.compile(r"`+")
LINK = re.compile(r"\[[^\]\n]*\]\([^)\s]*\)")
AUTOLINK = re.compile(r"<[A-Za-z][A-Za-z0-9+.-]{1,31}:[^<>\s]*>")
MENTION = re.compile(r"(?<![\w@])@[A-Za-z0-9_.-]+|<@\d+>")
ESCAPE = re.compile(r"\\[!-/:-@\[-`{-~]")
DELIMS = re.compile(r"\*+|_+|~~+")


def parse(text: str) -> list[Node]:
    """Every construct of the subset that would take effect in `text`."""
    nodes: list[Node] = []
    taken = [False] * len(text)  # inside code: nothing else applies there

    def add(kind: str, start: int, end: int) -> None:
        nodes.append(Node(kind, start, end))

    for m in FENCE.finditer(text):
        add("fence", m.start(), m.end())
        taken[m.start() : m.end()] = [True] * (m.end() - m.start())
    runs = [m for m in CODE_RUN.finditer(text) if not taken[m.start()]]
    used: set[int] = set()
    for i, opener in enumerate(runs):
        if i in used or taken[opener.start()]:
            continue
        for j in range(i + 1, len(runs)):
            if j not in used and len(runs[j].group()) == len(opener.group()):
                used.update((i, j))
                add("code", opener.start(), runs[j].end())
                taken[opener.start() : runs[j].end()] = [True] * (runs[j].end() - opener.start())
                break
    for pattern, kind in ((ESCAPE, "escape"), (LINK, "link"), (AUTOLINK, "autolink")):
        for m in pattern.finditer(text):
            if not any(taken[m.start() : m.end()]):
                add(kind, m.start(), m.end())
    for m in MENTION.finditer(text):
        if not taken[m.start()]:
            add("mention", m.start(), m.end())
    # emphasis and strike: each opener with the nearest later closer of the same character
    delims = [m for m in DELIMS.finditer(text) if not taken[m.start()]]
    closed: set[int] = set()
    for i, opener in enumerate(delims):
        if i in closed or not _can(text, opener.start(), opener.end())[0]:
            continue
        for j in range(i + 1, len(delims)):
            closer = delims[j]
            if closer.group()[0] != opener.group()[0] or j in closed:
                continue
            if _can(text, closer.start(), closer.end())[1]:
                size = min(len(opener.group()), len(closer.group()))
                kind = "strike" if opener.group()[0] == "~" else "bold" if size >= 2 else "italic"
                add(kind, opener.start(), closer.end())
                closed.update((i, j))
                break
    return sorted(nodes, key=lambda n: (n.start, n.kind))


def visible(text: str) -> str:
    """The text as read when nothing in it is markup: zero-width spaces are not seen."""
    return text.replace(ZERO_WIDTH, "")


def kinds(text: str) -> list[str]:
    return [node.kind for node in parse(text)]
