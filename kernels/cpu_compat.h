// kernels/cpu_compat.h - run the CUDA sources of kernels/ on the CPU, for parity tests.
//
// No GPU is available on the development and CI machines, so the same .cu text
// that NVRTC compiles on a device is also compiled by g++ (-std=c++20 -pthread)
// behind this header and executed against the NumPy reference. A kernel that
// only compiles has not been tested.
//
// Execution model of sgcpu::launch(grid, block, body):
//   - one std::thread per thread of a block, created once per launch; every
//     thread walks the blocks of the grid in the same order, so exactly one
//     block runs at a time. That is what makes `__shared__` as `static` correct.
//   - a std::barrier per block for __syncthreads, and one more at the end of
//     every block so that no thread starts block b+1 (and overwrites shared
//     memory) while another still runs block b;
//   - a std::barrier per warp (32 consecutive linear thread ids, as on the
//     device) behind every warp intrinsic, so shuffles and ballots exchange
//     values with real barrier semantics: a kernel in which the lanes of a warp
//     disagree on the number of warp-intrinsic calls deadlocks here, as it
//     would misbehave there;
//   - atomics are __atomic_* builtins (threads of a block really run
//     concurrently, so a missing atomic is a real race here too).
//
// Rules the kernels follow so that this model is faithful (stated in common.cuh):
// a kernel that calls __syncthreads never returns early; warp intrinsics are
// called with the full mask by all 32 lanes of full warps.
#ifndef SG_CPU_COMPAT_H
#define SG_CPU_COMPAT_H

#ifndef __CUDACC__

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3() = default;
  constexpr dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace sgcpu {

constexpr unsigned kWarpSize = 32;

// Launch errors, returned to Python by sgcpu::launch.
enum Status : int {
  kOk = 0,
  kBadLaunch = 1,     // empty or too large block/grid
  kPartialWarp = 2,   // a warp intrinsic used in a warp of fewer than 32 threads
  kPartialMask = 3,   // a warp intrinsic used with a mask other than the full one
};

struct Warp {
  std::barrier<> bar;
  unsigned size;
  unsigned long long lanes[kWarpSize];
  explicit Warp(unsigned n) : bar(static_cast<std::ptrdiff_t>(n)), size(n), lanes{} {}
};

struct Block {
  std::barrier<> sync;   // __syncthreads
  std::barrier<> done;   // end of a block: nobody starts the next one early
  std::vector<std::unique_ptr<Warp>> warps;
  std::atomic<int> status{kOk};
  explicit Block(unsigned n)
      : sync(static_cast<std::ptrdiff_t>(n)), done(static_cast<std::ptrdiff_t>(n)) {
    for (unsigned first = 0; first < n; first += kWarpSize) {
      warps.push_back(std::make_unique<Warp>(n - first < kWarpSize ? n - first : kWarpSize));
    }
  }
};

inline thread_local Block* tl_block = nullptr;
inline thread_local Warp* tl_warp = nullptr;
inline thread_local unsigned tl_lane = 0;

inline void fail(Status status) {
  int expected = kOk;
  tl_block->status.compare_exchange_strong(expected, status);
}

// True when the calling warp may use a warp intrinsic; every lane of the warp
// reaches the same verdict, so a refusal never leaves a lane waiting.
inline bool warp_usable(unsigned mask) {
  if (tl_warp->size != kWarpSize) {
    fail(kPartialWarp);
    return false;
  }
  if (mask != 0xffffffffu) {
    fail(kPartialMask);
    return false;
  }
  return true;
}

template <typename T>
inline unsigned long long to_bits(T value) {
  static_assert(sizeof(T) <= sizeof(unsigned long long) && std::is_trivially_copyable_v<T>);
  unsigned long long bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
inline T from_bits(unsigned long long bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// Every lane publishes `value`, then reads lane `source(lane)`'s.
template <typename T, typename Source>
inline T exchange(T value, Source source) {
  Warp* warp = tl_warp;
  warp->lanes[tl_lane] = to_bits(value);
  warp->bar.arrive_and_wait();
  const unsigned from = source(tl_lane);
  const T out = from_bits<T>(warp->lanes[from < warp->size ? from : tl_lane]);
  warp->bar.arrive_and_wait();  // nobody overwrites lanes[] before everyone has read
  return out;
}

// Run `body` (the kernel call) as a grid of blocks of threads; see the header comment.
template <typename Body>
int launch(dim3 grid, dim3 block, Body body) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
  if (threads == 0 || threads > 1024 || blocks == 0) return kBadLaunch;
  Block state(static_cast<unsigned>(threads));
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      tl_block = &state;
      tl_warp = state.warps[t / kWarpSize].get();
      tl_lane = t % kWarpSize;
      threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
      blockDim = block;
      gridDim = grid;
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            blockIdx = dim3(bx, by, bz);
            body();
            state.done.arrive_and_wait();
          }
    });
  }
  for (auto& thread : pool) thread.join();
  return state.status.load();
}

}  // namespace sgcpu

inline void __syncthreads() { sgcpu::tl_block->sync.arrive_and_wait(); }

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  if (!sgcpu::warp_usable(mask)) return 0;
  sgcpu::Warp* warp = sgcpu::tl_warp;
  warp->lanes[sgcpu::tl_lane] = predicate != 0;
  warp->bar.arrive_and_wait();
  unsigned out = 0;
  for (unsigned lane = 0; lane < sgcpu::kWarpSize; ++lane) out |= static_cast<unsigned>(warp->lanes[lane] & 1u) << lane;
  warp->bar.arrive_and_wait();
  return out;
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  if (!sgcpu::warp_usable(mask)) return value;
  return sgcpu::exchange(value, [&](unsigned lane) {
    const unsigned from = lane ^ static_cast<unsigned>(lane_mask);
    // As on the device: a source outside the caller's `width` segment returns the caller's own value.
    return (from / static_cast<unsigned>(width)) == (lane / static_cast<unsigned>(width)) ? from : lane;
  });
}

template <typename T>
inline T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
  if (!sgcpu::warp_usable(mask)) return value;
  return sgcpu::exchange(value, [&](unsigned lane) {
    const unsigned w = static_cast<unsigned>(width);
    return lane / w * w + static_cast<unsigned>(src_lane) % w;
  });
}

inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }

// g++ is run with -ffp-contract=off, so a plain product is rounded as on the device.
inline float __fmul_rn(float a, float b) { return a * b; }

inline float __uint_as_float(unsigned bits) {
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

inline double __longlong_as_double(long long bits) {
  double out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

inline float atomicAdd(float* address, float value) {
  float old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  float next = old + value;
  // A failed exchange reloads `old`; the add is retried on the fresh value.
  while (!__atomic_compare_exchange(address, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    next = old + value;
  }
  return old;
}

inline double atomicAdd(double* address, double value) {
  double old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  double next = old + value;
  while (!__atomic_compare_exchange(address, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    next = old + value;
  }
  return old;
}

inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }

inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

inline int atomicOr(int* address, int value) { return __atomic_fetch_or(address, value, __ATOMIC_RELAXED); }

#endif  // __CUDACC__
#endif  // SG_CPU_COMPAT_H
