"""Per-route shaping (SPEC 3): labels shown or hidden, and a route's own Jinja2 layout, sandboxed,
over documented variables with alert text already neutralised; check-config renders every
template against sample data and reports `file:line`; a template failing at runtime never loses
the message."""

import logging
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.render import render_message
from bridge.rules import RouteConfig, load_rules
from tests.pachca_markdown import kinds
from tests.test_render import UTC_OPTIONS, fixture_incident

FIXTURE = "alertmanager/02-group-3-firing.json"


def content(route: RouteConfig) -> str:
    return render_message(fixture_incident(FIXTURE), route, UTC_OPTIONS).content


def test_hide_labels_and_show_labels_shape_every_label_line() -> None:
    plain = content(RouteConfig(name="r", chat_id=1))
    assert "job: `node`" in plain and "instance: `db-1:9100`" in plain
    hidden = content(RouteConfig(name="r", chat_id=1, hide_labels=["job", "instance"]))
    assert "job:" not in hidden and "instance:" not in hidden and "team: `db`" in hidden
    only = content(RouteConfig(name="r", chat_id=1, show_labels=["instance"]))
    assert "instance: `db-1:9100`" in only and "job:" not in only and "team:" not in only


def rules_with(tmp_path: Path, template: str, name: str = "team.j2") -> Path:
    (tmp_path / name).write_text(template, encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"routes:\n  - name: default\n    chat_id: 1000\n    template: {name}\n", encoding="utf-8"
    )
    return rules


COMPACT = """{{ header }}
{% for alert in alerts %}{{ alert.icon }} {{ alert.title }} ({{ labels.team }})
{% endfor %}{{ mentions }}"""


def test_a_route_template_lays_the_message_out_with_everything_escaped(tmp_path: Path) -> None:
    rules = load_rules(rules_with(tmp_path, COMPACT))
    route = rules.default.config
    assert route.template == str(tmp_path / "team.j2")
    text = content(route)
    assert text.splitlines()[0].startswith("🔴 **ГОРИТ**")
    assert "🔥 DiskFull on db-1:9100 (db)" in text
    # alert text that looks like markup stays text inside a custom layout too
    evil = fixture_incident(FIXTURE)
    first = next(iter(evil.alerts.values()))
    evil_alert = first.model_copy(update={"annotations": {"summary": "*x* [a](http://e) @all"}})
    evil = evil.model_copy(update={"alerts": {**evil.alerts, first.fingerprint: evil_alert}})
    shown = render_message(evil, route, UTC_OPTIONS).content
    assert kinds(shown) == kinds(text)  # the template's bold header only


@pytest.mark.parametrize(
    ("template", "line", "what"),
    [
        ("{{ header }}\n{% for a in alerts %}\n{{ a.title }\n{% endfor %}", 3, "unexpected"),
        ("{{ header }}\n\n{{ no_such_variable }}", 3, "no_such_variable"),
        ("{{ header }}\n{{ header.__class__.__mro__ }}", 2, "unsafe"),
    ],
)
def test_check_config_reports_template_errors_at_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str, line: int, what: str
) -> None:
    rules = rules_with(tmp_path, template)
    assert main(["check-config", str(rules)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'team.j2'}:{line}: " in err, err
    assert what in err


def test_a_missing_template_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("routes:\n  - {name: default, chat_id: 1, template: gone.j2}\n")
    assert main(["check-config", str(rules)]) == 1
    assert "template gone.j2: no such file" in capsys.readouterr().err


def test_a_template_failing_at_runtime_falls_back_to_the_built_in_layout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # fine for the sample check-config renders; fails on an incident without a team label
    rules = load_rules(rules_with(tmp_path, "{{ header }} {{ labels.team.upper() }}"))
    route = rules.default.config
    incident = fixture_incident(FIXTURE)
    incident = incident.model_copy(
        update={
            "common_labels": {},
            "alerts": {
                fp: a.model_copy(update={"labels": {"alertname": "DiskFull"}})
                for fp, a in incident.alerts.items()
            },
        }
    )
    with caplog.at_level(logging.ERROR):
        text = render_message(incident, route, UTC_OPTIONS).content
    assert (
        text
        == render_message(incident, RouteConfig(name="default", chat_id=1000), UTC_OPTIONS).content
    )
    assert "template failed, built-in used" in caplog.text and "team.j2:1:" in caplog.text


def test_render_previews_a_route_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import FIXTURES

    rules = rules_with(tmp_path, COMPACT)
    assert main(["render", str(FIXTURES / FIXTURE), "--rules", str(rules)]) == 0
    assert "🔥 DiskFull on db-1:9100 (db)" in capsys.readouterr().out


def test_the_built_in_template_is_documented_as_an_example() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "## Templates" in readme and "bridge/templates/message.j2" in readme
    for variable in (
        "header",
        "state_line",
        "common_labels",
        "alerts",
        "hidden",
        "mentions",
        "state",
        "ref",
        "labels",
        "annotations",
        "long_links",
        "t",
    ):
        assert f"`{variable}`" in readme, variable
