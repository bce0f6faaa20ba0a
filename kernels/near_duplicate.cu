// kernels/near_duplicate.cu - SimHash signatures and the near-duplicate scans.
// Launched by streamguard/backends/cuda_backend.py for detectors/near_duplicate.py;
// oracle: streamguard/backends/numpy_backend.py (pack_sign_bits, band_buckets,
// NumpyBackend.dup_scan, NumpyBackend.dup_query, NumpyBackend.cross_lookup).
//
// Layouts (C order): n requests, W = bits/64 words, S slots, C window rows,
// B bands, T = 2**table_bits buckets.
//   sigs (n, W) u64 (bit j of word w = hyperplane 64w+j); slots, ts (n,) i64
//   window_sig (C, W) u64, window_prev (C,) i64: the pipeline's request at
//     position p in row p % C, with the position of its account's previous
//     request (-1: none); head (S,) i64: each account's latest position (-1)
//   table_slot, table_ts (B, T) i64 (slot -1 = empty), table_sig (B, T, W) u64
//   sorted keys: see common.cuh (`slot * n + i` for the within-account scan,
//   `(b * T + bucket) * n + i` for the cross-account lookup)
#include "common.cuh"

namespace sg {

constexpr unsigned long long kGolden = 0x9E3779B97F4A7C15ull;

// ---------------------------------------------------------------- signatures
// pack_sign_bits: out[i, w] bit j = (proj[i, 64w+j] - offsets[64w+j] > 0).
// The projection GEMM `embeddings @ planes` runs in cuBLAS; this is its epilogue.
//   grid  : (ceil(n*W / warps_per_block) capped, 1, 1); block: (32*k, 1, 1)
//   shared: none; one warp per output word, two ballots of 32 lanes, so the
//           projections are read coalesced and the word is built without atomics.
//   proj (n, bits) T; offsets (bits,) T; out (n, W) u64; bits % 64 == 0.
template <typename T>
__device__ void pack_sign_bits_impl(const T* __restrict__ proj, const T* __restrict__ offsets, long long n,
                                    long long bits, unsigned long long* __restrict__ out) {
  const long long words = bits / 64;
  const long long tasks = n * words;
  const unsigned lane = lane_id();
  for (long long task = global_warp(); task < tasks; task += total_warps()) {
    const long long row = task / words;
    const long long word = task % words;
    const T* p = proj + row * bits + word * 64;
    const T* o = offsets + word * 64;
    // `p - o > 0`, not `p > o`: the reference subtracts, then compares (same for finite values, and NaN is false).
    const unsigned low = __ballot_sync(kFullMask, p[lane] - o[lane] > T(0));
    const unsigned high = __ballot_sync(kFullMask, p[lane + 32] - o[lane + 32] > T(0));
    if (lane == 0) out[task] = static_cast<unsigned long long>(low) | (static_cast<unsigned long long>(high) << 32);
  }
}

// ------------------------------------------------------ slot-sorted batches
// slot_keys: keys[i] = s * n + i, s = slots[i] when 0 <= slots[i] < capacity,
// else capacity (which the scans recognise as invalid and report). Sorted by
// CuPy, these give the account groups of common.cuh to dup_link/dup_scan and, in
// coverage.cu, to style_prefix; one launch instead of a chain of CuPy ufuncs.
//   grid: (ceil(n / block) capped, 1, 1); block: (any, 1, 1); shared: none.
//   slots (n,) i64; keys (n,) i64 out; (capacity + 1) * n < 2**63 (checked in Python).
template <typename T>
__device__ void slot_keys_impl(const T* __restrict__ slots, long long n, long long capacity,
                               long long* __restrict__ keys) {
  for (long long i = global_thread(); i < n; i += total_threads()) {
    const T s = slots[i];
    keys[i] = (s >= 0 && s < capacity ? static_cast<long long>(s) : capacity) * n + i;
  }
}

// ------------------------------------------------------ within-account scan
// Request i of the batch has position q = start + i. Two launches, so that
// every read of `head` (dup_link) happens before any write (dup_scan).
//
// dup_link: insert the batch. Row q % C takes the signature and the position
// of the account's previous request: the previous request of its group in the
// slot-sorted batch, or head[slot] for the group's first.
//   grid  : (ceil(n / block) capped, 1, 1), grid-stride over sorted positions.
//   block : (any, 1, 1); one thread per request; shared: none.
//   keys (n,) sorted `slot*n + i`; sigs (n, W); window_sig (C, W) and
//   window_prev (C,) written; head (S,) read; fault: kFaultDupScanSlot.
//   Needs n <= C - window (checked in Python): no row a query reads is overwritten.
template <typename Word>
__device__ void dup_link_impl(const long long* __restrict__ keys, long long n, const Word* __restrict__ sigs,
                              long long words, Word* __restrict__ window_sig, long long* __restrict__ window_prev,
                              long long rows, const long long* __restrict__ head, long long slots, long long start,
                              int* __restrict__ fault) {
  for (long long p = global_thread(); p < n; p += total_threads()) {
    const long long slot = keys[p] / n;
    const long long i = keys[p] % n;
    if (slot < 0 || slot >= slots) {
      atomicOr(fault, kFaultDupScanSlot);
      continue;
    }
    const long long row = (start + i) % rows;
    window_prev[row] = group_starts_at(keys, n, p) ? head[slot] : start + keys[p - 1] % n;
    for (long long w = 0; w < words; ++w) window_sig[row * words + w] = sigs[i * words + w];
  }
}

// dup_scan: each request walks its account's chain from window_prev[q % C]
// back while the position is in [q - window, q): the smallest Hamming
// distance; then the last request of each group becomes its account's head.
//   grid  : (ceil(n / block) capped, 1, 1), grid-stride over sorted positions.
//   block : (any, 1, 1); one thread per request, in slot-sorted order, so a
//           warp mostly walks one account's chain (the same rows, which L1/L2
//           then serve). shared: none.
//   keys (n,) sorted; sigs (n, W); window_sig, window_prev read; head (S,)
//   written; best (n,) i32 out (bits+1 when nothing precedes); fault as dup_link.
// Cost: one dependent load of window_prev per step, as many steps as the
// account has requests in the window (a heavy account's requests walk long
// chains; a stop at distance 0 cannot change the minimum).
template <typename Word>
__device__ void dup_scan_impl(const long long* __restrict__ keys, long long n, const Word* __restrict__ sigs,
                              long long words, const Word* __restrict__ window_sig,
                              const long long* __restrict__ window_prev, long long rows, long long* __restrict__ head,
                              long long slots, long long start, long long window, int* __restrict__ best,
                              int* __restrict__ fault) {
  const int none = static_cast<int>(words * 64 + 1);
  for (long long p = global_thread(); p < n; p += total_threads()) {
    const long long slot = keys[p] / n;
    const long long i = keys[p] % n;
    if (slot < 0 || slot >= slots) {
      atomicOr(fault, kFaultDupScanSlot);
      continue;
    }
    const long long q = start + i;
    const long long oldest = q - window > 0 ? q - window : 0;
    const Word* sig = sigs + i * words;
    int nearest = none;
    for (long long at = window_prev[q % rows]; at >= oldest && nearest > 0; at = window_prev[at % rows]) {
      nearest = min_of(nearest, hamming(sig, window_sig + (at % rows) * words, words));
    }
    best[i] = nearest;
    if (p == n - 1 || keys[p + 1] / n != slot) head[slot] = q;
  }
}

// dup_query: the scan of requests that are not stored (their account holds its
// cap of the window, detectors/near_duplicate.py): request i walks the chain
// from origin[i] back while the position is >= max(stop[i], 0); nothing is
// written. Cost: at most the cap (near_duplicate.account_share of the window).
//   grid  : (ceil(n / block) capped, 1, 1), grid-stride over requests.
//   block : (any, 1, 1); one thread per request; shared: none.
//   sigs (n, W); origin, stop (n,) i64; window_sig, window_prev read;
//   best (n,) i32 out (bits+1 when nothing is in reach).
template <typename Word>
__device__ void dup_query_impl(long long n, const Word* __restrict__ sigs, long long words,
                               const long long* __restrict__ origin, const long long* __restrict__ stop,
                               const Word* __restrict__ window_sig, const long long* __restrict__ window_prev,
                               long long rows, int* __restrict__ best) {
  const int none = static_cast<int>(words * 64 + 1);
  for (long long i = global_thread(); i < n; i += total_threads()) {
    const long long floor = stop[i] > 0 ? stop[i] : 0;
    const Word* sig = sigs + i * words;
    int nearest = none;
    for (long long at = origin[i]; at >= floor && nearest > 0; at = window_prev[at % rows]) {
      nearest = min_of(nearest, hamming(sig, window_sig + (at % rows) * words, words));
    }
    best[i] = nearest;
  }
}

// ------------------------------------------------------ cross-account lookup
// The reference visits requests in batch order; request i reads bucket q of
// band b as the earlier requests left it, then overwrites its own buckets.
// Parallel form (proof in cuda_backend.CudaBackend.cross_lookup): sort the
// B*n pairs (b, i) by key (b*T + q)*n + i. Within a (b, q) group the pairs are
// in batch order, so the entry request i sees is written by the pair just
// before it in the group (the latest earlier writer), or is the table's
// entry when i is first; and the bucket ends up holding the group's last pair.

__device__ __forceinline__ long long band_bucket(const unsigned long long* sig, long long words, long long bands,
                                                 long long band, long long table_bits) {
  const long long band_len = words * 64 / bands;
  const long long start = band * band_len;
  // Bits [start, start + band_len) of word start/64 only, exactly as band_buckets does.
  const unsigned long long mask = band_len < 64 ? (1ull << band_len) - 1 : ~0ull;
  const unsigned long long value = (sig[start / 64] >> (start % 64)) & mask;
  const unsigned long long key = (value + static_cast<unsigned long long>(band + 1) * kGolden) * kGolden;
  // numpy shifts a uint64 by 64 to 0: a one-bucket table is legal there, and here.
  return table_bits == 0 ? 0 : static_cast<long long>(key >> (64 - table_bits));
}

__device__ __forceinline__ bool within_window(long long a, long long b, long long window) {
  // |a - b| <= window without overflowing, for any int64 timestamps.
  const unsigned long long diff = a >= b ? static_cast<unsigned long long>(a) - static_cast<unsigned long long>(b)
                                         : static_cast<unsigned long long>(b) - static_cast<unsigned long long>(a);
  return window >= 0 && diff <= static_cast<unsigned long long>(window);
}

// band_hash: keys[b*n + i] = (b*T + bucket(i, b)) * n + i, bucket as band_buckets.
//   grid: (ceil(B*n / block) capped, 1, 1); block: (any, 1, 1); shared: none.
//   sigs (n, W) u64; keys (B*n,) i64 out.
template <typename Word>
__device__ void band_hash_impl(const Word* __restrict__ sigs, long long n, long long words, long long bands,
                               long long table_bits, long long* __restrict__ keys) {
  const long long table_size = 1ll << table_bits;
  for (long long t = global_thread(); t < bands * n; t += total_threads()) {
    const long long band = t / n;
    const long long i = t % n;
    const long long bucket = band_bucket(sigs + i * words, words, bands, band, table_bits);
    keys[t] = (band * table_size + bucket) * n + i;
  }
}

// cross_candidates: for each sorted pair (b, i): the entry bucket q of band b
// holds when request i reads it, and whether it matches (another account,
// |ts_i - ts| <= window_ms, distance <= radius); marks the group's last pair.
//   grid: (ceil(B*n / block) capped, 1, 1); block: (any, 1, 1); shared: none.
//   keys (B*n,) sorted; cand_dist (n, B) i32 (bits+1 = no match);
//   cand_slot (n, B) i64 (-1); write_bucket (n, B) i64 (q if i writes bucket q of band b, else -1).
template <typename Word>
__device__ void cross_candidates_impl(const long long* __restrict__ keys, long long n, long long bands,
                                      long long table_bits, const Word* __restrict__ sigs, long long words,
                                      const long long* __restrict__ slots, const long long* __restrict__ ts,
                                      const long long* __restrict__ table_slot, const long long* __restrict__ table_ts,
                                      const Word* __restrict__ table_sig, long long radius, long long window_ms,
                                      int* __restrict__ cand_dist, long long* __restrict__ cand_slot,
                                      long long* __restrict__ write_bucket) {
  const long long table_size = 1ll << table_bits;
  const long long pairs = bands * n;
  const int none = static_cast<int>(words * 64 + 1);
  for (long long p = global_thread(); p < pairs; p += total_threads()) {
    const long long group = keys[p] / n;
    const long long i = keys[p] % n;
    const long long band = group / table_size;
    const long long bucket = group % table_size;
    const bool has_earlier = p > 0 && keys[p - 1] / n == group;
    long long other_slot, other_ts;
    const Word* other_sig;
    if (has_earlier) {
      const long long j = keys[p - 1] % n;
      other_slot = slots[j];
      other_ts = ts[j];
      other_sig = sigs + j * words;
    } else {
      other_slot = table_slot[group];
      other_ts = table_ts[group];
      other_sig = table_sig + group * words;
    }
    int distance = none;
    long long match = -1;
    if (other_slot >= 0 && other_slot != slots[i] && within_window(ts[i], other_ts, window_ms)) {
      const int d = hamming(sigs + i * words, other_sig, words);
      if (d <= radius) {
        distance = d;
        match = other_slot;
      }
    }
    cand_dist[i * bands + band] = distance;
    cand_slot[i * bands + band] = match;
    const bool last = p == pairs - 1 || keys[p + 1] / n != group;
    write_bucket[i * bands + band] = last ? bucket : -1;
  }
}

// cross_best_insert: per request, the closest candidate over bands (strict <
// in band order: the lowest band wins ties, as in the reference), then the
// buckets whose last writer is this request take its slot, ts and signature.
// A separate launch from cross_candidates so that every read of the table
// happens before any write; each (b, q) has one last writer, so no races.
//   grid: (ceil(n / block) capped, 1, 1); block: (any, 1, 1); shared: none.
//   cross_slot (n,) i64 out; cross_dist (n,) i32 out.
template <typename Word>
__device__ void cross_best_insert_impl(long long n, long long bands, long long table_bits,
                                       const Word* __restrict__ sigs, long long words,
                                       const long long* __restrict__ slots, const long long* __restrict__ ts,
                                       const int* __restrict__ cand_dist, const long long* __restrict__ cand_slot,
                                       const long long* __restrict__ write_bucket, long long* __restrict__ table_slot,
                                       long long* __restrict__ table_ts, Word* __restrict__ table_sig,
                                       long long* __restrict__ cross_slot, int* __restrict__ cross_dist) {
  const long long table_size = 1ll << table_bits;
  for (long long i = global_thread(); i < n; i += total_threads()) {
    int best = static_cast<int>(words * 64 + 1);
    long long best_slot = -1;
    for (long long band = 0; band < bands; ++band) {
      const int d = cand_dist[i * bands + band];
      if (d < best) {
        best = d;
        best_slot = cand_slot[i * bands + band];
      }
    }
    cross_slot[i] = best_slot;
    cross_dist[i] = best;
    for (long long band = 0; band < bands; ++band) {
      const long long bucket = write_bucket[i * bands + band];
      if (bucket < 0) continue;
      const long long entry = band * table_size + bucket;
      table_slot[entry] = slots[i];
      table_ts[entry] = ts[i];
      for (long long w = 0; w < words; ++w) table_sig[entry * words + w] = sigs[i * words + w];
    }
  }
}

}  // namespace sg

// ------------------------------------------------------------ entry points

extern "C" __global__ void pack_sign_bits(const float* proj, const float* offsets, long long n, long long bits,
                                          unsigned long long* out) {
  sg::pack_sign_bits_impl<float>(proj, offsets, n, bits, out);
}

extern "C" __global__ void slot_keys(const long long* slots, long long n, long long capacity, long long* keys) {
  sg::slot_keys_impl<long long>(slots, n, capacity, keys);
}

extern "C" __global__ void dup_link(const long long* keys, long long n, const unsigned long long* sigs,
                                    long long words, unsigned long long* window_sig, long long* window_prev,
                                    long long rows, const long long* head, long long slots, long long start,
                                    int* fault) {
  sg::dup_link_impl<unsigned long long>(keys, n, sigs, words, window_sig, window_prev, rows, head, slots, start, fault);
}

extern "C" __global__ void dup_scan(const long long* keys, long long n, const unsigned long long* sigs,
                                    long long words, const unsigned long long* window_sig,
                                    const long long* window_prev, long long rows, long long* head, long long slots,
                                    long long start, long long window, int* best, int* fault) {
  sg::dup_scan_impl<unsigned long long>(keys, n, sigs, words, window_sig, window_prev, rows, head, slots, start,
                                        window, best, fault);
}

extern "C" __global__ void dup_query(long long n, const unsigned long long* sigs, long long words,
                                     const long long* origin, const long long* stop,
                                     const unsigned long long* window_sig, const long long* window_prev, long long rows,
                                     int* best) {
  sg::dup_query_impl<unsigned long long>(n, sigs, words, origin, stop, window_sig, window_prev, rows, best);
}

extern "C" __global__ void band_hash(const unsigned long long* sigs, long long n, long long words, long long bands,
                                     long long table_bits, long long* keys) {
  sg::band_hash_impl<unsigned long long>(sigs, n, words, bands, table_bits, keys);
}

extern "C" __global__ void cross_candidates(const long long* keys, long long n, long long bands, long long table_bits,
                                            const unsigned long long* sigs, long long words, const long long* slots,
                                            const long long* ts, const long long* table_slot,
                                            const long long* table_ts, const unsigned long long* table_sig,
                                            long long radius, long long window_ms, int* cand_dist,
                                            long long* cand_slot, long long* write_bucket) {
  sg::cross_candidates_impl<unsigned long long>(keys, n, bands, table_bits, sigs, words, slots, ts, table_slot,
                                                table_ts, table_sig, radius, window_ms, cand_dist, cand_slot,
                                                write_bucket);
}

extern "C" __global__ void cross_best_insert(long long n, long long bands, long long table_bits,
                                             const unsigned long long* sigs, long long words, const long long* slots,
                                             const long long* ts, const int* cand_dist, const long long* cand_slot,
                                             const long long* write_bucket, long long* table_slot,
                                             long long* table_ts, unsigned long long* table_sig,
                                             long long* cross_slot, int* cross_dist) {
  sg::cross_best_insert_impl<unsigned long long>(n, bands, table_bits, sigs, words, slots, ts, cand_dist, cand_slot,
                                                 write_bucket, table_slot, table_ts, table_sig, cross_slot,
                                                 cross_dist);
}
