"""One-shot mode is a drop-in for ``python -m subunit.run``: same arguments, same answers.

Each test runs ``python -m testserver ARGS`` and, where the behaviour is shared,
``python -m subunit.run ARGS`` in the same project, and compares what python-subunit's own
parser decodes. Documented differences (spec/protocol.md section 10) are asserted as such:
no ``exists`` events in run mode, unknown ``--load-list`` ids reported as failing tests,
test output captured as attachments instead of raw bytes on stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conformance import decode, exists_ids, final_outcomes, not_run_ids
from serverproc import PROJECTS, subunit_events

OUT = "ebasic.test_outcomes."
FAILED_IMPORT = "unittest.loader._FailedTest.ebasic.test_broken_import"
EBASIC = ("discover", "-t", ".", "-s", "ebasic")
NOT_SUBUNIT = "Non subunit content"
"""What python-subunit's strict parser raises on a byte that is not part of a packet."""

PARENT_TEST_ID_FLAG = 0x0008
"""The subunit 2.1 flag: a PARENT_TEST_ID field follows the route code."""


def run(module: str, project: str, *args: str, stdin=subprocess.DEVNULL, **kwargs):
    """``python -m module ARGS`` in ``tests/projects/project``."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECTS / project,
        stdin=stdin,
        capture_output=True,
        timeout=120,
        **kwargs,
    )


def both(project: str, *args: str) -> tuple[subprocess.CompletedProcess, ...]:
    """The same command through ``subunit.run`` and through ``testserver``."""
    return run("subunit.run", project, *args), run("testserver", project, *args)


def global_file(events: list[dict], name: str) -> bytes:
    """The joined chunks of global (test-less) attachment ``name``."""
    return b"".join(
        bytes(e["file_bytes"])
        for e in events
        if not e.get("test_id") and e.get("file_name") == name and e.get("file_bytes")
    )


def attachment(events: list[dict], test_id: str, name: str) -> bytes:
    """The joined chunks of attachment ``name`` of ``test_id``."""
    return b"".join(
        bytes(e["file_bytes"])
        for e in events
        if e.get("test_id") == test_id and e.get("file_name") == name and e.get("file_bytes")
    )


def packet_flags(data: bytes) -> list[int]:
    """The FLAGS field of every packet in ``data``, walked by the declared lengths."""
    flags, pos = [], 0
    while pos < len(data):
        assert data[pos] == 0xB3, f"no packet signature at offset {pos}"
        flags.append(int.from_bytes(data[pos + 1 : pos + 3], "big"))
        first = data[pos + 3]
        size = (first >> 6) + 1  # the top two bits give the varint's byte count, less one
        length = int.from_bytes(bytes([first & 0x3F]) + data[pos + 4 : pos + 3 + size], "big")
        pos += length
    return flags


# -- listing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        EBASIC,
        ("discover", "-s", "ebasic", "-t", "."),
        ("discover", "ebasic"),
        ("discover", ".", "test*.py", "."),
    ],
    ids=["-t-s", "-s-t", "positional-start", "positional-all"],
)
def test_list_gives_the_same_ids_as_subunit_run(args):
    reference, ours = both("e2e_basic", *args, "--list")
    assert ours.returncode == reference.returncode == 2  # the broken import
    ids = exists_ids(subunit_events(ours.stdout))
    assert len(ids) == len(set(ids))
    assert set(ids) == set(exists_ids(decode(reference.stdout)))
    assert len(ids) >= 15


def test_list_with_an_import_error_exits_2_with_an_import_errors_attachment():
    reference, ours = both("e2e_basic", *EBASIC, "--list")
    events = subunit_events(ours.stdout)
    assert ours.returncode == 2
    assert FAILED_IMPORT in exists_ids(events), "the broken module is listed, as subunit.run"
    text = global_file(events, "import errors")
    assert b"this_module_does_not_exist" in text
    assert b"this_module_does_not_exist" in global_file(decode(reference.stdout), "import errors")
    attachment = next(e for e in events if e.get("file_name") == "import errors")
    assert attachment["mime_type"] == "text/plain; charset=utf8"
    assert attachment["eof"]


def test_list_without_import_errors_exits_0():
    reference, ours = both("e2e_basic", *EBASIC, "-p", "test_outcomes.py", "--list")
    assert ours.returncode == reference.returncode == 0
    events = subunit_events(ours.stdout)
    assert not global_file(events, "import errors")
    assert set(exists_ids(events)) == set(exists_ids(decode(reference.stdout)))
    assert len(exists_ids(events)) == 10


# -- running -------------------------------------------------------------------------------


NEVER_RUNS = "ebasic.test_fixtures.BrokenClassFixture.test_never_runs"
"""Its setUpClass fails: subunit.run omits it silently, testserver says it did not run."""


def test_a_run_gives_subunit_runs_outcomes_and_names_what_did_not_run():
    reference, ours = both("e2e_basic", *EBASIC)
    assert reference.returncode == 0
    assert ours.returncode == 1, "a requested test did not run: never a success"
    listed = frozenset(exists_ids(decode(reference.stdout, strict=False)))
    events = subunit_events(ours.stdout)
    assert not_run_ids(events) == {NEVER_RUNS}
    outcomes = final_outcomes(events, listed)
    assert outcomes == final_outcomes(decode(reference.stdout, strict=False), listed)
    assert outcomes[OUT + "Outcomes.test_fail"] == "fail"
    assert outcomes[FAILED_IMPORT] == "fail"
    assert not exists_ids(events), "documented: no exists events in run mode"


def test_load_list_runs_exactly_those_ids(tmp_path):
    wanted = [OUT + "Outcomes.test_pass", OUT + "Outcomes.test_fail", FAILED_IMPORT]
    id_file = tmp_path / "ids"
    id_file.write_text(f"\n  {wanted[0]}  \n{wanted[1]}\n\n{wanted[2]}\n", encoding="utf-8")
    reference, ours = both("e2e_basic", *EBASIC, "--load-list", str(id_file))
    assert ours.returncode == reference.returncode == 0
    outcomes = final_outcomes(subunit_events(ours.stdout), frozenset(wanted))
    assert outcomes == {wanted[0]: "success", wanted[1]: "fail", wanted[2]: "fail"}
    assert outcomes == final_outcomes(decode(reference.stdout), frozenset(wanted))


def test_load_list_reports_an_unknown_id_as_a_failing_test(tmp_path):
    """A documented difference: subunit.run drops an unknown id without a word."""
    id_file = tmp_path / "ids"
    id_file.write_text(f"no.such.test\n{OUT}Outcomes.test_pass\n", encoding="utf-8")
    reference, ours = both("e2e_basic", *EBASIC, "--load-list", str(id_file))
    events = subunit_events(ours.stdout)
    assert final_outcomes(events, frozenset()) == {
        "no.such.test": "fail",
        OUT + "Outcomes.test_pass": "success",
    }
    assert b"no test with id 'no.such.test'" in attachment(events, "no.such.test", "reason")
    assert ours.returncode == 1, "a requested test did not run"
    assert "no.such.test" not in {e.get("test_id") for e in decode(reference.stdout)}


def test_load_list_with_list_lists_only_the_known_ids(tmp_path):
    id_file = tmp_path / "ids"
    id_file.write_text(f"no.such.test\n{OUT}Outcomes.test_pass\n", encoding="utf-8")
    reference, ours = both("e2e_basic", *EBASIC, "--list", "--load-list", str(id_file))
    assert ours.returncode == reference.returncode
    assert exists_ids(subunit_events(ours.stdout)) == (OUT + "Outcomes.test_pass",)
    assert exists_ids(decode(reference.stdout)) == (OUT + "Outcomes.test_pass",)


def test_a_missing_load_list_file_is_a_usage_error(tmp_path):
    ours = run("testserver", "e2e_basic", *EBASIC, "--load-list", str(tmp_path / "nope"))
    assert ours.returncode == 2
    assert ours.stdout == b""
    assert b"--load-list" in ours.stderr


# -- output --------------------------------------------------------------------------------


def test_test_output_never_reaches_stdout_as_raw_bytes():
    reference, ours = both("e2e_basic", "ebasic.test_outcomes.Output")
    events = subunit_events(ours.stdout)  # strict: raises on a single stray byte
    assert attachment(events, OUT + "Output.test_print", "stdout") == b"hello from print\n"
    assert attachment(events, OUT + "Output.test_fd_write", "stderr") == b"hello from fd 2\n"
    assert attachment(events, OUT + "Output.test_child_process", "stdout") == (
        b"hello from a child\n"
    )
    assert attachment(events, OUT + "Output.test_binary", "stdout") == (
        b"\xb3\x29\x01\x0c not a packet \xff\n"
    )
    # the check has teeth: subunit.run's own stream fails it
    with pytest.raises(Exception, match=NOT_SUBUNIT):
        subunit_events(reference.stdout)


def test_output_at_import_in_fixtures_huge_and_packet_like_is_all_in_packets():
    ours = run("testserver", "oneshot_noisy", "discover", "-t", ".", "-s", "onoisy")
    assert ours.returncode == 0
    events = subunit_events(ours.stdout)
    noisy = "onoisy.test_noisy.Noisy."
    assert global_file(events, "stdout") == (
        b"printed while importing\nprinted by tearDownModule\n"
    )
    assert global_file(events, "stderr") == b"stderr while importing\n"
    assert attachment(events, noisy + "test_signature_byte", "stdout") == (
        b"\xb3\x29\x01\x0c looks like a packet\n"
    )
    big = [
        e for e in events if e.get("test_id") == noisy + "test_big_output" and e.get("file_name")
    ]
    assert len(big) > 1, "more than 4 MiB needs several packets"
    assert b"".join(bytes(e["file_bytes"]) for e in big) == b"x" * (5 * 1024 * 1024 + 123)
    assert attachment(events, noisy + "test_no_newline", "stdout") == b"no newline at the end"
    assert attachment(events, noisy + "test_child_stderr", "stderr") == b"child err\n"
    assert final_outcomes(events, frozenset())[noisy + "test_fails_after_output"] == "fail"


def test_output_at_import_time_is_in_packets_when_listing_too():
    ours = run("testserver", "oneshot_noisy", "discover", "-t", ".", "-s", "onoisy", "--list")
    assert ours.returncode == 0
    events = subunit_events(ours.stdout)
    assert global_file(events, "stdout") == b"printed while importing\n"
    assert len(exists_ids(events)) == 5


# -- selecting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patterns",
    [("fail",), ("*Output.test_p*",), ("fail", "skip"), ("Outcomes",), ("nothing-matches",)],
)
def test_k_selects_what_unittest_selects(patterns):
    k_args = [arg for pattern in patterns for arg in ("-k", pattern)]
    args = (*EBASIC, "-p", "test_[fos]*.py", *k_args)  # every module but the broken one
    reference, ours = both("e2e_basic", *args, "--list")
    assert ours.returncode == reference.returncode == 0
    listed = exists_ids(subunit_events(ours.stdout))
    assert set(listed) == set(exists_ids(decode(reference.stdout)))
    reference, ours = both("e2e_basic", *args)
    ran = final_outcomes(subunit_events(ours.stdout), frozenset(listed))
    assert ran == final_outcomes(decode(reference.stdout, strict=False), frozenset(listed))
    assert set(ran) >= set(listed)


def test_k_keeps_the_import_failure_like_unittest():
    """unittest's -k filters test methods; a module that failed to import stays reported.

    ``python -m subunit.run discover ... -k fail`` still lists and runs
    ``unittest.loader._FailedTest.<module>``, so a broken module is never hidden by -k.
    """
    reference, ours = both("e2e_basic", *EBASIC, "-k", "fail", "--list")
    assert FAILED_IMPORT in exists_ids(decode(reference.stdout))
    assert set(exists_ids(subunit_events(ours.stdout))) == set(exists_ids(decode(reference.stdout)))
    reference, ours = both("e2e_basic", *EBASIC, "-k", "fail")
    assert final_outcomes(decode(reference.stdout, strict=False), frozenset())[FAILED_IMPORT]
    assert final_outcomes(subunit_events(ours.stdout), frozenset()).get(FAILED_IMPORT) == "fail"


@pytest.mark.parametrize(
    "names",
    [
        ("ebasic.test_outcomes",),
        ("ebasic.test_outcomes.Outcomes",),
        (OUT + "Outcomes.test_pass", "ebasic.test_fixtures"),
        ("ebasic.test_nope",),
    ],
    ids=["module", "class", "method-and-module", "missing-module"],
)
def test_names_mode_selects_what_subunit_run_selects(names):
    reference, ours = both("e2e_basic", *names, "--list")
    assert ours.returncode == reference.returncode
    listed = exists_ids(subunit_events(ours.stdout))
    assert listed and set(listed) == set(exists_ids(decode(reference.stdout)))
    reference, ours = both("e2e_basic", *names)
    assert reference.returncode == 0
    not_run = not_run_ids(subunit_events(ours.stdout))
    assert ours.returncode == (1 if not_run else 0)
    assert not_run <= {NEVER_RUNS}
    ran = final_outcomes(subunit_events(ours.stdout), frozenset(listed))
    assert ran == final_outcomes(decode(reference.stdout, strict=False), frozenset(listed))


# -- the launchers' shapes -----------------------------------------------------------------


def test_stestr_runner_argv_shape_lists(tmp_path):
    """stestr runs ``$PYTHON -m stestr.subunit_runner.run discover -t TOP PATH --list``."""
    reference, ours = both("e2e_basic", "discover", "-t", "./", "./ebasic", "--list")
    assert b"usage:" not in ours.stderr, ours.stderr.decode()
    assert ours.returncode == reference.returncode == 2  # the broken import
    listed = exists_ids(subunit_events(ours.stdout))
    assert set(listed) == set(exists_ids(decode(reference.stdout)))
    assert len(listed) >= 15


def test_stestr_runner_argv_shape_runs_a_load_list(tmp_path):
    """... and ``discover -t TOP PATH --load-list FILE`` for each worker."""
    wanted = [OUT + "Outcomes.test_pass", OUT + "Outcomes.test_skip"]
    id_file = tmp_path / "ids"
    id_file.write_text("\n".join(wanted) + "\n", encoding="utf-8")
    args = ("discover", "-t", "./", "./ebasic", "--load-list", str(id_file))
    reference, ours = both("e2e_basic", *args)
    assert ours.returncode == reference.returncode == 0, ours.stderr.decode()
    outcomes = final_outcomes(subunit_events(ours.stdout), frozenset(wanted))
    assert outcomes == {wanted[0]: "success", wanted[1]: "skip"}
    assert outcomes == final_outcomes(decode(reference.stdout), frozenset(wanted))


def test_testr_list_command_with_empty_idoption():
    """testr substitutes ``$IDOPTION`` with nothing when listing: trailing blanks."""
    ours = subprocess.run(
        f"{sys.executable} -m testserver discover -t . -s ebasic --list  ",
        shell=True,
        cwd=PROJECTS / "e2e_basic",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    assert ours.returncode == 2
    assert len(exists_ids(subunit_events(ours.stdout))) >= 15


# -- stdin ---------------------------------------------------------------------------------

READ_LINE = "estdin.test_stdin.ReadsStdin.test_readline"


def _closed_pipe():
    read_end, write_end = os.pipe()
    os.close(write_end)
    return read_end


@pytest.mark.parametrize("how", ["devnull", "closed-pipe", "no-fd-0"])
def test_a_test_reading_stdin_sees_end_of_input(how):
    argv = [sys.executable, "-m", "testserver", "estdin.test_stdin"]
    options = {"cwd": PROJECTS / "e2e_stdin", "capture_output": True, "timeout": 120}
    if how == "devnull":
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, **options)
    elif how == "closed-pipe":  # what testrepository and stestr hand their backends
        read_end = _closed_pipe()
        try:
            proc = subprocess.run(argv, stdin=read_end, **options)
        finally:
            os.close(read_end)
    else:  # fd 0 not open at all
        proc = subprocess.run(" ".join(argv) + " <&-", shell=True, **options)
    assert proc.returncode == 0, proc.stderr.decode()
    events = subunit_events(proc.stdout)
    assert attachment(events, READ_LINE, "stdout") == b"read ''\n"
    assert final_outcomes(events, frozenset()) == {READ_LINE: "success"}


# -- subunit versions ----------------------------------------------------------------------


def test_subunit_version_2_0_sets_no_parent_flag():
    ours = run("testserver", "e2e_basic", "ebasic.test_subtests", "--subunit-version", "2.0")
    assert ours.returncode == 0
    assert not [f for f in packet_flags(ours.stdout) if f & PARENT_TEST_ID_FLAG]
    events = subunit_events(ours.stdout)
    assert "ebasic.test_subtests.Sub.test_mixed (i=1)" in {e.get("test_id") for e in events}


def test_subunit_version_2_1_is_the_default_and_flags_subtests():
    ours = run("testserver", "e2e_basic", "ebasic.test_subtests")
    flagged = [f for f in packet_flags(ours.stdout) if f & PARENT_TEST_ID_FLAG]
    assert len(flagged) >= 7  # one final status per subtest, plus their attachments
    subunit_events(ours.stdout)  # and python-subunit still reads it


@pytest.mark.parametrize("isolation", ["fork", "none"])
def test_ctrl_c_stops_a_one_shot_run_at_the_hanging_test(isolation):
    """Ctrl-C fails the running test, runs nothing more, and exits 1 (both isolations); the
    test it kept from running is reported as not run."""
    import signal

    argv = [sys.executable, "-m", "testserver", "discover", "-t", ".", "-s", "ecrash"]
    argv += ["--isolation", isolation, "-k", "Slow"]
    proc = subprocess.Popen(
        argv,
        cwd=PROJECTS / "e2e_crash",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = bytearray()
    while b"ecrash.test_crashes.Slow.test_hang" not in out:  # its inprogress: it is running
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, "the run ended before the hanging test started"
        out += chunk
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=20)
    out += rest
    assert proc.returncode == 1
    events = subunit_events(bytes(out))
    statuses = {e["test_id"]: e["test_status"] for e in events if e["test_status"]}
    assert statuses == {
        "ecrash.test_crashes.Slow.test_hang": "fail",
        "ecrash.test_crashes.Slow.test_quick": "fail",
    }, statuses
    assert not_run_ids(events) == {"ecrash.test_crashes.Slow.test_quick"}
