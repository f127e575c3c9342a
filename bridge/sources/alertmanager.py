"""Alertmanager webhook payloads (`version: "4"`), as captured from Alertmanager 0.25, and as
other Alertmanager-speaking senders write them: Alertmanager before 0.19 sends no fingerprints,
test suites and scripts leave out alert statuses, `groupKey` or `version`. What is missing is
derived as Alertmanager would have sent it; only what cannot be understood is refused."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from bridge.errors import PayloadError
from bridge.model import Alert, AlertStatus, Notification

SOURCE = "alertmanager"
PayloadT = TypeVar("PayloadT", bound=BaseModel)

# Alertmanager marks "no end yet" with Go's zero time.
_GO_ZERO_YEAR = 1
# Times an alert may carry: wide of anything real, and narrow enough that every time zone can
# show them (the year 9999 at -14:00 is the year 10000 in UTC, which no datetime holds).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# a \uD800-\uDFFF escape: the only way a JSON text can carry a lone surrogate
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


def _showable(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must lie between 1970 and 9000, not {value.isoformat()}")
    return value


def _showable_end(value: datetime | None) -> datetime | None:
    """An end time; Go's zero time (in any offset) is "no end yet", kept as given."""
    return value if value is None or value.year == _GO_ZERO_YEAR else _showable(value)


# with a UTC offset (a time without one cannot be compared with any other) and in range
Moment = Annotated[AwareDatetime, AfterValidator(_showable)]
EndMoment = Annotated[AwareDatetime | None, AfterValidator(_showable_end)]


class _Loose(BaseModel):
    # Newer Alertmanager versions may add keys; unknown keys are ignored, known ones are strict.
    model_config = ConfigDict(extra="ignore")


class AlertmanagerAlert(_Loose):
    status: Literal["firing", "resolved"] | None = None  # None: from endsAt (see alert_status)
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: Moment  # wire names, as Alertmanager spells them
    endsAt: EndMoment = None
    generatorURL: str = ""
    fingerprint: str = ""  # empty: computed from the labels, as Alertmanager does


class AlertmanagerPayload(_Loose):
    version: Literal["4"] | None = None
    groupKey: str = ""  # empty: derived from the receiver and the group's labels
    receiver: str = ""
    status: Literal["firing", "resolved"] | None = None  # None: firing while any alert is
    alerts: list[AlertmanagerAlert] = Field(min_length=1)
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""
    truncatedAlerts: int = Field(default=0, ge=0)


def decode_json(body: bytes) -> Any:
    """The JSON value of `body`, or a 400 PayloadError saying where it broke: not UTF-8,
    malformed, numbers past Python's digit limit, nesting past its recursion limit, or a
    lone surrogate (no store or Pachca call could carry it)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PayloadError(400, f"body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise PayloadError(
            400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise PayloadError(400, f"unreadable JSON: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError(400, "JSON is nested too deeply") from exc
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PayloadError(
                400, "JSON text has a lone UTF-16 surrogate (\\uD800-\\uDFFF)"
            ) from exc
    return data


def schema_error(source: str, exc: ValidationError) -> PayloadError:
    """A 400 listing each invalid field as `path: problem`, in the order pydantic found them."""
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
        for err in exc.errors(include_url=False)
    ]
    return PayloadError(400, f"not a valid {source} webhook payload", problems)


# FNV-1a, 64 bits, as prometheus/common hashes label sets
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of an alert (prometheus/common `LabelSet.Fingerprint`): FNV-1a
    over the label names in order with their values, each followed by the byte 0xff; 16 hex
    digits. Equal to what a newer Alertmanager sends, so both kinds of sender dedupe alike."""
    hashed = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode("utf-8"):
                hashed = ((hashed ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
            hashed = ((hashed ^ _SEPARATOR) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{hashed:016x}"


def label_text(labels: Mapping[str, str]) -> str:
    """A label set as Alertmanager prints it in group keys: `{a="1", b="2"}`."""
    return "{" + ", ".join(f"{name}={json.dumps(labels[name])}" for name in sorted(labels)) + "}"


def derived_group_key(
    receiver: str, group_labels: Mapping[str, str] | None, alerts: Sequence[AlertmanagerAlert]
) -> str:
    """A group key for a sender that sent none: the receiver and the labels that group the
    alerts: `groupLabels` when sent (even empty), else the labels all alerts share. The same
    group sent again gets the same key, so it updates one incident."""
    if group_labels is None:
        shared = dict(alerts[0].labels)
        for alert in alerts[1:]:
            shared = {k: v for k, v in shared.items() if alert.labels.get(k) == v}
        group_labels = shared
    return f"{receiver}:{label_text(group_labels)}"


def alert_status(
    given: str | None, ends_at: datetime | None, group_status: str | None, now: datetime
) -> AlertStatus:
    """An alert's status as sent, else derived: resolved when its group is, or when its
    `endsAt` has passed (Alertmanager's own rule); firing otherwise."""
    if given is not None:
        return AlertStatus(given)
    if group_status == "resolved":
        return AlertStatus.RESOLVED
    end = end_time(ends_at)
    return AlertStatus.RESOLVED if end is not None and end <= now else AlertStatus.FIRING


class Filled:
    """What a payload left out, derived (see the module's docstring): per alert its status and
    fingerprint, and the group's status and key."""

    def __init__(self, payload: AlertmanagerPayload, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        self.statuses = [
            alert_status(a.status, a.endsAt, payload.status, now) for a in payload.alerts
        ]
        # a status taken from the clock: the same payload may read differently later
        self.read_at_arrival = any(
            a.status is None and payload.status != "resolved" and end_time(a.endsAt) is not None
            for a in payload.alerts
        )
        self.fingerprints = [a.fingerprint or label_fingerprint(a.labels) for a in payload.alerts]
        firing = AlertStatus.FIRING in self.statuses
        self.status = AlertStatus(
            payload.status or (AlertStatus.FIRING if firing else AlertStatus.RESOLVED)
        )
        self.group_key = payload.groupKey or derived_group_key(
            payload.receiver,
            payload.groupLabels if "groupLabels" in payload.model_fields_set else None,
            payload.alerts,
        )


def end_time(value: datetime | None) -> datetime | None:
    """An alert's end, or None for Go's zero time ("no end yet")."""
    return None if value is None or value.year == _GO_ZERO_YEAR else value


def validated(model: type[PayloadT], body: bytes, source: str) -> PayloadT:
    """The body as `model`, or a 400 PayloadError naming what is malformed or invalid."""
    data = decode_json(body)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise schema_error(source, exc) from exc


def parse(body: bytes, now: datetime | None = None) -> Notification:
    """Parse one Alertmanager webhook body (`now` decides what a missing status means)."""
    payload = validated(AlertmanagerPayload, body, SOURCE)
    filled = Filled(payload, now)
    return Notification(
        source=SOURCE,
        receiver=payload.receiver,
        group_key=filled.group_key,
        status=filled.status,
        alerts=tuple(
            Alert(
                fingerprint=fingerprint,
                status=status,
                labels=a.labels,
                annotations=a.annotations,
                starts_at=a.startsAt,
                ends_at=end_time(a.endsAt) if status == AlertStatus.RESOLVED else None,
                generator_url=a.generatorURL,
            )
            for a, status, fingerprint in zip(
                payload.alerts, filled.statuses, filled.fingerprints, strict=True
            )
        ),
        group_labels=payload.groupLabels,
        common_labels=payload.commonLabels,
        common_annotations=payload.commonAnnotations,
        external_url=payload.externalURL,
        truncated_alerts=payload.truncatedAlerts,
        read_at_arrival=filled.read_at_arrival,
    )
