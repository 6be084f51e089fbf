// Host launchers of the CUDA splat kernels (splat_cuda.cu), declared without torch: raw device pointers
// and a stream, so the .cu translation unit never includes torch's headers and compiles in seconds
// (a torch include costs minutes). cuda_ops.cpp checks and allocates the tensors and calls these.
//
// Layout (all float32, pixel units of an S×S canvas, docs/format.md, Layout and Rendering, scaled by S):
//   params [B, N, 8]  rows (x, y, l11, l21, l22, r, g, b); N is the padded size (Nmax)
//   alive  [B, N]     1 = a real Gaussian, 0 = padding or pruned (never read, never written)
//   image  [B, S, S, 3] channel-last, pixel (i, j) centred at (j + 0.5, i + 0.5)
// Every launcher returns the first CUDA error it meets (cudaSuccess otherwise) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace gsv {

// Scratch the caller allocates: B*N entries each for the three per-Gaussian arrays, B*tiles*cap ints
// for the tile lists and B*tiles for their counts, tiles = ceil(S/16)².
struct Scratch {
  float4* geo_a;  // (x, y, a, b): centre and conic Σ⁻¹ = [[a, b], [b, c]]
  float4* geo_b;  // (c, r, g, b)
  int4* box;      // inclusive pixel box (j0, j1, i0, i1) of q ≤ Q_MAX; (0, −1, 0, −1) when empty or dead
  int* lists;     // [B, tiles, cap] indices of the Gaussians whose box meets the tile, ascending
  int* counts;    // [B, tiles] how many meet it (more than cap: the forward scans all N instead)
  int cap;
  // fit_steps only (nullptr for the render ops): B*N entries each, where the Adam epilogue writes the
  // next iteration's setup while the gather reads this one's (no aliasing of its __restrict__ inputs)
  float4* next_geo_a;
  float4* next_geo_b;
  int4* next_box;
};

int num_tiles(int size);

// image = Σ colour · w over the alive Gaussians (docs/format.md, Rendering).
cudaError_t render_forward(const float* params, const uint8_t* alive, int64_t B, int64_t N, int size,
                           Scratch scratch, float* image, cudaStream_t stream);

// grad_params [B, N, 8] = d(Σ grad_image · image)/d params; zero rows for dead Gaussians.
cudaError_t render_backward(const float* params, const uint8_t* alive, const float* grad_image, int64_t B,
                            int64_t N, int size, Scratch scratch, float* grad_params, cudaStream_t stream);

// Settings of the fused fit (gs_encoder.fitting.fit.FitConfig; Adam as in its _adam_step).
struct FitSettings {
  float lr[3];       // step sizes of (x, y), (l11, l21, l22), (r, g, b)
  double lr_final;   // cosine decay of every step size to this fraction at iteration iters_total − 1
  double lr_decay;   // over this last fraction of the schedule (constant before it); 1: the whole schedule
  int64_t lr_warmup;  // linear ramp (it + 1) / lr_warmup of every step size over the first iterations; 0: none
  float lambda_l1;   // weight of mean |colour| per image
  float min_scale;   // lower bound on l11 and l22 after each step
  double beta1, beta2;
  float eps;
  int64_t it0;          // first iteration index (Adam step t = it + 1)
  int64_t num_steps;    // iterations run by this call
  int64_t iters_total;  // length of the schedule
};

// num_steps iterations of: render, loss gradient, Gaussian-parallel backward with the L1 term,
// Adam and the Cholesky constraint, in place on params / exp_avg / exp_avg_sq. Images with
// active[b] = 0 are frozen (only the constraint is applied to their Gaussians).
// counts [B]: alive Gaussians per image (the L1 term's normaliser). grad_image [B, S, S, 3]: scratch.
// The scratch's next_* buffers must be allocated.
cudaError_t fit_steps(float* params, float* exp_avg, float* exp_avg_sq, const uint8_t* alive,
                      const uint8_t* active, const float* counts, const float* target, int64_t B, int64_t N,
                      int size, const FitSettings& settings, Scratch scratch, float* grad_image,
                      cudaStream_t stream);

// keep [B, N] = alive & (luminosity ≥ tau, or the brightest alive Gaussian of its image).
cudaError_t prune_mask(const float* params, const uint8_t* alive, int64_t B, int64_t N, float tau,
                       uint8_t* keep, cudaStream_t stream);

}  // namespace gsv
