"""The near-duplicate job a user would write with faiss over a request file: issue 14's baseline.

What ``streamguard replay`` must beat by 3x end to end. Over the file's records in file order,
batches of ``--batch`` requests: a 128-bit SimHash of each embedding (random hyperplanes through
the first batch's mean; streamguard centres on its codebook's mean instead), a range search
within streamguard's Hamming radius (``Settings.hamming_radius``) in a faiss ``IndexBinaryFlat``
holding the last ``--window`` requests of every account, then the batch joins the window (so a
request is not compared with the earlier ones of its own batch). A request is a near-duplicate
when a hit belongs to its own account. No campaign, coverage or alert: the plain job, which is
why it is the floor.

    python -m streamguard.bench.faiss_job FILE [--window 65536] [--batch 4096]

Prints one JSON line: requests, near-duplicates, seconds (from opening the file to the last
batch; the process's own start-up is measured by whoever runs it), events/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def run_job(path: Path, window: int = 65_536, batch: int = 4_096, bits: int = 128, seed: int = 0) -> dict[str, float]:
    import faiss  # noqa: PLC0415 - an optional dependency of the bench

    from streamguard.config import load_settings  # noqa: PLC0415
    from streamguard.schema import RequestFile  # noqa: PLC0415

    radius = load_settings(None).hamming_radius()
    started = time.perf_counter()
    codes = np.zeros((window, bits // 8), dtype=np.uint8)  # ring of the window's signatures
    owners = np.full(window, -1, dtype=np.int64)  # and of their accounts (codes of the file's ids)
    account_code: dict[str, int] = {}
    planes = mean = None
    held = requests = duplicates = 0
    for record in RequestFile(path).batches(batch, columns=["account_id", "embedding"]):
        n = record.num_rows
        flat = record.column("embedding").flatten().to_numpy(zero_copy_only=False)
        x = np.asarray(flat, dtype=np.float32).reshape(n, -1)
        if planes is None:
            mean = x.mean(axis=0)
            planes = np.random.default_rng(seed).standard_normal((x.shape[1], bits)).astype(np.float32)
        query = np.packbits((x - mean) @ planes > 0, axis=1)
        accounts = np.array([account_code.setdefault(a, len(account_code)) for a in record.column("account_id").to_pylist()])
        index = faiss.IndexBinaryFlat(bits)
        index.add(codes[: min(held, window)])
        lims, _, ids = index.range_search(query, radius + 1)  # faiss keeps distance < radius + 1
        hit_owner = owners[ids]
        query_of_hit = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
        is_dup = np.zeros(n, dtype=bool)
        is_dup[query_of_hit[hit_owner == accounts[query_of_hit]]] = True
        duplicates += int(is_dup.sum())
        rows = (held + np.arange(n)) % window
        codes[rows], owners[rows] = query, accounts
        held += n
        requests += n
    seconds = time.perf_counter() - started
    return {"requests": requests, "near_duplicates": duplicates, "seconds": seconds, "events_per_second": requests / seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", type=Path)
    ap.add_argument("--window", type=int, default=65_536)
    ap.add_argument("--batch", type=int, default=4_096)
    args = ap.parse_args(argv)
    print(json.dumps(run_job(args.file, args.window, args.batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
