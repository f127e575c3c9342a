"""Every metric the bridge exports, in one place, on a registry passed in (tests get their own).

Label sets that are known up front are pre-created so dashboards see 0 rather than nothing,
and, above all, so that the chart's `increase(...) > 0` alerts see the first failure: a counter
series born at 1 has no earlier sample, and `increase` over it stays 0.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from bridge.incidents import Effect

SOURCES = ("alertmanager", "grafana")
STATUSES = ("firing", "resolved")
# Every Pachca endpoint the client calls, as its metrics name it.
PACHCA_ENDPOINTS = (
    "POST /messages",
    "PUT /messages/{id}",
    "POST /messages/{id}/thread",
    "GET /messages",
    "GET /chats",
    "GET /users/{id}",
    "GET /webhooks/events",
    "DELETE /webhooks/events/{id}",
    "POST /messages/{id}/link_previews",
    "PUT /bot/webhook",
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.notifications = Counter(
            "bridge_notifications_received_total",
            "Webhook notifications accepted, by source and group status.",
            ["source", "status"],
            registry=r,
        )
        self.alerts = Counter(
            "bridge_alerts_received_total",
            "Alerts inside accepted notifications, by source and alert status.",
            ["source", "status"],
            registry=r,
        )
        self.deduplicated = Counter(
            "bridge_notifications_deduplicated_total",
            "Notifications per chat that changed nothing (repeats, HA copies, retries).",
            ["source"],
            registry=r,
        )
        self.intake_latency = Histogram(
            "bridge_intake_duration_seconds",
            "Webhook intake: from the request reaching its handler to the answer (recorded or "
            "refused), by source.",
            ["source"],
            registry=r,
            buckets=(
                0.0005,
                0.001,
                0.002,
                0.003,
                0.005,
                0.0075,
                0.01,
                0.015,
                0.025,
                0.05,
                0.1,
                0.25,
                1.0,
            ),
        )
        self.rejected = Counter(
            "bridge_requests_rejected_total",
            "Intake requests refused, by HTTP status.",
            ["source", "code"],
            registry=r,
        )
        self.pachca_requests = Counter(
            "bridge_pachca_requests_total",
            "Pachca API calls by endpoint template and HTTP status ('error' when no answer).",
            ["endpoint", "code"],
            registry=r,
        )
        self.pachca_latency = Histogram(
            "bridge_pachca_request_duration_seconds",
            "Pachca API call latency.",
            ["endpoint"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.deliveries = Counter(
            "bridge_deliveries_total",
            "Outbox items finished, by kind and result (sent, coalesced, retry, dead).",
            ["kind", "result"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "bridge_delivery_latency_seconds",
            "From a change being recorded to Pachca accepting it.",
            ["kind"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.outbox_depth = Gauge(
            "bridge_outbox_depth", "Outbox items waiting to be delivered.", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "bridge_outbox_oldest_age_seconds",
            "Age of the oldest waiting outbox item.",
            registry=r,
        )
        self.incidents_opened = Counter(
            "bridge_incidents_opened_total", "Incidents opened, by route.", ["route"], registry=r
        )
        self.callbacks = Counter(
            "bridge_callbacks_total",
            "Button presses processed, by action and result (acked, not_allowed, duplicate...).",
            ["action", "result"],
            registry=r,
        )
        self.callbacks_refused = Counter(
            "bridge_callbacks_refused_total",
            "Pachca callbacks refused before processing, by reason.",
            ["reason"],
            registry=r,
        )
        self.time_to_ack = Histogram(
            "bridge_time_to_ack_seconds",
            "From an incident opening to its first acknowledgement.",
            registry=r,
            buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400),
        )
        self.messages_recreated = Counter(
            "bridge_messages_recreated_total",
            "Incident messages posted again because Pachca no longer had them (deleted).",
            registry=r,
        )
        self.deliveries_abandoned = Counter(
            "bridge_deliveries_abandoned_total",
            "Deliveries stopped half-way because their outbox claim could not be kept (Redis "
            "unreachable, or another replica took it): taken up again by the claim's holder.",
            registry=r,
        )
        self.creates_unverified = Counter(
            "bridge_creates_unverified_total",
            "Messages (an incident's, a reply, a thread comment, one to a chat) posted after a "
            "lost answer "
            "without looking for the first post (the bot may not read the chat, or the post was "
            "too far back to reach): each may be a duplicate.",
            registry=r,
        )
        self.dead_letters = Gauge(
            "bridge_dead_letters",
            "Outbox items Pachca refused for good, kept for `dead-letters --replay` until "
            "BRIDGE_DEAD_LETTER_RETENTION.",
            registry=r,
        )
        self.background_restarts = Counter(
            "bridge_background_restarts_total",
            "Background loops restarted after they failed, by task.",
            ["task"],
            registry=r,
        )
        self.background_stalled = Gauge(
            "bridge_background_stalled",
            "1 while a background loop is down or has not completed a pass in time, by task.",
            ["task"],
            registry=r,
        )
        self.pachca_auth_ok = Gauge(
            "bridge_pachca_auth_ok",
            "0 while Pachca refuses the bot token (delivery paused), else 1.",
            registry=r,
        )
        self.pachca_auth_ok.set(1)
        self.pachca_pace = Gauge(
            "bridge_pachca_pace",
            "Calls per second the bridge allows itself to Pachca now (adaptive: grows while "
            "Pachca accepts, cut on 429; shared by all replicas with Redis).",
            registry=r,
        )
        self.schedule_refresh_failures = Counter(
            "bridge_schedule_refresh_failures_total",
            "Calendar schedules whose feed could not be read or understood (the last good copy "
            "stays in use), by schedule.",
            ["schedule"],
            registry=r,
        )
        self.store_errors = Counter(
            "bridge_store_errors_total", "Store operations that failed.", registry=r
        )
        for reason in (
            "signature",
            "timestamp",
            "source_ip",
            "too_large",
            "slow_body",
            "bad_body",
            "bad_event",
        ):
            self.callbacks_refused.labels(reason)
        for kind in Effect:  # the dead-letter alert
            self.deliveries.labels(kind.value, "dead")
        for endpoint in PACHCA_ENDPOINTS:  # the rate-limit alert
            self.pachca_requests.labels(endpoint, "429")
        for source in SOURCES:
            self.rejected.labels(source, "503")  # the intake-failing alert
            self.deduplicated.labels(source)
            for status in STATUSES:
                self.notifications.labels(source, status)
                self.alerts.labels(source, status)

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: the intake counts every webhook in three
        or four series, and `labels` (checks, a lock) was a tenth of a repeat's cost. For
        label values from a small set only (sources, statuses): each is kept for good."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found
