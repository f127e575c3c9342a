"""The questions the silence check-back asks a real Alertmanager: its suppressed alerts
(`SUPPRESSED`), one group's alerts (`group_query`) and several groups' at once
(`groups_query`), with label values that need escaping in a matcher and in a regular
expression.
The same questions put to tests/fake_alertmanager.py get the same answers, so the tests that
use the stand-in hold for the real thing."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bridge.alertmanager_api import SUPPRESSED, AlertmanagerClient, group_query, groups_query
from tests.e2e.conftest import CONFIG, INTAKE_TOKEN, Alertmanager, AlertmanagerProcess
from tests.fake_alertmanager import FakeAlertmanager

INHIBITION = """
inhibit_rules:
  - source_matchers: [alertname="NodeDown"]
    target_matchers: [alertname="DiskFull"]
    equal: [instance]
"""

AWKWARD = [
    'say "hi"',
    "back\\slash",
    "two\nlines",
    "ünï cödé, {braces}=x",
    "a.b|c(d)*+?[e]^$",
    "a.b",  # the one above begins with it: each value is matched whole
]


def pushed(name: str, instance: str, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "instance": instance, **labels},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }


async def test_alertmanager_answers_the_check_backs_questions_as_the_stand_in_does(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    process = AlertmanagerProcess(tmp_path / "am")
    (process.folder / "alertmanager.yml").write_text(
        CONFIG.format(url="http://127.0.0.1:9/nowhere", token=INTAKE_TOKEN) + INHIBITION
    )
    await process.start(http)
    client = AlertmanagerClient(process.url, None)
    try:
        am = Alertmanager(process.url, http)
        await am.push(
            *(pushed("Odd", f"i{n}", team=value) for n, value in enumerate(AWKWARD)),
            pushed("Quiet", "q1"),  # silenced below
            pushed("NodeDown", "n1"),
            pushed("DiskFull", "n1"),  # inhibited by NodeDown on n1
            pushed("DiskFull", "n2"),  # active
        )
        await am.silence({"alertname": "Quiet"})
        every = await client.alerts()
        assert len(every) == len(AWKWARD) + 4

        def named(alerts: list[dict[str, Any]]) -> set[str]:
            return {a["fingerprint"] for a in alerts}

        real = await client.alerts(SUPPRESSED)
        full = await am.get("/api/v2/alerts")
        by_name = {(a["labels"]["alertname"], a["labels"]["instance"]): a for a in full}
        assert named(real) == {
            by_name["Quiet", "q1"]["fingerprint"],
            by_name["DiskFull", "n1"]["fingerprint"],
        }
        fake = FakeAlertmanager(alerts=full)
        assert named(real) == named(fake.answer(list(SUPPRESSED)))
        for n, value in enumerate(AWKWARD):
            query = list(group_query({"alertname": "Odd", "team": value}))
            answer = await client.alerts(query)
            assert named(answer) == {by_name["Odd", f"i{n}"]["fingerprint"]}, value
            assert named(answer) == named(fake.answer(query))
        assert named(await client.alerts(list(group_query({})))) == named(full)
        odd = [{"alertname": "Odd", "team": value} for value in AWKWARD]
        for some in (odd, odd[::2], odd[4:5], [odd[5], {"alertname": "DiskFull", "team": ""}]):
            query = list(groups_query(some))
            answer = await client.alerts(query)
            wanted = {
                by_name[g["alertname"], f"i{AWKWARD.index(g['team'])}"]["fingerprint"]
                for g in some
                if g["alertname"] == "Odd"
            }
            if any(g["alertname"] == "DiskFull" for g in some):  # no team label: ""
                wanted |= {by_name["DiskFull", n]["fingerprint"] for n in ("n1", "n2")}
            assert named(answer) == wanted, query
            assert named(answer) == named(fake.answer(query))
    finally:
        await client.close()
        process.stop()
