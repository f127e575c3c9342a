"""The benchmarks still run (#18's proof): a storm of 60 groups through `bench/storm.py
--smoke`, against its fake Pachca. No timing is asserted (bench/ measures, on its own
machine); what is checked is that every goal is printed, every group has exactly one message
and every press its edit and DM. The order of work under a backlog is tested in
tests/test_priorities.py."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_storm_bench_runs_and_loses_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "bench/storm.py", "--smoke", "storm"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for goal in ("goal 1:", "goal 2:", "goal 3:"):
        assert goal in out, out
    assert "duplicates: 0, lost: 0" in out, out
    assert " inf s" not in out, "a press got no edit or no DM:\n" + out
