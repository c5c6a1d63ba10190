"""The packet splitter (wire/splitting.py) and the pure batch tracker (wire/batchtracking.py)."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testserver.wire.batchtracking import WORKER_TEST_ID, BatchTracker, unsatisfied
from testserver.wire.control import encode_control
from testserver.wire.events import FINAL_STATUSES, STATUSES, Packet
from testserver.wire.packets import decode_packets, encode_packet, encode_status, file_packets
from testserver.wire.splitting import (
    CorruptStream,
    Kind,
    StreamOutOfSync,
    classify,
    packet_status,
    packet_test_id,
    split_packets,
)

ids = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=40
)
packets = st.builds(
    Packet,
    test_id=st.none() | ids,
    status=st.sampled_from(STATUSES),
    timestamp_ns=st.none() | st.integers(0, 2**32 * 10**9 - 1),
    tags=st.none() | st.tuples(ids),
    file_name=st.none() | ids,
    route_code=st.none() | ids,
    runnable=st.booleans(),
    parent_test_id=st.none() | ids,
)


# -- splitting ------------------------------------------------------------------------------


@given(st.lists(packets, max_size=8), st.integers(0, 64))
def test_split_returns_whole_packets_at_any_cut(items: list[Packet], cut: int) -> None:
    """Split anywhere: the complete packets come out, the rest waits for more bytes."""
    encoded = [encode_packet(p) for p in items]
    stream = b"".join(encoded)
    buffer = bytearray(stream[:cut])
    first = split_packets(buffer)
    buffer += stream[cut:]
    assert first + split_packets(buffer) == encoded
    assert buffer == bytearray()


def test_split_keeps_a_partial_header() -> None:
    data = encode_status("a.b", "success")
    for end in range(len(data)):
        buffer = bytearray(data[:end])
        assert split_packets(buffer) == []
        assert buffer == data[:end]


def test_split_refuses_a_stream_out_of_sync() -> None:
    with pytest.raises(StreamOutOfSync, match="out of sync at byte 0"):
        split_packets(bytearray(b"hello world"))


@given(st.lists(packets, max_size=4), st.integers(0, 64))
def test_checked_split_at_any_cut_agrees_with_the_unchecked_one(
    items: list[Packet], cut: int
) -> None:
    encoded = [encode_packet(p) for p in items]
    stream = b"".join(encoded)
    buffer = bytearray(stream[:cut])
    first = split_packets(buffer, checked=True)
    buffer += stream[cut:]
    assert first + split_packets(buffer, checked=True) == encoded


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"hello world", "a byte that does not start a packet"),
        (encode_status("a.b", "success")[:-1] + b"\x00", "CRC does not match"),
        (bytes([0xB3, 0x29, 0x01, 0x02, 0, 0, 0, 0]), "a packet length of 2 bytes"),
    ],
)
def test_checked_split_gives_the_good_packets_before_bad_bytes(bad: bytes, reason: str) -> None:
    """A test wrote into a worker's pipe: the packets before its bytes still count."""
    good = encode_status("a.b", "inprogress")
    buffer = bytearray(good + bad + good)
    with pytest.raises(CorruptStream, match=reason) as caught:
        split_packets(buffer, checked=True)
    assert caught.value.packets == [good]
    assert caught.value.sample == (bad + good)[:64]
    assert buffer == bad + good


@given(packets)
def test_test_id_and_status_agree_with_the_decoder(packet: Packet) -> None:
    raw = encode_packet(packet)
    decoded = decode_packets(raw)[0]
    assert packet_test_id(raw) == decoded.test_id
    assert packet_status(raw) == decoded.status


@given(packets)
def test_classify_follows_the_flags(packet: Packet) -> None:
    kind = classify(encode_packet(packet))
    if packet.test_id is None:
        expected = Kind.GLOBAL_FILE if packet.file_name is not None else Kind.OTHER
    elif not packet.runnable:
        expected = Kind.OTHER
    elif packet.status == "inprogress":
        expected = Kind.TEST_STARTED
    elif packet.status in FINAL_STATUSES:
        expected = Kind.TEST_FINISHED
    else:
        expected = Kind.OTHER
    assert kind is expected


def test_classify_examples() -> None:
    assert classify(encode_status("t", "inprogress")) is Kind.TEST_STARTED
    assert classify(encode_status("t", "xfail")) is Kind.TEST_FINISHED
    assert classify(encode_status("t", "fail", runnable=False)) is Kind.OTHER
    assert classify(encode_status("t", "fail", parent_test_id="p")) is Kind.TEST_FINISHED
    assert classify(encode_status("t", "exists")) is Kind.OTHER
    assert classify(encode_control("testserver.x", {})) is Kind.GLOBAL_FILE
    assert classify(file_packets("stdout", b"x", test_id="t")[0]) is Kind.OTHER


# -- tracking -------------------------------------------------------------------------------


def feed_run(tracker: BatchTracker, test_id: str, status: str, now: float = 0.0) -> None:
    assert tracker.feed(encode_status(test_id, "inprogress"), now) is Kind.TEST_STARTED
    assert tracker.feed(encode_status(test_id, status), now) is Kind.TEST_FINISHED


def test_a_batch_that_ran_every_test_is_ok() -> None:
    tracker = BatchTracker(["a", "b"])
    feed_run(tracker, "a", "success")
    feed_run(tracker, "b", "fail")
    result = tracker.result()
    assert (result.status, result.ran, result.not_run, result.message) == ("ok", 2, (), None)
    assert result.outcomes == {"fail": 1, "skip": 0, "success": 1, "uxsuccess": 0, "xfail": 0}
    assert "crashes" not in result.fields()


def test_an_id_requested_twice_needs_two_final_statuses() -> None:
    tracker = BatchTracker(["a", "a"])
    feed_run(tracker, "a", "success")
    result = tracker.result()
    assert (result.status, result.not_run) == ("incomplete", ("a",))
    assert "1 requested test(s) got no result" in (result.message or "")


def test_unknown_ids_make_the_batch_incomplete() -> None:
    tracker = BatchTracker(["a"], unknown=["nope"])
    feed_run(tracker, "a", "skip")
    result = tracker.result()
    assert (result.status, result.unknown) == ("incomplete", ("nope",))
    assert result.fields()["unknown"] == ["nope"]


def test_cancel_and_error_take_precedence() -> None:
    tracker = BatchTracker(["a", "b"])
    feed_run(tracker, "a", "success")
    assert tracker.result(cancelled=True).status == "cancelled"
    assert tracker.result(interrupted=True).message == "the batch was interrupted"
    assert tracker.result(cancelled=True, error="boom").status == "error"


def test_a_final_status_counts_for_the_running_test() -> None:
    """As batch.py does; with no test running, the packet's own id is credited."""
    tracker = BatchTracker(["a", "b"])
    tracker.feed(encode_status("b", "skip"), 0)
    assert tracker.finished == collections.Counter({"b": 1}) and tracker.current is None
    feed_run(tracker, "a", "success")
    assert tracker.result().status == "ok"


def test_subtests_and_pseudo_tests_are_not_counted() -> None:
    tracker = BatchTracker(["a"])
    tracker.feed(encode_status("a", "inprogress"), 0)
    tracker.feed(encode_status("a (i=1)", "fail", parent_test_id="a", runnable=False), 0)
    tracker.feed(encode_status("setUpClass (m.T)", "fail", runnable=False), 0)
    assert tracker.current == "a" and tracker.ran == 0


def test_a_crash_fails_the_running_test_and_redispatches_the_rest() -> None:
    tracker = BatchTracker(["a", "b", "c"])
    tracker.started("a", 1.0)
    crash = tracker.worker_died("killed by signal 11 (SIGSEGV)", 2.0, cancelled=False)
    assert crash is not None
    assert (crash.victim, crash.entry) == ("a", "a: killed by signal 11 (SIGSEGV)")
    assert not crash.synthetic
    assert tracker.redispatch() == ["b", "c"]
    assert tracker.outcomes["fail"] == 1 and tracker.crashes == [crash.entry]


def test_a_crash_between_tests_fails_the_next_one() -> None:
    tracker = BatchTracker(["a", "b"])
    feed_run(tracker, "a", "success")
    crash = tracker.worker_died("exited with status 3", 1.0, cancelled=False)
    assert crash is not None and crash.victim == "b" and "before this test started" in crash.cause
    assert tracker.redispatch() == []
    assert tracker.result().status == "ok"


def test_a_crash_after_the_last_test_fails_a_synthetic_test() -> None:
    tracker = BatchTracker(["a"])
    feed_run(tracker, "a", "success")
    crash = tracker.worker_died("exited with status 1", 1.0, cancelled=False)
    assert crash is not None and crash.synthetic and crash.victim == WORKER_TEST_ID
    assert crash.cause == "exited with status 1"
    assert "after its last test" in crash.message


@pytest.mark.parametrize("requested", [["a"], ["a", "b"]])
def test_a_cancelled_worker_dying_between_tests_fails_no_test(requested: list[str]) -> None:
    """Spec 4.5 item 2: no test was running (a fixture was), so no test is failed."""
    tracker = BatchTracker(requested)
    feed_run(tracker, "a", "success")
    assert tracker.worker_died("exited with status 1", 1.0, cancelled=True) is None
    assert (tracker.ran, tracker.crashes) == (1, [])
    result = tracker.result(cancelled=True)
    assert (result.status, result.not_run) == ("cancelled", tuple(requested[1:]))


def test_a_cancelled_worker_dying_in_a_test_fails_it() -> None:
    tracker = BatchTracker(["a", "b"])
    tracker.started("a", 0.0)
    crash = tracker.worker_died("killed by signal 9 (SIGKILL)", 1.0, cancelled=True)
    assert crash is not None and crash.victim == "a"
    assert crash.cause.startswith("cancelled (killed by signal 9")


def test_timeouts_are_measured_from_the_test_start() -> None:
    tracker = BatchTracker(["a"], timeout=5)
    assert tracker.deadline() is None
    tracker.started("a", 10.0)
    assert tracker.deadline() == 15.0
    assert not tracker.timed_out(14.9)
    crash = tracker.worker_died("killed by signal 9 (SIGKILL)", 15.0, cancelled=False)
    assert crash.cause == "timed out after 5 s (killed by signal 9 (SIGKILL))"


def test_a_test_out_of_order_moves_the_position() -> None:
    tracker = BatchTracker(["a", "b", "c"])
    tracker.started("c", 0)
    assert tracker.position == 3
    tracker.started("x", 0)  # not in the batch: the position stays
    assert tracker.position == 3


def test_a_non_final_status_is_refused() -> None:
    with pytest.raises(ValueError, match="'inprogress' is not a final status"):
        BatchTracker(["a"]).ended("a", "inprogress")


@given(st.lists(st.sampled_from("abc")), st.lists(st.sampled_from("abcd")))
def test_unsatisfied_counts_each_request(requested: list[str], finished: list[str]) -> None:
    """Each requested id is satisfied by one final status; what is left stays in order."""
    missing = unsatisfied(requested, collections.Counter(finished))
    for test_id in set(requested):
        wanted = requested.count(test_id)
        assert missing.count(test_id) == max(0, wanted - finished.count(test_id))
    rest = iter(requested)
    assert all(test_id in rest for test_id in missing)  # a subsequence: batch order kept
