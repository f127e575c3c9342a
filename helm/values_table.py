"""Writes the values table of the chart's README from the `# --` comments in values.yaml.

Run: python3 helm/values_table.py   (tests/test_helm.py checks the README is up to date)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "pachca-alert-bridge"
START, END = "<!-- values:start -->", "<!-- values:end -->"


def rows(values_text: str) -> list[str]:
    defaults: dict[str, Any] = yaml.safe_load(values_text)
    out, stack, comment = [], [], []  # stack: (indent, key)
    for line in values_text.splitlines():
        if m := re.match(r"^\s*# -- (.*)$", line):
            comment = [m.group(1)]
        elif (m := re.match(r"^\s*# (.*)$", line)) and comment:
            comment.append(m.group(1))
        elif m := re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line):
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m.group(2)))
            if comment:
                path = [key for _, key in stack]
                value: Any = defaults
                for key in path:
                    value = value[key]
                shown = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
                shown = shown.removesuffix("...").strip()
                if len(shown) > 60:
                    shown = "see values.yaml"
                out.append(f"| `{'.'.join(path)}` | `{shown}` | {' '.join(comment)} |")
            comment = []
        elif not line.strip():
            comment = []
    return out


def table() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    return "\n".join(lines + rows((CHART / "values.yaml").read_text()))


def updated_readme() -> str:
    readme = (CHART / "README.md").read_text()
    before, _, rest = readme.partition(START)
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{table()}\n{END}{after}"


if __name__ == "__main__":
    (CHART / "README.md").write_text(updated_readme())
    sys.exit(0)
