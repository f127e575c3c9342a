import io
import logging
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.logs import setup_logging
from bridge.settings import DEFAULT_PACHCA_API_URL, Settings
from tests.conftest import BridgeFactory


def test_defaults() -> None:
    settings = Settings.from_environ({})
    assert settings.PACHCA_API_URL == DEFAULT_PACHCA_API_URL
    assert settings.BRIDGE_STORE == "sqlite:///./bridge-state.db"
    assert settings.BRIDGE_MAX_BODY == 1024 * 1024
    assert settings.BRIDGE_RESOLVED_TTL == 3600
    assert settings.intake_open


@pytest.mark.parametrize(
    ("start", "most", "expected"),
    [
        ("40", None, 50.0),  # 1.5 x 40 = 60: past Pachca's documented 50/s, so 50
        ("20", None, 30.0),  # a token shared with others: 1.5 x its rate
        ("60", None, 60.0),  # told it may go faster: never below the starting rate
        ("40", "80", 80.0),  # PACHCA_RATE_MAX decides when set
        ("40", "20", 40.0),
    ],
)
def test_the_adaptive_pace_stops_at_pachcas_limit_unless_told(
    start: str, most: str | None, expected: float
) -> None:
    env = {"PACHCA_RATE_LIMIT": start, **({"PACHCA_RATE_MAX": most} if most else {})}
    assert Settings.from_environ(env).rate_max == expected


def test_durations_accept_human_forms() -> None:
    settings = Settings.from_environ({"BRIDGE_DEDUP_TTL": "1h30m", "BRIDGE_RESOLVED_TTL": "90"})
    assert settings.BRIDGE_DEDUP_TTL == 5400
    assert settings.BRIDGE_RESOLVED_TTL == 90


def test_secrets_come_from_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-a-file\n")
    settings = Settings.from_environ({"PACHCA_TOKEN_FILE": str(token)})
    assert settings.PACHCA_TOKEN is not None
    assert settings.PACHCA_TOKEN.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PACHCA_TOKEN": "a", "PACHCA_TOKEN_FILE": "/x"}, "both set"),
        ({"PACHCA_TOKEN_FILE": "/nonexistent/token"}, "PACHCA_TOKEN_FILE: cannot read"),
        ({"BRIDGE_WEBHOOK_BASIC_AUTH": "nocolon"}, "user:password"),
        ({"BRIDGE_TIMEZONE": "Mars/Olympus"}, "unknown time zone"),
        ({"BRIDGE_STORE": "postgres://x"}, "sqlite:///"),
        ({"PACHCA_API_URL": "api.pachca.com"}, "http"),
        ({"BRIDGE_MAX_BODY": "-1"}, "BRIDGE_MAX_BODY"),
        ({"BRIDGE_DEDUP_TTL": "soon"}, "not a duration"),
        ({"ALERTMANAGER_URL": "http://am-0:9093,am-1:9093"}, "'am-1:9093'"),
        ({"ALERTMANAGER_URL": "http://am:9093,http://am:9093/"}, "same URL twice"),
        ({"ALERTMANAGER_URL": "http://am:9093,"}, "ALERTMANAGER_URL"),
        ({"BRIDGE_ALERTMANAGER_SETTLE": "-1s"}, "BRIDGE_ALERTMANAGER_SETTLE"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(environ)
    assert expected in str(caught.value)


def test_every_settings_error_is_reported_at_once_and_empty_means_unset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(
            {
                "PACHCA_TOKEN_FILE": "/nonexistent/token",
                "BRIDGE_STORE": "postgres://x",
                "BRIDGE_DEDUP_TTL": "soon",
            }
        )
    text = str(caught.value)
    assert "PACHCA_TOKEN_FILE: cannot read" in text and "BRIDGE_STORE" in text
    assert "BRIDGE_DEDUP_TTL" in text
    token = tmp_path / "token"
    token.write_text("from-file\n")
    settings = Settings.from_environ({"PACHCA_TOKEN": "", "PACHCA_TOKEN_FILE": str(token)})
    assert settings.PACHCA_TOKEN is not None
    assert settings.PACHCA_TOKEN.get_secret_value() == "from-file"


def test_alertmanager_url_takes_the_replicas_of_one_cluster() -> None:
    settings = Settings.from_environ(
        {"ALERTMANAGER_URL": " http://am-0:9093/ , https://am-1.example:9093"}
    )
    assert settings.alertmanager_urls == ["http://am-0:9093", "https://am-1.example:9093"]
    assert Settings.from_environ({}).alertmanager_urls == []


async def test_no_secret_reaches_a_log_line(make_bridge: BridgeFactory) -> None:
    """Drive failures that log (refused intake, Pachca refusing the token) and read the output
    exactly as the configured handler writes it."""
    bridge = await make_bridge(
        BRIDGE_WEBHOOK_TOKEN="intake-secret-123", BRIDGE_WEBHOOK_BASIC_AUTH="am:basic-secret-456"
    )
    stream = io.StringIO()
    settings = Settings.from_environ(
        {
            "PACHCA_TOKEN": bridge.fake.token,
            "BRIDGE_WEBHOOK_TOKEN": "intake-secret-123",
            "BRIDGE_WEBHOOK_BASIC_AUTH": "am:basic-secret-456",
        }
    )
    setup_logging("DEBUG", "json", settings.secret_values())
    logging.getLogger().handlers[0].stream = stream  # type: ignore[attr-defined]
    try:
        await bridge.post(b"{}", headers={"Authorization": "Bearer intake-secret-123"})
        await bridge.post(b"{}", headers={"Authorization": "Bearer wrong"})
        bridge.fake.fail_next(
            401,
            body={
                "error": "invalid_token",
                "error_description": f"token {bridge.fake.token} revoked",
            },
        )
        from tests.conftest import fixture_bytes

        await bridge.post(
            fixture_bytes("alertmanager/01-single-firing.json"),
            headers={"Authorization": "Bearer intake-secret-123"},
        )
        await bridge.deliver()
        logging.getLogger("bridge.test").error("echo %s", "intake-secret-123 basic-secret-456")
    finally:
        logging.getLogger().handlers.clear()
    output = stream.getvalue()
    assert "revoked" in output and "***" in output  # the failures were logged...
    for secret in (bridge.fake.token, "intake-secret-123", "basic-secret-456"):
        assert secret not in output  # ...without their secrets


def test_a_password_in_the_store_url_is_a_secret_and_not_logged() -> None:
    from bridge.cli import without_credentials

    settings = Settings.from_environ({"BRIDGE_STORE": "redis://:hunter2-redis@redis:6379/0"})
    assert "hunter2-redis" in settings.secret_values()
    assert without_credentials(settings.BRIDGE_STORE) == "redis://***@redis:6379/0"
    assert without_credentials("sqlite:///./bridge-state.db") == "sqlite:///./bridge-state.db"
