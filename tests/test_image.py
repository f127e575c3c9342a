"""The container image as the Dockerfile builds it, checked without Docker: a pinned base, the
locked dependencies, no routing baked in, OCI labels; and its entrypoint, run from a virtualenv
built from requirements.lock the way the Dockerfile builds one, refuses to start without rules,
serves with them, answers its own healthcheck on BRIDGE_PORT and says when it stops."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
IMAGE_RULES = "/etc/pachca-alert-bridge/rules"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def one_text() -> str:
    return (REPO / "Dockerfile").read_text()


def one(keyword: str) -> str:
    (args,) = [a for k, a in instructions() if k == keyword]
    return args


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


def locked() -> dict[str, str]:
    pins = re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "requirements.lock").read_text(), re.MULTILINE
    )
    return {name.lower().replace("_", "-"): version for name, version in pins}


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_base_image_is_pinned_to_a_patch_release() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", one_text(), re.MULTILINE))
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", args["PYTHON_IMAGE"])
    for keyword, rest in instructions():
        if keyword == "FROM":
            assert rest.split()[0] == "${PYTHON_IMAGE}", rest


def test_no_routing_rules_are_baked_into_the_image() -> None:
    for keyword, rest in instructions():
        if keyword in ("COPY", "ADD"):
            assert "rules" not in rest.split()[0], rest


def test_image_has_oci_labels() -> None:
    labels = dict(re.findall(r"(org\.opencontainers\.image\.\w+)=\"([^\"]*)\"", one("LABEL")))
    for key in ("title", "description", "version", "revision", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key


def test_every_dependency_is_locked_and_installed_as_locked() -> None:
    """The Dockerfile and .ci/run install with requirements.lock as constraints: every direct
    dependency (runtime and test) has its pin, and this environment holds exactly those."""
    from importlib.metadata import version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + project["optional-dependencies"]["test"]
    pins = locked()
    for spec in direct:
        name = requirement_name(spec)
        assert name in pins, f"{name} is not in requirements.lock: refresh it (README)"
        assert version(name) == pins[name], (
            f"{name}: installed {version(name)}, locked {pins[name]}"
        )
    assert "--constraint requirements.lock" in one_text()
    assert "--constraint requirements.lock" in (REPO / ".ci" / "run").read_text()


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv built as the Dockerfile's build stage builds /opt/venv."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    build = [a for k, a in instructions() if k == "RUN" and "pip install" in a]
    assert build and "--constraint requirements.lock ." in build[0]
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--constraint", "requirements.lock", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def entrypoint(venv: Path, rules: str) -> list[str]:
    """ENTRYPOINT + CMD as the container runs them, the image's rules folder moved to `rules`."""
    command = json.loads(one("ENTRYPOINT")) + json.loads(one("CMD"))
    command[0] = str(venv / "bin" / command[0])
    return [rules if part == IMAGE_RULES else part for part in command]


def container_env(venv: Path, state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACHCA_", "BRIDGE_"))}
    env.update(image_env())
    env["PATH"] = f"{venv / 'bin'}:{os.environ['PATH']}"
    env["BRIDGE_STORE"] = f"sqlite:///{state / 'state.db'}"
    env.update(extra)
    return env


@pytest.mark.parametrize("rules_folder", ["empty", "missing"])
def test_the_image_refuses_to_start_without_rules_and_says_where_they_come_from(
    image_venv: Path, tmp_path: Path, rules_folder: str
) -> None:
    rules = tmp_path / "rules"
    if rules_folder == "empty":
        rules.mkdir()  # what the image has: the folder, nothing in it
    result = subprocess.run(
        entrypoint(image_venv, str(rules)),
        env=container_env(image_venv, tmp_path, PACHCA_TOKEN="a-real-token"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(rules) in result.stderr
    assert "mount your routing rules there" in result.stderr
    assert "Helm" in result.stderr and "README" in result.stderr
    assert not (tmp_path / "state.db").exists()  # nothing was started


@pytest.fixture
def running_image(image_venv: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    log = (tmp_path / "bridge.log").open("w")
    proc = subprocess.Popen(
        entrypoint(image_venv, str(REPO / "rules")),
        env=container_env(image_venv, tmp_path, BRIDGE_PORT=str(port), BRIDGE_SHUTDOWN_GRACE="2s"),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()


def healthcheck(venv: Path, port: int, state: Path) -> int:
    """The image's HEALTHCHECK command, run with the container's environment."""
    command = json.loads(one("HEALTHCHECK").split(" CMD ", 1)[1])
    command[0] = str(venv / "bin" / command[0])
    env = container_env(venv, state, BRIDGE_PORT=str(port))
    return subprocess.run(command, env=env, capture_output=True, timeout=10, check=False).returncode


def test_healthcheck_follows_the_port_and_sigterm_is_logged(
    running_image: tuple[subprocess.Popen[str], int], image_venv: Path, tmp_path: Path
) -> None:
    proc, port = running_image
    deadline = time.monotonic() + 30
    while healthcheck(image_venv, port, tmp_path) != 0:
        assert proc.poll() is None, (tmp_path / "bridge.log").read_text()
        assert time.monotonic() < deadline, (tmp_path / "bridge.log").read_text()
        time.sleep(0.2)
    assert healthcheck(image_venv, free_port(), tmp_path) != 0  # it asks that port, not 8080
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = (tmp_path / "bridge.log").read_text()
    assert f":{port}," in log  # the start line names the port
    assert "running dry" in log and "DRY RUN" in log  # no token: the log says so
    assert "stopping: delivering what is due" in log
    assert "stopped: 0 outbox items handled while stopping, 0 left for the next start" in log
