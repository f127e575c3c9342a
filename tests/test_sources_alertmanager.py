import json

import pytest

from bridge.errors import PayloadError
from bridge.model import AlertStatus
from bridge.sources import alertmanager
from tests.conftest import FIXTURES, fixture_bytes

WEBHOOK_FIXTURES = sorted(
    str(p.relative_to(FIXTURES))
    for folder in ("alertmanager", "alertmanager-ha", "alertmanager-ha-split")
    for p in (FIXTURES / folder).glob("*.json")
)


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_every_captured_payload_parses(name: str) -> None:
    raw = json.loads(fixture_bytes(name))
    note = alertmanager.parse(fixture_bytes(name))
    assert note.group_key == raw["groupKey"]
    assert len(note.alerts) == len(raw["alerts"])
    assert note.truncated_alerts == raw["truncatedAlerts"]
    for alert in note.alerts:
        # Go's zero time on firing alerts means "no end", never year 1
        if alert.status is AlertStatus.FIRING:
            assert alert.ends_at is None
        else:
            assert alert.ends_at is not None and alert.ends_at.year > 2000


def test_wire_bodies_parse_byte_exact() -> None:
    requests = json.loads(fixture_bytes("alertmanager-wire/requests.json"))
    with_bodies = [r for r in requests if "raw_body" in r]
    assert len(with_bodies) >= 3
    for request in with_bodies:
        note = alertmanager.parse(request["raw_body"].encode())
        assert note.alerts, request["scenario"]
    unicode_raw = next(r for r in with_bodies if r["scenario"] == "unicode raw")
    texts = " ".join(
        v
        for a in alertmanager.parse(unicode_raw["raw_body"].encode()).alerts
        for v in a.annotations.values()
    )
    assert any(ord(ch) > 127 for ch in texts)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b'{"x": "\xc3\x28"}', 400, "not UTF-8"),
        (b"[]", 400, "not a valid alertmanager webhook payload"),
        (b'{"version": "3"}', 400, "not a valid"),
    ],
)
def test_bad_bodies_are_refused(body: bytes, status: int, fragment: str) -> None:
    with pytest.raises(PayloadError) as caught:
        alertmanager.parse(body)
    assert caught.value.status == status
    assert fragment in caught.value.message


def test_schema_errors_name_each_field() -> None:
    payload = json.loads(fixture_bytes("alertmanager/01-single-firing.json"))
    payload["alerts"][0]["status"] = "burning"
    del payload["groupKey"]
    with pytest.raises(PayloadError) as caught:
        alertmanager.parse(json.dumps(payload).encode())
    details = caught.value.details or []
    assert any(d.startswith("groupKey:") for d in details)
    assert any(d.startswith("alerts.0.status:") for d in details)


def test_empty_alert_list_is_refused() -> None:
    payload = json.loads(fixture_bytes("alertmanager/01-single-firing.json"))
    payload["alerts"] = []
    with pytest.raises(PayloadError):
        alertmanager.parse(json.dumps(payload).encode())
