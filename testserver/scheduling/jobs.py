"""``--jobs N``: how many workers a batch is spread over."""

from __future__ import annotations

MAX_JOBS = 256
"""Workers per batch at most: each is a forked copy of the loaded suite."""


def parse_jobs(text: str, cpus: int | None) -> int:
    """``--jobs`` as a number of workers: a positive integer, or ``auto`` for ``cpus`` (the
    CPUs this process may use; 1 when unknown). Raises ``ValueError`` saying what is wrong."""
    if text == "auto":
        return max(1, min(cpus or 1, MAX_JOBS))
    try:
        jobs = int(text)
    except ValueError:
        raise ValueError(f"expected a number of workers or 'auto', not {text!r}") from None
    if not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"the number of workers must be 1 to {MAX_JOBS}, not {jobs}")
    return jobs


def available_cpus() -> int | None:
    """The CPUs this process may run on (its affinity where the OS says), if known."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()
