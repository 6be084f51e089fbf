// Backward stage: Gaussian-parallel gather of dL/dpixel, with either a plain gradient write (the
// render op's backward) or the fused fit update (L1 colour term, Adam, Cholesky constraint, and the
// setup of the next iteration's forward).
//
// A warp owns 32 consecutive Gaussians. It visits them one after another; for each, the 32 lanes tile
// the Gaussian's pixel box in 8×4 patches (coalesced reads, and a 100×100-pixel Gaussian costs a warp
// ~300 steps rather than one thread 10,000), then a butterfly sum gives every lane the same totals, and
// lane k keeps those of the warp's k-th Gaussian. The epilogue then runs on all 32 lanes at once, one
// Gaussian each. No atomics and a fixed summation order: deterministic.
#pragma once

#include "splat_common.cuh"

namespace gsv {

constexpr int kGatherBlock = 128;

// The render op's backward: d/dparams, zero for dead rows.
struct GradEpilogue {
  const float* params;
  const uint8_t* alive;
  float* grad;

  __device__ bool gathers(int64_t idx, int64_t) const { return alive[idx] != 0; }

  __device__ void operator()(int64_t idx, int64_t, const Grad8& s) const {
    float* out = grad + idx * 8;
    if (!alive[idx]) {
      for (int k = 0; k < 8; ++k) out[k] = 0.f;
      return;
    }
    float p[8], g[8];
    for (int k = 0; k < 8; ++k) p[k] = params[idx * 8 + k];
    chain_to_params(s, p, g);
    for (int k = 0; k < 8; ++k) out[k] = g[k];
  }
};

// One fused fit step for one Gaussian. Mirrors fit.py's _loss_gradient + _adam_step in float32:
// g += λ·sign(c)/(3·n_b); m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
// p −= (m / (√(v / bc2) + eps)) · (lr_group · step_scale), step_scale = sched(it) / bc1; then the
// constraint, and the conic and box of the new parameters for the next forward. Those go to the
// second setup buffers (next_*), never to the ones gather_kernel reads through its const __restrict__
// pointers: fit_steps swaps the two after every iteration. Every row gets its next setup (dead rows an
// empty box, frozen images that of their constrained parameters), so the swapped-in buffers are whole.
struct AdamEpilogue {
  float* params;
  float* exp_avg;
  float* exp_avg_sq;
  const uint8_t* alive;
  const uint8_t* active;
  const float* counts;
  float4* next_geo_a;
  float4* next_geo_b;
  int4* next_box;
  int size;
  float lr[3];
  float step_scale;
  float bc2;
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, min_scale, lambda_l1;

  __device__ bool gathers(int64_t idx, int64_t b) const { return alive[idx] && active[b]; }

  __device__ void write_next(int64_t idx, const Setup& next) const {
    next_geo_a[idx] = next.a;
    next_geo_b[idx] = next.b;
    next_box[idx] = next.box;
  }

  __device__ void operator()(int64_t idx, int64_t b, const Grad8& s) const {
    if (!alive[idx]) {
      write_next(idx, Setup{make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f), empty_box()});
      return;
    }
    float* pp = params + idx * 8;
    float p[8];
    for (int k = 0; k < 8; ++k) p[k] = pp[k];
    if (!active[b]) {  // frozen image: the loop still applies the constraint to every Gaussian
      constrain(p, min_scale);
      for (int k = 2; k < 5; ++k) pp[k] = p[k];
      write_next(idx, setup_gaussian(p, size));
      return;
    }
    float g[8];
    chain_to_params(s, p, g);
    if (lambda_l1 > 0.f) {
      const float coef = lambda_l1 / (3.f * counts[b]);  // d/dc of λ·Σ|c| / (3·n_b)
      for (int k = 5; k < 8; ++k) g[k] += static_cast<float>((p[k] > 0.f) - (p[k] < 0.f)) * coef;
    }
    float* m = exp_avg + idx * 8;
    float* v = exp_avg_sq + idx * 8;
    for (int k = 0; k < 8; ++k) {
      const float mk = m[k] * beta1 + one_minus_beta1 * g[k];
      const float vk = v[k] * beta2 + one_minus_beta2 * g[k] * g[k];
      m[k] = mk;
      v[k] = vk;
      const float lr_k = lr[k < 2 ? 0 : (k < 5 ? 1 : 2)];
      p[k] -= (mk / (sqrtf(vk / bc2) + eps)) * (lr_k * step_scale);
    }
    constrain(p, min_scale);
    for (int k = 0; k < 8; ++k) pp[k] = p[k];
    write_next(idx, setup_gaussian(p, size));
  }
};

// grid ceil(total / kGatherBlock), block kGatherBlock; one warp per 32 consecutive Gaussians.
template <class Epilogue>
__global__ void __launch_bounds__(kGatherBlock)
    gather_kernel(const float4* __restrict__ geo_a, const float4* __restrict__ geo_b, const int4* __restrict__ box,
                  const float* __restrict__ grad_image, int64_t total, int64_t N, int size, Epilogue epi) {
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp * kWarp;
  const int lane = threadIdx.x % kWarp;
  if (first >= total) return;  // whole warps leave together
  const int64_t last = min(total, first + kWarp);
  const int64_t plane = static_cast<int64_t>(size) * size * 3;
  const float cut = weight_cut();
  Grad8 mine = zero_grad8();
  for (int64_t idx = first; idx < last; ++idx) {  // the same idx on every lane: uniform branches
    const int64_t b = idx / N;
    if (!epi.gathers(idx, b)) continue;
    Setup g;
    g.a = geo_a[idx];
    g.b = geo_b[idx];
    g.box = box[idx];
    const Grad8 s = warp_sum(gather_lane(g, grad_image + b * plane, size, lane, cut));
    if (idx - first == lane) mine = s;
  }
  const int64_t idx = first + lane;
  if (idx < total) epi(idx, idx / N, mine);
}

// Rec. 709 luminosity of |colour|, unfused in the order of fit.py's luminance().
__device__ __forceinline__ float luminosity(const float* p) {
  return __fadd_rn(__fadd_rn(__fmul_rn(0.2126f, fabsf(p[5])), __fmul_rn(0.7152f, fabsf(p[6]))),
                   __fmul_rn(0.0722f, fabsf(p[7])));
}

constexpr int kPruneBlock = 256;

// One block per image: the brightest alive Gaussian (lowest index among ties, as torch.argmax), then
// keep = alive & (lum ≥ tau | brightest).
__global__ void __launch_bounds__(kPruneBlock)
    prune_kernel(const float* __restrict__ params, const uint8_t* __restrict__ alive, int64_t N, float tau,
                 uint8_t* __restrict__ keep, int64_t b_off) {
  __shared__ float s_lum[kPruneBlock];
  __shared__ int64_t s_arg[kPruneBlock];
  const int64_t b = b_off + blockIdx.x;
  const int tid = threadIdx.x;
  const float* pb = params + b * N * 8;
  float best = 0.f;
  int64_t arg = -1;
  for (int64_t g = tid; g < N; g += kPruneBlock) {  // ascending g: a strict > keeps the first maximum
    if (!alive[b * N + g]) continue;
    const float l = luminosity(pb + g * 8);
    if (arg < 0 || l > best) {
      best = l;
      arg = g;
    }
  }
  s_lum[tid] = best;
  s_arg[tid] = arg;
  __syncthreads();
  for (int stride = kPruneBlock / 2; stride > 0; stride >>= 1) {
    if (tid < stride) {
      const float l = s_lum[tid + stride];
      const int64_t a = s_arg[tid + stride];
      const int64_t mine = s_arg[tid];
      if (a >= 0 && (mine < 0 || l > s_lum[tid] || (l == s_lum[tid] && a < mine))) {
        s_lum[tid] = l;
        s_arg[tid] = a;
      }
    }
    __syncthreads();
  }
  const int64_t brightest = s_arg[0];
  for (int64_t g = tid; g < N; g += kPruneBlock) {
    const int64_t idx = b * N + g;
    keep[idx] = alive[idx] && (luminosity(pb + g * 8) >= tau || g == brightest);
  }
}

}  // namespace gsv
