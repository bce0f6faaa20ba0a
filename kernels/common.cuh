// kernels/common.cuh - helpers shared by every kernel family of kernels/.
//
// Inlined (not #included) into each .cu by streamguard/backends/kernels.py
// before NVRTC sees it, so CuPy's on-disk kernel cache, keyed by the source
// text, can never serve a binary built from an older header. An include guard,
// not `#pragma once`, because inlined text becomes part of the main file.
//
// Conventions of every kernel in kernels/ (the CPU emulation relies on them):
// - blocks are one-dimensional in x (threadIdx.x only); grids may use y;
// - loops are grid-stride loops, so any grid size is correct and Python caps
//   the grid (tests force tiny blocks and grids so tails and multi-block paths run);
// - a loop that contains __syncthreads or a warp intrinsic has a trip count
//   that is uniform over the block (resp. the warp), and a kernel that calls
//   __syncthreads never returns early;
// - warp intrinsics use the full mask: kernels that use them need a block size
//   that is a multiple of 32 (checked in Python, and by the CPU emulation);
// - arrays are C-contiguous; sizes and indices are `long long` (the ABI is
//   checked argument by argument by the CPU runtime in tests/kernels).
#ifndef SG_COMMON_CUH
#define SG_COMMON_CUH

#ifndef __CUDACC__
#include "cpu_compat.h"
#endif

namespace sg {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarp = 32;

// Bits of the fault word a kernel sets when it meets an index it must not
// follow (the item is skipped, never read or written out of bounds); the
// backend turns a set bit into an IndexError naming the kernel.
constexpr int kFaultDupScanSlot = 1;
constexpr int kFaultStyleSlot = 2;
constexpr int kFaultHistogramIndex = 4;
constexpr int kFaultReduceSlot = 8;

__device__ __forceinline__ long long thread_rank() { return threadIdx.x; }
__device__ __forceinline__ unsigned lane_id() { return threadIdx.x % kWarp; }
__device__ __forceinline__ long long warps_per_block() { return blockDim.x / kWarp; }

// First item and stride of a grid-stride loop over items handled one per thread.
__device__ __forceinline__ long long global_thread() {
  return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long total_threads() {
  return static_cast<long long>(gridDim.x) * blockDim.x;
}

// First item and stride of a grid-stride loop over items handled one per warp.
__device__ __forceinline__ long long global_warp() {
  return static_cast<long long>(blockIdx.x) * warps_per_block() + threadIdx.x / kWarp;
}
__device__ __forceinline__ long long total_warps() {
  return static_cast<long long>(gridDim.x) * warps_per_block();
}

template <typename T>
__device__ __forceinline__ T min_of(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
__device__ __forceinline__ T warp_min(T value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value = min_of(value, __shfl_xor_sync(kFullMask, value, offset));
  return value;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(kFullMask, value, offset);
  return value;
}

// Hamming distance between two signatures of `words` 64-bit words.
template <typename Word>
__device__ __forceinline__ int hamming(const Word* a, const Word* b, long long words) {
  int distance = 0;
  for (long long w = 0; w < words; ++w) distance += __popcll(a[w] ^ b[w]);
  return distance;
}

// numpy.argmax order: the larger value wins; NaN beats every number (the
// first NaN is returned); equal values go to the lower index. `best_index < 0`
// means "nothing yet".
__device__ __forceinline__ bool argmax_better(float value, long long index, float best, long long best_index) {
  if (best_index < 0) return true;
  const bool value_nan = value != value;
  const bool best_nan = best != best;
  if (value_nan || best_nan) return value_nan && (!best_nan || index < best_index);
  return value > best || (value == best && index < best_index);
}

// Index of the numpy.argmax of row[0:k], computed by one warp; every lane returns it.
__device__ __forceinline__ long long warp_row_argmax(const float* row, long long k) {
  float best = 0.0f;
  long long best_index = -1;
  // Each lane sees increasing indices, so its own tie rule already keeps the lowest.
  for (long long c = lane_id(); c < k; c += kWarp) {
    const float value = row[c];
    if (argmax_better(value, c, best, best_index)) {
      best = value;
      best_index = c;
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(kFullMask, best, offset);
    const long long other_index = __shfl_xor_sync(kFullMask, best_index, offset);
    if (other_index >= 0 && argmax_better(other, other_index, best, best_index)) {
      best = other;
      best_index = other_index;
    }
  }
  return best_index;
}

// IEEE binary16 bits -> float, exactly (numpy's float16 -> float32 cast);
// written out so that neither cuda_fp16.h nor _Float16 is needed.
__device__ __forceinline__ float half_bits_to_float(unsigned short h) {
  const unsigned sign = static_cast<unsigned>(h >> 15) << 31;
  const unsigned exponent = (h >> 10) & 0x1fu;
  const unsigned mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2**-24 is exact in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  const unsigned bits = exponent == 0x1fu ? (sign | 0x7f800000u | (mantissa << 13))
                                          : (sign | ((exponent + 112u) << 23) | (mantissa << 13));
  return __uint_as_float(bits);
}

__device__ __forceinline__ float load_float(float value) { return value; }
__device__ __forceinline__ float load_float(unsigned short half_bits) { return half_bits_to_float(half_bits); }

// A slot-sorted batch is described by composite keys `slot * n + i`, sorted
// ascending (unique, so any sort is stable): position p holds request
// key % n of account key / n, and an account's requests are contiguous, in
// batch order. These find an account's group from any of its positions.
__device__ __forceinline__ bool group_starts_at(const long long* keys, long long n, long long p) {
  return p == 0 || keys[p - 1] / n != keys[p] / n;
}

__device__ __forceinline__ long long group_end(const long long* keys, long long n, long long start) {
  const long long slot = keys[start] / n;
  long long lo = start + 1, hi = n;
  while (lo < hi) {
    const long long mid = lo + (hi - lo) / 2;
    if (keys[mid] / n == slot) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

}  // namespace sg

#endif  // SG_COMMON_CUH
