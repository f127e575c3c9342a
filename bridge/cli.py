"""`pachca-alert-bridge` command line: serve, check-config, route-test, render, send-test,
oncall, incidents, incident, register-webhook, dead-letters."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import resource
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

from bridge import __version__
from bridge.errors import (
    ConfigError,
    PachcaAuthError,
    PachcaError,
    PachcaRequestError,
    PayloadError,
    StoreError,
)
from bridge.incidents import apply_notification
from bridge.logs import setup_logging
from bridge.metrics import Metrics
from bridge.pachca import DryRunPachca, PachcaApi, client_from_settings
from bridge.render import RenderOptions, incident_title, render_message
from bridge.rules import RouteConfig, Rules, load_rules
from bridge.schedules import Schedule
from bridge.settings import Settings
from bridge.sources import alertmanager, grafana
from bridge.store import READ_PAGE, Store, changed_pages
from bridge.timeline import incident_json

log = logging.getLogger("bridge")

DEFAULT_RULES = "rules/"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pachca-alert-bridge",
        description="Alertmanager and Grafana alerts as live Pachca messages.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bridge")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    serve.add_argument(
        "--port", type=int, default=None, help="port to listen on (default $BRIDGE_PORT or 8080)"
    )
    serve.add_argument("--rules", default=DEFAULT_RULES, help="rules file or directory")
    serve.add_argument(
        "--dry-run",
        action="store_true",
        help="log Pachca calls instead of sending them (also when no token is set)",
    )

    check = sub.add_parser("check-config", help="validate rules and environment; exit 1 on errors")
    check.add_argument("rules", nargs="?", default=DEFAULT_RULES)

    route_test = sub.add_parser("route-test", help="print the routes and chats labels go to")
    route_test.add_argument("rules")
    route_test.add_argument("labels", nargs="+", metavar="key=value")

    register = sub.add_parser(
        "register-webhook",
        help="set the bot's outgoing webhook URL to $BRIDGE_PUBLIC_URL/pachca/webhook",
    )
    register.add_argument("--disable", action="store_true", help="clear the URL instead")

    dead = sub.add_parser(
        "dead-letters", help="list what Pachca refused for good (store: $BRIDGE_STORE)"
    )
    dead.add_argument("--replay", action="store_true", help="put them back in the outbox")

    oncall = sub.add_parser(
        "oncall", help="who is on duty per schedule, and the shifts of the next days"
    )
    oncall.add_argument("rules", nargs="?", default=DEFAULT_RULES)
    oncall.add_argument("--at", default=None, help="an ISO time (default: now)")
    oncall.add_argument("--days", type=int, default=7, help="shifts shown (default 7 days)")

    incidents = sub.add_parser("incidents", help="list incidents from the store, firing first")
    incidents.add_argument("--open", action="store_true", help="only firing (or silenced) ones")
    incidents.add_argument("--json", action="store_true", help="as JSON")
    incident = sub.add_parser("incident", help="one incident and its timeline, from the store")
    incident.add_argument("ref")
    incident.add_argument("--json", action="store_true", help="as JSON")

    send_test = sub.add_parser(
        "send-test",
        help="post a sample incident message with its buttons to a chat: checks the token, "
        "the bot's membership and the callback set-up in one step",
    )
    send_test.add_argument("--chat", type=int, required=True, help="the chat's id")
    send_test.add_argument(
        "--rules", default=None, help="render as this rules' default route would (language...)"
    )

    render = sub.add_parser("render", help="print the Pachca message(s) a webhook payload makes")
    render.add_argument("payload", help="an Alertmanager or Grafana webhook JSON file")
    render.add_argument("--rules", default=DEFAULT_RULES)
    render.add_argument(
        "--source",
        choices=("alertmanager", "grafana"),
        help='who sent it (default: the payload\'s `version` field, "1" for Grafana)',
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args.host, args.port, args.rules, args.dry_run)
        if args.command == "check-config":
            return check_config(args.rules)
        if args.command == "route-test":
            return route_test(args.rules, args.labels)
        if args.command == "render":
            return render(args.payload, args.rules, args.source)
        if args.command == "dead-letters":
            return asyncio.run(dead_letters(args.replay))
        if args.command == "register-webhook":
            return asyncio.run(register_webhook(args.disable))
        if args.command == "oncall":
            return oncall_table(args.rules, args.at, args.days)
        if args.command == "incidents":
            return asyncio.run(list_incidents(args.open, args.json))
        if args.command == "incident":
            return asyncio.run(show_incident(args.ref, args.json))
        if args.command == "send-test":
            return asyncio.run(send_test(args.chat, args.rules))
    except ConfigError as exc:
        print("configuration errors:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except StoreError as exc:  # one line naming the setting, not a traceback
        print(f"the store (BRIDGE_STORE) cannot be used: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


def check_config(rules_path: str) -> int:
    problems: list[str] = []
    rules: Rules | None = None
    try:
        rules = load_rules(rules_path)
    except ConfigError as exc:
        problems += exc.problems
    try:
        Settings.from_environ()
    except ConfigError as exc:
        problems += [f"environment: {p}" for p in exc.problems]
    if rules is not None:
        problems += template_problems(rules)
    if problems:
        raise ConfigError(problems)
    assert rules is not None
    print(f"OK: {len(rules.routes)} routes in {rules_path}; default route {rules.default.name!r}")
    return 0


def template_problems(rules: Rules) -> list[str]:
    """Each route template rendered against a sample firing incident (send-test's):
    what fails, as `file:line: what`."""
    from jinja2 import TemplateError

    from bridge.sample import sample_message
    from bridge.templating import where_it_failed

    problems = []
    options = RenderOptions(UTC, frozenset({alertmanager.SOURCE}), rules.schedules)
    for route in rules.routes:
        template = route.config.template
        if template is None:
            continue
        try:
            sample_message(route.config, options, strict=True)
        except TemplateError as exc:
            problems.append(
                f"{route.source}: route {route.name!r}: {where_it_failed(exc, template)}"
            )
    return problems


def oncall_table(rules_path: str, at_text: str | None, days: int) -> int:
    """Each schedule: who is on duty at `at`, then its shifts over the next `days` (overrides
    included), in the schedule's time zone, so a rota can be checked before it is deployed."""
    rules = load_rules(rules_path)
    try:
        at = datetime.fromisoformat(at_text) if at_text else datetime.now(UTC)
    except ValueError:
        print(
            f"--at {at_text!r} is not an ISO time like 2026-12-31T18:00:00+03:00", file=sys.stderr
        )
        return 2
    if at.tzinfo is None:
        print("--at needs a UTC offset, e.g. 2026-12-31T18:00:00+03:00", file=sys.stderr)
        return 2
    if not rules.schedules:
        print(f"no schedules in {rules_path}")
    for name, schedule in rules.schedules.items():
        if schedule.ical_url is not None:
            schedule = with_calendar(name, schedule, at)
        print(f"{name} ({schedule.zone.key}): now {' '.join(schedule.on_duty(at)) or 'nobody'}")
        for begin, end, who in schedule.shifts(at, at + timedelta(days=days)):
            span = f"{_local(begin, schedule.zone)} – {_local(end, schedule.zone)}"
            print(f"  {span}  {' '.join(who) or 'nobody'}")
    return 0


def with_calendar(name: str, schedule: Schedule, at: datetime) -> Schedule:
    """The schedule with its calendar's shifts around `at`, read now (said if it cannot be)."""
    from dataclasses import replace

    from bridge.calendar_feeds import read_feed
    from bridge.calendars import CalendarError, calendar_shifts

    assert schedule.ical_url is not None
    try:
        text = asyncio.run(read_feed(schedule.ical_url))
        return replace(schedule, calendar=calendar_shifts(text, schedule.zone, at))
    except CalendarError as exc:
        print(f"{name}: calendar not read ({exc}); fallback only", file=sys.stderr)
        return schedule


def _local(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def route_test(rules_path: str, pairs: list[str]) -> int:
    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            print(f"not a label: {pair!r}; write key=value", file=sys.stderr)
            return 2
        labels[name] = value
    rules = load_rules(rules_path)
    for route in rules.route_for(labels):
        print(f"{route.name}\tchat {route.config.chat_id}\t({route.source})")
    return 0


def sender_of(body: bytes) -> str:
    """Who sent a webhook body, by its top-level `version` field: Grafana sends "1",
    Alertmanager "4" (hand-written senders may send none: read as Alertmanager's)."""
    try:
        data = json.loads(body)
    except ValueError:
        return alertmanager.SOURCE  # its parser says what is wrong
    version = data.get("version") if isinstance(data, dict) else None
    return grafana.SOURCE if version == "1" else alertmanager.SOURCE


def render(payload_path: str, rules_path: str, source: str | None = None) -> int:
    rules = load_rules(rules_path)
    settings = Settings.from_environ()
    try:
        body = Path(payload_path).read_bytes()
        sender = source or sender_of(body)
        note = (grafana.parse if sender == grafana.SOURCE else alertmanager.parse)(body)
    except OSError as exc:
        print(f"cannot read {payload_path}: {exc.strerror}", file=sys.stderr)
        return 2
    except PayloadError as exc:
        print(f"{payload_path}: {exc.message}", file=sys.stderr)
        for detail in exc.details or []:
            print(f"  {detail}", file=sys.stderr)
        return 1
    options = RenderOptions(settings.timezone, settings.silence_sources, rules.schedules)
    for route in rules.route_for(note.labels_for_routing):
        transition = apply_notification(
            None,
            note,
            route=route.name,
            chat_id=route.config.chat_id,
            now=datetime.now(UTC),
            resolved_ttl=timedelta(0),
            new_ref="0123456789",
        )
        print(f"=== route {route.name} -> chat {route.config.chat_id}")
        if transition.incident is None:
            print("(nothing: a notification with no firing alert does not open an incident)")
            continue
        message = render_message(transition.incident, route.config, options)
        print(message.content)
        print("--- buttons")
        print(json.dumps(message.buttons, ensure_ascii=False, indent=1))
    return 0


async def dead_letters(replay: bool) -> int:
    """List the dead letters (one line each: when, incident, kind, Pachca's answer), or
    replay them: the running bridge delivers them again."""
    store = await _reading_store()
    if store is None:
        return 1
    try:
        if replay:
            count = await store.replay_dead_letters(time.time())
            print(f"{count} dead letters put back in the outbox")
            return 0
        letters = await store.dead_letters()
        for letter in letters:
            when = datetime.fromtimestamp(letter.failed_at, UTC).isoformat(timespec="seconds")
            print(f"{when}\tincident {letter.item.ref}\t{letter.item.kind}\t{letter.error}")
        print(f"{len(letters)} dead letters", file=sys.stderr)
        return 0
    finally:
        await store.close()


async def _reading_store() -> Store | None:
    """The store BRIDGE_STORE names, opened for reading; None (said) if it does not exist."""
    from bridge.store import store_from_settings

    settings = Settings.from_environ()
    missing = missing_state(settings.BRIDGE_STORE)
    if missing:
        print(missing, file=sys.stderr)
        return None
    store = store_from_settings(settings)
    await store.open()
    return store


async def list_incidents(only_open: bool, as_json: bool) -> int:
    """Firing incidents first, then resolved ones, the most recently changed first; printed a
    page at a time as read (a store of a hundred thousand incidents is never held at once)."""
    store = await _reading_store()
    if store is None:
        return 1
    seen: set[str] = set()  # one that changed state while listed comes once
    print("[" if as_json else "", end="")
    try:
        for firing in (True, False):
            async for page in changed_pages(store, firing, size=READ_PAGE):
                for _, stored in page:
                    i = stored.incident
                    if (only_open and i.finished) or i.ref in seen:
                        continue
                    if as_json:
                        print(("," if seen else "") + i.model_dump_json(), end="")
                    else:
                        firing_now = sum(a.status == "firing" for a in i.alerts.values())
                        print(
                            f"{i.ref}\t{i.state.value}\t{firing_now}/{len(i.alerts)}\t"
                            f"{i.route}\t{i.changed_at.isoformat(timespec='seconds')}\t"
                            f"{incident_title(i)}"
                        )
                    seen.add(i.ref)
    finally:
        await store.close()
    print("]" if as_json else "", end="\n" if as_json else "")
    return 0


async def show_incident(ref: str, as_json: bool) -> int:
    store = await _reading_store()
    if store is None:
        return 1
    try:
        stored = await store.load_by_ref(ref)
        events, dropped = await store.timeline(ref) if stored else ([], 0)
    finally:
        await store.close()
    if stored is None:
        print(f"no incident {ref} in the store", file=sys.stderr)
        return 1
    incident = stored.incident
    if as_json:
        print(json.dumps(incident_json(incident, events, dropped), ensure_ascii=False))
        return 0
    firing = sum(a.status == "firing" for a in incident.alerts.values())
    print(
        f"{incident.ref} {incident.state.value} {firing}/{len(incident.alerts)} firing · "
        f"{incident_title(incident)} · route {incident.route} · chat {incident.chat_id}"
    )
    if dropped:
        print(f"({dropped} older events dropped)")
    for event in events:
        when = datetime.fromtimestamp(event.at, UTC).isoformat(timespec="seconds")
        details = " ".join(
            f"{k}={v}" for k, v in event.details.items() if k not in ("op", "result")
        )
        head = event.kind
        if event.kind == "delivery":
            head = f"delivery {event.details.get('op')} {event.details.get('result')}"
        print(f"{when} {head} {details}".rstrip())
    return 0


def missing_state(store_url: str) -> str | None:
    """Why a command that reads the bridge's state must not go on (a SQLite file that does not
    exist would be created empty, and report "nothing" about the wrong place), or None."""
    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///"))
        if not path.is_file():
            return f"no state at {store_url} ({path.resolve()}): is this the right path?"
    return None


def unreachable(settings: Settings, exc: PachcaError) -> int:
    """No answer, or a 5xx/429: Pachca was not reached or not able. One line; exit 1."""
    print(
        f"Pachca at {settings.PACHCA_API_URL} (PACHCA_API_URL) cannot be reached: {exc}",
        file=sys.stderr,
    )
    return 1


async def register_webhook(disable: bool) -> int:
    """`PUT /bot/webhook` with the bot's own token: where Pachca sends button presses."""
    settings = Settings.from_environ()
    if settings.PACHCA_TOKEN is None:
        raise ConfigError(["PACHCA_TOKEN (or PACHCA_TOKEN_FILE) is required: the bot's token"])
    if not disable and settings.BRIDGE_PUBLIC_URL is None:
        raise ConfigError(
            [
                "BRIDGE_PUBLIC_URL is required: the bridge's address as Pachca "
                "reaches it, e.g. https://bridge.example.com"
            ]
        )
    url = "" if disable else f"{settings.BRIDGE_PUBLIC_URL}/pachca/webhook"
    client = client_from_settings(settings, Metrics())
    try:
        await client.set_webhook(url)
    except PachcaRequestError as exc:
        print(f"Pachca refused: {exc}", file=sys.stderr)
        return 1
    except PachcaError as exc:
        return unreachable(settings, exc)
    finally:
        await client.close()
    print(f"outgoing webhook URL set to {url!r}" if url else "outgoing webhook disabled")
    return 0


async def send_test(chat_id: int, rules_path: str | None) -> int:
    """Post the sample message to `chat_id`, then say what would keep buttons from working.
    Every failure is one plain sentence naming what to fix."""
    from bridge.sample import sample_message

    settings = Settings.from_environ()
    if settings.PACHCA_TOKEN is None:
        raise ConfigError(["PACHCA_TOKEN (or PACHCA_TOKEN_FILE) is required: the bot's token"])
    if rules_path:
        route = load_rules(rules_path).default.config.model_copy(update={"chat_id": chat_id})
    else:
        route = RouteConfig(name="send-test", chat_id=chat_id)
    options = RenderOptions(settings.timezone, settings.silence_sources)
    content, buttons = sample_message(route, options)
    client = client_from_settings(settings, Metrics())
    try:
        message_id = await client.create_message("discussion", chat_id, content, buttons)
    except PachcaAuthError as exc:
        print(f"Pachca refuses the bot token (PACHCA_TOKEN): {exc}", file=sys.stderr)
        return 1
    except PachcaRequestError as exc:
        print(
            f"the bot cannot post to chat {chat_id}: add the bot to that chat (its "
            f"settings, Members) and check the id. Pachca said: {exc}",
            file=sys.stderr,
        )
        return 1
    except PachcaError as exc:
        return unreachable(settings, exc)
    finally:
        await client.close()
    print(f"posted a sample message to chat {chat_id} (message {message_id}): token and chat OK")
    problems = callback_problems(settings)
    for problem in problems:
        print(f"buttons will not work: {problem}", file=sys.stderr)
    if not problems:
        where = (
            f"{settings.BRIDGE_PUBLIC_URL}/pachca/webhook"
            if settings.BRIDGE_CALLBACK_MODE == "webhook"
            else "the bot's event history (polling)"
        )
        print(
            f"now press a button on it: a running bridge, reached through {where}, answers by "
            "direct message; no answer means Pachca does not reach it"
        )
    return 1 if problems else 0


def callback_problems(settings: Settings) -> list[str]:
    """What in the settings keeps button presses from reaching the bridge, as sentences."""
    problems = []
    if settings.BRIDGE_CALLBACK_MODE == "webhook":
        if settings.BRIDGE_PUBLIC_URL is None:
            problems.append(
                "no callback URL: BRIDGE_PUBLIC_URL is not set, so the bot's outgoing webhook "
                "cannot point at this bridge; set it and run register-webhook (or use "
                "BRIDGE_CALLBACK_MODE=poll)"
            )
        if settings.PACHCA_SIGNING_SECRET is None:
            problems.append(
                "PACHCA_SIGNING_SECRET is not set: the bridge refuses every button press; copy "
                "it from the bot's Outgoing webhook tab"
            )
    return problems


def without_credentials(url: str) -> str:
    """A store URL fit for a log line: `redis://:secret@host` -> `redis://***@host`."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"


# The store's thread needs the GIL for a moment per call; with the default 5 ms switch
# interval a busy event loop keeps it waiting that long, several times per notification.
SWITCH_INTERVAL = 0.0005


def raise_open_file_limit() -> None:
    """Use all the file descriptors the system allows (the soft limit is often 1024): each
    connection holds one, and running out stops /healthz and intake alike."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# the collector's young generation: collected once 10,000 more objects were made than freed
# (Python's default: 700), its next after 20 of those passes (10). A request makes thousands of
# short-lived objects, so with the defaults a webhook often paid for a pass over the survivors
# of the ones before it. `python3 bench/storm.py --scale-from-store` on a 100,000-incident
# store, 15,000 new groups at 500/s, alternating: intake p99 8.64 / 8.25 / 8.09 / 7.99 ms with
# the defaults, 8.05 / 6.55 / 6.95 / 7.27 ms with these.
GC_THRESHOLDS = (10_000, 20, 10)


def serve(host: str, port: int | None, rules_path: str, dry_run: bool) -> int:
    from aiohttp import web

    from bridge.store import store_from_settings
    from bridge.store.redis import RedisStore, SharedRateLimiter
    from bridge.web.app import create_app

    settings = Settings.from_environ()
    setup_logging(settings.BRIDGE_LOG_LEVEL, settings.BRIDGE_LOG_FORMAT, settings.secret_values())
    rules = load_rules(rules_path)
    port = settings.BRIDGE_PORT if port is None else port
    metrics = Metrics()
    raise_open_file_limit()
    sys.setswitchinterval(SWITCH_INTERVAL)
    pachca: PachcaApi
    if dry_run or settings.PACHCA_TOKEN is None:
        why = "--dry-run" if dry_run else "PACHCA_TOKEN is not set"
        log.warning("%s: running dry, nothing is sent to Pachca; each call is logged", why)
        pachca = DryRunPachca()
    store = store_from_settings(settings)
    if not (dry_run or settings.PACHCA_TOKEN is None):
        # with several replicas (Redis), one pace for all of them
        limiter = (
            SharedRateLimiter(
                store, settings.PACHCA_RATE_LIMIT, settings.PACHCA_RATE_BURST, settings.rate_max
            )
            if isinstance(store, RedisStore)
            else None
        )
        pachca = client_from_settings(settings, metrics, limiter)
    app = create_app(settings, rules, store, pachca, metrics)
    log.info(
        "pachca-alert-bridge %s on %s:%d, %d routes, store %s, Pachca %s",
        __version__,
        host,
        port,
        len(rules.routes),
        without_credentials(settings.BRIDGE_STORE),
        "DRY RUN (nothing is sent)"
        if isinstance(pachca, DryRunPachca)
        else settings.PACHCA_API_URL,
    )
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's full passes, which otherwise stall every request for tens of milliseconds.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    # on SIGTERM: stop accepting, let in-flight requests finish, then the outbox's grace
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=10)
    return 0
