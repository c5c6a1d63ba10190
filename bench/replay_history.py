"""Replay a git repository's last commits into one warm server; compare each with a fresh process.

    python bench/replay_history.py REPO [--commits N] [--python PY] [--prepare CMD] -- LOADING...

``REPO`` is a git repository (a bare one too). It is cloned into a scratch directory; its last
``N`` first-parent commits are checked out there one after the other, oldest first, while
one ``python -m testserver --serve LOADING...`` started in that directory at the first
commit stays up. At each commit the warm server's ``list-tests`` ids (in order) and the
outcomes of a full ``run-tests`` (final status and parent id per test and subtest) are
compared with those of a fresh ``python -m testserver LOADING... --list`` and ``python -m
testserver LOADING...`` run on the same tree, each with its own empty bytecode cache
(``PYTHONPYCACHEPREFIX``). ``--without-import-reads`` is the control arm: the warm server
does not record the data that modules read at import. ``--prepare CMD`` runs in the tree
before the server starts (e.g. to write a version file that a build would generate:
untracked files survive checkouts).

Prints one line per commit (commit, tests, agree or DISAGREE, how the server took the change:
no reload, in place, or restart, and seconds spent by the warm and the cold runs), the reason
of each restart, then each disagreement. Exit status 1 if any commit disagreed. The
functions are also used by ``tests/test_replay_history.py`` on a synthetic history.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from testserver.clients.client import Client, ClientError
from testserver.hotreload.importreads import DISABLE_VARIABLE
from testserver.wire.commands import ListTests, RunTests
from testserver.wire.control import RELOAD, decode_control
from testserver.wire.events import FINAL_STATUSES, Packet
from testserver.wire.packets import decode_packets

COLD_TIMEOUT = 1800.0
"""Seconds one fresh run may take before the replay gives up on it (a hung suite)."""

MAX_SHOWN = 8
"""Differing test ids printed per disagreement; the rest are counted."""

Outcomes = dict[str, tuple[str, str | None]]


@dataclass
class Observation:
    """What one side saw at one commit."""

    ids: list[str]
    outcomes: Outcomes
    seconds: float
    reloads: list[dict] = field(default_factory=list)


@dataclass
class Row:
    """One commit of the replay."""

    commit: str
    subject: str
    tests: int
    how: str
    problems: list[str]
    warm_seconds: float
    cold_seconds: float
    reasons: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.problems


def git(tree: Path | str, *args: str) -> str:
    """Run git in ``tree``; its stdout."""
    done = subprocess.run(
        ["git", "-C", str(tree), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def last_commits(repo: Path | str, count: int) -> list[str]:
    """The last ``count`` first-parent commits of ``HEAD``, oldest first."""
    return git(repo, "rev-list", "--first-parent", f"--max-count={count}", "HEAD").split()[::-1]


def checkout(tree: Path, commit: str) -> None:
    """Make the tracked files of ``tree`` those of ``commit`` (untracked files stay)."""
    git(tree, "checkout", "--quiet", "--force", "--detach", commit)


def outcomes(packets: Sequence[Packet]) -> Outcomes:
    """Final status and parent id of every test and subtest that finished."""
    return {
        p.test_id: (p.status, p.parent_test_id)
        for p in packets
        if p.test_id is not None and p.status in FINAL_STATUSES
    }


def listed(packets: Sequence[Packet]) -> list[str]:
    return [p.test_id for p in packets if p.test_id is not None and p.status == "exists"]


def cold(python: str, tree: Path, load: Sequence[str], scratch: Path, env: dict) -> Observation:
    """``--list`` and a full run in two fresh processes, each with an empty bytecode cache."""
    start = time.monotonic()
    results = []
    for extra in (["--list"], []):
        cache = tempfile.mkdtemp(prefix="pyc-", dir=scratch)
        done = subprocess.run(
            [python, "-m", "testserver", *load, *extra],
            cwd=tree,
            capture_output=True,
            env=dict(env, PYTHONPYCACHEPREFIX=cache),
            timeout=COLD_TIMEOUT,
        )
        results.append(decode_packets(done.stdout))
    return Observation(listed(results[0]), outcomes(results[1]), time.monotonic() - start)


class Warm:
    """The one server kept up for the whole replay (started again if it dies)."""

    def __init__(self, python: str, tree: Path, load: Sequence[str], env: dict, log: Path):
        self.argv = [python, "-m", "testserver", "--serve"]
        self.tree, self.load, self.env = tree, list(load), env
        self.log = log.open("ab")
        self.client: Client | None = None

    def observe(self) -> Observation:
        """List and run everything; a dead server is reported as a problem by the caller."""
        start = time.monotonic()
        if self.client is None:
            self.client = Client.spawn(
                self.load, cwd=self.tree, command=self.argv, env=self.env, stderr=self.log.fileno()
            )
        client = self.client
        listing, _ = client.request(ListTests(client.new_id()))
        run, _ = client.request(RunTests(client.new_id(), ()))
        reloads = [c[1] for p in listing + run if (c := decode_control(p)) and c[0] == RELOAD]
        return Observation(listed(listing), outcomes(run), time.monotonic() - start, reloads)

    def discard(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                client.close()
            except (ClientError, OSError):
                pass

    def close(self) -> None:
        self.discard()
        self.log.close()


def compare(warm: Observation, fresh: Observation) -> list[str]:
    """What differs between the warm and the fresh observation, in words."""
    problems = []
    if warm.ids != fresh.ids:
        only_warm = [i for i in warm.ids if i not in set(fresh.ids)]
        only_fresh = [i for i in fresh.ids if i not in set(warm.ids)]
        problems.append(
            f"listed ids differ: {len(warm.ids)} warm, {len(fresh.ids)} fresh; "
            f"only warm {_some(only_warm)}; only fresh {_some(only_fresh)}"
            + ("; same ids, other order" if not only_warm and not only_fresh else "")
        )
    if warm.outcomes != fresh.outcomes:
        keys = sorted(set(warm.outcomes) | set(fresh.outcomes))
        diff = [
            f"{k}: warm {warm.outcomes.get(k)} fresh {fresh.outcomes.get(k)}"
            for k in keys
            if warm.outcomes.get(k) != fresh.outcomes.get(k)
        ]
        problems.append(f"{len(diff)} outcomes differ: {_some(diff)}")
    return problems


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_SHOWN])
    more = len(items) - MAX_SHOWN
    return f"[{shown}{f', and {more} more' if more > 0 else ''}]"


def replay(
    repo: Path | str,
    load: Sequence[str],
    *,
    commits: int = 40,
    python: str = sys.executable,
    prepare: str | None = None,
    scratch: Path,
    env: dict | None = None,
    out: TextIO | None = None,
    warm_env: dict | None = None,
) -> list[Row]:
    """Replay the last ``commits`` commits of ``repo`` (see the module docstring).

    ``warm_env``: variables set for the warm server only.
    """
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    tree = scratch / "tree"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(repo), str(tree)], check=True)
    history = last_commits(tree, commits)
    checkout(tree, history[0])
    if prepare:
        subprocess.run(prepare, shell=True, cwd=tree, check=True)  # noqa: S602 - the user's own
    warm = Warm(python, tree, load, dict(env, **(warm_env or {})), scratch / "server-stderr.log")
    rows: list[Row] = []
    try:
        for number, commit in enumerate(history, 1):
            checkout(tree, commit)
            row = _step(warm, commit, python, tree, load, scratch, env)
            rows.append(row)
            if out is not None:
                print(format_row(number, row), file=out, flush=True)
    finally:
        warm.close()
    return rows


def _step(
    warm: Warm, commit: str, python: str, tree: Path, load: Sequence[str], scratch: Path, env: dict
) -> Row:
    subject = git(tree, "log", "-1", "--format=%s", commit).strip()
    problems: list[str] = []
    try:
        seen = warm.observe()
    except (ClientError, OSError) as error:
        warm.discard()
        seen = Observation([], {}, 0.0)
        problems.append(f"the warm server failed: {error}")
    fresh = cold(python, tree, load, scratch, env)
    problems += compare(seen, fresh) if not problems else []
    restarts = [r for r in seen.reloads if r.get("restarted")]
    how = "restart" if restarts else ("in place" if seen.reloads else "no reload")
    return Row(
        commit=commit[:10],
        subject=subject,
        tests=len(fresh.ids),
        how=how,
        problems=problems,
        warm_seconds=seen.seconds,
        cold_seconds=fresh.seconds,
        reasons=[str(r.get("reason")) for r in restarts],
    )


HEADER = (
    f"{'#':>3} {'commit':10} {'tests':>6} {'verdict':8} {'server':9} {'warm s':>7} "
    f"{'cold s':>7}  subject"
)


def format_row(number: int, row: Row) -> str:
    verdict = "agree" if row.agree else "DISAGREE"
    line = (
        f"{number:3d} {row.commit:10} {row.tests:6d} {verdict:8} {row.how:9} "
        f"{row.warm_seconds:7.2f} {row.cold_seconds:7.2f}  {row.subject[:60]}"
    )
    return "\n".join([line, *(f"      restarted: {reason}" for reason in row.reasons)])


def summary(rows: list[Row]) -> str:
    agreed = sum(row.agree for row in rows)
    lines = [f"{agreed}/{len(rows)} commits agree"]
    for row in rows:
        lines += [f"{row.commit} ({row.subject[:60]}): {p}" for p in row.problems]
    counts = {how: sum(r.how == how for r in rows) for how in ("no reload", "in place", "restart")}
    lines.append(", ".join(f"{how}: {count}" for how, count in counts.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    load = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", help="a git repository (bare or not); it is cloned, not touched")
    parser.add_argument("--commits", type=int, default=40, help="how many commits (default 40)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for both sides")
    parser.add_argument("--prepare", help="shell command run in the tree before the server starts")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--without-import-reads",
        action="store_true",
        help="control arm: the warm server does not record data read at import",
    )
    args = parser.parse_args(own)
    scratch = Path(tempfile.mkdtemp(prefix="replay-"))
    print(f"replaying {args.repo} into {scratch / 'tree'}: {shlex.join(load)}")
    print(HEADER, flush=True)
    try:
        rows = replay(
            args.repo,
            load,
            commits=args.commits,
            python=args.python,
            prepare=args.prepare,
            scratch=scratch,
            out=sys.stdout,
            warm_env={DISABLE_VARIABLE: "1"} if args.without_import_reads else None,
        )
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(scratch)], check=False)
    print(summary(rows))
    return 0 if all(row.agree for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
