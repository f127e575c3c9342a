"""Golden renders: every captured Alertmanager and Grafana payload, as the chat would show it in
both languages, committed under tests/golden/ and reviewed there. A change of rendering shows
up as a diff of those files: `GOLDEN_UPDATE=1 python3 -m pytest tests/test_golden.py` rewrites
them, and the diff is what to review."""

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.incidents import apply_notification
from bridge.render import render_message
from bridge.rules import RouteConfig
from bridge.sources import alertmanager, grafana
from tests.conftest import FIXTURES, fixture_bytes
from tests.test_render import NOW, UTC_OPTIONS

GOLDEN = Path(__file__).resolve().parent / "golden"
PAYLOADS = sorted(
    str(p.relative_to(FIXTURES))
    for folder in ("alertmanager", "grafana")
    for p in (FIXTURES / folder).glob("*.json")
)


def shown(name: str, language: str) -> str:
    """The message as text: content, then each row of buttons."""
    parse = grafana.parse if name.startswith("grafana/") else alertmanager.parse
    route = RouteConfig(name="default", chat_id=1000, language=language, mentions=["@oncall"])
    transition = apply_notification(
        None,
        parse(fixture_bytes(name)),
        route="default",
        chat_id=1000,
        now=NOW,
        resolved_ttl=timedelta(hours=1),
        new_ref="7f3a9c2b11",
    )
    if transition.incident is None:
        return "(no message: a notification with no firing alert opens no incident)\n"
    message = render_message(transition.incident, route, UTC_OPTIONS)
    rows = [
        " ".join(f"[{b['text']}]" + (f"<{b['url']}>" if "url" in b else "") for b in row)
        for row in message.buttons
    ]
    return message.content + "\n---\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize("language", ["ru", "en"])
@pytest.mark.parametrize("name", PAYLOADS)
def test_golden_render(name: str, language: str) -> None:
    path = GOLDEN / f"{name.replace('/', '--').removesuffix('.json')}.{language}.txt"
    text = shown(name, language)
    if os.environ.get("GOLDEN_UPDATE") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}: GOLDEN_UPDATE=1 writes it"
    assert text == path.read_text(encoding="utf-8"), json.dumps(text, ensure_ascii=False)
