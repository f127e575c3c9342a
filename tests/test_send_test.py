"""`send-test --chat ID`: one step that checks the bot's token, its membership of the chat and the
callback set-up, against the fake Pachca (requests validated against Pachca's OpenAPI), saying
plainly what failed."""

import asyncio
import socket
from typing import Any

import pytest

from bridge.cli import main
from tests.conftest import SIGNING_SECRET, Bridge
from tests.fake_pachca import FakePachca
from tests.test_callbacks import ALICE, click_body, dms, press

CHAT = 4321


@pytest.fixture
def pachca_env(fake_pachca: tuple[FakePachca, str], monkeypatch: pytest.MonkeyPatch) -> FakePachca:
    fake, url = fake_pachca
    monkeypatch.setenv("PACHCA_TOKEN", fake.token)
    monkeypatch.setenv("PACHCA_API_URL", url)
    monkeypatch.setenv("PACHCA_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "https://bridge.example.com")
    monkeypatch.setenv("PACHCA_TIMEOUT", "2s")
    return fake


async def run(*args: str) -> int:
    """`main` off the event loop (it runs its own)."""
    return await asyncio.to_thread(main, ["send-test", *args])


def posted(fake: FakePachca) -> list[dict[str, Any]]:
    return fake.channel_messages()


async def test_posts_a_sample_whose_buttons_answer_when_pressed(
    pachca_env: FakePachca, bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("--chat", str(CHAT), "--rules", "rules") == 0
    out = capsys.readouterr().out
    assert f"posted a sample message to chat {CHAT}" in out and "press a button" in out
    (message,) = posted(pachca_env)
    assert message["entity_id"] == CHAT
    assert "**" in message["content"] and "send-test" in message["content"]
    data = [b["data"] for row in message["buttons"] for b in row if "data" in b]
    assert data and all(d.startswith("test:") for d in data)
    # a press on it reaches a bridge and is answered by DM, changing nothing
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    response = await press(bridge, click_body(data[0]))
    assert response.status == 200
    await bridge.deliver()
    (answer,) = dms(bridge, ALICE)
    assert "кнопки работают" in answer
    assert bridge.fake.channel_messages() == [message]  # nothing posted or edited


async def test_a_refused_token_is_one_sentence(
    pachca_env: FakePachca, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PACHCA_TOKEN", "revoked")
    assert await run("--chat", str(CHAT)) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("Pachca refuses the bot token (PACHCA_TOKEN): ")
    assert posted(pachca_env) == []


async def test_a_chat_the_bot_is_not_in_is_named(
    pachca_env: FakePachca, capsys: pytest.CaptureFixture[str]
) -> None:
    pachca_env.member_of = {1000}
    assert await run("--chat", str(CHAT)) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"the bot cannot post to chat {CHAT}: add the bot to that chat")
    assert "Pachca said: " in line


async def test_pachca_unreachable_names_the_setting(
    pachca_env: FakePachca, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("PACHCA_API_URL", dead)
    assert await run("--chat", str(CHAT)) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"Pachca at {dead} (PACHCA_API_URL) cannot be reached: ")


async def test_a_callback_set_up_that_cannot_work_is_said_after_posting(
    pachca_env: FakePachca, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BRIDGE_PUBLIC_URL")
    monkeypatch.delenv("PACHCA_SIGNING_SECRET")
    assert await run("--chat", str(CHAT)) == 1
    out, err = capsys.readouterr()
    assert "posted a sample message" in out  # token and chat are fine
    lines = err.splitlines()
    assert any(line.startswith("buttons will not work: no callback URL") for line in lines)
    assert any("PACHCA_SIGNING_SECRET is not set" in line for line in lines)
    # polling needs neither
    monkeypatch.setenv("BRIDGE_CALLBACK_MODE", "poll")
    assert await run("--chat", str(CHAT)) == 0
    assert "event history (polling)" in capsys.readouterr().out


def test_send_test_needs_a_token(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("PACHCA_TOKEN", raising=False)
    assert main(["send-test", "--chat", "1"]) == 1
    assert "PACHCA_TOKEN" in capsys.readouterr().err
