"""A sample incident message, for `send-test`: what the route's real messages look like, with
every data button turned into a `test:` button, which the bridge answers by direct message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.incidents import apply_notification
from bridge.model import Alert, AlertStatus, Notification
from bridge.render import RenderOptions, render_message
from bridge.rules import RouteConfig
from bridge.words import WORDS

SAMPLE_REF = "5e57000000"  # any ref the button data accepts; no incident has it


def sample_message(
    route: RouteConfig, options: RenderOptions, now: datetime | None = None, strict: bool = False
) -> tuple[str, list[list[dict[str, Any]]]]:
    """The content and buttons of a firing sample incident rendered for `route` (`strict`: a
    route template's error is raised, see render_message)."""
    now = now or datetime.now(UTC)
    words = WORDS[route.language]
    alert = Alert(
        fingerprint="5e57000000000001",
        status=AlertStatus.FIRING,
        labels={"alertname": "PachcaBridgeTest", "severity": "info", "instance": "send-test"},
        annotations={
            "summary": words["sample_summary"],
            "description": words["sample_description"],
        },
        starts_at=now,
    )
    note = Notification(
        source="alertmanager",
        receiver="send-test",
        group_key='{}:{alertname="PachcaBridgeTest"}',
        status=AlertStatus.FIRING,
        alerts=(alert,),
        common_labels=dict(alert.labels),
    )
    transition = apply_notification(
        None,
        note,
        route=route.name,
        chat_id=route.chat_id,
        now=now,
        resolved_ttl=timedelta(0),
        new_ref=SAMPLE_REF,
    )
    assert transition.incident is not None  # a firing alert always opens one
    message = render_message(transition.incident, route, options, strict=strict)
    buttons = [
        [{**button, "data": f"test:{SAMPLE_REF}"} if "data" in button else button for button in row]
        for row in message.buttons
    ]
    return message.content, buttons
