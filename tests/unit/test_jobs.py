"""Job plumbing: one run at a time, and schedule intervals."""

from pathlib import Path

import pytest

from core.errors import ConfigError
from jobs.lock import JobRunning, job_lock
from jobs.schedule import parse_interval


def test_a_second_run_of_a_job_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    with job_lock(tmp_path, "backfill-x"):
        with pytest.raises(JobRunning, match="already running") as err, job_lock(tmp_path, "backfill-x"):
            pass
        assert '"pid"' in str(err.value) and "fix:" in str(err.value)
        with job_lock(tmp_path, "materialize"):  # other jobs are not held up
            pass
    with job_lock(tmp_path, "backfill-x"):  # released when the first run ended
        pass


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("1.5d", 129600)])
def test_schedule_intervals(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["15", "m", "0m", "-1h", "1w"])
def test_a_bad_interval_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError, match=r"e\.g\. 15m"):
        parse_interval(text)
