"""``--jobs``: a positive number of workers, or ``auto``; anything else says what is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest

from testserver.scheduling.jobs import MAX_JOBS, available_cpus, parse_jobs


@pytest.mark.parametrize(("text", "cpus", "jobs"), [("1", 8, 1), ("3", None, 3), ("auto", 6, 6)])
def test_a_number_or_auto(text: str, cpus: int | None, jobs: int) -> None:
    assert parse_jobs(text, cpus) == jobs


def test_auto_is_at_least_one_and_at_most_the_limit() -> None:
    assert parse_jobs("auto", None) == 1
    assert parse_jobs("auto", MAX_JOBS * 2) == MAX_JOBS
    assert available_cpus() is None or available_cpus() >= 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "the number of workers must be 1 to 256, not 0"),
        ("-2", "the number of workers must be 1 to 256, not -2"),
        ("two", "expected a number of workers or 'auto', not 'two'"),
    ],
)
def test_bad_values_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_jobs(text, 2)


def test_the_server_refuses_jobs_without_fork_isolation() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "testserver", "--serve", "-j", "2", "--isolation", "none"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"--jobs needs --isolation worker or fork" in done.stderr
