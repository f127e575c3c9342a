from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.rules import load_rules

REPO_RULES = Path(__file__).resolve().parents[1] / "rules"


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    return caught.value.problems


def test_documented_example_is_valid() -> None:
    rules = load_rules(REPO_RULES)
    assert rules.default.name == "default"
    assert [r.name for r in rules.route_for({"team": "db", "severity": "critical"})] == [
        "databases"
    ]


def test_first_match_wins_and_continue_goes_on(tmp_path: Path) -> None:
    rules = load_rules(
        write(
            tmp_path,
            """
routes:
  - {name: a, matchers: ['team="db"'], chat_id: 1, continue: true}
  - {name: b, matchers: ['severity="critical"'], chat_id: 2}
  - {name: c, matchers: ['team="db"'], chat_id: 3}
  - {name: default, chat_id: 9}
""",
        )
    )
    assert [r.name for r in rules.route_for({"team": "db", "severity": "critical"})] == ["a", "b"]
    assert [r.name for r in rules.route_for({"team": "db"})] == ["a", "c"]
    assert [r.name for r in rules.route_for({"team": "web"})] == ["default"]


def test_directory_of_files_is_read_in_name_order(tmp_path: Path) -> None:
    write(
        tmp_path, "routes:\n  - {name: db, matchers: ['team=\"db\"'], chat_id: 1}\n", "10-db.yaml"
    )
    write(tmp_path, "routes:\n  - {name: default, chat_id: 9}\n", "90-default.yml")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [r.name for r in load_rules(tmp_path).routes] == ["db", "default"]


def test_errors_name_file_line_route_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """routes:
  - name: databases
    matchers: ['team="db"', 'severity=~"("']
    chat_id: 1001
  - name: web
    matchers: ['team="web"']
    chat_id: -5
    langauge: en
  - name: default
    chat_id: 1000
""",
    )
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:3: route 'databases': matchers:") and "invalid regex" in p
        for p in problems
    ), problems
    assert any(p.startswith(f"{path}:7: route 'web': chat_id:") for p in problems), problems
    assert any(
        p.startswith(f"{path}:8: route 'web': langauge:") and "Extra inputs" in p for p in problems
    ), problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "routes:\n  - {name: a, matchers: ['x=\"1\"'], chat_id: 1}\n",
            "the last route is the default",
        ),
        ("routes:\n  - {name: a, chat_id: 1}\n  - {name: b, chat_id: 2}\n", "can never match"),
        ("routes:\n  - {name: a, chat_id: 1}\n  - {name: a, chat_id: 2}\n", "name already used"),
        ("routes: []\n", "no routes defined"),
        ("routes:\n  - {name: a, chat_id: 1\n", "invalid YAML"),
        ("routs:\n  - {name: a, chat_id: 1}\n", "expected a mapping with a 'routes' list"),
        ("routes:\n  - {name: a, chat_id: 1}\nextra: 1\n", "unknown top-level key 'extra'"),
        ("routes:\n  - {chat_id: 1}\n", "name: Field required"),
        ("routes:\n  - {name: a, chat_id: 1, mentions: [bob]}\n", "must be '@nickname'"),
        ("routes:\n  - {name: a, chat_id: 1, silence_durations: [1h, 2h, 3h, 4h]}\n", "at most 3"),
        ("routes:\n  - {name: a, chat_id: 1, silence_durations: [soon]}\n", "not a duration"),
        ("routes:\n  - {name: a, chat_id: 1, language: de}\n", "'ru' or 'en'"),
    ],
)
def test_bad_rules_are_refused_with_a_reason(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(write(tmp_path, text))
    assert any(expected in p for p in problems), problems


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    assert "no such file" in problems_of(tmp_path / "nope.yaml")[0]
    assert "no *.yaml" in problems_of(tmp_path)[0]
