// kernels/coverage.cu - cell assignment with the account's style removed, and
// the decayed topic histograms. Launched by streamguard/backends/cuda_backend.py
// for detectors/coverage.py; oracle: NumpyBackend.destyled_cells,
// NumpyBackend.histogram_add, NumpyBackend.coverage_reduce.
//
// destyled_cells is four launches around two cuBLAS GEMMs:
//   center_unit      x (n, d) f32|f16 -> unit = (x - mean) / max(|x - mean|, 1e-12)
//   [GEMM]           scores = unit @ centroids.T                      (n, K)
//   nearest_residual c = argmax(scores); r = unit - scores[c] * centroid[c];
//                    weighted = r * float(w); residual_sq = |r|**2
//   style_prefix     per account, in batch order: style = (state + earlier
//                    weighted rows) / (state weight + earlier weights);
//                    destyled = unit - style; then the state learns the batch
//   [GEMM]           scores2 = destyled @ centroids.T
//   row_argmax       cells = argmax(scores2)
// Layouts (C order): unit, weighted, destyled (n, d) f32; centroids (K, d) f32;
// weights (n,) f64; style_sum (S, d) f32; style_weight (S,) f64;
// hist (S, T) f32 (T topics); keys (n,) sorted `slot * n + i` (common.cuh).
#include "common.cuh"

namespace sg {

constexpr int kMaxReduceThreads = 256;

// center_unit: one warp per row.
//   grid: (ceil(n / warps_per_block) capped, 1, 1); block: (32*k, 1, 1); shared: none.
//   x (n, d) T (float, or float16 bits as unsigned short: the cast to float is
//   exact, as numpy's astype); mean (d,) f32; unit (n, d) f32 out.
template <typename T>
__device__ void center_unit_impl(const T* __restrict__ x, const float* __restrict__ mean, long long n, long long d,
                                 float* __restrict__ unit) {
  for (long long row = global_warp(); row < n; row += total_warps()) {
    const T* in = x + row * d;
    double sum_sq = 0.0;  // the norm in double, rounded once: within an ulp of numpy's float32 pairwise sum
    for (long long j = lane_id(); j < d; j += kWarp) {
      const float c = load_float(in[j]) - mean[j];
      sum_sq += static_cast<double>(c) * c;
    }
    sum_sq = warp_sum(sum_sq);
    const float scale = fmaxf(static_cast<float>(sqrt(sum_sq)), 1e-12f);
    for (long long j = lane_id(); j < d; j += kWarp) unit[row * d + j] = (load_float(in[j]) - mean[j]) / scale;
  }
}

// nearest_residual: one warp per row: nearest cell (numpy argmax order), then
// the residual r = unit - s * c in float32 with the product rounded on its own
// (__fmul_rn: no FMA contraction) exactly as numpy evaluates it.
//   grid: (ceil(n / warps_per_block) capped, 1, 1); block: (32*k, 1, 1); shared: none.
//   scores (n, K) f32; unit (n, d) f32; centroids (K, d) f32; weights (n,) f64;
//   residual_sq (n,) f32 out; weighted (n, d) f32 out.
template <typename T>
__device__ void nearest_residual_impl(const T* __restrict__ scores, long long n, long long k,
                                      const T* __restrict__ unit, const T* __restrict__ centroids, long long d,
                                      const double* __restrict__ weights, T* __restrict__ residual_sq,
                                      T* __restrict__ weighted) {
  for (long long row = global_warp(); row < n; row += total_warps()) {
    const long long cell = warp_row_argmax(scores + row * k, k);
    const T s = scores[row * k + cell];
    const T w = static_cast<T>(weights[row]);  // numpy: weights.astype(float32)
    const T* c = centroids + cell * d;
    double sum_sq = 0.0;
    for (long long j = lane_id(); j < d; j += kWarp) {
      const T r = unit[row * d + j] - __fmul_rn(s, c[j]);
      weighted[row * d + j] = r * w;
      sum_sq += static_cast<double>(r) * r;
    }
    sum_sq = warp_sum(sum_sq);
    if (lane_id() == 0) residual_sq[row] = static_cast<T>(sum_sq);
  }
}

// row_argmax: out[i] = numpy.argmax(scores[i]); one warp per row.
//   grid: (ceil(n / warps_per_block) capped, 1, 1); block: (32*k, 1, 1); shared: none.
template <typename T>
__device__ void row_argmax_impl(const T* __restrict__ scores, long long n, long long k, int* __restrict__ out) {
  for (long long row = global_warp(); row < n; row += total_warps()) {
    const long long cell = warp_row_argmax(scores + row * k, k);
    if (lane_id() == 0) out[row] = static_cast<int>(cell);
  }
}

// style_prefix: a segmented exclusive scan over each account's rows in batch
// order, one column per thread: for every request, the style its account had
// before it (state + earlier rows of the batch, in float64 as the reference),
// destyled = unit - float(style); then the state learns the batch with the
// reference's own arithmetic (style_sum: float32 adds in batch order, like
// numpy.add.at; style_weight: float64 adds in batch order).
//   grid : (min(n, cap), 1, 1), grid-stride over positions; a block owns the
//          group that starts at its position (other positions are skipped).
//   block: (any, 1, 1), ideally >= d so each thread owns one column and the
//          sequential depth is the group's size; shared: one long long (group end).
//   fault: kFaultStyleSlot (the account's rows are then left as unit - 0).
// One block per account, not column tiles over several blocks: style_weight
// is read by every column and written once the group is done, and only a
// block-wide barrier (not a grid-wide one) can order that read and that write.
template <typename T>
__device__ void style_prefix_impl(const long long* __restrict__ keys, long long n, long long d,
                                  const T* __restrict__ unit, const T* __restrict__ weighted,
                                  const double* __restrict__ weights, T* __restrict__ style_sum,
                                  double* __restrict__ style_weight, long long slots, T* __restrict__ destyled,
                                  int* __restrict__ fault) {
  __shared__ long long s_end;
  for (long long start = blockIdx.x; start < n; start += gridDim.x) {
    if (!group_starts_at(keys, n, start)) continue;  // uniform over the block
    if (threadIdx.x == 0) s_end = group_end(keys, n, start);
    __syncthreads();
    const long long end = s_end;
    const long long slot = keys[start] / n;
    const bool valid = slot >= 0 && slot < slots;
    const double weight0 = valid ? style_weight[slot] : 0.0;
    for (long long j = threadIdx.x; j < d; j += blockDim.x) {
      T state = valid ? style_sum[slot * d + j] : T(0);
      double before = state;
      double before_w = weight0;
      for (long long p = start; p < end; ++p) {
        const long long i = keys[p] % n;
        const T style = before_w > 0.0 ? static_cast<T>(before / before_w) : T(0);
        destyled[i * d + j] = unit[i * d + j] - style;
        const T wr = weighted[i * d + j];
        before += wr;
        state += wr;
        before_w += weights[i];
      }
      if (valid) style_sum[slot * d + j] = state;
    }
    __syncthreads();  // every thread has read style_weight[slot] before it is written
    if (threadIdx.x == 0) {
      if (valid) {
        double total = weight0;
        for (long long p = start; p < end; ++p) total += weights[keys[p] % n];
        style_weight[slot] = total;
      } else {
        atomicOr(fault, kFaultStyleSlot);
      }
    }
  }
}

// histogram_add: hist[slots[i], cells[i]] += float(weights[i]); duplicates add
// up through atomicAdd (their order, hence float32 rounding, is unspecified).
//   grid: (ceil(n / block) capped, 1, 1); block: (any, 1, 1); shared: none.
//   hist (S, T) f32; slots (n,) i64; cells (n,) i32; weights (n,) f64.
//   fault: kFaultHistogramIndex (the item is skipped).
template <typename T>
__device__ void histogram_add_impl(T* __restrict__ hist, long long slots, long long topics,
                                   const long long* __restrict__ slot_of, const int* __restrict__ cells,
                                   const double* __restrict__ weights, long long n, int* __restrict__ fault) {
  for (long long i = global_thread(); i < n; i += total_threads()) {
    const long long s = slot_of[i];
    const long long c = cells[i];
    if (s < 0 || s >= slots || c < 0 || c >= topics) {
      atomicOr(fault, kFaultHistogramIndex);
      continue;
    }
    atomicAdd(hist + s * topics + c, static_cast<T>(weights[i]));
  }
}

// coverage_reduce: per requested slot, over its histogram row h (T topics):
// out[r] = (sum h**2, sum h * surprisal, count h > 0), all in float64.
//   grid : (min(m, cap), 1, 1), grid-stride over rows; one block per row.
//   block: (power of two <= 256, 1, 1); shared: 3 * 256 doubles (6 KiB), a
//          shared-memory tree reduction of the threads' partial sums.
//   hist (S, T) f32; slots (m,) i64; surprisal (T,) f32; out (m, 3) f64.
//   fault: kFaultReduceSlot (the row's outputs are NaN).
template <typename T>
__device__ void coverage_reduce_impl(const T* __restrict__ hist, long long slots, long long topics,
                                     const long long* __restrict__ slot_of, long long m,
                                     const float* __restrict__ surprisal, double* __restrict__ out,
                                     int* __restrict__ fault) {
  __shared__ double s_sq[kMaxReduceThreads];
  __shared__ double s_sur[kMaxReduceThreads];
  __shared__ double s_distinct[kMaxReduceThreads];
  const unsigned tid = threadIdx.x;
  for (long long r = blockIdx.x; r < m; r += gridDim.x) {
    const long long slot = slot_of[r];
    const bool valid = slot >= 0 && slot < slots;
    double sq = 0.0, sur = 0.0, distinct = 0.0;
    for (long long t = tid; valid && t < topics; t += blockDim.x) {
      const double h = hist[slot * topics + t];
      sq += h * h;
      sur += h * static_cast<double>(surprisal[t]);
      distinct += h > 0.0 ? 1.0 : 0.0;
    }
    s_sq[tid] = sq;
    s_sur[tid] = sur;
    s_distinct[tid] = distinct;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (tid < stride) {
        s_sq[tid] += s_sq[tid + stride];
        s_sur[tid] += s_sur[tid + stride];
        s_distinct[tid] += s_distinct[tid + stride];
      }
      __syncthreads();
    }
    if (tid == 0) {
      const double nan = __longlong_as_double(0x7ff8000000000000ll);
      out[r * 3 + 0] = valid ? s_sq[0] : nan;
      out[r * 3 + 1] = valid ? s_sur[0] : nan;
      out[r * 3 + 2] = valid ? s_distinct[0] : nan;
      if (!valid) atomicOr(fault, kFaultReduceSlot);
    }
    __syncthreads();  // shared partials are rewritten for the next row
  }
}

}  // namespace sg

// ------------------------------------------------------------ entry points

extern "C" __global__ void center_unit_f32(const float* x, const float* mean, long long n, long long d, float* unit) {
  sg::center_unit_impl<float>(x, mean, n, d, unit);
}

extern "C" __global__ void center_unit_f16(const unsigned short* x, const float* mean, long long n, long long d,
                                           float* unit) {
  sg::center_unit_impl<unsigned short>(x, mean, n, d, unit);
}

extern "C" __global__ void nearest_residual(const float* scores, long long n, long long k, const float* unit,
                                            const float* centroids, long long d, const double* weights,
                                            float* residual_sq, float* weighted) {
  sg::nearest_residual_impl<float>(scores, n, k, unit, centroids, d, weights, residual_sq, weighted);
}

extern "C" __global__ void row_argmax(const float* scores, long long n, long long k, int* out) {
  sg::row_argmax_impl<float>(scores, n, k, out);
}

extern "C" __global__ void style_prefix(const long long* keys, long long n, long long d, const float* unit,
                                        const float* weighted, const double* weights, float* style_sum,
                                        double* style_weight, long long slots, float* destyled, int* fault) {
  sg::style_prefix_impl<float>(keys, n, d, unit, weighted, weights, style_sum, style_weight, slots, destyled, fault);
}

extern "C" __global__ void histogram_add(float* hist, long long slots, long long topics, const long long* slot_of,
                                         const int* cells, const double* weights, long long n, int* fault) {
  sg::histogram_add_impl<float>(hist, slots, topics, slot_of, cells, weights, n, fault);
}

extern "C" __global__ void coverage_reduce(const float* hist, long long slots, long long topics,
                                           const long long* slot_of, long long m, const float* surprisal,
                                           double* out, int* fault) {
  sg::coverage_reduce_impl<float>(hist, slots, topics, slot_of, m, surprisal, out, fault);
}
