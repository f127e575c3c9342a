"""Alertmanager webhook payloads (`version: "4"`), as captured from Alertmanager 0.25."""

from __future__ import annotations

import json
import re
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
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: Moment  # wire names, as Alertmanager spells them
    endsAt: EndMoment = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1)


class AlertmanagerPayload(_Loose):
    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    receiver: str
    status: Literal["firing", "resolved"]
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


def parse(body: bytes) -> Notification:
    """Parse one Alertmanager webhook body."""
    payload = validated(AlertmanagerPayload, body, SOURCE)
    return Notification(
        source=SOURCE,
        receiver=payload.receiver,
        group_key=payload.groupKey,
        status=AlertStatus(payload.status),
        alerts=tuple(
            Alert(
                fingerprint=a.fingerprint,
                status=AlertStatus(a.status),
                labels=a.labels,
                annotations=a.annotations,
                starts_at=a.startsAt,
                ends_at=end_time(a.endsAt) if a.status == "resolved" else None,
                generator_url=a.generatorURL,
            )
            for a in payload.alerts
        ),
        group_labels=payload.groupLabels,
        common_labels=payload.commonLabels,
        common_annotations=payload.commonAnnotations,
        external_url=payload.externalURL,
        truncated_alerts=payload.truncatedAlerts,
    )
