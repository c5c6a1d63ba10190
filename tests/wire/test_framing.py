"""Unit and property tests for the command framing codec (testserver.wire.framing)."""

from __future__ import annotations

import ast
import pathlib
import string

import pytest
from decoder_harness import decode_every_way, feed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testserver.wire import framing
from testserver.wire.commands import (
    COMMAND_TYPES,
    Cancel,
    Command,
    ListTests,
    Quit,
    Reload,
    RunTests,
    Stdin,
)
from testserver.wire.errors import FrameError, LocalProtocolError
from testserver.wire.framing import (
    MAX_ERROR_DATA,
    MAX_HEADER_LENGTH,
    FrameDecoder,
    encode_command,
)
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

# -- helpers ------------------------------------------------------------------------------


def decode(chunks: list[bytes], max_payload: int = framing.DEFAULT_MAX_PAYLOAD) -> list:
    """Feed ``chunks`` (empty ones skipped) then end of input; return commands and errors.

    Every FrameError is checked for the invariants the spec promises. The number of events
    is bounded by the number of bytes, so a decoder that stops making progress fails.
    """
    decoder = FrameDecoder(max_payload=max_payload)
    events: list = []
    limit = sum(map(len, chunks)) + 2
    for chunk in [c for c in chunks if c] + [b""]:
        decoder.receive_data(chunk)
        while True:
            assert len(events) <= limit, "more events than bytes: the decoder is stuck"
            try:
                event = decoder.next_event()
            except FrameError as error:
                check_error(error)
                events.append(error)
                continue
            if event is NEED_DATA:
                assert chunk, "NEED_DATA after end of input"
                break
            if event is END_OF_INPUT:
                assert not chunk, "END_OF_INPUT before end of input"
                break
            assert type(event) in COMMAND_TYPES.values()
            events.append(event)
    assert decoder.next_event() is END_OF_INPUT
    return events


def check_error(error: FrameError) -> None:
    assert error.code in framing.ERROR_CODES
    assert error.recoverable == (error.code != "truncated")
    assert len(error.data) <= MAX_ERROR_DATA
    assert error.command_name is None or error.command_name in COMMAND_TYPES


def summary(events: list) -> list:
    """Events made comparable: commands as they are, errors as their code."""
    return [("error", e.code) if isinstance(e, FrameError) else e for e in events]


def only_error(data: bytes, **kwargs: int) -> FrameError:
    events = decode([data], **kwargs)
    assert len(events) == 1 and isinstance(events[0], FrameError), events
    return events[0]


# -- encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "frame"),
    [
        (ListTests("1"), b"list-tests 1 0\n"),
        (RunTests("r", ()), b"run-tests r 0\n"),
        (RunTests("r", ("a.b",)), b"run-tests r 3\na.b"),
        (RunTests("r", ("a", "é")), b"run-tests r 4\na\n\xc3\xa9"),
        (Stdin("s", b"\x00\n\xff"), b"stdin s 3\n\x00\n\xff"),
        (Stdin("s"), b"stdin s 0\n"),
        (Cancel("c"), b"cancel c 0\n"),
        (Reload("R"), b"reload R 0\n"),
        (Quit("q"), b"quit q 0\n"),
    ],
)
def test_encode_command(command: Command, frame: bytes) -> None:
    assert encode_command(command) == frame
    assert decode([frame]) == [command]


@pytest.mark.parametrize(
    "bad",
    [object(), "list-tests 1 0\n", RunTests("r", ("a\0b",)), RunTests("r", ("\udc80",))],
    ids=["object", "str", "nul-test-id", "surrogate-test-id"],
)
def test_encode_refuses_what_cannot_be_framed(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_command(bad)  # type: ignore[arg-type]


# -- decoder API --------------------------------------------------------------------------


def test_need_data_until_the_frame_is_complete() -> None:
    decoder = FrameDecoder()
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"run-tests 1 3\na.")
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"b")
    assert decoder.next_event() == RunTests("1", ("a.b",))
    assert decoder.next_event() is NEED_DATA


def test_end_of_input_is_sticky_and_more_data_is_refused() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"quit 1 0\n")
    decoder.receive_data(b"")
    decoder.receive_data(b"")  # a second end of input is harmless
    assert decoder.next_event() == Quit("1")
    assert decoder.next_event() is END_OF_INPUT
    assert decoder.next_event() is END_OF_INPUT
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"quit 2 0\n")


def test_after_truncated_only_end_of_input() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"stdin 1 9\nab")
    decoder.receive_data(b"")
    with pytest.raises(FrameError) as caught:
        decoder.next_event()
    assert caught.value.code == "truncated" and not caught.value.recoverable
    assert caught.value.data == b"stdin 1 9\nab"
    assert decoder.next_event() is END_OF_INPUT


def test_accepts_bytearray_and_memoryview() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(bytearray(b"quit 1 "))
    decoder.receive_data(memoryview(b"0\n"))
    assert decoder.next_event() == Quit("1")


@pytest.mark.parametrize("bad", [-1, 1.5, "10"])
def test_max_payload_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_payload=bad)  # type: ignore[arg-type]


def test_max_payload_zero_allows_only_empty_payloads() -> None:
    events = decode([b"stdin 1 0\nstdin 2 1\nxquit 3 0\n"], max_payload=0)
    assert summary(events) == [Stdin("1"), ("error", "payload-too-large"), Quit("3")]


# -- error messages: a person typing frames must be able to act on them -------------------


def test_hand_typed_missing_length_message() -> None:
    error = only_error(b"list-tests 1\n")
    assert error.code == "bad-header"
    assert "expected 'NAME ID LENGTH', got b'list-tests 1'" in error.message
    assert (error.command_name, error.command_id) == ("list-tests", "1")
    assert error.data == b"list-tests 1\n"


@pytest.mark.parametrize(
    ("data", "code", "needles"),
    [
        (b"quit\t1 0\n", "bad-header", ["a tab at offset 4", "printable ASCII"]),
        (b"quit  1 0\n", "bad-header", ["single spaces", "b'quit  1 0'"]),
        (b"x" * 200, "header-too-long", ["128 bytes", "b'xxxx"]),
        (b"lst-tests 7 0\n", "unknown-command", ["'lst-tests'", "list-tests, run-tests"]),
        (b"quit a/b 0\n", "bad-id", ["b'a/b'", "A-Z a-z 0-9 . _ : -"]),
        (b"quit 1 1O\n", "bad-length", ["b'1O'", "decimal digits"]),
        (b"quit 1 2\nab", "bad-payload", ["takes no payload", "send 'quit 1 0'"]),
        (b"run-tests 1 1\n\n", "bad-payload", ["empty payload", "run every test"]),
        (b"run-tests 1 2\n\xff\xfe", "bad-payload", ["invalid UTF-8 at offset 0"]),
        (b"stdin 1 50\n" + b"x" * 50, "payload-too-large", ["LENGTH 50", "limit of 10"]),
        (b"list-tests 1", "truncated", ["end of input", "b'list-tests 1'", "newline"]),
        (b"stdin 1 10\nabc", "truncated", ["got 3 of 10 payload bytes"]),
    ],
)
def test_error_messages_quote_input_and_say_what_was_expected(
    data: bytes, code: str, needles: list[str]
) -> None:
    error = decode([data], max_payload=10)[0]
    assert isinstance(error, FrameError)
    assert error.code == code
    for needle in needles:
        assert needle in error.message


def test_error_data_is_truncated() -> None:
    payload = b"a\n" * 1000 + b"\xff"
    error = only_error(b"run-tests 1 %d\n" % len(payload) + payload)
    assert error.code == "bad-payload"
    assert len(error.data) == MAX_ERROR_DATA
    assert error.data.startswith(b"run-tests 1 2001\na\n")


def test_header_error_names_are_only_known_commands() -> None:
    error = only_error(b"frob 1 0\n")
    assert (error.code, error.command_name, error.command_id) == ("unknown-command", None, "1")


# -- memory: skipped bytes are never buffered ---------------------------------------------


def test_payload_too_large_payload_is_dropped_without_buffering() -> None:
    """A client that sends a too-large payload: its bytes go, the frame after them decodes."""
    decoder = FrameDecoder(max_payload=1024)
    decoder.receive_data(b"stdin big 10000000\n")
    with pytest.raises(FrameError) as caught:
        decoder.next_event()
    assert caught.value.code == "payload-too-large"
    assert (caught.value.command_name, caught.value.command_id) == ("stdin", "big")
    chunk = bytes(range(256)) * 16  # one LF per 256 bytes, never a header
    for _ in range(10_000_000 // len(chunk)):
        decoder.receive_data(chunk)
        assert decoder.next_event() is NEED_DATA
        assert decoder.buffered_bytes < MAX_HEADER_LENGTH
    rest = 10_000_000 % len(chunk)
    decoder.receive_data(chunk[:rest] + b"quit 2 0\nstdin 3 4\n")
    assert decoder.next_event() == Quit("2")
    decoder.receive_data(b"abcd")
    assert decoder.next_event() == Stdin("3", b"abcd")
    assert decoder.buffered_bytes == 0


def test_payload_too_large_long_lines_are_not_buffered() -> None:
    decoder = FrameDecoder(max_payload=10)
    decoder.receive_data(b"stdin big 99999999999999999999\n")
    with pytest.raises(FrameError):
        decoder.next_event()
    for _ in range(1000):
        decoder.receive_data(b"z" * 1000)
        assert decoder.next_event() is NEED_DATA
        assert decoder.buffered_bytes == 0
    decoder.receive_data(b"\nlist-tests 2 0\n")
    assert decoder.next_event() == ListTests("2")


@pytest.mark.parametrize(
    "header",
    [
        b"run-tests r 99999999999999999999",
        b"stdin s 100000",
        b"frob f 100000",
        b"quit q/q 100000",
        b"quit q 100000",
        b"run-tests r 0000000000000100000",
    ],
)
def test_an_over_limit_length_never_swallows_the_session(header: bytes) -> None:
    """Issue 10.5: whatever else is wrong with it, a LENGTH above the limit costs one error."""
    lines = b"hello\nnot a frame\n\xff\xfe\nstdin x 99\n" + b"y" * 500 + b"\n"
    events = decode([header + b"\n" + lines + b"list-tests 2 0\nquit 3 0\n"], max_payload=10)
    assert summary(events) == [("error", "payload-too-large"), ListTests("2"), Quit("3")]


def test_payload_too_large_message_says_the_limit_and_what_to_do() -> None:
    error = only_error(b"stdin 7 99999999999999999999\n", max_payload=4096)
    assert "LENGTH 99999999999999999999" in error.message
    assert "limit of 4096 bytes" in error.message
    assert "--max-payload" in error.message
    assert "frames of at most that size" in error.message
    assert (error.command_name, error.command_id) == ("stdin", "7")


@settings(deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=8))
def test_payload_too_large_costs_one_error_whatever_follows(
    garbage: bytes, cuts: list[int]
) -> None:
    """After an over-limit header, the lines that follow never give errors of their own."""
    data = b"stdin s 99999999999999999999\n" + garbage
    outcome = feed(new_decoder(16), split_at(data, cuts))
    errors = [event for event in outcome if isinstance(event, tuple)]
    assert errors[0] == ("error", "payload-too-large")
    commands = [event for event in outcome if not isinstance(event, tuple)]
    if not commands:
        assert errors == [("error", "payload-too-large")]


def test_header_too_long_is_skipped_without_buffering() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"y" * (MAX_HEADER_LENGTH - 1))
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"y")
    with pytest.raises(FrameError) as caught:
        decoder.next_event()
    assert caught.value.code == "header-too-long"
    assert caught.value.data == b"y" * MAX_HEADER_LENGTH
    for _ in range(1000):
        decoder.receive_data(b"z" * 1000)
        assert decoder.buffered_bytes == 0
        assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"zz\r\nlist-tests 2 0\n")
    assert decoder.next_event() == ListTests("2")


def test_header_buffer_never_exceeds_the_limit() -> None:
    decoder = FrameDecoder()
    for byte in b"q" * 1000:
        decoder.receive_data(bytes([byte]))
        try:
            decoder.next_event()
        except FrameError as error:
            assert error.code == "header-too-long"
        assert decoder.buffered_bytes < MAX_HEADER_LENGTH


# -- properties ---------------------------------------------------------------------------

ID_ALPHABET = string.ascii_letters + string.digits + "._:-"
command_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=64)
test_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\0"),
    min_size=1,
    max_size=40,
)
commands = st.one_of(
    st.builds(ListTests, command_ids),
    st.builds(RunTests, command_ids, st.lists(test_ids, max_size=8).map(tuple)),
    st.builds(Stdin, command_ids, st.binary(max_size=300)),
    st.builds(Cancel, command_ids),
    st.builds(Reload, command_ids),
    st.builds(Quit, command_ids),
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def new_decoder(max_payload: int = framing.DEFAULT_MAX_PAYLOAD):
    return lambda: FrameDecoder(max_payload=max_payload)


@settings(deadline=None)
@given(commands)
def test_round_trip_one_command(command: Command) -> None:
    """decode(encode(c)) == c for every valid command, however the frame is split."""
    frame = encode_command(command)
    assert decode_every_way(new_decoder(), frame, trailing=b"quit") == [command]
    assert decode([frame]) == [command]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, max_size=30), st.lists(st.integers(min_value=0), max_size=20))
def test_round_trip_stream_in_any_chunks(batch: list[Command], cuts: list[int]) -> None:
    """A stream of frames decodes to the same commands however it is split."""
    data = b"".join(encode_command(command) for command in batch)
    assert feed(new_decoder(), split_at(data, cuts)) == batch


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_commands_or_frame_errors(data: bytes) -> None:
    """Random bytes give commands or FrameError, nothing else, the same however split."""
    outcome = decode_every_way(new_decoder(64), data)
    assert summary(decode([data], max_payload=64)) == outcome


mutations = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace"]),
        st.integers(0),
        st.binary(min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, chunk in edits:
        at = position % (len(buffer) + 1)
        if kind == "insert":
            buffer[at:at] = chunk
        elif kind == "delete":
            del buffer[at : at + len(chunk)]
        else:
            buffer[at : at + len(chunk)] = chunk
    return bytes(buffer)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(commands, min_size=1, max_size=10),
    mutations,
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_mutated_streams_give_commands_or_frame_errors(
    batch: list[Command], edits: list[tuple[str, int, bytes]], cuts: list[int]
) -> None:
    """Corrupted valid streams still give only commands or FrameError, never hang."""
    data = mutate(b"".join(encode_command(command) for command in batch), edits)
    whole = decode([data], max_payload=200)
    assert feed(new_decoder(200), split_at(data, cuts)) == summary(whole)


TOKENS = [
    *(name.encode() for name in COMMAND_TYPES),
    b"lst",
    b" ",
    b"  ",
    b"\t",
    b"\n",
    b"\r\n",
    b"\r",
    b"0",
    b"1",
    b"3",
    b"007",
    b"x" * 70,
    b"9" * 21,
    b"a/b",
    b"\0",
    b"\xff",
    "é".encode(),
]


@settings(deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_header_like_token_soup_decodes_the_same_every_way(tokens: list[bytes]) -> None:
    """Streams of header-like pieces reach every decoder state; all splits agree."""
    data = b"".join(tokens)
    assert decode_every_way(new_decoder(2), data) == summary(decode([data], max_payload=2))


@given(st.lists(commands, min_size=1, max_size=5), st.binary(max_size=200))
def test_a_bad_line_costs_only_that_line(batch: list[Command], garbage: bytes) -> None:
    """A line that is not a header (here: it holds a NUL) gives one error, then the frames."""
    line = b"\0" + garbage.replace(b"\n", b"") + b"\n"
    events = decode([line + b"".join(encode_command(command) for command in batch)])
    expected = "bad-header" if len(line) <= MAX_HEADER_LENGTH else "header-too-long"
    assert summary(events) == [("error", expected), *batch]


# -- purity -------------------------------------------------------------------------------

FORBIDDEN = {"os", "sys", "select", "threading", "subprocess", "watchdog"}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_framing_imports_no_io_modules() -> None:
    """framing.py, and the testserver modules it imports, stay free of I/O modules."""
    package_root = pathlib.Path(framing.__file__).resolve().parent.parent.parent
    todo = ["testserver.wire.framing"]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        imports = imported_modules(package_root.joinpath(*module.split(".")).with_suffix(".py"))
        assert not {name.split(".")[0] for name in imports} & FORBIDDEN, module
        todo.extend(name for name in imports if name.startswith("testserver."))
    assert "testserver.wire.commands" in seen
