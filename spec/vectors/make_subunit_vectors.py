"""Write ``subunit.json``: golden vectors for subunit 2.1 packets (the server's stdout).

Run ``python spec/vectors/make_subunit_vectors.py`` after changing a vector; the test suite
checks that ``subunit.json`` is what this script writes. The bytes are assembled here field
by field with the standard library only (``zlib.crc32``, ``int.to_bytes``), never by
testserver's encoder, and the expected packets are written by hand, so the vectors check
the codec instead of echoing it. ``README.md`` beside this file describes the format.
"""

from __future__ import annotations

import json
import pathlib
import zlib

OUTPUT = pathlib.Path(__file__).with_name("subunit.json")

EPOCH_2024 = 1_704_067_200
"""2024-01-01T00:00:00Z, the seconds used by most timestamps below."""

STATUSES = ("none", "exists", "inprogress", "success", "uxsuccess", "skip", "fail", "xfail")
FLAG_NAMES = (
    (0x0800, "TEST_ID"),
    (0x0400, "ROUTE_CODE"),
    (0x0200, "TIMESTAMP"),
    (0x0100, "RUNNABLE"),
    (0x0080, "TAGS"),
    (0x0040, "FILE_CONTENT"),
    (0x0020, "MIME_TYPE"),
    (0x0010, "EOF"),
    (0x0008, "PARENT_TEST_ID"),
)
ELIDE_OVER = 48
"""Fields longer than this many bytes are shortened in "fields" (never in "hex")."""

Field = tuple[str, bytes, str]


# ----------------------------------------------------------------------------- fields


def varint(value: int, size: int | None = None) -> bytes:
    """A subunit number: the top 2 bits of the first byte give the size (1-4 bytes)."""
    if size is None:
        size = 1 if value < 2**6 else 2 if value < 2**14 else 3 if value < 2**22 else 4
    assert value < 2 ** (8 * size - 2)
    return ((size - 1) << (8 * size - 2) | value).to_bytes(size, "big")


def utf8(name: str, text: str, *, raw: bytes | None = None, size: int | None = None) -> Field:
    if raw is not None:
        return name, varint(len(raw), size) + raw, f"{len(raw)} bytes: {raw!r}"
    data = text.encode("utf-8")
    shown = repr(text) if len(text) <= 40 else f"{text[:8]!r}... ({len(text)} characters)"
    return name, varint(len(data), size) + data, f"{len(data)} bytes: {shown}"


def timestamp(seconds: int, nanoseconds: int = 0) -> list[Field]:
    return [
        ("timestamp_seconds", seconds.to_bytes(4, "big"), f"{seconds} s since the epoch"),
        ("timestamp_nanoseconds", varint(nanoseconds), f"{nanoseconds} ns"),
    ]


def test_id(text: str, **kwargs: object) -> Field:
    return utf8("test_id", text, **kwargs)  # type: ignore[arg-type]


def tags(*names: str) -> Field:
    data = varint(len(names)) + b"".join(varint(len(n.encode())) + n.encode() for n in names)
    return "tags", data, f"{len(names)} tags: {', '.join(names) or '(none)'}"


def mime(text: str) -> Field:
    return utf8("mime_type", text)


def file_content(name: str, data: bytes) -> list[Field]:
    return [
        utf8("file_name", name),
        ("file_content", varint(len(data)) + data, f"{len(data)} bytes of content"),
    ]


def route(text: str) -> Field:
    return utf8("route_code", text)


def parent(text: str) -> Field:
    return utf8("parent_test_id", text)


def describe_flags(flags: int) -> str:
    names = [name for bit, name in FLAG_NAMES if flags & bit]
    status = flags & 7
    return f"0x{flags:04x}: version {flags >> 12} | {' | '.join(names) or 'no fields'} | " + (
        f"status {status} ({STATUSES[status]})"
    )


def packet(
    flags: int,
    *fields: Field | list[Field],
    length_size: int | None = None,
    crc: int | None = None,
) -> list[Field]:
    """Assemble one packet: signature, flags, LENGTH (whole packet), fields, CRC32."""
    body: list[Field] = []
    for item in fields:
        body.extend(item if isinstance(item, list) else [item])
    size = 1 + 2 + sum(len(data) for _, data, _ in body) + 4
    if length_size is None:
        length_size = 1 if size + 1 <= 63 else 2 if size + 2 <= 16383 else 3
    total = size + length_size
    head: list[Field] = [
        ("signature", b"\xb3", "packet start"),
        ("flags", flags.to_bytes(2, "big"), describe_flags(flags)),
        ("length", varint(total, length_size), f"{total} bytes in the whole packet"),
    ]
    content = b"".join(data for _, data, _ in head + body)
    real_crc = zlib.crc32(content)
    meaning = "zlib.crc32 of the bytes before it"
    if crc is not None:
        meaning = f"wrong on purpose (the real CRC32 is {real_crc:08x})"
    return [*head, *body, ("crc32", (real_crc if crc is None else crc).to_bytes(4, "big"), meaning)]


def garbage(data: bytes, meaning: str = "not a packet") -> list[Field]:
    return [("garbage", data, meaning)]


# ----------------------------------------------------------------------------- expectations


def pk(**fields: object) -> dict:
    """An expected packet: Packet field names, defaults omitted, bytes as ``file_bytes_hex``."""
    if "file_bytes" in fields:
        fields["file_bytes_hex"] = fields.pop("file_bytes").hex()  # type: ignore[union-attr]
    if "tags" in fields:
        fields["tags"] = list(fields["tags"])  # type: ignore[call-overload]
    return fields


def err(code: str, data: bytes) -> dict:
    return {"error": code, "data_hex": data.hex()}


def concat(*parts: list[Field]) -> list[Field]:
    return [field for part in parts for field in part]


def raw(fields: list[Field]) -> bytes:
    return b"".join(data for _, data, _ in fields)


def vector(name: str, comment: str, fields: list[Field], **expect: object) -> dict:
    shown = []
    for field_name, data, meaning in fields:
        text = data.hex()
        if len(data) > ELIDE_OVER:
            text = data[:16].hex() + "…"
        shown.append([field_name, text, meaning])
    result = {"name": name, "comment": comment, "hex": " ".join(d.hex() for _, d, _ in fields)}
    result["fields"] = shown
    result.update(expect)
    return result


# ----------------------------------------------------------------------------- vectors

FOO = packet(0x2901, test_id("foo"))
FAIL_EVERYTHING = packet(
    0x2EF6,
    timestamp(EPOCH_2024),
    test_id("foo"),
    tags("worker-0"),
    mime("text/plain"),
    file_content("traceback", b"x"),
    route("0/1"),
)


def valid_vectors() -> list[dict]:
    ts = EPOCH_2024 * 10**9
    vectors = [
        vector(
            "readme-exists-foo",
            "The example in python-subunit's README: test 'foo' exists (runnable).",
            FOO,
            canonical=True,
            packets=[pk(test_id="foo", status="exists")],
        ),
        vector(
            "minimal-packet",
            "No fields and no flags but the version: the smallest packet (8 bytes).",
            packet(0x2000),
            canonical=True,
            packets=[pk(runnable=False)],
        ),
    ]
    for code, status in enumerate(STATUSES):
        vectors.append(
            vector(
                f"status-{status}",
                f"Status code {code} ({status}) for test 'foo', runnable.",
                packet(0x2900 | code, test_id("foo")),
                canonical=True,
                packets=[pk(test_id="foo", status=None if code == 0 else status)],
            )
        )
    vectors += [
        vector(
            "fail-everything-set",
            "Every v2 field at once, runnable false (reference section 1.1).",
            FAIL_EVERYTHING,
            canonical=True,
            packets=[
                pk(
                    test_id="foo",
                    status="fail",
                    timestamp_ns=ts,
                    tags=["worker-0"],
                    mime_type="text/plain",
                    file_name="traceback",
                    file_bytes=b"x",
                    route_code="0/1",
                    runnable=False,
                    eof=True,
                )
            ],
        ),
        vector(
            "runnable-false",
            "Flag 0x0100 clear: the test cannot be run on its own (e.g. a subtest).",
            packet(0x2803, test_id("foo")),
            canonical=True,
            packets=[pk(test_id="foo", status="success", runnable=False)],
        ),
        vector(
            "timestamp-only",
            "A global event: a timestamp and nothing else (no test id).",
            packet(0x2200, timestamp(EPOCH_2024, 5)),
            canonical=True,
            packets=[pk(timestamp_ns=ts + 5, runnable=False)],
        ),
    ]
    for ns, size in ((63, 1), (64, 2), (16383, 2), (16384, 3), (4194303, 3), (4194304, 4)):
        vectors.append(
            vector(
                f"timestamp-ns-{ns}",
                f"Nanoseconds {ns} take a {size}-byte number.",
                packet(0x2B02, timestamp(EPOCH_2024, ns), test_id("foo")),
                canonical=True,
                packets=[pk(test_id="foo", status="inprogress", timestamp_ns=ts + ns)],
            )
        )
    vectors += [
        vector(
            "timestamp-extremes",
            "The largest timestamp: 2**32-1 seconds and 999,999,999 ns.",
            packet(0x2B03, timestamp(2**32 - 1, 999_999_999), test_id("foo")),
            canonical=True,
            packets=[pk(test_id="foo", status="success", timestamp_ns=2**32 * 10**9 - 1)],
        ),
        vector(
            "timestamp-zero",
            "The epoch itself: 0 s, 0 ns.",
            packet(0x2B03, timestamp(0, 0), test_id("foo")),
            canonical=True,
            packets=[pk(test_id="foo", status="success", timestamp_ns=0)],
        ),
        vector(
            "tags-none",
            "Flag TAGS with a count of 0: an empty tag tuple, not an absent one.",
            packet(0x2982, test_id("foo"), tags()),
            canonical=True,
            packets=[pk(test_id="foo", status="inprogress", tags=[])],
        ),
        vector(
            "tags-several",
            "Three tags; the decoder keeps wire order (readers may treat them as a set).",
            packet(0x2983, test_id("foo"), tags("worker-1", "slow", "db")),
            canonical=True,
            packets=[pk(test_id="foo", status="success", tags=["worker-1", "slow", "db"])],
        ),
        vector(
            "mime-type-only",
            "A MIME type without file content.",
            packet(0x2120, mime("text/plain;charset=utf8")),
            canonical=True,
            packets=[pk(mime_type="text/plain;charset=utf8")],
        ),
        vector(
            "file-content",
            "A binary attachment chunk (any bytes, even 0x00 and 0xb3), not the last.",
            packet(
                0x2960,
                test_id("foo"),
                mime("application/octet-stream"),
                file_content("data", b"\x00\xb3\xff\n"),
            ),
            canonical=True,
            packets=[
                pk(
                    test_id="foo",
                    mime_type="application/octet-stream",
                    file_name="data",
                    file_bytes=b"\x00\xb3\xff\n",
                )
            ],
        ),
        vector(
            "file-content-empty-eof",
            "An empty last chunk: eof with zero bytes closes the file 'stdout'.",
            packet(0x2950, test_id("foo"), file_content("stdout", b"")),
            canonical=True,
            packets=[pk(test_id="foo", file_name="stdout", eof=True)],
        ),
        vector(
            "route-code",
            "A route code names the worker or stream the event came through.",
            packet(0x2D03, test_id("foo"), route("0/1")),
            canonical=True,
            packets=[pk(test_id="foo", status="success", route_code="0/1")],
        ),
        vector(
            "parent-test-id",
            "2.1: flag 0x0008 and PARENT_TEST_ID, the last field before the CRC.",
            packet(0x2C0B, test_id("pkg.T.test_x (i=3)"), route("0"), parent("pkg.T.test_x")),
            canonical=True,
            packets=[
                pk(
                    test_id="pkg.T.test_x (i=3)",
                    status="success",
                    route_code="0",
                    runnable=False,
                    parent_test_id="pkg.T.test_x",
                )
            ],
        ),
        vector(
            "subtest-fail",
            "A failing subtest with its traceback; it is not runnable on its own.",
            packet(
                0x2A7E,
                timestamp(EPOCH_2024, 250_000_000),
                test_id("pkg.T.test_x (i=3)"),
                mime("text/x-traceback;charset=utf8"),
                file_content("traceback", b"AssertionError: 3 != 4\n"),
                parent("pkg.T.test_x"),
            ),
            canonical=True,
            packets=[
                pk(
                    test_id="pkg.T.test_x (i=3)",
                    status="fail",
                    timestamp_ns=ts + 250_000_000,
                    mime_type="text/x-traceback;charset=utf8",
                    file_name="traceback",
                    file_bytes=b"AssertionError: 3 != 4\n",
                    runnable=False,
                    eof=True,
                    parent_test_id="pkg.T.test_x",
                )
            ],
        ),
        vector(
            "unicode-test-id",
            "Test ids are UTF-8; the length counts bytes, not characters.",
            packet(0x2901, test_id("tests.test_ü.T.test_‡")),
            canonical=True,
            packets=[pk(test_id="tests.test_ü.T.test_‡", status="exists")],
        ),
        vector(
            "two-packets",
            "A stream is packets back to back: inprogress then success with timestamps.",
            concat(
                packet(0x2B02, timestamp(EPOCH_2024, 1000), test_id("pkg.mod.T.test_a")),
                packet(0x2B03, timestamp(EPOCH_2024, 2_000_000), test_id("pkg.mod.T.test_a")),
            ),
            canonical=True,
            packets=[
                pk(test_id="pkg.mod.T.test_a", status="inprogress", timestamp_ns=ts + 1000),
                pk(test_id="pkg.mod.T.test_a", status="success", timestamp_ns=ts + 2_000_000),
            ],
        ),
        vector(
            "non-minimal-numbers",
            "Decoders accept numbers longer than needed (2-byte length, 2-byte string "
            "length); encoders never write them.",
            packet(0x2901, test_id("foo", size=2), length_size=2),
            canonical=False,
            packets=[pk(test_id="foo", status="exists")],
        ),
    ]
    return vectors + boundary_vectors()


def boundary_vectors() -> list[dict]:
    """Where LENGTH and string lengths grow a byte (sizes computed, not guessed)."""
    vectors = []
    # A packet with only a test id of n bytes and a k-byte string length has
    # 1 + 2 + L + k + n + 4 bytes; L grows at 63 -> 64 and 16383 -> 16384 total.
    for total_without_length, length_size in ((62, 1), (63, 2), (16381, 2), (16382, 3)):
        n = total_without_length - 7
        n -= 1 if n - 1 < 64 else 2 if n - 2 < 16384 else 3
        text = "a" * n
        fields = packet(0x2901, test_id(text))
        assert len(fields[2][1]) == length_size, (total_without_length, fields[2])
        total = total_without_length + length_size
        vectors.append(
            vector(
                f"length-{total}",
                f"A {total}-byte packet: {total_without_length} bytes plus a "
                f"{length_size}-byte LENGTH.",
                fields,
                canonical=True,
                packets=[pk(test_id=text, status="exists")],
            )
        )
    for n, size in ((63, 1), (64, 2), (16383, 2), (16384, 3)):
        text = "b" * n
        vectors.append(
            vector(
                f"string-{n}-bytes",
                f"A {n}-byte test id has a {size}-byte length.",
                packet(0x2901, test_id(text)),
                canonical=True,
                packets=[pk(test_id=text, status="exists")],
            )
        )
    return vectors


def malformed_vectors() -> list[dict]:
    foo = raw(FOO)
    foo_packet = pk(test_id="foo", status="exists")
    bad_crc = packet(0x2901, test_id("foo"), crc=0)
    short = packet(0x2000)
    short[2] = ("length", b"\x07", "7: less than the 8 bytes of an empty packet")
    four_byte = [
        ("signature", b"\xb3", "packet start"),
        ("flags", b"\x29\x01", describe_flags(0x2901)),
        ("length", b"\xc0\x00\x00\x0f", "a 4-byte number: LENGTH may use at most 3"),
    ]
    head_too_long = [
        ("signature", b"\xb3", "packet start"),
        ("flags", b"\x20\x00", describe_flags(0x2000)),
        ("length", b"\x40\x08", "8, but a 2-byte LENGTH needs at least 9"),
    ]
    cut = packet(0x2901, test_id("foo"))
    cut_test_id = packet(0x2901, ("test_id", b"\x0afoo", "claims 10 bytes, 3 follow"))
    tag_missing = packet(0x2982, test_id("foo"), ("tags", b"\x02\x01a", "claims 2 tags, 1 follows"))
    no_parent = packet(0x290B, test_id("foo"))
    no_parent[1] = ("flags", b"\x29\x0b", describe_flags(0x290B) + " but no parent field")
    cut_timestamp = packet(0x2200, ("timestamp_seconds", b"\x65\x92\x00", "only 3 bytes"))
    cut_file = packet(
        0x2840, test_id("foo"), utf8("file_name", "log"), ("file_content", b"\x05ab", "claims 5")
    )
    trailing = packet(0x2901, test_id("foo"), ("extra", b"\x00", "no flag announces this byte"))
    big_ns = packet(
        0x2A02,
        ("timestamp_seconds", EPOCH_2024.to_bytes(4, "big"), f"{EPOCH_2024} s"),
        ("timestamp_nanoseconds", varint(10**9), "1,000,000,000 ns: a whole second"),
        test_id("foo"),
    )

    def bad(name: str, comment: str, fields: list[Field], events: list[dict]) -> dict:
        first = next(event["error"] for event in events if "error" in event)
        return vector(name, comment, fields, canonical=False, error=first, events=events)

    def whole(name: str, code: str, comment: str, fields: list[Field]) -> dict:
        return bad(name, comment, fields, [err(code, raw(fields))])

    text = b"hello\n"
    return [
        bad(
            "no-signature",
            "Text before a packet is reported and skipped up to the next 0xb3.",
            concat(garbage(text, "'hello\\n': no 0xb3 signature"), FOO),
            [err("no-signature", text), foo_packet],
        ),
        bad(
            "bad-length-too-short",
            "LENGTH 7 < 8: drop the signature byte only, then resynchronise at the next 0xb3.",
            concat(short, FOO),
            [err("bad-length", b"\xb3"), err("no-signature", raw(short)[1:]), foo_packet],
        ),
        bad(
            "bad-length-header-longer",
            "A 2-byte LENGTH of 8 cannot hold signature, flags, itself and the CRC (9).",
            concat(head_too_long, FOO),
            [err("bad-length", b"\xb3"), err("no-signature", raw(head_too_long)[1:]), foo_packet],
        ),
        bad(
            "bad-length-4-bytes",
            "A 4-byte LENGTH is refused (packets are at most 4,194,303 bytes).",
            concat(four_byte, FOO),
            [err("bad-length", b"\xb3"), err("no-signature", raw(four_byte)[1:]), foo_packet],
        ),
        bad(
            "bad-crc",
            "A wrong CRC32 drops the whole declared packet; decoding resumes after it.",
            concat(bad_crc, FOO),
            [err("bad-crc", raw(bad_crc)), foo_packet],
        ),
        whole(
            "bad-version-3",
            "bad-version",
            "Version nibble 3 (0x1000 set).",
            packet(0x3901, test_id("foo")),
        ),
        whole("bad-version-0", "bad-version", "Version nibble 0.", packet(0x0901, test_id("foo"))),
        whole(
            "bad-string-not-utf8",
            "bad-string",
            "0xff never occurs in UTF-8.",
            packet(0x2901, utf8("test_id", "", raw=b"f\xffo")),
        ),
        whole(
            "bad-string-nul",
            "bad-string",
            "Strings may not contain NUL.",
            packet(0x2901, utf8("test_id", "", raw=b"f\x00o")),
        ),
        whole(
            "bad-string-surrogate",
            "bad-string",
            "An encoded UTF-16 surrogate (U+D800) is not valid UTF-8.",
            packet(0x2901, utf8("test_id", "", raw=b"\xed\xa0\x80")),
        ),
        whole(
            "bad-string-tag",
            "bad-string",
            "A tag with a NUL.",
            packet(0x2981, test_id("foo"), ("tags", b"\x01\x02a\x00", "1 tag: 'a\\x00'")),
        ),
        whole(
            "field-overrun-string", "field-overrun", "A string longer than the packet.", cut_test_id
        ),
        whole("field-overrun-tags", "field-overrun", "Fewer tags than counted.", tag_missing),
        whole(
            "field-overrun-parent",
            "field-overrun",
            "Flag PARENT_TEST_ID set but the fields end first.",
            no_parent,
        ),
        whole("field-overrun-timestamp", "field-overrun", "A cut timestamp.", cut_timestamp),
        whole(
            "field-overrun-file", "field-overrun", "File content longer than the packet.", cut_file
        ),
        whole(
            "trailing-bytes",
            "trailing-bytes",
            "A byte between the last field and the CRC (python-subunit ignores it; we do not).",
            trailing,
        ),
        whole("bad-timestamp", "bad-timestamp", "Nanoseconds must be < 10**9.", big_ns),
        bad(
            "truncated",
            "The input ends inside a packet: the partial packet is reported, not recoverable.",
            concat(FOO, cut[:-1], [("crc32", raw(cut[-1:])[:3], "3 of the 4 CRC bytes")]),
            [foo_packet, {**err("truncated", foo[:-1]), "recoverable": False}],
        ),
        bad(
            "truncated-header",
            "The input ends after the signature and one flags byte.",
            [("signature", b"\xb3", "packet start"), ("flags", b"\x29", "first byte only")],
            [{**err("truncated", b"\xb3\x29"), "recoverable": False}],
        ),
    ]


def build() -> list[dict]:
    vectors = valid_vectors() + malformed_vectors()
    assert vectors[0]["hex"] == "b3 2901 0c 03666f6f 08555f1b", vectors[0]["hex"]
    fail = next(v for v in vectors if v["name"] == "fail-everything-set")
    assert fail["hex"].replace(" ", "") == (
        "b32ef636659200800003666f6f0108776f726b65722d300a746578742f706c61696e"
        "0974726163656261636b017803302f315905c4c4"
    ), "must match the worked example in the reference"
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)), "vector names must be unique"
    return vectors


def render(vectors: list[dict]) -> str:
    """JSON with one vector per block and each field, packet and event on its own line."""
    blocks = []
    for v in vectors:
        lines = []
        for key, value in v.items():
            if key in ("fields", "packets", "events"):
                items = ",\n".join(
                    f"      {json.dumps(item, ensure_ascii=False)}" for item in value
                )
                lines.append(f'    "{key}": [\n{items}\n    ]' if value else f'    "{key}": []')
            else:
                lines.append(f"    {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
        blocks.append("  {\n" + ",\n".join(lines) + "\n  }")
    return "[\n" + ",\n".join(blocks) + "\n]\n"


def main() -> None:
    OUTPUT.write_text(render(build()), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
