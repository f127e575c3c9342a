"""Incident pages (SPEC 7, 9): the page of a fired-acked-resolved incident with its whole history,
the list filtered by a matcher, the JSON; every access mode, including forged and expired links;
and the page in a real headless Chromium at 360 px."""

import base64
import os
import re
import shutil
import tempfile
import time
from typing import Any
from unittest.mock import MagicMock

import pytest
from aiohttp.test_utils import make_mocked_request

from bridge.settings import Settings
from bridge.web.pages import UiAccess, link_token
from tests.conftest import Bridge, BridgeFactory
from tests.test_callbacks import ALICE, click_body, press

SECRET = "ui-signing-secret"
PUBLIC = "https://bridge.example.com"


async def fired_acked_resolved(bridge: Bridge) -> str:
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    await press(bridge, click_body(f"ack:{ref}"))
    await bridge.deliver()
    # Alertmanager made the silence a press asked for (the silencer's door into the inbox)
    from datetime import UTC, datetime, timedelta

    from bridge.web.state import INBOX

    until = datetime.now(UTC) + timedelta(hours=1)
    await bridge.app[INBOX].silence_created(ref, ALICE, "sil-1", until, "Алиса")
    await bridge.post_fixture("alertmanager/04-group-1-resolved-2-firing.json")
    await bridge.post_fixture("alertmanager/05-group-all-resolved.json")
    await bridge.deliver()
    return str(ref)


def signed(ref: str, expires: int | None = None) -> str:
    return link_token(SECRET, ref, expires)


async def test_the_page_shows_the_incident_and_its_whole_history_and_the_chat_links_it(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(BRIDGE_PUBLIC_URL=PUBLIC, BRIDGE_UI_SECRET=SECRET)
    ref = await fired_acked_resolved(bridge)
    # the message's Timeline button carries the signed link
    (message,) = bridge.fake.channel_messages()
    links = [b["url"] for row in message["buttons"] or [] for b in row if "url" in b]
    page_links = [u for u in links if "/incidents/" in u]
    # (resolved: no data buttons, but the history stays linked)
    assert page_links == [f"{PUBLIC}/incidents/{ref}?t={signed(ref)}"]
    response = await bridge.client.get(f"/incidents/{ref}", params={"t": signed(ref)})
    assert response.status == 200
    html = await response.text()
    assert "<script" not in html and response.headers["Cache-Control"] == "no-store"
    assert "DiskFull" in html and "решено" in html
    for what in ("opened", "fired", "acked", "resolved", "delivery"):
        assert re.search(rf"\b{what}\b", html) or what in html, what
    assert f"by: <code>Алиса Петрова (&lt;@{ALICE}&gt;)</code>" in html  # who acked, by name
    assert "silence_id: <code>sil-1</code>" in html and "via: <code>chat</code>" in html
    assert html.count('class="event"') >= 8  # opened, 3 fired, acked, 3 resolved, deliveries
    data = await (
        await bridge.client.get(f"/incidents/{ref}.json", params={"t": signed(ref)})
    ).json()
    assert data["ref"] == ref and data["state"] == "resolved"
    kinds = [e["kind"] for e in data["timeline"]]
    assert kinds[:2] == ["opened", "fired"] and "acked" in kinds and kinds.count("resolved") == 3
    assert "silenced" in kinds
    dm = [e for e in data["timeline"] if e["kind"] == "delivery" and e["op"] == "dm"]
    assert dm and dm[0]["result"] == "sent"  # the presser's answer, delivered


async def test_a_forged_expired_or_foreign_link_is_refused_and_says_nothing(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(
        BRIDGE_UI_SECRET=SECRET, BRIDGE_UI_LINK_TTL="1h", BRIDGE_UI_BASIC_AUTH="ops:pw"
    )
    ref = await fired_acked_resolved(bridge)
    later = int(time.time()) + 3600
    ok = await bridge.client.get(f"/incidents/{ref}", params={"t": signed(ref, later)})
    assert ok.status == 200
    for token in (
        signed(ref, int(time.time()) - 5),  # expired
        signed(ref),  # no expiry while links expire: not one the bridge made
        link_token("another-secret", ref, later),  # forged
        signed("0123456789", later),  # another incident's
        signed(ref, later)[:-3] + "abc",  # tampered
    ):
        for path in (f"/incidents/{ref}", f"/incidents/{ref}.json"):
            response = await bridge.client.get(path, params={"t": token})
            assert response.status == 403, token
            assert "DiskFull" not in await response.text()
    # no link and no credentials: 401
    response = await bridge.client.get(f"/incidents/{ref}")
    assert response.status == 401 and "DiskFull" not in await response.text()


async def test_basic_auth_guards_the_list_and_the_api(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_UI_BASIC_AUTH="ops:s3cret")
    await fired_acked_resolved(bridge)
    assert (await bridge.client.get("/incidents")).status == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ops:nope").decode()}
    assert (await bridge.client.get("/incidents", headers=wrong)).status == 401
    right = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
    listing = await bridge.client.get("/incidents", headers=right)
    assert listing.status == 200 and "DiskFull" in await listing.text()
    api = await bridge.client.get("/api/v1/incidents", headers=right)
    assert [i["state"] for i in (await api.json())["incidents"]] == ["resolved"]
    refused = await bridge.client.get("/api/v1/incidents")
    assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")


def request_from(peer: str, headers: dict[str, str] | None = None) -> Any:
    transport = MagicMock()
    transport.get_extra_info.return_value = (peer, 40000)
    return make_mocked_request("GET", "/incidents", headers=headers or {}, transport=transport)


def test_access_modes_decide_by_peer_header_and_credentials() -> None:
    nothing = UiAccess(Settings.from_environ({}))
    assert nothing.loopback_only
    assert nothing.person(request_from("127.0.0.1"))
    assert nothing.person(request_from("::1"))
    assert not nothing.person(request_from("10.1.2.3"))  # a first run on a laptop only
    proxy = UiAccess(
        Settings.from_environ(
            {"BRIDGE_UI_USER_HEADER": "X-Auth-Request-User", "BRIDGE_TRUSTED_PROXIES": "10.0.0.0/8"}
        )
    )
    assert proxy.person(request_from("10.1.2.3", {"X-Auth-Request-User": "alice"}))
    assert not proxy.person(request_from("10.1.2.3"))  # no user: not through the proxy
    assert not proxy.person(request_from("192.0.2.7", {"X-Auth-Request-User": "alice"}))
    assert not proxy.person(request_from("127.0.0.1"))  # loopback is no longer enough


async def test_the_list_filters_by_state_route_and_matcher(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()  # loopback only: the test client is on 127.0.0.1
    await fired_acked_resolved(bridge)
    await bridge.post_fixture("alertmanager/01-single-firing.json")
    html = await (await bridge.client.get("/incidents")).text()
    assert html.index("HighCPU") < html.index("DiskFull")  # open first
    db_only = await (await bridge.client.get("/incidents", params={"q": 'team="db"'})).text()
    assert "DiskFull" in db_only and "HighCPU" not in db_only
    open_only = await (await bridge.client.get("/incidents", params={"state": "open"})).text()
    assert "HighCPU" in open_only and "DiskFull" not in open_only
    bad = await bridge.client.get("/incidents", params={"q": "team=~("})
    assert bad.status == 200 and "q: " in await bad.text()
    api_bad = await bridge.client.get("/api/v1/incidents", params={"q": "team=~("})
    assert api_bad.status == 400
    assert (await bridge.client.get("/incidents/ffffffffff")).status == 404


def chromium_driver() -> Any:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromium-driver are missing: .ci/run installs them")
        pytest.skip("no chromium / chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=360,800"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver)
    return webdriver.Chrome(options=options, service=service)


async def test_the_page_in_a_real_browser_at_360px(make_bridge: BridgeFactory) -> None:
    import asyncio

    bridge = await make_bridge(BRIDGE_UI_SECRET=SECRET)
    ref = await fired_acked_resolved(bridge)
    url = str(bridge.client.make_url(f"/incidents/{ref}")) + f"?t={signed(ref)}"
    shots = tempfile.mkdtemp(prefix="incident-pages-")

    def look() -> dict[str, Any]:
        browser = chromium_driver()
        try:
            # a phone's viewport: headless windows do not go below 500 px wide
            browser.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True},
            )
            browser.get(url)
            assert browser.execute_script("return window.innerWidth") == 360
            found = {
                "title": browser.title,
                "overflow": browser.execute_script(
                    "return document.documentElement.scrollWidth - "
                    "document.documentElement.clientWidth"
                ),
                "events": len(browser.find_elements("css selector", "li.event")),
                "errors": [e for e in browser.get_log("browser") if e["level"] == "SEVERE"],
            }
            browser.save_screenshot(os.path.join(shots, "incident-360.png"))
            browser.get(str(bridge.client.make_url("/incidents")))  # loopback: the list opens
            found["rows"] = len(browser.find_elements("css selector", "a.row"))
            browser.save_screenshot(os.path.join(shots, "list-360.png"))
            browser.get(str(bridge.client.make_url("/incidents")) + '?q=team%3D"web"')
            found["filtered"] = len(browser.find_elements("css selector", "a.row"))
            browser.get(str(bridge.client.make_url("/stats")))
            found["bars"] = len(browser.find_elements("css selector", "svg rect"))
            found["stats_overflow"] = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            browser.save_screenshot(os.path.join(shots, "stats-360.png"))
            found["errors"] += [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            return found
        finally:
            browser.quit()

    found = await asyncio.to_thread(look)
    print(f"screenshots: {shots}")
    assert "DiskFull" in found["title"]
    assert found["overflow"] <= 0, "horizontal scroll at 360 px"
    assert found["events"] >= 8
    assert found["errors"] == []
    assert found["rows"] == 1 and found["filtered"] == 0  # the matcher filters
    assert found["bars"] >= 30 and found["stats_overflow"] <= 0


async def test_stats_per_route_with_a_chart(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await fired_acked_resolved(bridge)
    response = await bridge.client.get("/stats")
    assert response.status == 200
    html = await response.text()
    assert "databases" in html and "<svg" in html and "<script" not in html
    assert "7 дней" in html and "30 дней" in html and "DiskFull (1)" in html


def test_route_stats_count_days_and_times() -> None:
    from datetime import UTC, datetime, timedelta

    from bridge.model import IncidentState
    from bridge.stats import chart_svg, route_stats
    from tests.test_store_contract import incident

    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    acked = incident("a1", "k1").model_copy(
        update={
            "opened_at": now - timedelta(days=1),
            "acked_at": now - timedelta(days=1) + timedelta(minutes=4),
            "state": IncidentState.RESOLVED,
            "firing_since": now - timedelta(days=1),
            "changed_at": now - timedelta(days=1) + timedelta(minutes=30),
        }
    )
    open_one = incident("a2", "k2").model_copy(update={"opened_at": now - timedelta(hours=2)})
    old = incident("a3", "k3").model_copy(update={"opened_at": now - timedelta(days=20)})
    from bridge.briefs import Brief
    from bridge.model import Delivery
    from bridge.store import Stored

    held = [Brief.of(Stored(i.model_copy(update={"group_labels": {"alertname": "X"}}), Delivery()))
            for i in (acked, open_one, old)]  # fmt: skip
    week = route_stats(held, "default", now, 7)
    assert (week.opened, week.mtta, week.mttr) == (2, 240.0, 1800.0)
    assert [d.opened for d in week.series][-2:] == [1, 1] and len(week.series) == 7
    month = route_stats(held, "default", now, 30)
    assert month.opened == 3 and month.noisiest == [("X", 3)]
    svg = chart_svg(month.series)
    assert svg.startswith("<svg") and svg.count("<rect") == 30 and "polyline" in svg


async def test_direct_messages_and_alerts_answers_link_the_page(
    make_bridge: BridgeFactory,
) -> None:
    from bridge.unfurl import incident_for
    from tests.test_callbacks import dms
    from tests.test_oncall import command
    from tests.test_oncall import signed as signed_event

    bridge = await make_bridge(BRIDGE_PUBLIC_URL=PUBLIC, BRIDGE_UI_SECRET=SECRET)
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    response = await bridge.post_fixture("alertmanager/01-single-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    page = f"{PUBLIC}/incidents/{ref}?t={signed(ref)}"
    await press(bridge, click_body(f"ack:{ref}"))
    await signed_event(bridge, command("/alerts", message_id=77001))
    await bridge.deliver()
    assert dms(bridge, ALICE)[-1].endswith(f"[🕘 История]({page})")
    answer = bridge.fake.channel_messages()[-1]["content"]
    assert f"[🕘]({page})" in answer
    # and a preview for the link when it is shared
    held = [s.incident for s in await bridge.store.all_incidents()]
    found = incident_for(page, held, PUBLIC)
    assert found is not None and found.ref == ref
