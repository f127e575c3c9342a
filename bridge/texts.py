"""The short texts around an incident's message: thread comments, direct replies, reminders
and escalations, the daily digest, the `/alerts` answer and link previews. Pure, like
`render.py`, whose helpers (titles, times, durations) they share.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bridge.actions import Reply
from bridge.alertmanager_api import Failure
from bridge.briefs import Brief
from bridge.digest import DigestDue, summarize
from bridge.incidents import Effect
from bridge.markdown import Md, escape, link, truncate
from bridge.model import AlertStatus, Incident, IncidentState
from bridge.render import (
    ACTOR_SLOT,
    LINK_SLOT,
    MAX_TITLE_CHARS,
    RenderOptions,
    alert_name,
    duration_text,
    first_start,
    format_time,
    incident_title,
    message_url,
    silenced_text,
)
from bridge.rules import EscalationStep, RouteConfig
from bridge.schedules import Schedule, resolve_mentions
from bridge.store.base import Stored
from bridge.words import WORDS


def render_comment(
    effect: Effect,
    incident: Incident,
    route: RouteConfig,
    options: RenderOptions,
    *,
    mentions: bool = True,
) -> str:
    """The short thread comment (or chat reply) for a significant transition; the route's
    mentions go with the incident firing again, unless `mentions` is False (another item of
    the same transition carries them)."""
    words = WORDS[route.language]
    if effect is Effect.COMMENT_SILENCED:
        return silenced_text(words["comment_silenced"], incident, options)
    if effect is Effect.COMMENT_SILENCE_ENDED:
        return " ".join(
            [
                words["comment_silence_ended"],
                _mentions(route.mentions, incident.changed_at, options.schedules),
            ]
        ).strip()
    title = escape(truncate(incident_title(incident), MAX_TITLE_CHARS))
    if effect in (Effect.COMMENT_REFIRED, Effect.REPLY_REOPENED):
        text = words[effect.value].format(
            title=title, firing=len(incident.firing), total=len(incident.alerts)
        )
        said = _mentions(route.mentions, incident.changed_at, options.schedules) if mentions else ""
        return f"{text} {said}".strip()
    if effect is Effect.COMMENT_MEMBERS_REFIRED:
        names = [
            escape(truncate(alert_name(incident.alerts[fp]), MAX_TITLE_CHARS))
            for fp in incident.refired_told
            if fp in incident.alerts
        ]
        return words["comment_members_refired"].format(names=", ".join(names) or "?")
    if effect is Effect.COMMENT_UNREPORTED:
        quiet = incident.changed_at - (incident.last_seen or incident.opened_at)
        return words["comment_unreported"].format(
            duration=duration_text(quiet.total_seconds(), route.language)
        )
    if effect is Effect.COMMENT_RESOLVED:
        end = incident.resolved_at or incident.opened_at
        lasted = (end - first_start(incident)).total_seconds()
        return words["comment_resolved"].format(
            title=title, duration=duration_text(lasted, route.language)
        )
    if effect is Effect.COMMENT_RESOLVED_BY_HAND:
        return words[effect.value].format(actor=ACTOR_SLOT) + still_firing_note(incident, words)
    if effect in (Effect.COMMENT_ACKED, Effect.COMMENT_UNACKED, Effect.COMMENT_UNSILENCED):
        return words[effect.value].format(actor=ACTOR_SLOT)
    raise ValueError(f"{effect} has no comment")


def hand_closed_firing(incident: Incident) -> int:
    """How many alerts a person closed by hand while the source still reported them firing
    (the alerts the press ended: they end at the very moment of the closing)."""
    if incident.resolved_by is None or incident.resolved_at is None:
        return 0
    return sum(
        a.status is AlertStatus.RESOLVED and not a.inferred and a.ends_at == incident.resolved_at
        for a in incident.alerts.values()
    )


def still_firing_note(incident: Incident, words: dict[str, str]) -> str:
    """The sentence saying the source still reports what was closed by hand ("" if nothing)."""
    count = hand_closed_firing(incident)
    if not count:
        return ""
    source = "Grafana" if incident.source == "grafana" else "Alertmanager"
    return " " + words["still_firing"].format(source=source, count=count)


def render_reply(
    reply: Reply,
    incident: Incident | None,
    language: str,
    options: RenderOptions | None = None,
    reason: Failure | None = None,
) -> str:
    """The direct message telling the presser what their press did, or why it did nothing."""
    title = escape(truncate(incident_title(incident), MAX_TITLE_CHARS)) if incident else ""
    other = Md(f"<@{incident.acked_by}>") if incident and incident.acked_by else ""
    until = incident.silenced_until if incident else None
    time = format_time(until.astimezone(options.timezone)) if until and options else "?"
    why = ""
    if reason is not None:
        detail = escape(truncate(reason.detail, 300))
        why = WORDS[language][f"why_{reason.why.value}"].format(detail=detail)
    text = WORDS[language][f"reply_{reply.value}"].format(
        title=title, other=other, time=time, reason=why
    )
    if reply is Reply.RESOLVED and incident is not None:
        text += still_firing_note(incident, WORDS[language])
    page = options.page_of(incident) if options and incident else None
    if page:
        text += "\n" + link(WORDS[language]["timeline_button"], page)
    return text


def _mentions(
    mentions: list[str], at: datetime, schedules: Mapping[str, Schedule] | None = None
) -> str:
    """The mentions as written, `oncall:<schedule>` resolved to who is on duty `at`."""
    return " ".join(resolve_mentions(mentions, schedules or {}, at))


def _firing_for(incident: Incident, now: datetime, language: str) -> str:
    since = incident.firing_since or incident.opened_at
    return duration_text((now - since).total_seconds(), language)


def render_reminder(
    incident: Incident,
    route: RouteConfig,
    now: datetime,
    schedules: Mapping[str, Schedule] | None = None,
) -> str:
    words = WORDS[route.language]
    return (
        words["comment_reminder"]
        .format(
            duration=_firing_for(incident, now, route.language),
            mentions=_mentions(route.mentions, now, schedules),
        )
        .strip()
    )


def render_escalation(
    step: EscalationStep,
    incident: Incident,
    route: RouteConfig,
    now: datetime,
    schedules: Mapping[str, Schedule] | None = None,
) -> str:
    words = WORDS[route.language]
    mentions = _mentions(step.mention, now, schedules)
    return words["comment_escalated"].format(mentions=mentions).strip()


def render_escalation_post(
    step: EscalationStep,
    incident: Incident,
    route: RouteConfig,
    now: datetime,
    schedules: Mapping[str, Schedule] | None = None,
) -> str:
    """The message an escalation step posts to its own chat, linking the incident's message."""
    words = WORDS[route.language]
    title = escape(truncate(incident_title(incident), MAX_TITLE_CHARS))
    return (
        words["escalation_post"]
        .format(
            title=f"**{title}**",
            duration=_firing_for(incident, now, route.language),
            mentions=_mentions(step.mention, now, schedules),
            link=LINK_SLOT,
        )
        .strip()
    )


def render_digest(
    due: DigestDue,
    held: list[Brief],
    now: datetime,
    duty: list[tuple[str, tuple[str, ...], tuple[str, ...]]] | None = None,
) -> str:
    """The chat's daily summary: counts, MTTA/MTTR, the noisiest alerts, what still fires;
    with `duty` (schedule, who was on duty at the period's start, who is now), the on-call."""
    words = WORDS[due.route.language]
    language = due.route.language
    summary = summarize(held, due.chat_id, due.start, due.end)
    lines = [words["digest_header"].format(start=format_time(due.start), end=format_time(due.end))]
    for name, was, now_on in duty or []:
        lines.append(
            words["digest_oncall"].format(
                name=escape(name), was=" ".join(was) or "—", now=" ".join(now_on) or "—"
            )
        )
    if not summary.opened and not summary.resolved and not summary.firing:
        return "\n".join([*lines, words["digest_quiet"]])
    lines.append(
        words["digest_counts"].format(
            opened=summary.opened, resolved=summary.resolved, firing=len(summary.firing)
        )
    )

    def took(seconds: float | None) -> str:
        return duration_text(seconds, language) if seconds is not None else "–"

    lines.append(words["digest_times"].format(mtta=took(summary.mtta), mttr=took(summary.mttr)))
    if summary.noisiest:
        names = ", ".join(f"{escape(name)} ({count})" for name, count in summary.noisiest)
        lines.append(words["digest_noisiest"].format(names=names))
    if summary.firing:
        lines.append(words["digest_firing"])
        lines += [firing_line(s) for s in summary.firing[:20]]
    return "\n".join(lines)


def firing_line(b: Brief) -> str:
    """`🔥 title`, linked to the incident's message once it has one."""
    title = truncate(b.title, MAX_TITLE_CHARS)
    if b.message_id:
        return f"🔥 {link(title, message_url(b.chat_id, b.message_id))}"
    return f"🔥 {escape(title)}"


def render_handoff(
    name: str,
    schedule: Schedule,
    who: tuple[str, ...],
    now: datetime,
    firing: list[Brief],
    language: str,
) -> tuple[str, str]:
    """The handoff's post in the schedule's chat and the DM to the incoming person: who is on
    duty until when, and what still fires on the routes calling the schedule (with links)."""
    words = WORDS[language]
    handoff = schedule.next_handoff(now)
    until = handoff.astimezone(schedule.zone).strftime("%d.%m %H:%M") if handoff else "—"
    people = " ".join(who) or "—"
    open_lines = [firing_line(b) for b in sorted(firing, key=lambda b: b.opened_at)[:20]]
    tail = (
        [words["handoff_open"].format(count=len(firing)), *open_lines]
        if firing
        else [words["handoff_quiet"]]
    )
    post = "\n".join(
        [words["handoff_post"].format(name=escape(name), who=people, until=until), *tail]
    )
    dm = "\n".join([words["handoff_dm"].format(name=escape(name), until=until), *tail])
    return post, dm


def render_active(active: list[Stored], route: RouteConfig, options: RenderOptions) -> str:
    """The answer to `/alerts`: the chat's firing incidents, with links to their messages."""
    words = WORDS[route.language]
    if not active:
        return words["active_none"]
    lines = [words["active_header"].format(count=len(active))]
    for s in sorted(active, key=lambda s: s.incident.opened_at)[:30]:
        incident = s.incident
        title = truncate(incident_title(incident), MAX_TITLE_CHARS)
        since = format_time(incident.opened_at.astimezone(options.timezone))
        shown = (
            link(title, message_url(incident.chat_id, s.delivery.message_id))
            if s.delivery.message_id
            else escape(title)
        )
        state = " 👀" if incident.acked_by else ""
        page = options.page_of(incident)
        history = f" · {link('🕘', page)}" if page else ""
        lines.append(f"🔥 {shown} · {since} · `{incident.ref}`{state}{history}")
    return "\n".join(lines)


def render_preview(
    incident: Incident, route: RouteConfig, options: RenderOptions
) -> dict[str, str]:
    """A link preview (plain text: previews are not markdown) of the incident as it is now."""
    words = WORDS[route.language]
    title = truncate(incident_title(incident), MAX_TITLE_CHARS)
    if incident.state is IncidentState.FIRING:
        state = f"🔥 {words['firing']} ({len(incident.firing)}/{len(incident.alerts)})"
    else:
        state = f"✅ {words['resolved']}"
    since = words["since"].format(time=format_time(incident.opened_at.astimezone(options.timezone)))
    lines = [since]
    if incident.acked_by is not None:
        lines.append(words["preview_acked"].format(user=f"<@{incident.acked_by}>"))
    if incident.silence_id is not None:
        lines.append(silenced_text(words["silenced_line"], incident, options))
    return {"title": truncate(f"{state} · {title}", 255), "description": " · ".join(lines)}
