"""On-call schedules: rotation arithmetic on a controllable clock (DST included), overrides and
fallback, the rules' checks with file:line, and `oncall:<schedule>` mentions resolved to whoever
is on duty when the message or comment is produced."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.cli import main
from bridge.errors import ConfigError
from bridge.rules import load_rules
from bridge.schedules import Override, Schedule, first_handoff, parse_handoff, resolve_mentions
from tests.conftest import BridgeFactory

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
A, B, C = "<@101>", "@petrov", "<@103>"


def weekly(zone: ZoneInfo = BERLIN, start: date = date(2026, 11, 2), **extra: object) -> Schedule:
    weekday, at = parse_handoff("Mon 10:00", 7)
    return Schedule(
        "dba",
        zone,
        (A, B, C),
        7,
        first_handoff(start, weekday, at),
        **extra,  # type: ignore[arg-type]
    )


def daily(zone: ZoneInfo, start: date) -> Schedule:
    weekday, at = parse_handoff("10:00", 1)
    return Schedule("d", zone, (A, B), 1, first_handoff(start, weekday, at))


def local(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone)  # type: ignore[misc]


def test_weekly_rotation_hands_off_on_monday_at_ten_local() -> None:
    s = weekly()
    assert s.on_duty(local(BERLIN, 2026, 11, 2, 9, 59)) == ()  # not started: no fallback set
    assert s.on_duty(local(BERLIN, 2026, 11, 2, 10, 0)) == (A,)
    assert s.on_duty(local(BERLIN, 2026, 11, 9, 9, 59)) == (A,)
    assert s.on_duty(local(BERLIN, 2026, 11, 9, 10, 0)) == (B,)
    assert s.on_duty(local(BERLIN, 2026, 11, 16, 10, 0)) == (C,)
    assert s.on_duty(local(BERLIN, 2026, 11, 23, 10, 0)) == (A,)  # round again
    # a start that is not a Monday: the first handoff is the Monday after
    late = weekly(start=date(2026, 11, 4))
    assert late.on_duty(local(BERLIN, 2026, 11, 8, 12, 0)) == ()
    assert late.on_duty(local(BERLIN, 2026, 11, 9, 10, 0)) == (A,)


@pytest.mark.parametrize(
    ("zone", "before_change", "after_change"),
    [
        # Europe/Berlin: summer time ends 2026-10-25, begins 2027-03-28
        (BERLIN, date(2026, 10, 24), date(2026, 10, 26)),
        (BERLIN, date(2027, 3, 27), date(2027, 3, 29)),
        # America/New_York: ends 2026-11-01, begins 2027-03-14
        (NEW_YORK, date(2026, 10, 31), date(2026, 11, 2)),
        (NEW_YORK, date(2027, 3, 13), date(2027, 3, 15)),
    ],
)
def test_handoffs_stay_at_ten_local_across_daylight_saving_changes(
    zone: ZoneInfo, before_change: date, after_change: date
) -> None:
    s = daily(zone, before_change)
    day = before_change
    while day <= after_change:
        ten = datetime(day.year, day.month, day.day, 10, 0, tzinfo=zone)
        index = (day - before_change).days
        assert s.on_duty(ten) == ((A, B)[index % 2],), day
        assert s.on_duty(ten - timedelta(minutes=1)) == (
            () if index == 0 else ((A, B)[(index - 1) % 2],)
        )
        day += timedelta(days=1)
    # the shift over the change is 23 or 25 hours long: the wall clock decides
    shifts = s.shifts(
        datetime(before_change.year, before_change.month, before_change.day, 10, tzinfo=zone),
        datetime(after_change.year, after_change.month, after_change.day, 10, tzinfo=zone),
    )
    hours = timedelta(hours=1)  # (aware times in one zone subtract as wall clock: use UTC)
    lengths = sorted(
        (end.astimezone(UTC) - begin.astimezone(UTC)) / hours for begin, end, _ in shifts
    )
    assert lengths[0] != lengths[-1] and {23.0, 25.0} & set(lengths)


def test_overrides_win_over_the_rotation_and_fallback_covers_nobody() -> None:
    swap = Override((B,), local(BERLIN, 2026, 12, 31, 18, 0), local(BERLIN, 2027, 1, 2, 10, 0))
    s = weekly(overrides=(swap,), fallback=("@dba_lead",))
    assert s.on_duty(local(BERLIN, 2026, 12, 31, 17, 59)) == (C,)  # the rotation's week
    assert s.on_duty(local(BERLIN, 2026, 12, 31, 18, 0)) == (B,)
    assert s.on_duty(local(BERLIN, 2027, 1, 2, 9, 59)) == (B,)
    assert s.on_duty(local(BERLIN, 2027, 1, 2, 10, 0)) == (C,)  # back to the rotation
    assert s.on_duty(local(BERLIN, 2026, 11, 1, 12, 0)) == ("@dba_lead",)  # before the start


def test_oncall_mentions_resolve_to_who_is_on_duty_without_repeats() -> None:
    s = weekly()
    at = local(BERLIN, 2026, 11, 10, 3, 0)
    assert resolve_mentions(["oncall:dba", "@lead", B], {"dba": s}, at) == [B, "@lead"]
    assert resolve_mentions(["oncall:gone"], {}, at) == []


RULES = """
schedules:
  - name: dba
    timezone: Europe/Moscow
    rotation: {every: 1w, handoff: "Mon 10:00", start: 2026-11-02}
    members: ["<@101>", "@petrov", "<@103>"]
    overrides:
      - {who: "<@103>", from: "2026-12-31 18:00", to: "2027-01-02 10:00"}
    fallback: ["@dba_lead"]
routes:
  - name: databases
    matchers: ['team="db"']
    chat_id: 1001
    mentions: ["oncall:dba"]
    remind_every: 30m
    escalation:
      - {after: 15m, mention: ["oncall:dba", "@cto"]}
  - name: default
    chat_id: 1000
"""


def test_the_documented_schedule_loads(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    rules = load_rules(tmp_path)
    dba = rules.schedules["dba"]
    assert dba.on_duty(datetime(2026, 11, 9, 7, 0, tzinfo=UTC)) == ("@petrov",)  # 10:00 MSK


@pytest.mark.parametrize(
    ("change", "line", "says"),
    [
        (('"Mon 10:00"', '"Mon 25:00"'), 5, "handoff"),
        (("every: 1w", "every: 90m"), 5, "whole days"),
        (("timezone: Europe/Moscow", "timezone: Mars/Olympus"), 4, "unknown time zone"),
        (('["oncall:dba"]', '["oncall:dbb"]'), 11, "no schedule named 'dbb'"),
        (('"<@103>", from', '"nobody", from'), 8, "must be '@nickname' or '<@user_id>'"),
        (('to: "2027-01-02 10:00"', 'to: "2026-01-02 10:00"'), 8, "'to' must be after 'from'"),
        (
            ("    fallback:", "    ical_url: ftp://x/cal.ics\n    fallback:"),
            9,
            "must be an http(s) URL",
        ),
    ],
)
def test_schedule_mistakes_are_config_errors_with_their_line(
    tmp_path: Path, change: tuple[str, str], line: int, says: str
) -> None:
    text = RULES.replace(*change)
    assert text != RULES
    (tmp_path / "rules.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_rules(tmp_path)
    problems = "\n".join(caught.value.problems)
    assert says in problems, problems
    assert f"rules.yaml:{line}:" in problems, problems


def test_cli_prints_who_is_on_duty_and_the_next_shifts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    swapped = RULES.replace('{who: "<@103>", from', '{who: "@petrov", from')
    (tmp_path / "rules.yaml").write_text(swapped)
    assert main(["oncall", str(tmp_path), "--at", "2026-12-31T12:00:00+03:00", "--days", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "dba (Europe/Moscow): now <@103>",
        "  2026-12-31 12:00 – 2026-12-31 18:00  <@103>",
        "  2026-12-31 18:00 – 2027-01-02 10:00  @petrov",
        "  2027-01-02 10:00 – 2027-01-03 12:00  <@103>",
    ]
    assert main(["oncall", str(tmp_path), "--at", "2026-12-31 12:00"]) == 2  # no UTC offset


SWAP_RULES = """
schedules:
  - name: dba
    rotation: {every: 1d, handoff: "10:00", start: 2026-11-01}
    members: ["<@101>", "@petrov"]
routes:
  - name: databases
    matchers: ['team="db"']
    chat_id: 1001
    mentions: ["oncall:dba"]
    escalation:
      - {after: 15m, mention: ["oncall:dba"]}
  - name: default
    chat_id: 1000
"""


async def test_end_to_end_the_person_on_duty_is_called_and_the_next_after_the_handoff(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    from bridge.scheduler import Scheduler
    from bridge.web.state import INBOX, OUTBOX, RULES, STORE

    reminded = SWAP_RULES.replace(
        """    escalation:
      - {after: 15m, mention: ["oncall:dba"]}""",
        "    remind_every: 1h",
    )
    assert reminded != SWAP_RULES
    (tmp_path / "rules.yaml").write_text(reminded)
    clock = {"now": datetime(2026, 11, 10, 9, 0, tzinfo=UTC)}  # day 9 of the rota: <@101>
    bridge = await make_bridge(rules_override=load_rules(tmp_path))
    bridge.app[INBOX].clock = lambda: clock["now"]
    bridge.app[OUTBOX].clock = lambda: clock["now"].timestamp()
    await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert message["content"].endswith("<@101>")
    # past the 10:00 handoff and the hourly reminder: the reminder calls the next person
    clock["now"] = datetime(2026, 11, 10, 10, 5, tzinfo=UTC)
    scheduler = Scheduler(
        bridge.app[STORE], bridge.app[INBOX], bridge.app[RULES], clock=lambda: clock["now"]
    )
    await scheduler.tick()
    await bridge.deliver()
    (reminder,) = bridge.fake.thread_comments(message["id"])
    assert reminder.endswith("@petrov") and "<@101>" not in reminder
    # the timeline says whom each call reached: the message's when it was sent, the reminder's
    ref = await bridge.store.find_by_message(message["id"])
    assert ref is not None
    events, _ = await bridge.store.timeline(ref)
    create = next(e for e in events if e.kind == "delivery" and e.details["op"] == "create")
    assert create.details["called"] == "oncall:dba=<@101>"
    calls = [dict(e.details) for e in events if e.kind == "called"]
    assert calls == [{"mention": "oncall:dba", "who": ["@petrov"]}]


async def test_swaps_from_the_chat_change_who_is_called(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    import json
    import time as clock_time

    from bridge.scheduler import Scheduler
    from bridge.web.state import EVENTS, INBOX, OUTBOX, RULES, STORE
    from tests.conftest import fixture_json
    from tests.test_oncall import signed

    (tmp_path / "rules.yaml").write_text(SWAP_RULES)
    clock = {"now": datetime(2026, 11, 10, 9, 0, tzinfo=UTC)}  # <@101> on duty until 10:00
    bridge = await make_bridge(rules_override=load_rules(tmp_path))
    bridge.app[INBOX].clock = lambda: clock["now"]
    bridge.app[OUTBOX].clock = lambda: clock["now"].timestamp()
    bridge.app[EVENTS].clock = lambda: clock["now"]
    bridge.fake.add_user(303, "Пётр", "Петров", "petrov")
    bridge.fake.add_user(4242, "Bob", "Smith", "bob")
    said = iter(range(70000, 71000))

    async def say(text: str, user_id: int) -> str:
        body = fixture_json("pachca/message-command.json")
        body.update(
            content=text,
            chat_id=1001,
            id=next(said),
            user_id=user_id,
            webhook_timestamp=int(clock_time.time()),
        )
        assert (await signed(bridge, json.dumps(body).encode()))["status"] == "accepted"
        await bridge.deliver()
        return str(bridge.fake.channel_messages()[-1]["content"])

    assert await say("/oncall", 4242) == "📟 **dba**: дежурит <@101> до 10.11 10:00, дальше @petrov"
    assert await say("/oncall take dba 2h", 4242) == (
        "Вы не в расписании «dba». Ничего не изменено."  # bob is no member
    )
    # petrov, a member by nickname, takes it for two hours
    assert await say("/oncall take dba 2h", 303) == "📟 **dba**: дежурит <@303> до 10.11 11:00"
    assert await bridge.app[STORE].swaps(clock["now"].timestamp())  # shared through the store
    await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    await bridge.deliver()
    incident_message = next(
        m for m in bridge.fake.channel_messages() if m["content"].startswith("🔴")
    )
    assert incident_message["content"].endswith("<@303>")
    # the escalation step, due 15 minutes later, calls the one who took it
    clock["now"] = datetime(2026, 11, 10, 9, 20, tzinfo=UTC)
    scheduler = Scheduler(
        bridge.app[STORE], bridge.app[INBOX], bridge.app[RULES], clock=lambda: clock["now"]
    )
    await scheduler.tick()
    await bridge.deliver()
    assert bridge.fake.thread_comments(incident_message["id"])[-1].endswith("<@303>")
    ref = await bridge.app[STORE].find_by_message(incident_message["id"])
    events, _ = await bridge.app[STORE].timeline(ref)
    assert [dict(e.details) for e in events if e.kind == "called"] == [
        {"mention": "oncall:dba", "who": ["<@303>"]}  # the escalation step, to the swap
    ]
    # released: back to the rotation
    assert await say("/oncall release dba", 303) == (
        "📟 **dba**: дежурство возвращено, дежурит <@101> до 10.11 10:00"
    )
    assert await say("/oncall release dba", 303) == (
        "Вы не брали дежурство «dba». Ничего не изменено."
    )
    # the open incident's timeline shows the swap handed back
    events, _ = await bridge.app[STORE].timeline(ref)
    (swap,) = [dict(e.details) for e in events if e.kind == "swap"]
    assert swap == {"schedule": "dba", "action": "release", "who": "<@303>"}


ANNOUNCED_RULES = SWAP_RULES.replace(
    '    members: ["<@101>", "@petrov"]',
    '    members: ["<@101>", "<@102>"]\n    announce: {chat_id: 1001}',
).replace(
    "    chat_id: 1001\n    mentions",
    '    chat_id: 1001\n    digest: {at: "09:00", timezone: UTC}\n    mentions',
)


async def test_handoffs_are_announced_once_with_what_fires_and_the_digest_names_the_on_call(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    from bridge.scheduler import Scheduler
    from bridge.web.state import INBOX, OUTBOX, RULES, STORE
    from tests.conftest import no_whole_reads
    from tests.test_callbacks import dms

    assert ANNOUNCED_RULES.count("announce") == 1 and "digest" in ANNOUNCED_RULES
    (tmp_path / "rules.yaml").write_text(ANNOUNCED_RULES)
    clock = {"now": datetime(2026, 11, 10, 8, 50, tzinfo=UTC)}
    bridge = await make_bridge(rules_override=load_rules(tmp_path))
    bridge.app[INBOX].clock = lambda: clock["now"]
    bridge.app[OUTBOX].clock = lambda: clock["now"].timestamp()
    await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    await bridge.deliver()

    def replica() -> Scheduler:  # another replica, or this one after a restart
        return Scheduler(
            bridge.app[STORE], bridge.app[INBOX], bridge.app[RULES], clock=lambda: clock["now"]
        )

    # 09:00: the digest names who was on duty when its day began and who is now
    clock["now"] = datetime(2026, 11, 10, 9, 0, 30, tzinfo=UTC)
    await replica().tick()
    await bridge.deliver()
    (digest,) = [m for m in bridge.fake.channel_messages() if m["content"].startswith("📋")]
    assert "📟 dba: дежурил <@102>, дежурит <@101>" in digest["content"]
    # 10:02: the 10:00 handoff is announced once, however many schedulers tick, from the
    # open incidents of the routes calling the schedule alone
    no_whole_reads(bridge)
    clock["now"] = datetime(2026, 11, 10, 10, 2, tzinfo=UTC)
    for _ in range(3):
        await replica().tick()
    await bridge.deliver()
    posts = [m for m in bridge.fake.channel_messages() if "смена" in m["content"]]
    assert len(posts) == 1
    lines = posts[0]["content"].splitlines()
    assert lines[0] == "📟 **dba**: смена, теперь дежурит <@102> до 11.11 10:00"
    assert lines[1] == "Горит сейчас: 1" and lines[2].startswith("🔥 [DiskFull](")
    (dm,) = dms(bridge, 102)
    assert dm.startswith("📟 Вы на дежурстве «dba» до 11.11 10:00.")
    # the next handoff, checked only two hours late (down meanwhile): skipped, not sent late
    clock["now"] = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
    await replica().tick()
    await bridge.deliver()
    assert len([m for m in bridge.fake.channel_messages() if "смена" in m["content"]]) == 1


def test_a_swap_wins_over_overrides_and_the_rotation_while_it_lasts() -> None:
    from bridge.schedules import LiveSchedules

    swap_start, swap_end = local(BERLIN, 2026, 12, 31, 20, 0), local(BERLIN, 2027, 1, 1, 8, 0)
    override = Override((B,), local(BERLIN, 2026, 12, 31, 18, 0), local(BERLIN, 2027, 1, 2, 10, 0))
    live = LiveSchedules({"dba": weekly(overrides=(override,))})
    live.update([("dba", "<@999>", swap_start.timestamp(), swap_end.timestamp())])
    assert live["dba"].on_duty(local(BERLIN, 2026, 12, 31, 19, 0)) == (B,)  # the override
    assert live["dba"].on_duty(local(BERLIN, 2026, 12, 31, 21, 0)) == ("<@999>",)  # the swap
    assert live["dba"].on_duty(local(BERLIN, 2027, 1, 1, 9, 0)) == (B,)  # over: the override
    live.update([])  # released
    assert live["dba"].on_duty(local(BERLIN, 2026, 12, 31, 21, 0)) == (B,)
