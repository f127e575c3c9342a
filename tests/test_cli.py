import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bridge.cli import main
from tests.conftest import FIXTURES

REPO = Path(__file__).resolve().parents[1]


def test_check_config_accepts_the_documented_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "rules")]) == 0
    assert "OK: 3 routes" in capsys.readouterr().out


def test_check_config_exits_1_listing_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "routes:\n  - {name: a, matchers: ['team=~\"(\"'], chat_id: 1}\n"
        "  - {name: b, matchers: ['team=\"x\"'], chat_id: 2}\n"
    )
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: route 'a': matchers:" in err
    assert f"{bad}:3: route 'b': the last route is the default" in err


def test_route_test_prints_routes_and_chats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route-test", str(REPO / "rules"), "team=db", "severity=critical"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("databases\tchat 1001")
    assert main(["route-test", str(REPO / "rules"), "team=web"]) == 0
    assert capsys.readouterr().out.startswith("default\tchat 1000")


def test_route_test_refuses_a_label_without_equals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route-test", str(REPO / "rules"), "team"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_render_prints_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    payload = FIXTURES / "alertmanager" / "02-group-3-firing.json"
    assert main(["render", str(payload), "--rules", str(REPO / "rules")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("=== route databases -> chat 1001\n🔴 **ГОРИТ**")
    buttons = json.loads(out.split("--- buttons\n", 1)[1])
    assert buttons[0][0]["data"] == "ack:0123456789"


def test_render_tells_the_sender_by_the_version_field_not_by_text_inside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An Alertmanager alert may carry a label `version="1"`; only the payload's own top-level
    `version` says Grafana ("1") or Alertmanager ("4")."""
    payload = json.loads((FIXTURES / "alertmanager" / "02-group-3-firing.json").read_text())
    for alert in payload["alerts"]:
        alert["labels"]["version"] = "1"
    payload["commonLabels"]["version"] = "1"
    path = tmp_path / "am.json"
    path.write_text(json.dumps(payload, indent=1))
    assert '"version": "1"' in path.read_text()
    assert main(["render", str(path), "--rules", str(REPO / "rules")]) == 0
    assert "🔴 **ГОРИТ**" in capsys.readouterr().out
    grafana = FIXTURES / "grafana" / "01-firing-two-alerts.json"
    assert main(["render", str(grafana), "--rules", str(REPO / "rules")]) == 0
    grafana_out = capsys.readouterr().out
    assert "**High memory usage**" in grafana_out and "📊 Дашборд" in grafana_out
    # --source decides when given: an Alertmanager body read as Grafana's is refused, naming why
    assert (
        main(["render", str(grafana), "--rules", str(REPO / "rules"), "--source", "grafana"]) == 0
    )
    assert capsys.readouterr().out == grafana_out
    code = main(["render", str(path), "--rules", str(REPO / "rules"), "--source", "grafana"])
    assert code == 1
    assert capsys.readouterr().err.startswith(f"{path}: ")


def test_render_refuses_a_bad_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "4"}')
    assert main(["render", str(bad), "--rules", str(REPO / "rules")]) == 1
    assert "alerts: Field required" in capsys.readouterr().err  # the rest is derived


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_run_command_serves_dry_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`pachca-alert-bridge serve --rules rules/ --dry-run`, as the README says, for real."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACHCA_", "BRIDGE_"))}
    env["BRIDGE_STORE"] = f"sqlite:///{tmp_path / 'state.db'}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--rules",
            "rules/",
            "--dry-run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        body = (FIXTURES / "alertmanager" / "01-single-firing.json").read_bytes()
        request = urllib.request.Request(
            base + "/webhook/alertmanager", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        time.sleep(1.5)  # the outbox delivers in the background
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "intake is OPEN" in output
    assert "dry-run: POST /messages" in output and "HighCPU" in output


def test_dead_letters_lists_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from bridge.store import NewOutboxItem, open_store
    from tests.test_store_contract import incident

    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def prepare() -> None:
        store = open_store(url)
        await store.open()
        await store.save_incident(incident(), None, [NewOutboxItem("create")], 1.0)
        (item,) = await store.due_items(1.0, 1)
        await store.dead_letter(item, "POST /messages: HTTP 422: entity_id: not found", 2.0)
        await store.close()

    asyncio.run(prepare())
    monkeypatch.setenv("BRIDGE_STORE", url)
    assert main(["dead-letters"]) == 0
    out, err = capsys.readouterr()
    assert "incident r1\tcreate\tPOST /messages: HTTP 422" in out and "1 dead letters" in err
    assert main(["dead-letters", "--replay"]) == 0
    assert "1 dead letters put back" in capsys.readouterr().out
    assert main(["dead-letters"]) == 0
    assert "0 dead letters" in capsys.readouterr().err

    async def outbox_depth() -> int:
        store = open_store(url)
        await store.open()
        depth = (await store.outbox_stats(10.0)).depth
        await store.close()
        return depth

    assert asyncio.run(outbox_depth()) == 1


def test_dead_letters_refuses_a_state_file_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in the path must not create an empty database (folders included) and report
    "0 dead letters" about the wrong place."""
    typo = tmp_path / "no-such-folder" / "stat.db"
    monkeypatch.setenv("BRIDGE_STORE", f"sqlite:///{typo}")
    assert main(["dead-letters"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"no state at sqlite:///{typo}") and "right path?" in err
    assert not typo.parent.exists()


def test_an_unreachable_redis_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_STORE", "redis://127.0.0.1:9/0")  # nothing listens on port 9
    assert main(["dead-letters"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("the store (BRIDGE_STORE) cannot be used: redis")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
