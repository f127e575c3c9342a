"""Incident -> Pachca message (content + buttons), and the short thread comments.

Pure: no I/O, no clock (durations come from the incident's own timestamps). The layout is the
Jinja2 template `templates/message.j2`, rendered in a sandbox; alert text is escaped by
`markdown.py` before it reaches the template, so a template cannot forget to escape.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from jinja2 import TemplateError

from bridge.durations import parse_duration
from bridge.markdown import Md, code, escape, link, one_line, safe_url, truncate
from bridge.model import Alert, AlertStatus, Incident, IncidentState
from bridge.rules import RouteConfig
from bridge.schedules import Schedule, resolve_mentions
from bridge.templating import BUILT_IN, route_template, where_it_failed
from bridge.words import WORDS

log = logging.getLogger(__name__)

MAX_CONTENT_BYTES = 40_000
MIN_TEXT_CHARS = 100  # below this a description says nothing: show fewer alerts instead
MAX_TITLE_CHARS = 200
# Pachca's guide limits a button's text and data to 255 characters and says nothing of its URL;
# the same bound is assumed: a longer URL becomes a plain link in the text.
MAX_BUTTON_URL = 255
# Labels that say nothing a reader needs in every alert line.
_QUIET_LABELS = {"alertname", "severity", "__name__"}

# Where the presser's display name goes in comments written before the name is looked up;
# the outbox replaces it with the (escaped) name when it sends.
ACTOR_SLOT = "\u2063actor\u2063"
# Where the link to the incident's message goes in a post to another chat; the outbox knows it.
LINK_SLOT = "\u2063link\u2063"
SEVERITY_ICONS = {"critical": "🔴", "error": "🔴", "warning": "🟠", "info": "🔵"}


@dataclass(frozen=True)
class RenderOptions:
    """What rendering needs beyond the incident and its route."""

    timezone: tzinfo
    # sources whose incidents can be silenced from the chat (an Alertmanager API is configured)
    silence_sources: frozenset[str] = frozenset()
    # on-call schedules `oncall:<name>` mentions resolve with (rules.Rules.schedules)
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    # the incident's page (signed link), when BRIDGE_PUBLIC_URL and BRIDGE_UI_SECRET are set
    incident_link: Callable[[str], str | None] | None = None

    def page_of(self, incident: Incident) -> str | None:
        return self.incident_link(incident.ref) if self.incident_link else None

    def can_silence(self, incident: Incident) -> bool:
        return incident.source in self.silence_sources


@dataclass(frozen=True)
class Message:
    content: str
    buttons: list[list[dict[str, str]]] = field(default_factory=list)


_BLANK_RUNS = re.compile(r"\n{3,}")


def duration_text(seconds: float, language: str) -> str:
    """`3h 5m` in the route's language (`3ч 5м` in Russian)."""
    day, hour, minute, second = WORDS[language]["units"].split()
    s = max(0, int(seconds))
    parts = [
        (s // 86400, day),
        (s % 86400 // 3600, hour),
        (s % 3600 // 60, minute),
        (s % 60, second),
    ]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or f"0{second}"


# Grafana replaces the alertname of rules whose query fails or returns nothing, and keeps the
# rule's own name in `rulename`
_GRAFANA_STAND_INS = {"DatasourceNoData": "NoData", "DatasourceError": "DatasourceError"}


def incident_title(incident: Incident) -> str:
    """The alertname of the group, or what the group is keyed by."""
    common = incident.common_labels
    return group_title(common.get("alertname"), common.get("rulename"), incident.group_labels)


def group_title(
    alertname: str | None, rulename: str | None, group_labels: Mapping[str, str]
) -> str:
    """`incident_title` from the few labels it reads (the alertname and rulename its alerts
    share, and the group's labels): what a store picks out of an incident for a brief."""
    name = alertname or group_labels.get("alertname")
    if name in _GRAFANA_STAND_INS and rulename:
        return one_line(f"{_GRAFANA_STAND_INS[name]}: {rulename}")
    if name and one_line(name):
        return one_line(name)
    keyed = ", ".join(f"{k}={v}" for k, v in sorted(group_labels.items()))
    return one_line(keyed) or "alert"


def render_message(
    incident: Incident,
    route: RouteConfig,
    options: RenderOptions,
    *,
    max_alerts: int | None = None,
    text_limit: int | None = None,
    names: Mapping[int, str] | None = None,
    strict: bool = False,
    now: datetime | None = None,
) -> Message:
    """The incident's message. Texts are shown whole while the message fits Pachca's content
    limit; past it, every description is cut to the same, largest length that fits (short
    ones untouched: fair across alerts), each cut saying so; only when even short texts do
    not fit are fewer alerts shown. `text_limit` caps descriptions anyway (a minimal form);
    `names` maps Pachca user ids to display names; `strict`: a route template's error is raised
    (check-config) instead of falling back to the built-in layout; `now`: when it is produced,
    for `oncall:` mentions (default: the clock)."""
    limit = max_alerts if max_alerts is not None else route.max_alerts
    state_line = _state_line(incident, route.language, options, names or {})
    buttons = _buttons(incident, route, options)
    long_links = _long_url_links(incident, WORDS[route.language])

    def render(limit: int, text_limit: int | None) -> str:
        return _content(
            incident, route, options, limit, text_limit, state_line, long_links, strict, now
        )

    while True:
        content = render(limit, text_limit)
        if _fits(content):
            return Message(content, buttons)
        longest = max((len(_description(a)) for a in incident.alerts.values()), default=0)
        high = min(text_limit or longest, longest) - 1
        if high >= MIN_TEXT_CHARS and _fits(render(limit, MIN_TEXT_CHARS)):
            low = MIN_TEXT_CHARS  # fits; find the largest that does
            while low < high:
                middle = (low + high + 1) // 2
                if _fits(render(limit, middle)):
                    low = middle
                else:
                    high = middle - 1
            return Message(render(limit, low), buttons)
        if limit > 1:
            limit = max(1, limit // 2)
        elif text_limit is None or text_limit > MIN_TEXT_CHARS:
            text_limit = MIN_TEXT_CHARS
        else:
            cut = content.encode()[: MAX_CONTENT_BYTES - 4].decode(errors="ignore")
            return Message(cut + "\n…", buttons)


def alert_name(alert: Alert) -> str:
    """How one alert is named: its summary, else its alertname and instance. One line: it is
    shown in bold, which a line break or an edge blank would undo."""
    summary = one_line(alert.annotations.get("summary", ""))
    if summary:
        return summary
    name = one_line(" ".join(alert.labels.get(k, "") for k in ("alertname", "instance")))
    return name or "alert"


def _fits(content: str) -> bool:
    return len(content.encode()) <= MAX_CONTENT_BYTES


def _description(alert: Alert) -> str:
    """What an alert says below its title (Grafana's query error first)."""
    description = alert.annotations.get("description", "")
    if alert.annotations.get("Error"):  # Grafana's DatasourceError: the query's own error
        description = f"⚠️ {alert.annotations['Error']}\n{description}".strip()
    return description


def person(user_id: int, names: Mapping[int, str]) -> Md:
    """A user's display name, escaped; unknown ones as `<@id>`, which Pachca shows as @nickname."""
    name = names.get(user_id)
    return escape(name) if name else Md(f"<@{user_id}>")


def _state_line(
    incident: Incident, language: str, options: RenderOptions, names: Mapping[int, str]
) -> Md:
    words = WORDS[language]
    if incident.resolved_by is not None and incident.state is IncidentState.RESOLVED:
        when = incident.resolved_at or incident.changed_at
        return Md(
            words["resolved_by_line"].format(
                name=person(incident.resolved_by, names),
                time=format_time(when.astimezone(options.timezone)),
            )
        )
    lines = []
    if incident.acked_by is not None and incident.acked_at is not None:
        lines.append(
            words["acked_line"].format(
                name=person(incident.acked_by, names),
                time=format_time(incident.acked_at.astimezone(options.timezone)),
            )
        )
    if incident.silence_id is not None:
        lines.append(silenced_text(words["silenced_line"], incident, options))
    return Md("\n".join(lines))


def silenced_text(template: str, incident: Incident, options: RenderOptions) -> str:
    until = incident.silenced_until
    when = format_time(until.astimezone(options.timezone)) if until else "?"
    return template.format(time=when, name=escape(incident.silenced_by or "Alertmanager"))


def _content(
    incident: Incident,
    route: RouteConfig,
    options: RenderOptions,
    limit: int,
    text_limit: int | None,
    state_line: Md,
    long_links: list[Md],
    strict: bool = False,
    now: datetime | None = None,
) -> str:
    words = WORDS[route.language]
    ordered = sorted(
        incident.alerts.values(),
        key=lambda a: (a.status is not AlertStatus.FIRING, a.starts_at, a.fingerprint),
    )
    shown = ordered[:limit]
    hidden = len(ordered) - len(shown) + incident.truncated_alerts
    common = shared_labels(incident)
    firing = incident.state is IncidentState.FIRING
    # resolved when the message is produced: whoever is on duty now
    mentions = resolve_mentions(route.mentions, options.schedules, now) if firing else []
    variables = {
        "t": words,
        "header": _header(incident, route.language),
        "state_line": state_line,
        "common_labels": _label_line(common, route),
        "alerts": [_alert_view(a, incident, common, route, options, text_limit) for a in shown],
        "hidden": hidden,
        "long_links": Md(" · ".join(long_links)),
        "mentions": Md(" ".join(mentions)),
        # for a route's own layout: the incident's plain facts (strings are escaped on output)
        "state": incident.state.value,
        "ref": incident.ref,
        "route": route.name,
        "firing": len(incident.firing),
        "resolved": len(incident.resolved),
        "labels": dict(common),
        "annotations": dict(incident.common_annotations),
    }
    text = ""
    if route.template:
        try:
            text = route_template(route.template).render(**variables)
        except TemplateError as exc:  # never lose the message to a template: the built-in
            if strict:
                raise
            log.error(
                "route %s: template failed, built-in used: %s",
                route.name,
                where_it_failed(exc, route.template),
            )
    if not text.strip():
        text = BUILT_IN.render(**variables)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def _header(incident: Incident, language: str) -> Md:
    words = WORDS[language]
    firing, resolved = len(incident.firing), len(incident.resolved)
    severity = incident.common_labels.get("severity", "")
    title = escape(truncate(incident_title(incident), MAX_TITLE_CHARS))
    if incident.state is IncidentState.FIRING:
        status = f"{SEVERITY_ICONS.get(severity, '🔥')} **{words['firing']}**"
    else:
        status = f"✅ **{words['resolved']}**"
    parts = [status]
    if severity:
        parts.append(escape(severity))
    parts.append(f"**{title}**")
    parts.append(f"🔥 {firing} · ✅ {resolved}")
    if incident.state is IncidentState.RESOLVED and incident.resolved_at:
        lasted = (incident.resolved_at - first_start(incident)).total_seconds()
        parts.append(words["lasted"].format(duration=duration_text(lasted, language)))
    return Md(" · ".join(parts))


def first_start(incident: Incident) -> datetime:
    """Where this episode's duration counts from (the earliest start, for incidents stored
    before episodes were recorded)."""
    if incident.episode_start is not None:
        return incident.episode_start
    return min((a.starts_at for a in incident.alerts.values()), default=incident.opened_at)


def shared_labels(incident: Incident) -> dict[str, str]:
    """The labels every alert of the incident has (the header's label line): computed from
    the alerts themselves, not from the last notification, which may have listed only some."""
    alerts = list(incident.alerts.values())
    if not alerts:
        return dict(incident.common_labels)
    shared = dict(alerts[0].labels)
    for alert in alerts[1:]:
        shared = {k: v for k, v in shared.items() if alert.labels.get(k) == v}
    return shared


def shown_labels(labels: Mapping[str, str], route: RouteConfig) -> dict[str, str]:
    """The labels a route shows: `show_labels` only, when it lists any; never `hide_labels`
    nor those that say nothing in every line (alertname, severity: in the header)."""
    hidden = _QUIET_LABELS | set(route.hide_labels)
    return {
        k: v
        for k, v in labels.items()
        if k not in hidden and (route.show_labels is None or k in route.show_labels)
    }


def _label_line(labels: dict[str, str], route: RouteConfig) -> Md:
    shown = [
        f"{escape(k)}: {code(truncate(v, MAX_TITLE_CHARS))}"
        for k, v in sorted(shown_labels(labels, route).items())
    ]
    return Md(" · ".join(shown))


def _alert_view(
    alert: Alert,
    incident: Incident,
    common: dict[str, str],
    route: RouteConfig,
    options: RenderOptions,
    text_limit: int | None,
) -> dict[str, Any]:
    language = route.language
    words = WORDS[language]
    summary = alert_name(alert)
    description = _description(alert)
    own_labels = {k: v for k, v in alert.labels.items() if common.get(k) != v}
    local = alert.starts_at.astimezone(options.timezone)
    if alert.status is AlertStatus.FIRING:
        timing = words["since"].format(time=format_time(local))
    else:
        end = alert.ends_at or alert.starts_at
        timing = words["resolved_at"].format(
            time=format_time(end.astimezone(options.timezone)),
            duration=duration_text((end - alert.starts_at).total_seconds(), language),
        )
    links = []
    if alert.generator_url and safe_url(alert.generator_url):
        links.append(link(words["source"], alert.generator_url))
    for key, url in (
        ("dashboard", alert.dashboard_url),
        ("panel", alert.panel_url),
        ("grafana_silence", alert.silence_url),
        ("image", alert.image_url),
    ):
        if url and safe_url(url):
            links.append(link(words[key], url))
    runbook = alert.annotations.get("runbook_url", "")
    # the group's common runbook is a button already; only a different one is worth a link
    if runbook and runbook != incident.common_annotations.get("runbook_url") and safe_url(runbook):
        links.append(link(words["runbook"], runbook))
    return {
        "icon": "🔥" if alert.status is AlertStatus.FIRING else "✅",
        "title": escape(truncate(summary, MAX_TITLE_CHARS)),
        "description": _cut(description, text_limit, words, options.page_of(incident) is not None)
        if description != summary
        else "",
        "labels": _label_line(own_labels, route),
        "value_text": code(truncate(alert.value_string, MAX_TITLE_CHARS))
        if alert.value_string
        else "",
        "values_word": words["values"],
        "timing": timing
        + (
            " · "
            + words["flapping"].format(
                n=len(incident.refires.get(alert.fingerprint, [])), window=route.flap_window
            )
            if alert.fingerprint in incident.flapping
            else ""
        ),
        "links": links,
    }


def _cut(text: str, limit: int | None, words: dict[str, str], on_page: bool = False) -> Md:
    """`text`, escaped; past `limit` characters cut, saying how much was left out (and that
    the incident's page has it whole, when there is one)."""
    if limit is None or len(text) <= limit:
        return escape(text)
    said = words["cut"].format(n=len(text) - limit)
    if on_page:
        said = f"{said[:-1]}; {words['cut_on_page']})"
    return Md(escape(text[:limit].rstrip()) + "… " + said)


def format_time(moment: datetime) -> str:
    return moment.strftime("%d.%m %H:%M %Z").strip()


def _buttons(
    incident: Incident, route: RouteConfig, options: RenderOptions
) -> list[list[dict[str, str]]]:
    words = WORDS[route.language]
    rows: list[list[dict[str, str]]] = []
    if incident.state is IncidentState.FIRING:
        ack = (
            {"text": words["unack"], "data": f"unack:{incident.ref}"}
            if incident.acked_by is not None
            else {"text": words["ack"], "data": f"ack:{incident.ref}"}
        )
        rows.append([ack, {"text": words["resolve"], "data": f"resolve:{incident.ref}"}])
        if options.can_silence(incident) and incident.silence_id is not None:
            rows.append([{"text": words["unsilence"], "data": f"unsilence:{incident.ref}"}])
        elif options.can_silence(incident) and route.silence_durations:
            rows.append(
                [
                    {
                        "text": words["silence"].format(duration=d),
                        "data": f"silence:{incident.ref}:{d}",
                    }
                    for d in route.silence_durations
                    if parse_duration(d) > 0
                ]
            )
    url_row = _url_buttons(incident, words)
    page = options.page_of(incident)
    if page and len(page) <= MAX_BUTTON_URL:
        url_row.append({"text": words["timeline_button"], "url": page})
    if url_row:
        rows.append(url_row)
    return rows


def _url_candidates(incident: Incident, words: dict[str, str]) -> list[tuple[str, str, str]]:
    """(button text, link text, URL) of the incident's runbook, source and dashboard."""
    first = next(iter(sorted(incident.alerts.values(), key=lambda a: a.starts_at)), None)
    runbook = incident.common_annotations.get("runbook_url") or (
        first.annotations.get("runbook_url", "") if first else ""
    )
    return [
        (words["runbook_button"], words["runbook"], runbook),
        (words["source_button"], words["source"], first.generator_url if first else ""),
        (words["dashboard_button"], words["dashboard"], first.dashboard_url if first else ""),
    ]


def _url_buttons(incident: Incident, words: dict[str, str]) -> list[dict[str, str]]:
    row = []
    for text, _, url in _url_candidates(incident, words):
        target = safe_url(url) if url else None
        if target and len(target) <= MAX_BUTTON_URL:
            row.append({"text": text, "url": target})
    return row


def _long_url_links(incident: Incident, words: dict[str, str]) -> list[Md]:
    """The URLs too long for a button, as plain links in the text instead."""
    long_ones = []
    for button, text, url in _url_candidates(incident, words):
        target = safe_url(url) if url else None
        if target and len(target) > MAX_BUTTON_URL:
            long_ones.append(Md(f"{button.split(' ', 1)[0]} {link(text, target)}"))
    return long_ones


def message_url(chat_id: int | None, message_id: int) -> str:
    """Pachca's link to a message (the shape of `url` in its Message objects)."""
    return f"https://app.pachca.com/chats/{chat_id}?message={message_id}"
