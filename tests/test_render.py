"""What the message looks like, and that nothing from an alert can change how it renders."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bridge.incidents import apply_notification
from bridge.markdown import code, escape, safe_url
from bridge.model import Alert, AlertStatus, Incident, Notification
from bridge.render import MAX_CONTENT_BYTES, RenderOptions, render_message
from bridge.rules import RouteConfig
from bridge.sources import alertmanager
from tests.conftest import fixture_bytes
from tests.fake_pachca import CONTRACT

NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
UTC_OPTIONS = RenderOptions(timezone=ZoneInfo("UTC"))
ROUTE = RouteConfig(name="default", chat_id=1000)


def incident_from(note: Notification) -> Incident:
    transition = apply_notification(
        None,
        note,
        route="default",
        chat_id=1000,
        now=NOW,
        resolved_ttl=timedelta(hours=1),
        new_ref="7f3a9c2b11",
    )
    assert transition.incident is not None
    return transition.incident


def fixture_incident(name: str) -> Incident:
    return incident_from(alertmanager.parse(fixture_bytes(name)))


def alert(n: int, **annotations: str) -> Alert:
    return Alert(
        fingerprint=f"{n:016x}",
        status=AlertStatus.FIRING,
        labels={"alertname": "Evil", "instance": f"host-{n}"},
        annotations=annotations,
        starts_at=NOW,
    )


def note_with(*alerts: Alert) -> Notification:
    return Notification(
        source="alertmanager",
        receiver="r",
        group_key="{}:{}",
        status=AlertStatus.FIRING,
        alerts=alerts,
        common_labels={"alertname": "Evil"},
    )


def assert_valid_for_pachca(content: str, buttons: list[list[dict[str, str]]]) -> None:
    body = {
        "message": {
            "entity_type": "discussion",
            "entity_id": 1,
            "content": content,
            "buttons": buttons,
        }
    }
    assert CONTRACT.request_errors("POST", "/messages", body) == []
    assert len(content.encode()) <= MAX_CONTENT_BYTES


def test_firing_message_layout_in_russian() -> None:
    message = render_message(
        fixture_incident("alertmanager/02-group-3-firing.json"), ROUTE, UTC_OPTIONS
    )
    lines = message.content.splitlines()
    assert lines[0] == "🔴 **ГОРИТ** · critical · **DiskFull** · 🔥 3 · ✅ 0"
    assert lines[1] == "job: `node` · team: `db`"
    assert "🔥 **DiskFull on db\\-1:9100**" not in message.content  # '-' is not escaped
    assert "🔥 **DiskFull on db-1:9100**" in message.content
    assert "instance: `db-1:9100`" in message.content
    assert "с 24.11 12:29 UTC" in message.content
    # the group's common runbook is a button, not repeated on every alert
    assert "runbooks.example.com" not in message.content
    assert {
        "text": "📖 Runbook",
        "url": "https://runbooks.example.com/diskfull",
    } in message.buttons[-1]
    assert_valid_for_pachca(message.content, message.buttons)


def test_english_route_and_local_time_zone() -> None:
    route = RouteConfig(name="en", chat_id=1, language="en")
    options = RenderOptions(timezone=ZoneInfo("Europe/Moscow"))
    message = render_message(fixture_incident("alertmanager/01-single-firing.json"), route, options)
    assert "**FIRING**" in message.content
    assert "since " in message.content and "MSK" in message.content
    assert message.buttons[0][0] == {"text": "👀 Acknowledge", "data": "ack:7f3a9c2b11"}


def test_buttons_carry_short_opaque_data() -> None:
    options = RenderOptions(timezone=ZoneInfo("UTC"), silence_sources=frozenset({"alertmanager"}))
    message = render_message(
        fixture_incident("alertmanager/02-group-3-firing.json"), ROUTE, options
    )
    data = [b["data"] for row in message.buttons for b in row if "data" in b]
    assert data == [
        "ack:7f3a9c2b11",
        "resolve:7f3a9c2b11",
        "silence:7f3a9c2b11:1h",
        "silence:7f3a9c2b11:4h",
        "silence:7f3a9c2b11:24h",
    ]
    urls = [b["url"] for row in message.buttons for b in row if "url" in b]
    assert urls[0] == "https://runbooks.example.com/diskfull"
    assert urls[1].startswith("http://prometheus.example.com:9090/graph")
    assert_valid_for_pachca(message.content, message.buttons)


def test_silence_buttons_only_when_alertmanager_is_configured() -> None:
    message = render_message(
        fixture_incident("alertmanager/02-group-3-firing.json"), ROUTE, UTC_OPTIONS
    )
    assert not any(b.get("data", "").startswith("silence:") for row in message.buttons for b in row)


def test_resolved_message_drops_data_buttons_and_shows_duration() -> None:
    note = alertmanager.parse(fixture_bytes("alertmanager/02-group-3-firing.json"))
    opened = incident_from(note)
    resolved = apply_notification(
        opened,
        alertmanager.parse(fixture_bytes("alertmanager/05-group-all-resolved.json")),
        route="default",
        chat_id=1000,
        now=NOW,
        resolved_ttl=timedelta(hours=1),
        new_ref="x",
    ).incident
    assert resolved is not None
    message = render_message(resolved, ROUTE, UTC_OPTIONS)
    assert message.content.startswith("✅ **РЕШЕНО**")
    assert "длилось" in message.content.splitlines()[0]
    assert all("url" in b for row in message.buttons for b in row)


@pytest.mark.parametrize(
    "evil",
    [
        "[click](http://evil.example)",
        "**bold**",
        "`code`",
        "<@1>",
        "@all",
        "~~x~~",
        "![img](http://evil/x.png)",
        "```\nfence\n```",
        "_it_",
    ],
)
def test_alert_text_cannot_inject_markdown_or_mentions(evil: str) -> None:
    note = note_with(alert(1, summary=evil, description=f"see {evil}"))
    content = render_message(incident_from(note), ROUTE, UTC_OPTIONS).content
    assert "[click](http://evil.example)" not in content
    assert "**bold**" not in content
    assert "<@1>" not in content
    assert "@all" not in content
    assert "```\n" not in content
    assert "~~x~~" not in content


def test_labels_render_as_exact_code_spans() -> None:
    assert code("a`b") == "``a`b``"
    assert code("x](http://e)") == "`x](http://e)`"
    evil = Alert(
        fingerprint="1",
        status=AlertStatus.FIRING,
        starts_at=NOW,
        labels={"alertname": "A", "pod": "[x](http://evil)"},
    )
    content = render_message(incident_from(note_with(evil)), ROUTE, UTC_OPTIONS).content
    assert "`[x](http://evil)`" in content


def test_escape_keeps_what_cannot_form_markup_and_breaks_only_what_could() -> None:
    assert escape("a*b_c[d](e)") == "a\u2217b_c[d]\u200b(e)"  # a∗b_c[d]​(e)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "/relative", "ftp://x/y", "http://", ""])
def test_unsafe_urls_become_no_link_or_button(url: str) -> None:
    assert safe_url(url) is None
    evil = Alert(
        fingerprint="1",
        status=AlertStatus.FIRING,
        starts_at=NOW,
        labels={"alertname": "A"},
        annotations={"runbook_url": url},
        generator_url=url,
    )
    message = render_message(incident_from(note_with(evil)), ROUTE, UTC_OPTIONS)
    assert all("url" not in b for row in message.buttons for b in row)
    assert "](" not in message.content


def test_url_with_parentheses_cannot_break_out_of_the_link() -> None:
    assert safe_url("http://x/a) [evil](http://e") == "http://x/a%29%20%5Bevil%5D%28http://e"


def test_more_alerts_than_max_alerts_shows_and_n_more() -> None:
    note = note_with(*(alert(n, summary=f"s{n}") for n in range(25)))
    content = render_message(incident_from(note), ROUTE, UTC_OPTIONS).content
    assert content.count("🔥 **s") == 10
    assert "…и ещё 15" in content


def test_content_never_exceeds_pachca_limit() -> None:
    huge = "я" * 30_000  # 60,000 bytes of UTF-8 in one description
    note = note_with(*(alert(n, summary=f"s{n}", description=huge) for n in range(100)))
    route = RouteConfig(name="r", chat_id=1, max_alerts=100)
    message = render_message(incident_from(note), route, UTC_OPTIONS)
    assert len(message.content.encode()) <= MAX_CONTENT_BYTES
    assert "🔥 **s0**" in message.content
    assert_valid_for_pachca(message.content, message.buttons)


def test_labels_too_long_for_any_layout_are_still_cut_to_the_limit() -> None:
    monster = Alert(
        fingerprint="1",
        status=AlertStatus.FIRING,
        starts_at=NOW,
        labels={"alertname": "A", "blob": "z" * 50_000},
    )
    message = render_message(incident_from(note_with(monster)), ROUTE, UTC_OPTIONS)
    assert len(message.content.encode()) <= MAX_CONTENT_BYTES


def test_mentions_only_while_firing() -> None:
    route = RouteConfig(name="r", chat_id=1, mentions=["@dba", "<@42>"])
    incident = fixture_incident("alertmanager/01-single-firing.json")
    assert render_message(incident, route, UTC_OPTIONS).content.endswith("@dba <@42>")


def test_a_long_description_is_shown_whole_while_the_message_fits() -> None:
    text = "Replication lag grew past 30s. " * 150  # ~4.6 KB
    incident = incident_from(note_with(alert(1, summary="Lag", description=text)))
    content = render_message(incident, ROUTE, UTC_OPTIONS).content
    assert text.strip() in content
    assert "обрезано" not in content and "…" not in content


def test_past_the_limit_every_long_description_is_cut_to_the_same_length_and_says_so() -> None:
    import re

    long_text = "x" * 30_000
    alerts = [alert(n, summary=f"S{n}", description=long_text) for n in range(4)]
    alerts.append(alert(9, summary="Short", description="short and whole"))
    route = RouteConfig(name="default", chat_id=1000, max_alerts=10)
    content = render_message(incident_from(note_with(*alerts)), route, UTC_OPTIONS).content
    assert len(content.encode()) <= MAX_CONTENT_BYTES
    assert len(content.encode()) > MAX_CONTENT_BYTES - 1_000  # the room is used
    kept = [len(m) for m in re.findall(r"^(x+)… \(обрезано: ещё \d+ симв\.\)$", content, re.M)]
    assert len(kept) == 4 and len(set(kept)) == 1  # all five alerts shown, the long ones alike
    (left,) = set(re.findall(r"обрезано: ещё (\d+) симв", content))
    assert int(left) == 30_000 - kept[0]
    assert "short and whole" in content and "…и ещё" not in content


def test_a_url_too_long_for_a_button_becomes_a_plain_link() -> None:
    from bridge.render import MAX_BUTTON_URL

    def group_with_runbook(url: str) -> Incident:
        note = note_with(alert(1, summary="S", runbook_url=url))
        common = {"runbook_url": url}
        return incident_from(note.model_copy(update={"common_annotations": common}))

    runbook = "https://runbooks.example.com/" + "a" * 1_000
    message = render_message(group_with_runbook(runbook), ROUTE, UTC_OPTIONS)
    urls = [b["url"] for row in message.buttons for b in row if "url" in b]
    assert all(len(u) <= MAX_BUTTON_URL for u in urls)
    assert runbook not in urls
    assert f"📖 [runbook]({runbook})" in message.content
    assert message.content.count(runbook) == 1
    message = render_message(group_with_runbook("https://r.example/x"), ROUTE, UTC_OPTIONS)
    assert {"text": "📖 Runbook", "url": "https://r.example/x"} in message.buttons[-1]
    assert "[runbook]" not in message.content
