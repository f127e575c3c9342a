"""Grafana unified-alerting webhook contact point payloads (`version: "1"`), and Grafana's
optional HMAC signature of them (Grafana 12+)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import Field

from bridge.errors import PayloadError
from bridge.model import Alert, AlertStatus, Notification
from bridge.sources.alertmanager import (
    AlertmanagerAlert,
    AlertmanagerPayload,
    Filled,
    end_time,
    validated,
)

SOURCE = "grafana"
# Grafana's docs name the header X-Grafana-Alerting-Signature; its code also sends
# X-Grafana-Alert-Signature. Both are looked at unless a name is configured.
SIGNATURE_HEADERS = ("X-Grafana-Alerting-Signature", "X-Grafana-Alert-Signature")


class GrafanaAlert(AlertmanagerAlert):
    """Alertmanager's alert shape plus Grafana's links and values (wire names)."""

    silenceURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""
    values: dict[str, float | int | None] | None = None
    valueString: str = ""
    imageURL: str = ""


class GrafanaPayload(AlertmanagerPayload):
    """Alertmanager's webhook shape, version "1", with Grafana's alerts and title."""

    version: Literal["1"]  # type: ignore[assignment]  # required: "1" is what says Grafana
    alerts: list[GrafanaAlert] = Field(min_length=1)  # type: ignore[assignment]
    title: str = ""


def signature_valid(secret: str, body: bytes, given: str | None, timestamp: str | None) -> bool:
    """Hex HMAC-SHA256 of the body, or of `timestamp:body` when Grafana sends a timestamp
    header; constant-time compare."""
    if not given or not given.isascii() or (timestamp is not None and not timestamp.isascii()):
        return False
    message = f"{timestamp}:".encode() + body if timestamp is not None else body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def _values_text(values: dict[str, float | int | None] | None) -> str:
    if not values:
        return ""
    return ", ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in sorted(values.items())
    )


def parse(body: bytes, now: datetime | None = None) -> Notification:
    """Parse one Grafana webhook body (missing fields derived as for Alertmanager's)."""
    payload = validated(GrafanaPayload, body, SOURCE)
    filled = Filled(payload, now)
    alerts = []
    for a, status, fingerprint in zip(
        payload.alerts, filled.statuses, filled.fingerprints, strict=True
    ):
        ends = end_time(a.endsAt)
        alerts.append(
            Alert(
                fingerprint=fingerprint,
                status=status,
                labels=a.labels,
                annotations=a.annotations,
                starts_at=a.startsAt,
                ends_at=ends if status == AlertStatus.RESOLVED else None,
                generator_url=a.generatorURL,
                value_string=_values_text(a.values),
                dashboard_url=a.dashboardURL,
                panel_url=a.panelURL,
                silence_url=a.silenceURL,
                image_url=a.imageURL,
            )
        )
    return Notification(
        source=SOURCE,
        receiver=payload.receiver,
        group_key=filled.group_key,
        status=filled.status,
        alerts=tuple(alerts),
        group_labels=payload.groupLabels,
        common_labels=payload.commonLabels,
        common_annotations=payload.commonAnnotations,
        external_url=payload.externalURL,
        truncated_alerts=payload.truncatedAlerts,
        title=payload.title,
        read_at_arrival=filled.read_at_arrival,
    )


def require_signature(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    header_name: str | None,
    timestamp_header: str | None,
    now: float,
    max_age: float,
) -> None:
    """Raise a 401 PayloadError unless the request carries Grafana's valid signature (and a
    fresh timestamp, when a timestamp header is configured). Header names are compared
    case-insensitively: HTTP/2 hops (Envoy, Istio) send them in lower case."""
    lowered = {name.lower(): value for name, value in headers.items()}
    names = (header_name,) if header_name else SIGNATURE_HEADERS
    given = next((lowered[n.lower()] for n in names if n.lower() in lowered), None)
    timestamp = lowered.get(timestamp_header.lower()) if timestamp_header else None
    if timestamp_header:
        try:
            fresh = abs(now - float(timestamp or "")) <= max_age
        except ValueError:
            fresh = False
        if not fresh:
            raise PayloadError(401, f"missing or stale {timestamp_header}")
    if not signature_valid(secret, body, given, timestamp):
        raise PayloadError(401, "missing or wrong Grafana signature")
