import pytest

from streamguard.stream.partitioner import murmur2, partition_for


@pytest.mark.parametrize("key", [b"", b"a", b"ab", b"abc", b"123456789", b"\x00 ", b"acct-4b533406d913"])
def test_murmur2_matches_kafka_python(key):
    from kafka.partitioner.default import murmur2 as reference

    assert murmur2(key) & 0xFFFFFFFF == reference(key) & 0xFFFFFFFF


def test_partitions_match_the_java_client():
    # Published values of Kafka's default partitioner over 1000 partitions.
    for key, expected in [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)]:
        assert partition_for(key, 1000) == expected
