"""Routing rules from YAML: which chat(s) an incident goes to, and how its message looks there.

Loaded and validated once at start (and by `check-config`); every error names the file, the line,
the route and the field. After loading everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from jinja2 import TemplateError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bridge.durations import parse_duration, rule_seconds
from bridge.errors import ConfigError
from bridge.incidents import Noise
from bridge.matchers import Matcher, MatcherSyntaxError, parse_matcher
from bridge.schedules import (
    ONCALL_PREFIX,
    Override,
    Schedule,
    first_handoff,
    is_oncall,
    parse_handoff,
)
from bridge.templating import route_template, where_it_failed
from bridge.zones import known_zone

MAX_SILENCE_BUTTONS = 3


def _mention_valid(text: str) -> bool:
    return (text.startswith("@") and len(text) > 1) or (
        text.startswith("<@") and text.endswith(">") and text[2:-1].isdigit()
    )


def _check_mentions(value: list[str], schedules: bool = True) -> list[str]:
    for text in value:
        if schedules and is_oncall(text):
            if not _SCHEDULE_NAME.fullmatch(text.removeprefix(ONCALL_PREFIX)):
                raise ValueError(f"mention {text!r}: 'oncall:' must be followed by a schedule name")
        elif not _mention_valid(text):
            allowed = (
                "'@nickname', '<@user_id>' or 'oncall:<schedule>'"
                if schedules
                else ("'@nickname' or '<@user_id>'")
            )
            raise ValueError(f"mention {text!r} must be {allowed}")
    return value


_SCHEDULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LOCAL_TIME = "%Y-%m-%d %H:%M"


class RotationConfig(BaseModel):
    """`{every: 1w, handoff: "Mon 10:00", start: 2026-11-02}` (schedules.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: str
    handoff: str = "10:00"
    start: date

    @field_validator("every")
    @classmethod
    def _whole_days(cls, value: str) -> str:
        days = parse_duration(value) / 86400
        if days < 1 or days != int(days):
            raise ValueError(f"every {value!r} must be whole days, like 1d or 1w")
        return value

    @property
    def every_days(self) -> int:
        return int(parse_duration(self.every) // 86400)

    @model_validator(mode="after")
    def _handoff(self) -> RotationConfig:
        parse_handoff(self.handoff, self.every_days)
        return self


class OverrideConfig(BaseModel):
    """`{who: "<@103>", from: "2026-12-31 18:00", to: "2027-01-02 10:00"}`, local times."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    who: str | list[str]
    from_: str = Field(alias="from")
    to: str

    @field_validator("from_", "to")
    @classmethod
    def _local_time(cls, value: str) -> str:
        try:
            datetime.strptime(value, _LOCAL_TIME)
        except ValueError as exc:
            raise ValueError(f'{value!r} must be a local time like "2026-12-31 18:00"') from exc
        return value

    @property
    def people(self) -> list[str]:
        return [self.who] if isinstance(self.who, str) else list(self.who)

    @model_validator(mode="after")
    def _shape(self) -> OverrideConfig:
        _check_mentions(self.people, schedules=False)
        if self.to <= self.from_:
            raise ValueError(f"override of {self.who}: 'to' must be after 'from'")
        return self


class AnnounceConfig(BaseModel):
    """`{chat_id: 1001}`: each handoff is announced there, the incoming person told by DM."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chat_id: int = Field(gt=0)


class ScheduleConfig(BaseModel):
    """One on-call schedule as written in YAML (README "Schedules")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    timezone: str = "UTC"
    rotation: RotationConfig | None = None
    members: list[str] = []
    overrides: list[OverrideConfig] = []
    fallback: list[str] = []
    ical_url: str | None = None
    refresh: str | None = None
    announce: AnnounceConfig | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("members", "fallback")
    @classmethod
    def _people(cls, value: list[str]) -> list[str]:
        return _check_mentions(value, schedules=False)

    @field_validator("ical_url")
    @classmethod
    def _feed(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"ical_url {value!r} must be an http(s) URL of an iCalendar feed")
        return value

    @field_validator("refresh")
    @classmethod
    def _refresh(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < 60:
            raise ValueError(f"refresh {value!r} is shorter than a minute")
        return value

    @model_validator(mode="after")
    def _shape(self) -> ScheduleConfig:
        if self.ical_url is not None and (self.members or self.rotation):
            raise ValueError(
                "a calendar schedule (ical_url) takes its shifts from the calendar: "
                "no members or rotation"
            )
        if self.refresh is not None and self.ical_url is None:
            raise ValueError("refresh is for calendar schedules (ical_url)")
        if self.members and self.rotation is None:
            raise ValueError(
                'members need a rotation: {every: 1w, handoff: "Mon 10:00", start: ...}'
            )
        if self.rotation is not None and not self.members:
            raise ValueError("a rotation needs members")
        if not (self.members or self.overrides or self.fallback or self.ical_url):
            raise ValueError("a schedule needs members (with a rotation), overrides or a fallback")
        return self

    def build(self) -> Schedule:
        zone = ZoneInfo(self.timezone)
        rotation = self.rotation
        if rotation is not None:
            weekday, at = parse_handoff(rotation.handoff, rotation.every_days)
            first = first_handoff(rotation.start, weekday, at)
            every = rotation.every_days
        else:
            first, every = datetime.max - timedelta(days=1), 1  # never starts: overrides only

        def local(text: str) -> datetime:
            return datetime.strptime(text, _LOCAL_TIME).replace(tzinfo=zone)

        return Schedule(
            name=self.name,
            zone=zone,
            members=tuple(self.members),
            every_days=every,
            first_handoff=first,
            overrides=tuple(
                Override(tuple(o.people), local(o.from_), local(o.to)) for o in self.overrides
            ),
            fallback=tuple(self.fallback),
            announce_chat=self.announce.chat_id if self.announce else None,
            ical_url=self.ical_url,
            refresh_seconds=parse_duration(self.refresh) if self.refresh else 600.0,
        )


class EscalationStep(BaseModel):
    """`{after: 15m, mention: ["@lead"], chat_id: 2000}`: while the incident fires unacked,
    this long after it started, mention these people (and post to another chat)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: str
    mention: list[str] = []
    chat_id: int | None = Field(default=None, gt=0)

    @field_validator("after")
    @classmethod
    def _after(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("mention")
    @classmethod
    def _mentions(cls, value: list[str]) -> list[str]:
        return _check_mentions(value)

    @property
    def after_seconds(self) -> float:
        return rule_seconds(self.after)


class DigestConfig(BaseModel):
    """`{at: "09:00", timezone: "Europe/Moscow"}`: a daily summary to the route's chat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return known_zone(value)


class RouteConfig(BaseModel):
    """One route as written in YAML (documented in rules/example.yaml)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(min_length=1, max_length=100)
    matchers: list[str] = []
    chat_id: int = Field(gt=0)
    continue_: bool = Field(default=False, alias="continue")
    language: Literal["ru", "en"] = "ru"
    max_alerts: int = Field(default=10, ge=1, le=100)
    mentions: list[str] = []
    display_name: str | None = Field(default=None, min_length=1, max_length=255)
    display_avatar_url: str | None = Field(default=None, max_length=255)
    silence_durations: list[str] = Field(
        default=["1h", "4h", "24h"], max_length=MAX_SILENCE_BUTTONS
    )
    allowed_users: list[int] | None = None
    remind_every: str | None = None
    escalation: list[EscalationStep] = []
    digest: DigestConfig | None = None
    # a re-open after being resolved this long also replies to the message in the chat
    # ("off": never)
    # what the message shows: only these labels (None: all), never these
    show_labels: list[str] | None = None
    hide_labels: list[str] = []
    # the route's own message layout, a Jinja2 file (README "Templates"), relative to the
    # rules file; None: the built-in one
    template: str | None = None
    reopen_notice_after: str = "10m"
    flap_threshold: int = Field(default=3, ge=1, le=1000)  # re-fires within flap_window
    flap_window: str = "10m"

    @field_validator("reopen_notice_after")
    @classmethod
    def _reopen_notice(cls, value: str) -> str:
        if value != "off":
            parse_duration(value)  # raises ValueError naming the accepted forms
        return value

    @field_validator("flap_window")
    @classmethod
    def _flap_window(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("flap_window must be longer than zero")
        return value

    @property
    def all_mentions(self) -> list[str]:
        """Every mention the route may make: its own and its escalation steps'."""
        return [*self.mentions, *(m for step in self.escalation for m in step.mention)]

    @property
    def noise(self) -> Noise:
        """This route's rules for what fires again (incidents.Noise)."""
        notice = self.reopen_notice_after
        return Noise(
            reopen_notice_after=None if notice == "off" else seconds(notice),
            flap_threshold=self.flap_threshold,
            flap_window=seconds(self.flap_window),
        )

    @field_validator("remind_every")
    @classmethod
    def _remind_every(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < 60:
            raise ValueError(f"remind_every {value!r} is shorter than a minute")
        return value

    @property
    def remind_seconds(self) -> float | None:
        return rule_seconds(self.remind_every) if self.remind_every else None

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            try:
                parse_matcher(text)
            except MatcherSyntaxError as exc:
                raise ValueError(f"matcher {i + 1} {text!r}: {exc}") from exc
        return value

    @field_validator("silence_durations")
    @classmethod
    def _durations_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            if parse_duration(text) <= 0:
                raise ValueError(f"silence duration {text!r} must be longer than zero")
        return value

    @field_validator("mentions")
    @classmethod
    def _mentions_shape(cls, value: list[str]) -> list[str]:
        return _check_mentions(value)


def seconds(duration: str) -> timedelta:
    return timedelta(seconds=parse_duration(duration))


@dataclass(frozen=True)
class Route:
    """A validated route with its matchers compiled."""

    config: RouteConfig
    matchers: tuple[Matcher, ...]
    source: str  # "file:line", for messages about this route

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def noise(self) -> Noise:
        """`config.noise`, parsed once (it is read for every notification)."""
        return self.config.noise

    def matches(self, labels: Mapping[str, str]) -> bool:
        plain = dict(labels)
        return all(m.matches(plain) for m in self.matchers)


@dataclass(frozen=True)
class Rules:
    routes: tuple[Route, ...]
    schedules: Mapping[str, Schedule] = field(default_factory=dict)

    @property
    def default(self) -> Route:
        return self.routes[-1]

    def route_for(self, labels: Mapping[str, str]) -> list[Route]:
        """Routes that receive an alert with these labels: first match, more with `continue`."""
        chosen: list[Route] = []
        for route in self.routes:
            if route.matches(labels):
                chosen.append(route)
                if not route.config.continue_:
                    break
        return chosen or [self.default]

    def schedules_in_chat(self, chat_id: int) -> list[str]:
        """The schedules the routes posting to this chat call, in the order they appear."""
        names: dict[str, None] = {}
        for route in self.routes:
            if route.config.chat_id == chat_id:
                for mention in route.config.all_mentions:
                    if is_oncall(mention):
                        names[mention.removeprefix(ONCALL_PREFIX)] = None
        return list(names)

    def routes_calling(self, schedule: str) -> list[Route]:
        """The routes whose mentions (or escalation steps') call this schedule."""
        wanted = ONCALL_PREFIX + schedule
        return [r for r in self.routes if wanted in r.config.all_mentions]

    def by_name(self, name: str) -> Route:
        """The route called `name`, or the default one if the rules no longer have it."""
        return next((r for r in self.routes if r.name == name), self.default)


# Nothing routes alerts by default (an example shipped as the default would post to its example
# chats): a start without rules says where they come from.
WHERE_RULES_COME_FROM = (
    "mount your routing rules there (Helm: the chart's `rules` value; Docker: "
    '-v $PWD/rules:/etc/pachca-alert-bridge/rules:ro); README "Rules" explains them and '
    "rules/example.yaml is a start"
)


def rule_files(path: Path) -> list[Path]:
    """A YAML file, or every *.yaml/*.yml directly in a directory, in name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def load_rules(path: str | Path) -> Rules:
    """Load and validate all rules under `path`; raises ConfigError listing every problem."""
    root = Path(path)
    if not root.exists():
        raise ConfigError([f"{root}: no such file or directory; {WHERE_RULES_COME_FROM}"])
    files = rule_files(root)
    if not files:
        raise ConfigError(
            [f"{root}: no *.yaml or *.yml files with routes; {WHERE_RULES_COME_FROM}"]
        )
    problems: list[str] = []
    routes: list[Route] = []
    schedules: dict[str, Schedule] = {}
    named: set[str] = set()  # schedule names written, valid or not (no knock-on errors)
    for file in files:
        routes.extend(_load_file(file, problems, schedules, named))
    if routes or not problems:  # with every route invalid, "no routes" would only confuse
        problems.extend(_check_routes(routes))
        problems.extend(_check_oncall(routes, named))
    if problems:
        raise ConfigError(problems)
    return Rules(tuple(routes), schedules)


def _check_oncall(routes: list[Route], schedules: set[str]) -> list[str]:
    """Every `oncall:<name>` a route mentions names a schedule the rules define."""
    problems = []
    for route in routes:
        said = [*route.config.mentions, *(m for s in route.config.escalation for m in s.mention)]
        for mention in dict.fromkeys(said):
            if is_oncall(mention) and mention.removeprefix(ONCALL_PREFIX) not in schedules:
                problems.append(
                    f"{route.source}: route {route.name!r}: {mention!r}: no schedule named "
                    f"{mention.removeprefix(ONCALL_PREFIX)!r} (define it under 'schedules:')"
                )
    return problems


def _load_file(
    file: Path, problems: list[str], schedules: dict[str, Schedule], named: set[str]
) -> Iterable[Route]:
    try:
        text = file.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{file}: cannot read: {exc}")
        return []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        problems.append(f"{where}: invalid YAML: {exc.problem}")
        return []
    if not isinstance(data, dict) or not isinstance(data.get("routes"), list):
        problems.append(f"{file}:1: expected a mapping with a 'routes' list")
        return []
    for key in data:
        if key not in ("routes", "schedules"):
            problems.append(f"{file}:{_line(node, (key,))}: unknown top-level key {key!r}")
    _load_schedules(file, node, data.get("schedules"), problems, schedules, named)
    routes = []
    for index, raw in enumerate(data["routes"]):
        where = f"{file}:{_line(node, ('routes', index))}"
        label = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            config = RouteConfig.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = ("routes", index, *err["loc"])
                field = ".".join(str(p) for p in err["loc"]) or "(route)"
                message = err["msg"].removeprefix("Value error, ")
                problems.append(f"{file}:{_line(node, loc)}: route {label!r}: {field}: {message}")
            continue
        if config.template is not None:
            path = (file.parent / config.template).resolve()
            if not path.is_file():
                problems.append(
                    f"{where}: route {label!r}: template {config.template}: no such file"
                )
                continue
            try:
                route_template(str(path))
            except TemplateError as exc:
                problems.append(
                    f"{where}: route {label!r}: template {where_it_failed(exc, str(path))}"
                )
                continue
            config = config.model_copy(update={"template": str(path)})
        matchers = tuple(parse_matcher(m) for m in config.matchers)
        routes.append(Route(config, matchers, where))
    return routes


def _load_schedules(
    file: Path,
    node: yaml.Node | None,
    raw_list: Any,
    problems: list[str],
    schedules: dict[str, Schedule],
    named: set[str],
) -> None:
    if raw_list is None:
        return
    if not isinstance(raw_list, list):
        problems.append(f"{file}:{_line(node, ('schedules',))}: 'schedules' must be a list")
        return
    for index, raw in enumerate(raw_list):
        where = f"{file}:{_line(node, ('schedules', index))}"
        label = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        named.add(str(label))
        try:
            config = ScheduleConfig.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = ("schedules", index, *err["loc"])
                field_name = ".".join(str(p) for p in err["loc"]) or "(schedule)"
                message = err["msg"].removeprefix("Value error, ")
                problems.append(
                    f"{file}:{_line(node, loc)}: schedule {label!r}: {field_name}: {message}"
                )
            continue
        if config.name in schedules:
            problems.append(f"{where}: schedule {config.name!r}: name already used")
            continue
        schedules[config.name] = config.build()


def _check_routes(routes: list[Route]) -> list[str]:
    problems = []
    if not routes:
        return ["no routes defined; at least a default route (one without matchers) is required"]
    seen: dict[str, Route] = {}
    for route in routes:
        if route.name in seen:
            problems.append(
                f"{route.source}: route {route.name!r}: "
                f"name already used at {seen[route.name].source}"
            )
        seen[route.name] = route
    for route in routes[:-1]:
        if not route.matchers and not route.config.continue_:
            problems.append(
                f"{route.source}: route {route.name!r}: has no matchers, so it matches everything "
                "and the routes after it can never match; move it last or add matchers"
            )
    if routes[-1].matchers:
        problems.append(
            f"{routes[-1].source}: route {routes[-1].name!r}: the last route is the default and "
            "must have no matchers; add a final route with only a name and chat_id"
        )
    return problems


def _line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """1-based line of the deepest YAML node on the path `loc` (keys and list indexes)."""
    best = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            key = "continue" if part == "continue_" else part
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        best = node.start_mark.line + 1
    return best
