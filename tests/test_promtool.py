"""The chart's alerts on the bridge itself, checked and unit-tested by the real `promtool`
(Debian's `prometheus` package): each fires on its first failure and stays quiet otherwise."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_helm import by_kind, render

CASES = Path(__file__).resolve().parent / "promtool" / "bridge-rules.test.yaml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian package prometheus): .ci/run installs it")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def rendered_groups() -> list[dict[str, Any]]:
    (rule,) = by_kind(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    return list(rule["spec"]["groups"])


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_rendered_rules_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rendered_groups()}))
    result = run("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_on_its_first_failure_and_only_then(tmp_path: Path) -> None:
    groups = rendered_groups()
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # the cases test when, not the wording
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(CASES, tmp_path / CASES.name)
    result = run("test", "rules", CASES.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    # every alert has a case where it fires and one where it does not
    cases = yaml.safe_load(CASES.read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    fired = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert alerts == fired, alerts ^ fired
    assert alerts == quiet, alerts ^ quiet


def test_without_the_series_at_zero_the_first_dead_letter_would_never_alert(
    tmp_path: Path,
) -> None:
    """Why the bridge exports every watched counter at 0 from the start (see
    tests/test_helm.py): the same dead letter on a series born at 1 makes the case fail."""
    groups = rendered_groups()
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    cases = CASES.read_text()
    born_at_one = cases.replace("values: '0x5 1x20'", "values: '_x5 1x20'", 1)
    assert born_at_one != cases
    (tmp_path / CASES.name).write_text(born_at_one)
    result = run("test", "rules", CASES.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "PachcaBridgeDeliveriesFailing" in result.stdout + result.stderr
