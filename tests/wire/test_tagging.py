"""Adding the ``worker-K`` tag to encoded packets: the result decodes to the same packet
with the tag added, through our decoder and through subunit's own."""

from __future__ import annotations

import dataclasses
import io

import subunit
import testtools
from hypothesis import given, settings
from test_packets import packets

from testserver.wire.events import Packet
from testserver.wire.packets import decode_packets, encode_packet, encode_status
from testserver.wire.tagging import add_tag, tag_field

FIELD = tag_field("worker-1")


@settings(max_examples=300, deadline=None)
@given(packets())
def test_a_tests_packet_gains_the_tag_and_nothing_else_changes(packet: Packet) -> None:
    raw = encode_packet(packet)
    tagged = add_tag(raw, FIELD)
    if packet.test_id is None:
        assert tagged == raw
        return
    (decoded,) = decode_packets(tagged)
    expected = dataclasses.replace(packet, tags=("worker-1", *(packet.tags or ())))
    assert decoded == expected
    assert tagged == encode_packet(expected)


def test_subunit_reads_the_tag() -> None:
    stream = add_tag(encode_status("pkg.T.test_a", "inprogress"), FIELD)
    final = Packet(test_id="pkg.T.test_a", status="success", tags=("slow",))
    stream += add_tag(encode_packet(final), FIELD)
    result = testtools.StreamToDict(lambda test: tests.append(test))
    tests: list[dict] = []
    result.startTestRun()
    subunit.ByteStreamToStreamResult(io.BytesIO(stream)).run(result)
    result.stopTestRun()
    assert [(t["id"], t["status"], t["tags"]) for t in tests] == [
        ("pkg.T.test_a", "success", {"worker-1", "slow"})
    ]
