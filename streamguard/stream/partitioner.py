"""Kafka's default partitioner, so a replay can shard accounts exactly as producers do.

The Java client (and kafka-python) place a keyed record in partition
``toPositive(murmur2(key)) % partitions``. Reproducing it lets
``replay --partitions N`` give the same per-partition state, hence the same
alerts, as ``run`` on a topic of N partitions.
"""

from __future__ import annotations


def murmur2(data: bytes) -> int:
    """32-bit murmur2 as in Kafka's ``Utils.murmur2`` (seed 0x9747b28c), as a signed int."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    tail = length4 * 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str | bytes, partitions: int) -> int:
    """Partition of a keyed record under Kafka's default partitioner."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions
