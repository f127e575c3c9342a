import json
from typing import Any

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
    payload["groupKey"] = 7
    del payload["alerts"][0]["labels"]
    with pytest.raises(PayloadError) as caught:
        alertmanager.parse(json.dumps(payload).encode())
    details = caught.value.details or []
    assert any(d.startswith("groupKey:") for d in details)
    assert any(d.startswith("alerts.0.status:") for d in details)
    assert any(d.startswith("alerts.0.labels:") for d in details)


def test_empty_alert_list_is_refused() -> None:
    payload = json.loads(fixture_bytes("alertmanager/01-single-firing.json"))
    payload["alerts"] = []
    with pytest.raises(PayloadError):
        alertmanager.parse(json.dumps(payload).encode())


def test_derived_fingerprints_are_alertmanagers_own() -> None:
    """The fingerprint computed from labels equals the one Alertmanager sent, for every alert
    captured from a real Alertmanager."""
    checked = 0
    for name in WEBHOOK_FIXTURES:
        for alert in json.loads(fixture_bytes(name))["alerts"]:
            assert alertmanager.label_fingerprint(alert["labels"]) == alert["fingerprint"], name
            checked += 1
    assert checked > 50
    assert alertmanager.label_fingerprint({}) == "cbf29ce484222325"  # FNV-1a's offset


# Shapes of what other Alertmanager-speaking senders send, written after the test payloads of
# other receivers: an Alertmanager before 0.19 (no fingerprints, alerts without a status) and a
# hand-written script (no version, no groupKey).
OLD_ALERTMANAGER = {
    "version": "4",
    "groupKey": '{}:{alertname="HighMemory"}',
    "status": "firing",
    "receiver": "chat",
    "groupLabels": {"alertname": "HighMemory"},
    "commonLabels": {"alertname": "HighMemory", "severity": "warning"},
    "commonAnnotations": {"summary": "Memory above 90%"},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "labels": {"alertname": "HighMemory", "instance": "db-1", "severity": "warning"},
            "annotations": {"summary": "Memory above 90%"},
            "startsAt": "2018-03-07T06:33:21.873077559-05:00",
            "endsAt": "0001-01-01T00:00:00Z",
        }
    ],
}
SCRIPT = {
    "receiver": "scripts",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "BackupLate", "room": "ops", "host": "b1"},
            "annotations": {"summary": "Backup is late"},
            "startsAt": "2022-02-16T10:40:45.228Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "1a956348d0570965",
        },
        {
            "status": "firing",
            "labels": {"alertname": "BackupLate", "room": "ops", "host": "b2"},
            "startsAt": "2022-02-16T10:40:45.228Z",
        },
    ],
    "groupLabels": {"room": "ops"},
    "commonLabels": {"alertname": "BackupLate", "room": "ops"},
}


def test_an_old_alertmanager_payload_without_fingerprints_or_statuses_is_understood() -> None:
    note = alertmanager.parse(json.dumps(OLD_ALERTMANAGER).encode())
    (alert,) = note.alerts
    assert alert.fingerprint == alertmanager.label_fingerprint(
        OLD_ALERTMANAGER["alerts"][0]["labels"]  # type: ignore[index]
    )
    assert alert.status == AlertStatus.FIRING  # endsAt is Go's zero time: no end yet
    assert note.group_key == '{}:{alertname="HighMemory"}'


def test_a_script_payload_without_version_or_group_key_is_understood() -> None:
    note = alertmanager.parse(json.dumps(SCRIPT).encode())
    assert note.group_key == 'scripts:{room="ops"}'
    assert [a.fingerprint for a in note.alerts] == [
        "1a956348d0570965",  # as sent
        alertmanager.label_fingerprint({"alertname": "BackupLate", "room": "ops", "host": "b2"}),
    ]
    # the same group sent again, alerts in another order: the same incident
    again = dict(SCRIPT, alerts=list(reversed(SCRIPT["alerts"])))  # type: ignore[call-overload]
    assert alertmanager.parse(json.dumps(again).encode()).group_key == note.group_key
    # no groupLabels either: the labels every alert shares
    bare = {k: v for k, v in SCRIPT.items() if k not in ("groupLabels", "commonLabels")}
    key = alertmanager.parse(json.dumps(bare).encode()).group_key
    assert key == 'scripts:{alertname="BackupLate", room="ops"}'


def test_missing_statuses_come_from_ends_at_and_the_group() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    past, future = "2026-01-01T11:00:00Z", "2026-01-01T13:00:00Z"

    def statuses(group: str | None, *ends: str) -> tuple[str, list[str]]:
        body = {
            "alerts": [
                {"labels": {"alertname": "A", "n": str(i)}, "startsAt": past, "endsAt": end}
                for i, end in enumerate(ends)
            ]
        }
        if group is not None:
            body["status"] = group
        note = alertmanager.parse(json.dumps(body).encode(), now=now)
        return note.status, [a.status for a in note.alerts]

    assert statuses(None, past) == ("resolved", ["resolved"])  # endsAt passed: resolved
    assert statuses(None, future, past) == ("firing", ["firing", "resolved"])
    assert statuses(None, "0001-01-01T00:00:00Z") == ("firing", ["firing"])
    assert statuses("resolved", future) == ("resolved", ["resolved"])  # a resolved group
    assert statuses("firing", past, future) == ("firing", ["resolved", "firing"])
    note = alertmanager.parse(
        json.dumps({"alerts": [{"labels": {"a": "1"}, "startsAt": past, "endsAt": past}]}).encode(),
        now=now,
    )
    assert note.alerts[0].ends_at == datetime(2026, 1, 1, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.update(version="3"), "version:"),
        (lambda p: p.update(alerts=[]), "alerts:"),
        (lambda p: p.pop("alerts"), "alerts:"),
        (lambda p: p["alerts"][0].pop("labels"), "alerts.0.labels:"),
        (lambda p: p["alerts"][0].pop("startsAt"), "alerts.0.startsAt:"),
        (lambda p: p["alerts"][0].update(status="burning"), "alerts.0.status:"),
        (lambda p: p.update(status="on fire"), "status:"),
    ],
)
def test_what_cannot_be_derived_is_refused_naming_the_field(change: Any, field: str) -> None:
    payload = json.loads(json.dumps(SCRIPT))
    change(payload)
    with pytest.raises(PayloadError) as caught:
        alertmanager.parse(json.dumps(payload).encode())
    assert caught.value.status == 400
    assert any(d.startswith(field) for d in caught.value.details or []), caught.value.details
