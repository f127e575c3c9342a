"""Model-based test of the chat's truth: random interleavings of what an Alertmanager group
does (alerts fire, recover, get silenced), the notifications it sends (truncated ones, late
copies from the lagging replica of an HA pair), button presses, the silence check-back
(including the empty list of an Alertmanager that just restarted) and clock jumps, applied to
the pure core, against a small model of what the source believes. (Routing that moves with
labels is tested at the inbox, tests/test_flow.py; a restart loses only the check-back's
memory, modelled as such.)

After every step: at most one message is opened per episode; every alert the source last
reported firing, and still has firing, is shown firing (unless a person resolved it by hand);
a resolved message has no data buttons.

Bounded in every run (the "ci" Hypothesis profile); `HYPOTHESIS_PROFILE=long python3 -m pytest
tests/test_truth_model.py` searches much longer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bridge.actions import Action, ButtonData, apply_click
from bridge.incidents import Effect, apply_notification
from bridge.model import Alert, AlertStatus, Incident, IncidentState, Notification
from bridge.render import RenderOptions, render_message
from bridge.rules import RouteConfig
from bridge.silences import absence_evidence, follow_alertmanager

FINGERPRINTS = ("a", "b", "c")
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=1)
ROUTE = RouteConfig(name="default", chat_id=1000)
OPTIONS = RenderOptions(timezone=UTC, silence_sources=frozenset({"alertmanager"}))
SILENCE = "silence-1"


@dataclass
class SourceAlert:
    """What Alertmanager believes of one alert."""

    start: datetime
    firing: bool
    end: datetime | None = None
    silenced: bool = False


class TruthMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.source: dict[str, SourceAlert] = {}
        self.source_now = T0
        self.now = T0  # the bridge's clock
        self.incident: Incident | None = None
        self.told: dict[str, tuple[datetime, bool]] = {}  # last (start, firing) it was told
        self.by_hand: dict[str, datetime] = {}  # alerts a person resolved, by their start
        self.recent: list[Notification] = []  # the notes a lagging replica may send again
        self.missing: frozenset[str] = frozenset()
        self.refs: set[str] = set()

    # -- what Alertmanager sees ----------------------------------------------------------

    def _tick_source(self) -> datetime:
        self.source_now += timedelta(seconds=30)
        return self.source_now

    @rule(fp=st.sampled_from(FINGERPRINTS))
    def fire(self, fp: str) -> None:
        known = self.source.get(fp)
        if known is None or not known.firing:
            silenced = known.silenced if known else False
            self.source[fp] = SourceAlert(self._tick_source(), True, silenced=silenced)

    @rule(fp=st.sampled_from(FINGERPRINTS))
    def recover(self, fp: str) -> None:
        known = self.source.get(fp)
        if known is not None and known.firing:
            known.firing, known.end = False, self._tick_source()

    @rule(fp=st.sampled_from(FINGERPRINTS), on=st.booleans())
    def silence(self, fp: str, on: bool) -> None:
        if fp in self.source:
            self.source[fp].silenced = on

    # -- what the bridge is told ---------------------------------------------------------

    def _alert(self, fp: str) -> Alert:
        known = self.source[fp]
        return Alert(
            fingerprint=fp,
            status=AlertStatus.FIRING if known.firing else AlertStatus.RESOLVED,
            labels={"alertname": "G", "instance": fp},
            starts_at=known.start,
            ends_at=None if known.firing else known.end,
        )

    def _is_news(self, note: Notification) -> bool:
        """Does `note` tell a firing the bridge was not told before (a new alert or startsAt)?
        Only news may open a message or re-open a resolved incident."""
        return any(
            a.status is AlertStatus.FIRING
            and (a.fingerprint not in self.told or self.told[a.fingerprint][0] < a.starts_at)
            for a in note.alerts
        )

    def _apply(self, note: Notification) -> None:
        before = self.incident
        news = self._is_news(note)
        transition = apply_notification(
            before,
            note,
            route="default",
            chat_id=1000,
            now=self.now,
            resolved_ttl=TTL,
            new_ref=f"ref{len(self.refs)}",
        )
        after = transition.incident
        reopened = after is not None and (
            Effect.CREATE in transition.effects or after.state is IncidentState.FIRING
        )
        if before is not None and before.state is IncidentState.RESOLVED and reopened:
            assert news, "re-opened by a repeat of what the source had already said"
        if Effect.CREATE in transition.effects:
            assert before is None or before.state is IncidentState.RESOLVED, "second message"
            assert transition.incident is not None and transition.incident.ref not in self.refs
            self.refs.add(transition.incident.ref)
            self.missing = frozenset()
        else:
            assert (
                before is None
                or transition.incident is None
                or (transition.incident.ref == before.ref)
            )
        if transition.incident is not None:
            self.incident = transition.incident

    @rule(truncate=st.booleans())
    def notify(self, truncate: bool) -> None:
        """Alertmanager sends the group: every alert it holds that is not silenced."""
        listed = [fp for fp in sorted(self.source) if not self.source[fp].silenced]
        if not listed:
            return
        firing = any(self.source[fp].firing for fp in listed)
        cut = 0
        # truncation is modelled without silences (with both, a cut alert and a silenced one
        # cannot be told apart, and a provisional resolution is all that can be said)
        if truncate and len(listed) > 1 and not any(a.silenced for a in self.source.values()):
            listed, cut = listed[:1], len(listed) - 1
        note = Notification(
            source="alertmanager",
            receiver="pachca",
            group_key='{}:{alertname="G"}',
            status=AlertStatus.FIRING if firing else AlertStatus.RESOLVED,
            alerts=tuple(self._alert(fp) for fp in listed),
            group_labels={"alertname": "G"},
            common_labels={"alertname": "G"},
            truncated_alerts=cut,
        )
        self._apply(note)
        for fp in listed:
            self.told[fp] = (self.source[fp].start, self.source[fp].firing)
        if not firing and cut:  # a resolved status covers the alerts it cut
            for fp in self.source:
                if not self.source[fp].silenced:
                    self.told[fp] = (self.source[fp].start, False)
        self.recent = [*self.recent[-1:], note]

    @precondition(lambda self: bool(self.recent))
    @rule(which=st.integers(0, 1))
    def late_copy(self, which: int) -> None:
        """The other replica of the HA pair sends a copy of a recent notification late."""
        self._apply(self.recent[which % len(self.recent)])

    @precondition(lambda self: self.incident is not None)
    @rule()
    def resolve_by_hand(self) -> None:
        assert self.incident is not None
        if self.incident.state is not IncidentState.FIRING:
            return
        for alert in self.incident.firing:
            self.by_hand[alert.fingerprint] = alert.starts_at
        result = apply_click(
            self.incident, ButtonData(Action.RESOLVE, self.incident.ref), 7, ROUTE, self.now
        )
        assert result.incident is not None
        self.incident = result.incident

    @precondition(lambda self: self.incident is not None)
    @rule(restarted=st.booleans())
    def check_back(self, restarted: bool) -> None:
        """The silence check-back reads Alertmanager; a restarted one holds nothing yet."""
        assert self.incident is not None
        alerts: dict[str, dict[str, Any]] = {}
        if not restarted:
            for fp, known in self.source.items():
                if known.firing:
                    by = [SILENCE] if known.silenced else []
                    alerts[fp] = {"fingerprint": fp, "status": {"silencedBy": by}}
        state = "active" if any(a.silenced for a in self.source.values()) else "expired"
        silences = {SILENCE: {"id": SILENCE, "createdBy": "ui", "status": {"state": state}}}
        firing = frozenset(a.fingerprint for a in self.incident.firing)
        gone, self.missing = absence_evidence(firing, alerts, not restarted, self.missing)
        after, _ = follow_alertmanager(self.incident, alerts, silences, self.now, gone)
        self.incident = after

    @rule()
    def bridge_restarts(self) -> None:
        """What lives only in memory is gone (the check-back's "missing last time")."""
        self.missing = frozenset()

    @rule(minutes=st.sampled_from([1, 5, 30, 61, 600]))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        self.source_now += timedelta(minutes=minutes)
        self.recent = []  # an HA copy lags by seconds, not by minutes

    # -- what must hold ------------------------------------------------------------------

    @invariant()
    def what_the_source_reports_firing_is_shown_firing(self) -> None:
        for fp, (start, firing) in self.told.items():
            known = self.source[fp]
            if not (firing and known.firing and known.start == start):
                continue
            if self.by_hand.get(fp) == start:
                continue  # a person closed it while it fired: their call
            assert self.incident is not None
            shown = self.incident.alerts.get(fp)
            assert shown is not None, f"{fp} fires at the source and is not shown"
            assert shown.status is AlertStatus.FIRING, f"{fp} fires and is shown resolved"
            assert shown.starts_at == start

    @invariant()
    def a_resolved_message_has_no_data_buttons(self) -> None:
        if self.incident is None:
            return
        message = render_message(self.incident, ROUTE, OPTIONS)
        data = [b for row in message.buttons for b in row if "data" in b]
        if self.incident.state is IncidentState.RESOLVED:
            assert data == []
        else:
            assert data, "a firing message without buttons"


TestTruth = TruthMachine.TestCase
# short runs, many of them: the bugs this hunts need 6-10 steps in the right order; the
# profile ("ci" or "long") still decides the seed and scales the count
TestTruth.settings = settings(
    max_examples=max(400, settings().max_examples),
    stateful_step_count=20,
    deadline=None,
)
