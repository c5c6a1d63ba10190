"""Write ``frames.json``: golden vectors for command framing (client -> server stdin).

Run ``python spec/vectors/make_frame_vectors.py`` after changing a vector; the test suite
checks that ``frames.json`` is what this script writes. The expected events are written
here by hand, never computed by testserver, so the vectors check the decoder instead of
echoing it. The script uses only the standard library.

Each vector is an object with:

- ``name``: a unique slug; ``comment``: what it shows.
- ``hex``: the input bytes in hex. Whitespace is insignificant; groups are at most 8 bytes
  and break after every LF.
- ``text``: the same bytes for reading: printable characters as they are, ``\\n``, ``\\r``,
  ``\\t``, ``\\\\`` and ``\\xNN`` for every other byte (non-ASCII UTF-8 characters that are
  printable are shown as themselves).
- ``max_payload`` (optional): the decoder's ``max_payload``; the default is 64 MiB.
- ``canonical``: true when the bytes are exactly what an encoder writes for the commands in
  ``events`` (no errors, no optional CR, no blank lines, no leading zeros).
- ``events``: everything the decoder returns, in order, for the bytes followed by end of
  input (``END_OF_INPUT`` itself is not listed). An event is either a command, e.g.
  ``{"command": "run-tests", "id": "7", "test_ids": ["a", "b"]}`` (``test_ids`` only for
  ``run-tests``, ``data_hex`` only for ``stdin``), or an error
  ``{"error": CODE, "command_name": NAME-or-null, "command_id": ID-or-null}``.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import unicodedata

OUTPUT = pathlib.Path(__file__).with_name("frames.json")

MAX_ID = "A" * 20 + "z" * 20 + "0123456789" + "._:-" * 3 + "Zz"
assert len(MAX_ID) == 64


def hex_groups(data: bytes) -> str:
    """``data`` in hex, in groups of at most 8 bytes that also break after each LF."""
    groups: list[str] = []
    for line in re.findall(rb"[^\n]*\n|[^\n]+", data):
        groups.extend(line[i : i + 8].hex() for i in range(0, len(line), 8))
    return " ".join(groups)


def escape(data: bytes) -> str:
    """``data`` for reading, as described in the module docstring."""
    out: list[str] = []
    text = data.decode("utf-8", errors="surrogateescape")
    for char in text:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code >= 0x80 and char.isprintable() and unicodedata.category(char)[0] != "Z":
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def cmd(name: str, id_: str) -> dict:
    return {"command": name, "id": id_}


def run(id_: str, *test_ids: str) -> dict:
    return {"command": "run-tests", "id": id_, "test_ids": list(test_ids)}


def stdin(id_: str, data: bytes) -> dict:
    return {"command": "stdin", "id": id_, "data_hex": data.hex()}


def err(code: str, name: str | None = None, id_: str | None = None) -> dict:
    return {"error": code, "command_name": name, "command_id": id_}


def vector(
    name: str,
    comment: str,
    data: bytes,
    events: list[dict],
    *,
    canonical: bool = False,
    max_payload: int | None = None,
) -> dict:
    result: dict = {"name": name, "comment": comment, "hex": hex_groups(data)}
    result["text"] = escape(data)
    if max_payload is not None:
        result["max_payload"] = max_payload
    result["canonical"] = canonical
    result["events"] = events
    return result


ALL_BYTES = bytes(range(256))
UNICODE_IDS = ("tests.test_ünïcödé.Tëst.test_日本語", "tests.émoji.T.test_🐍", "a b\u2028c")


def good_vectors() -> list[dict]:
    unicode_payload = "\n".join(UNICODE_IDS).encode("utf-8")
    return [
        vector(
            "list-tests-hand-typed",
            "The frame a person types to list tests: name, id, LENGTH 0, Enter.",
            b"list-tests 1 0\n",
            [cmd("list-tests", "1")],
            canonical=True,
        ),
        vector(
            "run-tests-one-id",
            "Run one test; the payload is the test id without a trailing LF.",
            b"run-tests 2 21\ntests.test_a.T.test_x",
            [run("2", "tests.test_a.T.test_x")],
            canonical=True,
        ),
        vector(
            "run-tests-several-ids",
            "Test ids are separated by LF and run in the order given.",
            b"run-tests r:3 28\ntests.b.T.test_2\ntests.a.T.x",
            [run("r:3", "tests.b.T.test_2", "tests.a.T.x")],
            canonical=True,
        ),
        vector(
            "run-tests-all",
            "An empty payload (LENGTH 0) runs every test.",
            b"run-tests all 0\n",
            [run("all")],
            canonical=True,
        ),
        vector(
            "run-tests-unicode-ids",
            "Test ids are UTF-8; U+2028 and spaces are ordinary characters, only LF separates.",
            b"run-tests u %d\n" % len(unicode_payload) + unicode_payload,
            [run("u", *UNICODE_IDS)],
            canonical=True,
        ),
        vector(
            "run-tests-trailing-lf-crlf-empty-lines",
            "A trailing LF is allowed, a CR at a line end is removed, empty lines are skipped.",
            b"run-tests 5 15\r\na\r\n\r\n\nb.c\n\nd\r\n\n",
            [run("5", "a", "b.c", "d")],
        ),
        vector(
            "stdin-text",
            "Bytes for the test that reads stdin, here a line a person answers with.",
            b"stdin in-1 4\nyes\n",
            [stdin("in-1", b"yes\n")],
            canonical=True,
        ),
        vector(
            "stdin-binary",
            "stdin payloads are raw bytes: all 256 byte values, LF, CR and NUL included.",
            b"stdin bin 256\n" + ALL_BYTES,
            [stdin("bin", ALL_BYTES)],
            canonical=True,
        ),
        vector(
            "stdin-empty",
            "An empty stdin payload means end of input for the reading test.",
            b"stdin eof 0\n",
            [stdin("eof", b"")],
            canonical=True,
        ),
        vector(
            "cancel",
            "Stop the running batch.",
            b"cancel c.1 0\n",
            [cmd("cancel", "c.1")],
            canonical=True,
        ),
        vector(
            "reload",
            "Apply pending source changes now.",
            b"reload R_2 0\n",
            [cmd("reload", "R_2")],
            canonical=True,
        ),
        vector(
            "quit",
            "Finish the commands before it and exit.",
            b"quit bye 0\n",
            [cmd("quit", "bye")],
            canonical=True,
        ),
        vector(
            "max-length-id",
            "An id of 64 bytes using every allowed character class: A-Z a-z 0-9 . _ : -",
            b"list-tests %s 0\n" % MAX_ID.encode(),
            [cmd("list-tests", MAX_ID)],
            canonical=True,
        ),
        vector(
            "crlf-header",
            "One CR before the LF ending a header is accepted (terminals send CR LF).",
            b"list-tests 1 0\r\nrun-tests 2 3\r\na.b",
            [cmd("list-tests", "1"), run("2", "a.b")],
        ),
        vector(
            "blank-lines-between-frames",
            "Empty lines (LF or CR LF) before, between and after frames are ignored.",
            b"\n\r\nlist-tests 1 0\n\n\r\n\nquit 2 0\n\n",
            [cmd("list-tests", "1"), cmd("quit", "2")],
        ),
        vector(
            "length-leading-zeros",
            "LENGTH may have leading zeros (up to 20 digits in all); encoders do not write them.",
            b"stdin z 00000000000000000002\nok",
            [stdin("z", b"ok")],
        ),
        vector(
            "payload-at-max-payload",
            "A payload of exactly max_payload bytes is accepted.",
            b"stdin s 16\n0123456789abcdef",
            [stdin("s", b"0123456789abcdef")],
            canonical=True,
            max_payload=16,
        ),
        vector(
            "session",
            "A typical session: list, run two tests, answer a prompt, cancel, reload, quit.",
            b"list-tests 1 0\nrun-tests 2 19\ntests.a.T.x\ntests.b"
            b"stdin 3 3\nhi\nstdin 4 0\ncancel 5 0\nreload 6 0\nrun-tests 7 0\nquit 8 0\n",
            [
                cmd("list-tests", "1"),
                run("2", "tests.a.T.x", "tests.b"),
                stdin("3", b"hi\n"),
                stdin("4", b""),
                cmd("cancel", "5"),
                cmd("reload", "6"),
                run("7"),
                cmd("quit", "8"),
            ],
            canonical=True,
        ),
    ]


def header_error_vectors() -> list[dict]:
    return [
        vector(
            "bad-header-missing-length",
            "A forgotten LENGTH; the next line is read as a new header.",
            b"list-tests 1\nlist-tests 2 0\n",
            [err("bad-header", "list-tests", "1"), cmd("list-tests", "2")],
        ),
        vector(
            "bad-header-extra-field",
            "Four fields; the line is skipped.",
            b"quit 1 0 now\nquit 2 0\n",
            [err("bad-header", "quit", "1"), cmd("quit", "2")],
        ),
        vector(
            "bad-header-double-space",
            "Fields are separated by exactly one space.",
            b"quit  1 0\nquit 2 0\n",
            [err("bad-header", "quit"), cmd("quit", "2")],
        ),
        vector(
            "bad-header-tab",
            "A tab is not a separator (and not printable ASCII).",
            b"quit\t1\t0\nquit 2 0\n",
            [err("bad-header"), cmd("quit", "2")],
        ),
        vector(
            "bad-header-not-ascii",
            "Header lines are printable ASCII; a non-ASCII id makes the line a bad header.",
            "list-tests é 0\nlist-tests 2 0\n".encode(),
            [err("bad-header", "list-tests"), cmd("list-tests", "2")],
        ),
        vector(
            "bad-header-trailing-space",
            "A space before the end of line makes an empty fourth field.",
            b"quit 1 0 \nquit 2 0\n",
            [err("bad-header", "quit", "1"), cmd("quit", "2")],
        ),
        vector(
            "bad-header-two-crs",
            "Only one CR before the LF is removed; a second one is a control byte.",
            b"quit 1 0\r\r\nquit 2 0\n",
            [err("bad-header", "quit", "1"), cmd("quit", "2")],
        ),
        vector(
            "bad-header-at-limit",
            "A 128-byte header line (LF included) is read and rejected as a bad header.",
            b"x" * 127 + b"\nquit 2 0\n",
            [err("bad-header"), cmd("quit", "2")],
        ),
        vector(
            "header-too-long",
            "No LF within 128 bytes: the decoder reports it and skips through the next LF.",
            b"x" * 128 + b"\nquit 2 0\n",
            [err("header-too-long"), cmd("quit", "2")],
        ),
        vector(
            "header-too-long-long-line",
            "A long line (a pasted paragraph) is skipped in one error, whatever its length.",
            b"run-tests 1 " + b"9" * 300 + b"\r\nquit 2 0\n",
            [err("header-too-long", "run-tests", "1"), cmd("quit", "2")],
        ),
        vector(
            "header-too-long-at-end",
            "A too-long line cut off by end of input gives no second error.",
            b"y" * 200,
            [err("header-too-long")],
        ),
        vector(
            "unknown-command",
            "A typo in NAME; the id is still reported so the error can be matched to it.",
            b"lst-tests 1 0\nlist-tests 2 0\n",
            [err("unknown-command", None, "1"), cmd("list-tests", "2")],
        ),
        vector(
            "unknown-command-payload-skipped",
            "The payload of an unknown command is skipped using LENGTH.",
            b"frobnicate f 11\nquit 9 0\nxxquit 2 0\n",
            [err("unknown-command", None, "f"), cmd("quit", "2")],
        ),
        vector(
            "bad-id-character",
            "A '/' is not allowed in an id.",
            b"quit a/b 0\nquit 2 0\n",
            [err("bad-id", "quit"), cmd("quit", "2")],
        ),
        vector(
            "bad-id-too-long",
            "An id of 65 bytes is one too many.",
            b"list-tests %s 0\nquit 2 0\n" % (MAX_ID + "x").encode(),
            [err("bad-id", "list-tests"), cmd("quit", "2")],
        ),
        vector(
            "bad-id-payload-skipped",
            "The payload of a frame with a bad id is skipped using LENGTH.",
            b"run-tests #1 6\na.b.cdrun-tests 2 1\nx",
            [err("bad-id", "run-tests"), run("2", "x")],
        ),
        vector(
            "bad-length-word",
            "LENGTH is decimal digits.",
            b"list-tests 1 none\nlist-tests 2 0\n",
            [err("bad-length", "list-tests", "1"), cmd("list-tests", "2")],
        ),
        vector(
            "bad-length-negative",
            "A sign is not a digit; the line is skipped.",
            b"stdin 1 -1\nstdin 2 +1\nquit 3 0\n",
            [err("bad-length", "stdin", "1"), err("bad-length", "stdin", "2"), cmd("quit", "3")],
        ),
        vector(
            "bad-length-21-digits",
            "LENGTH has at most 20 digits; the next line is read as a header.",
            b"stdin 1 000000000000000000000\nquit 2 0\n",
            [err("bad-length", "stdin", "1"), cmd("quit", "2")],
        ),
        vector(
            "bad-length-before-unknown-command",
            "LENGTH is checked before NAME, since without it the payload cannot be skipped.",
            b"lst 1 x\nquit 2 0\n",
            [err("bad-length", None, "1"), cmd("quit", "2")],
        ),
    ]


def payload_error_vectors() -> list[dict]:
    return [
        vector(
            "payload-too-large",
            "LENGTH above max_payload: reported at once; the announced bytes are dropped "
            "unbuffered and decoding resumes right after them.",
            b"stdin big 17\n0123456789abcdefXquit 2 0\n",
            [err("payload-too-large", "stdin", "big"), cmd("quit", "2")],
            max_payload=16,
        ),
        vector(
            "payload-too-large-default-limit",
            "The default max_payload is 64 MiB; end of input while dropping gives no 2nd error.",
            b"stdin big 67108865\nabc",
            [err("payload-too-large", "stdin", "big")],
        ),
        vector(
            "payload-too-large-20-digits",
            "The largest LENGTH that parses is one payload-too-large error, nothing more.",
            b"run-tests r 99999999999999999999\n",
            [err("payload-too-large", "run-tests", "r")],
        ),
        vector(
            "payload-too-large-next-frame-served",
            "A wrong LENGTH does not swallow the session: the next header line is decoded.",
            b"run-tests r 99999999999999999999\nlist-tests 2 0\n",
            [err("payload-too-large", "run-tests", "r"), cmd("list-tests", "2")],
        ),
        vector(
            "payload-too-large-lines-dropped-silently",
            "Lines that are not well-formed headers are dropped without errors of their own, "
            "an over-limit header among them too: one error per over-limit header.",
            b"stdin s 1000\nhello\n\nnot a frame\nfrob 1 0\nquit 1 5\nstdin t 99\n"
            + b"y" * 300
            + b"\nquit 2 0\n",
            [err("payload-too-large", "stdin", "s"), cmd("quit", "2")],
            max_payload=16,
        ),
        vector(
            "payload-too-large-payload-line-is-a-header",
            "The decoder cannot tell a payload line from a frame: a too-large payload's line "
            "that is a well-formed header ends the drop and is decoded, and the lines after "
            "it are headers again. Clients keep payloads within max_payload.",
            b"stdin s 30\nfirst line\nquit q 0\nlast line\n",
            [
                err("payload-too-large", "stdin", "s"),
                cmd("quit", "q"),
                err("bad-header", None, "line"),
            ],
            max_payload=16,
        ),
        vector(
            "payload-too-large-ends-inside-a-line",
            "The announced bytes end before any LF: decoding resumes right after them.",
            b"stdin s 5\nabcdelist-tests 2 0\n",
            [err("payload-too-large", "stdin", "s"), cmd("list-tests", "2")],
            max_payload=4,
        ),
        vector(
            "payload-too-large-line-crossing-the-end",
            "A line counts only when its LF is among the announced bytes; here the 5 bytes "
            "end inside 'quit 1 0' and the decoder resumes with '1 0', a bad header.",
            b"stdin s 5\nquit 1 0\nquit 2 0\n",
            [
                err("payload-too-large", "stdin", "s"),
                err("bad-header", None, "0"),
                cmd("quit", "2"),
            ],
            max_payload=4,
        ),
        vector(
            "payload-too-large-before-name-check",
            "LENGTH is checked against max_payload before NAME, ID and payload rules, so no "
            "bad header ever makes the decoder skip more than max_payload bytes.",
            b"frob 1 99999999999999999999\nquit x/y 12345678901234\ncancel 3 0\n",
            [err("payload-too-large", None, "1"), cmd("cancel", "3")],
        ),
        vector(
            "bad-payload-on-quit",
            "Commands other than run-tests and stdin take no payload; it is skipped.",
            b"quit q 4\nquitquit 2 0\n",
            [err("bad-payload", "quit", "q"), cmd("quit", "2")],
        ),
        vector(
            "bad-payload-on-list-tests",
            "list-tests with a payload (a test id pattern is not supported).",
            b"list-tests 1 5\ntestslist-tests 2 0\n",
            [err("bad-payload", "list-tests", "1"), cmd("list-tests", "2")],
        ),
        vector(
            "bad-payload-only-empty-lines",
            "A non-empty run-tests payload without ids; send LENGTH 0 to run every test.",
            b"run-tests 1 3\n\r\n\nrun-tests 2 0\n",
            [err("bad-payload", "run-tests", "1"), run("2")],
        ),
        vector(
            "bad-payload-invalid-utf8",
            "run-tests ids are UTF-8.",
            b"run-tests 1 3\na\xffbrun-tests 2 1\nc",
            [err("bad-payload", "run-tests", "1"), run("2", "c")],
        ),
        vector(
            "bad-payload-surrogate",
            "An encoded surrogate (CESU-8 style) is not valid UTF-8.",
            b"run-tests 1 3\n\xed\xa0\x80quit 2 0\n",
            [err("bad-payload", "run-tests", "1"), cmd("quit", "2")],
        ),
        vector(
            "bad-payload-nul",
            "A NUL byte in run-tests ids usually means binary data was sent by mistake.",
            b"run-tests 1 3\na\x00bquit 2 0\n",
            [err("bad-payload", "run-tests", "1"), cmd("quit", "2")],
        ),
        vector(
            "bad-payload-cr-inside-id",
            "Only a CR at the end of a line is removed; a CR inside a test id is an error.",
            b"run-tests 1 4\na\rb\nquit 2 0\n",
            [err("bad-payload", "run-tests", "1"), cmd("quit", "2")],
        ),
    ]


def truncation_vectors() -> list[dict]:
    return [
        vector(
            "truncated-header",
            "End of input before the LF of a header (Ctrl-D on a half-typed line).",
            b"list-tests 1 0\nlist-tests 2",
            [cmd("list-tests", "1"), err("truncated", "list-tests")],
        ),
        vector(
            "truncated-header-cr",
            "A CR without its LF is an unfinished line too.",
            b"quit 1 0\r",
            [err("truncated", "quit", "1")],
        ),
        vector(
            "truncated-payload",
            "End of input after 3 of 10 payload bytes.",
            b"run-tests 1 10\na.b",
            [err("truncated", "run-tests", "1")],
        ),
        vector(
            "truncated-empty-payload",
            "End of input right after a header that announces a payload.",
            b"stdin 1 5\n",
            [err("truncated", "stdin", "1")],
        ),
        vector(
            "truncated-skipped-payload",
            "End of input while the payload of a bad frame is being skipped.",
            b"quit 1 9\nabc",
            [err("bad-payload", "quit", "1"), err("truncated", "quit", "1")],
        ),
    ]


def recovery_vectors() -> list[dict]:
    return [
        vector(
            "recovery-mixed",
            "Every recoverable error between good frames: each good frame still decodes.",
            b"list-tests a 0\nhello\nlist-tests b 0\n"
            + b"z" * 130
            + b"\nrun-tests c 1\nx"
            + b"nope d 2\n..stdin e 2\nhiquit f/ 0\nquit g 0\n",
            [
                cmd("list-tests", "a"),
                err("bad-header"),
                cmd("list-tests", "b"),
                err("header-too-long"),
                run("c", "x"),
                err("unknown-command", None, "d"),
                stdin("e", b"hi"),
                err("bad-id", "quit"),
                cmd("quit", "g"),
            ],
        ),
        vector(
            "recovery-payload-looks-like-header",
            "A skipped payload that looks like a frame is not decoded as one.",
            b"cancel 1 9\nquit 9 0\nreload 2 0\n",
            [err("bad-payload", "cancel", "1"), cmd("reload", "2")],
        ),
    ]


def build_vectors() -> list[dict]:
    """Every vector, in the order ``frames.json`` lists them."""
    vectors = (
        good_vectors()
        + header_error_vectors()
        + payload_error_vectors()
        + truncation_vectors()
        + recovery_vectors()
    )
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)), "vector names must be unique"
    return vectors


def render() -> str:
    """The text of ``frames.json``: one field per line, one event per line."""

    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    blocks = []
    for vec in build_vectors():
        lines = [f"    {dump(key)}: {dump(value)}" for key, value in vec.items() if key != "events"]
        events = ",\n".join(f"      {dump(event)}" for event in vec["events"])
        lines.append(f'    "events": [\n{events}\n    ]')
        blocks.append("  {\n" + ",\n".join(lines) + "\n  }")
    return "[\n" + ",\n".join(blocks) + "\n]\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--check"]:
        if OUTPUT.read_text(encoding="utf-8") != render():
            print(f"{OUTPUT} is out of date: run {__file__}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
