"""The subunit 2.1 codec: encoding rules, decoder behaviour and fuzzed invariants.

Invariants checked with hypothesis, in words:

1. ``decode(encode(p)) == p`` for every valid packet, in 2.1; in 2.0 the parent id is gone.
2. ``encode(decode(b)) == b`` for what our encoder writes (it writes minimal numbers).
3. ``encode_status(...)`` writes the same bytes as ``encode_packet(Packet(...))``.
4. python-subunit reads our bytes as the same events, and we read python-subunit's bytes as
   the same events (the parent id aside, which it does not know).
5. Any bytes, random or a mutated valid stream, decode to packets and ``PacketError`` only,
   identically however they are split, and the decoder always makes progress.
6. ``file_packets`` splits any attachment into packets within the size limit that reassemble
   exactly, ``eof`` only on the last.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import io
import pathlib

import pytest
from decoder_harness import decode_every_way, errors, events, feed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from subunit import StreamResultToBytes
from subunit_reader import EPOCH, read_with_subunit, subunit_view

import testserver.wire.packets as packets_module
from testserver.wire.errors import LocalProtocolError, PacketError
from testserver.wire.events import STATUSES, Packet
from testserver.wire.packets import (
    MAX_DISCARD_CHUNK,
    MAX_PACKET_SIZE,
    MIN_PACKET_SIZE,
    PACKET_ERROR_CODES,
    STRING_CACHE_SIZE,
    SUBUNIT_VERSIONS,
    PacketDecoder,
    decode_packets,
    encode_packet,
    encode_status,
    file_packets,
)
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

MAX_TIMESTAMP_NS = 2**32 * 10**9 - 1
FOO = bytes.fromhex("b3 2901 0c 03666f6f 08555f1b")

# ----------------------------------------------------------------------------- strategies

texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
timestamps = st.integers(0, MAX_TIMESTAMP_NS)
optional_texts = st.none() | texts
files = st.one_of(st.just((None, b"")), st.tuples(texts, st.binary(max_size=300)))


@st.composite
def packets(draw: st.DrawFn, parent: st.SearchStrategy = optional_texts) -> Packet:
    file_name, file_bytes = draw(files)
    return Packet(
        test_id=draw(st.none() | texts),
        status=draw(st.sampled_from(STATUSES)),
        timestamp_ns=draw(st.none() | timestamps),
        tags=draw(st.none() | st.lists(texts, max_size=4).map(tuple)),
        mime_type=draw(st.none() | texts),
        file_name=file_name,
        file_bytes=file_bytes,
        route_code=draw(st.none() | texts),
        runnable=draw(st.booleans()),
        eof=draw(st.booleans()),
        parent_test_id=draw(parent),
    )


def without_parent(packet: Packet) -> Packet:
    return dataclasses.replace(packet, parent_test_id=None)


# ----------------------------------------------------------------------------- round trips


@given(packets())
def test_decode_inverts_encode_in_both_versions(packet: Packet) -> None:
    for version in SUBUNIT_VERSIONS:
        data = encode_packet(packet, subunit_version=version)
        expected = packet if version == "2.1" else without_parent(packet)
        assert decode_packets(data) == [expected]
        assert encode_packet(expected) == data
        assert len(data) >= MIN_PACKET_SIZE
        has_parent_flag = bool(data[2] & 0x08)
        assert has_parent_flag == (version == "2.1" and packet.parent_test_id is not None)


@given(
    texts,
    st.sampled_from(STATUSES),
    st.none() | timestamps,
    st.none() | texts,
    st.none() | texts,
    st.booleans(),
    st.sampled_from(SUBUNIT_VERSIONS),
)
def test_encode_status_matches_encode_packet(
    test_id: str,
    status: str | None,
    timestamp_ns: int | None,
    route_code: str | None,
    parent: str | None,
    runnable: bool,
    version: str,
) -> None:
    packet = Packet(
        test_id=test_id,
        status=status,
        timestamp_ns=timestamp_ns,
        route_code=route_code,
        parent_test_id=parent,
        runnable=runnable,
    )

    def fast() -> bytes:
        return encode_status(
            test_id,
            status,
            timestamp_ns,
            route_code=route_code,
            parent_test_id=parent,
            runnable=runnable,
            subunit_version=version,
        )

    encoded = fast()
    assert encoded == encode_packet(packet, subunit_version=version)
    assert encoded == fast()  # a second call hits the string cache


def test_encode_status_of_long_ids_uses_longer_lengths() -> None:
    for size in (30, 60, 100, 20_000):
        test_id = "t" * size
        data = encode_status(test_id, "success", 1_700_000_000_123_456_789)
        assert data == encode_packet(Packet(test_id, "success", 1_700_000_000_123_456_789))
        assert decode_packets(data)[0].test_id == test_id


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets(), st.integers(-3, 40), st.sampled_from(SUBUNIT_VERSIONS))
def test_file_content_near_the_packet_limit(packet: Packet, slack: int, version: str) -> None:
    packet = dataclasses.replace(packet, file_name=packet.file_name or "f", file_bytes=b"")
    empty = encode_packet(packet, subunit_version=version)
    length_size = (empty[3] >> 6) + 1
    overhead = len(empty) - length_size + 3 + 2  # a 3-byte LENGTH, a 3-byte content size
    size = MAX_PACKET_SIZE - overhead - slack
    big = dataclasses.replace(packet, file_bytes=bytes([size % 251]) * size)
    if slack < 0:
        with pytest.raises(LocalProtocolError, match="at most 4194303"):
            encode_packet(big, subunit_version=version)
        return
    data = encode_packet(big, subunit_version=version)
    assert len(data) == MAX_PACKET_SIZE - slack
    assert decode_packets(data) == [big if version == "2.1" else without_parent(big)]


def test_the_largest_packet_matches_python_subunit() -> None:
    """Our limit is python-subunit's: it accepts our largest chunk and refuses one byte more."""
    header = len(encode_packet(Packet(test_id="t", file_name="f"))) + 2 + 2  # LENGTH, size
    largest = MAX_PACKET_SIZE - header
    ours = encode_packet(Packet(test_id="t", file_name="f", file_bytes=b"x" * largest))
    assert len(ours) == MAX_PACKET_SIZE
    with pytest.raises(LocalProtocolError):
        encode_packet(Packet(test_id="t", file_name="f", file_bytes=b"x" * (largest + 1)))
    out = io.BytesIO()
    StreamResultToBytes(out).status(test_id="t", file_name="f", file_bytes=b"x" * largest)
    assert out.getvalue() == ours
    with pytest.raises(ValueError, match="Length too long"):
        StreamResultToBytes(io.BytesIO()).status(
            test_id="t", file_name="f", file_bytes=b"x" * (largest + 1)
        )


# ----------------------------------------------------------------------------- vs python-subunit


@given(packets(parent=st.none()))
def test_python_subunit_reads_our_packets(packet: Packet) -> None:
    if packet.timestamp_ns is not None:  # python-subunit keeps microseconds only
        packet = dataclasses.replace(packet, timestamp_ns=packet.timestamp_ns // 1000 * 1000)
    assert read_with_subunit(encode_packet(packet)) == [subunit_view(packet)]


@given(packets(parent=texts))
def test_python_subunit_ignores_the_parent_id(packet: Packet) -> None:
    assert read_with_subunit(encode_packet(packet)) == [subunit_view(packet)]


@given(
    st.lists(
        st.tuples(
            texts,
            st.sampled_from(STATUSES),
            st.none() | st.integers(0, 2**32 * 10**6 - 1),
            st.sets(texts.filter(bool), max_size=3),
        ),
        max_size=5,
    )
)
def test_we_read_python_subunits_status_events(items: list[tuple]) -> None:
    out = io.BytesIO()
    writer = StreamResultToBytes(out)
    expected = []
    for test_id, status, micros, tags in items:
        when = None if micros is None else EPOCH + datetime.timedelta(microseconds=micros)
        writer.status(test_id=test_id, test_status=status, timestamp=when, test_tags=tags)
        expected.append((test_id, status, None if micros is None else micros * 1000, tags or None))
    got = [(p.test_id, p.status, p.timestamp_ns, set(p.tags) if p.tags else None) for p in
           decode_packets(out.getvalue())]  # fmt: skip
    assert got == expected


# ----------------------------------------------------------------------------- encoder errors


@pytest.mark.parametrize(
    "packet, match",
    [
        (Packet(test_id="a\x00b"), "NUL"),
        (Packet(test_id="\ud800"), "UTF-8"),
        (Packet(tags=("ok", "no\x00")), "NUL"),
        (Packet(test_id=7), "must be a str"),  # type: ignore[arg-type]
        (Packet(file_name="f", file_bytes=b"x" * MAX_PACKET_SIZE), "at most 4194303"),
        (Packet(file_name="f", file_bytes=5), "bytes-like"),  # type: ignore[arg-type]
    ],
)
def test_encode_packet_refuses_what_the_wire_cannot_carry(packet: Packet, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        encode_packet(packet)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("t", "passed"), {}, "unknown test status"),
        (("t", ["fail"]), {}, "unknown test status"),
        (("t", "fail", -1), {}, "timestamp_ns"),
        (("t", "fail", 2**32 * 10**9), {}, "timestamp_ns"),
        (("t", "fail", 1.5e18), {}, "timestamp_ns"),
        (("t\x00", "fail"), {}, "NUL"),
        ((["t"], "fail"), {}, "must be a str"),
        (("t", "fail"), {"subunit_version": "2.2"}, "subunit_version"),
        (("t", "fail"), {"route_code": "\x00"}, "NUL"),
    ],
)
def test_encode_status_refuses_bad_arguments(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        encode_status(*args, **kwargs)


def test_encode_packet_refuses_other_objects_and_versions() -> None:
    with pytest.raises(LocalProtocolError, match="needs a Packet"):
        encode_packet({"test_id": "t"})  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="subunit_version"):
        encode_packet(Packet(), subunit_version="2")


def test_string_cache_stays_bounded() -> None:
    for i in range(STRING_CACHE_SIZE + 10):
        encode_status(f"cache.test_{i}", "exists")
    encode_status("long" * 1000, "exists")
    assert len(packets_module._string_cache) <= STRING_CACHE_SIZE
    assert "long" * 1000 not in packets_module._string_cache


# ----------------------------------------------------------------------------- file_packets


@settings(deadline=None)
@given(
    st.binary(max_size=3000),
    st.integers(MIN_PACKET_SIZE, 400),
    st.booleans(),
    st.none() | texts,
    st.sampled_from(SUBUNIT_VERSIONS),
)
def test_file_packets_split_and_reassemble(
    data: bytes, limit: int, eof: bool, parent: str | None, version: str
) -> None:
    kwargs = dict(test_id="pkg.T.test", mime_type="text/plain", route_code="0", eof=eof)
    try:
        chunks = file_packets(
            "log", data, max_packet_size=limit, parent_test_id=parent, subunit_version=version,
            timestamp_ns=123, **kwargs,
        )  # fmt: skip
    except LocalProtocolError:
        empty = Packet(file_name="log", timestamp_ns=123, parent_test_id=parent, **kwargs)
        size = len(encode_packet(empty, subunit_version=version))
        assert size + (1 if data else 0) > limit  # not even one byte of content fits
        return
    decoded = [decode_packets(chunk)[0] for chunk in chunks]
    assert all(len(chunk) <= limit for chunk in chunks)
    assert b"".join(p.file_bytes for p in decoded) == data
    assert [p.eof for p in decoded] == [False] * (len(chunks) - 1) + [eof]
    for packet, chunk in zip(decoded, chunks, strict=True):
        assert packet.mime_type == "text/plain" and packet.test_id == "pkg.T.test"
        assert packet.timestamp_ns == 123 and packet.route_code == "0"
        assert packet.parent_test_id == (parent if version == "2.1" else None)
        assert encode_packet(packet, subunit_version=version) == chunk
    for packet in decoded[:-1]:  # every chunk but the last is as large as the limit allows
        one_more = dataclasses.replace(packet, file_bytes=packet.file_bytes + b"x")
        assert len(encode_packet(one_more, subunit_version=version)) > limit


def test_file_packets_of_a_9_mib_attachment() -> None:
    data = bytes(range(256)) * (9 * 4096)
    chunks = file_packets("big.bin", data, test_id="t", mime_type="application/octet-stream")
    assert len(chunks) == 3
    assert [len(chunk) for chunk in chunks[:-1]] == [MAX_PACKET_SIZE] * 2
    decoded = decode_packets(b"".join(chunks))
    assert b"".join(p.file_bytes for p in decoded) == data
    assert [p.eof for p in decoded] == [False, False, True]
    seen = read_with_subunit(b"".join(chunks))
    assert [e["mime_type"] for e in seen] == ["application/octet-stream"] * 3
    assert b"".join(e["file_bytes"] for e in seen) == data


def test_file_packets_of_empty_data_is_one_packet() -> None:
    (only,) = file_packets("stdout", b"", test_id="t")
    assert decode_packets(only) == [Packet(test_id="t", file_name="stdout", eof=True)]
    (only,) = file_packets("stdout", b"", eof=False)
    assert decode_packets(only) == [Packet(file_name="stdout")]


def test_file_packets_refuses_impossible_limits() -> None:
    with pytest.raises(LocalProtocolError, match="max_packet_size"):
        file_packets("f", b"x", max_packet_size=MAX_PACKET_SIZE + 1)
    with pytest.raises(LocalProtocolError, match="no room"):
        file_packets("f", b"x", test_id="t" * 100, max_packet_size=64)


# ----------------------------------------------------------------------------- the decoder


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_packets_or_errors(data: bytes) -> None:
    outcome = decode_every_way(PacketDecoder, data, split_limit=64)
    assert set(errors(outcome)) <= set(PACKET_ERROR_CODES)
    assert all(isinstance(event, Packet) for event in events(outcome))


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    stream = bytearray(b"".join(encode_packet(p) for p in draw(st.lists(packets(), max_size=3))))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(stream)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip" and where < len(stream):
            stream[where] ^= draw(st.integers(1, 255))
        elif action == "insert":
            stream[where:where] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del stream[where : where + draw(st.integers(1, 4))]
        elif action == "cut":
            del stream[where:]
    return bytes(stream)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_streams())
def test_mutated_streams_give_packets_or_errors(data: bytes) -> None:
    outcome = decode_every_way(PacketDecoder, data, split_limit=64)
    assert set(errors(outcome)) <= set(PACKET_ERROR_CODES)
    assert errors(outcome).count("truncated") <= 1


@given(st.lists(packets(), max_size=4))
def test_a_valid_stream_decodes_the_same_every_way(items: list[Packet]) -> None:
    data = b"".join(encode_packet(p) for p in items)
    assert decode_every_way(PacketDecoder, data, split_limit=64, trailing=FOO[:5]) == items


def test_error_is_raised_after_skipping_and_decoding_continues() -> None:
    decoder = PacketDecoder()
    decoder.receive_data(b"noise" + FOO + b"\xb3\x29\x01\x0c" + b"\x00" * 8 + FOO)
    with pytest.raises(PacketError) as caught:
        decoder.next_event()
    assert (caught.value.code, caught.value.data, caught.value.recoverable) == (
        "no-signature",
        b"noise",
        True,
    )
    assert decoder.next_event() == Packet(test_id="foo", status="exists")
    with pytest.raises(PacketError, match="bad CRC32") as caught:
        decoder.next_event()
    assert caught.value.data == b"\xb3\x29\x01\x0c" + b"\x00" * 8
    assert decoder.next_event() == Packet(test_id="foo", status="exists")
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"")
    assert decoder.next_event() is END_OF_INPUT


def test_garbage_waits_for_a_signature_then_comes_in_bounded_pieces() -> None:
    decoder = PacketDecoder()
    decoder.receive_data(b"x" * 10)
    assert decoder.next_event() is NEED_DATA  # more garbage may follow: report it in one piece
    decoder.receive_data(b"x" * (MAX_DISCARD_CHUNK + 5))
    with pytest.raises(PacketError) as caught:
        decoder.next_event()
    assert (caught.value.code, len(caught.value.data)) == ("no-signature", MAX_DISCARD_CHUNK)
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == 15
    decoder.receive_data(b"")
    with pytest.raises(PacketError) as caught:
        decoder.next_event()
    assert len(caught.value.data) == 15
    assert decoder.next_event() is END_OF_INPUT


def test_truncation_is_final() -> None:
    decoder = PacketDecoder()
    decoder.receive_data(FOO[:-2])
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"")
    with pytest.raises(PacketError) as caught:
        decoder.next_event()
    assert (caught.value.code, caught.value.data, caught.value.recoverable) == (
        "truncated",
        FOO[:-2],
        False,
    )
    assert decoder.next_event() is END_OF_INPUT
    assert decoder.next_event() is END_OF_INPUT
    with pytest.raises(LocalProtocolError, match="after end of input"):
        decoder.receive_data(b"more")


def test_max_packet_size_refuses_larger_packets() -> None:
    big = encode_packet(Packet(test_id="t" * 100))
    assert decode_packets(big)[0].test_id == "t" * 100
    outcome = feed(lambda: PacketDecoder(max_packet_size=100), [big + FOO])
    assert errors(outcome) == ["bad-length", "no-signature"]
    assert events(outcome) == [Packet(test_id="foo", status="exists")]
    with pytest.raises(LocalProtocolError):
        PacketDecoder(max_packet_size=MIN_PACKET_SIZE - 1)


def test_decode_packets_raises_the_first_error() -> None:
    assert decode_packets([FOO[:3], FOO[3:], b"", FOO]) == [Packet("foo", "exists")] * 2
    with pytest.raises(PacketError, match="not a subunit packet"):
        decode_packets(FOO + b"junk")


def test_decoded_packets_equal_constructed_ones() -> None:
    """The decoder fills Packet's slots directly; the result must be a normal Packet."""
    packet = decode_packets(encode_packet(Packet("a", "fail", 5, ("x",), "m", "f", b"b")))[0]
    assert packet == Packet("a", "fail", 5, ("x",), "m", "f", b"b")
    assert hash(packet) == hash(Packet("a", "fail", 5, ("x",), "m", "f", b"b"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        packet.test_id = "b"  # type: ignore[misc]


# ----------------------------------------------------------------------------- purity

FORBIDDEN_IMPORTS = {"os", "sys", "select", "threading", "subprocess", "watchdog", "socket", "io"}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


SESSION_CORE = [
    "splitting.py",
    "batchtracking.py",
    "sessionactions.py",
    "sessionerror.py",
    "serversession.py",
    "clientsession.py",
    "units.py",
    "tagging.py",
]
"""The pure session core: held to the same rule as the codec."""


def test_the_codec_does_no_io() -> None:
    """The codec (packets.py, decoding.py, packetformat.py), the session core, and the
    testserver modules they import use no I/O or process modules."""
    wire = pathlib.Path(packets_module.__file__).resolve().parent
    package_root = wire.parents[1]
    codec = [wire / "packets.py", wire / "decoding.py", wire / "packetformat.py"]
    codec += [wire / name for name in SESSION_CORE]
    todo, seen = list(codec), set()
    while todo:
        path = todo.pop()
        seen.add(path)
        for name in imported_modules(path):
            assert name.split(".")[0] not in FORBIDDEN_IMPORTS, f"{path.name} imports {name}"
            if name.startswith("testserver."):
                module_path = package_root.joinpath(*name.split(".")).with_suffix(".py")
                if not module_path.exists():  # a package: its __init__.py
                    module_path = module_path.with_suffix("") / "__init__.py"
                if module_path not in seen:
                    todo.append(module_path)
    assert set(codec) <= seen
    assert len(seen) >= 6  # packets, decoding, packetformat, errors, events, sentinels
