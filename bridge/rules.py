"""Routing rules from YAML: which chat(s) an incident goes to, and how its message looks there.

Loaded and validated once at start (and by `check-config`); every error names the file, the line,
the route and the field. After loading everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.durations import parse_duration
from bridge.errors import ConfigError
from bridge.incidents import Noise
from bridge.matchers import Matcher, MatcherSyntaxError, parse_matcher
from bridge.templating import route_template, where_it_failed
from bridge.zones import known_zone

MAX_SILENCE_BUTTONS = 3


def _mention_valid(text: str) -> bool:
    return (text.startswith("@") and len(text) > 1) or (
        text.startswith("<@") and text.endswith(">") and text[2:-1].isdigit()
    )


def _check_mentions(value: list[str]) -> list[str]:
    for text in value:
        if not _mention_valid(text):
            raise ValueError(f"mention {text!r} must be '@nickname' or '<@user_id>'")
    return value


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
        return parse_duration(self.after)


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
        return parse_duration(self.remind_every) if self.remind_every else None

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

    def matches(self, labels: Mapping[str, str]) -> bool:
        plain = dict(labels)
        return all(m.matches(plain) for m in self.matchers)


@dataclass(frozen=True)
class Rules:
    routes: tuple[Route, ...]

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
    for file in files:
        routes.extend(_load_file(file, problems))
    if routes or not problems:  # with every route invalid, "no routes" would only confuse
        problems.extend(_check_routes(routes))
    if problems:
        raise ConfigError(problems)
    return Rules(tuple(routes))


def _load_file(file: Path, problems: list[str]) -> Iterable[Route]:
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
        if key != "routes":
            problems.append(f"{file}:{_line(node, (key,))}: unknown top-level key {key!r}")
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
