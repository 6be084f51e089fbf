// The one CUDA translation unit of gsv_cuda_ops: launchers of the kernel stages (render_fwd.cuh,
// render_bwd.cuh) and the fused fit loop. Torch-free (raw pointers, a stream) so it compiles in
// seconds; cuda_ops.cpp is the torch side.
//
// The fit loop runs every iteration from C++: setup once, then per iteration bin → forward (dL/dpixel)
// → gather + Adam, three launches on the caller's stream with no host synchronisation. The schedule
// and Adam's bias corrections are computed here on the host in double, as the Python loop does.
#include <cmath>
#include <utility>

#include "render_bwd.cuh"
#include "render_fwd.cuh"
#include "splat_cuda.h"

namespace gsv {
namespace {

constexpr int64_t kMaxGridY = 65535;  // images per launch of the per-image grids

int64_t blocks_for(int64_t total, int per_block) { return (total + per_block - 1) / per_block; }

cudaError_t launch_setup(const float* params, const uint8_t* alive, int64_t total, int size, const Scratch& s,
                         cudaStream_t stream) {
  if (total == 0) return cudaSuccess;
  setup_kernel<<<blocks_for(total, 256), 256, 0, stream>>>(params, alive, total, size, s.geo_a, s.geo_b, s.box);
  return cudaGetLastError();
}

// bin, then forward; `active` may be nullptr.
template <bool kLoss>
cudaError_t launch_bin_forward(int64_t B, int64_t N, int size, const Scratch& s, const uint8_t* active,
                               const float* target, float* out, cudaStream_t stream) {
  const int tiles_x = (size + kTile - 1) / kTile;
  const int tiles = num_tiles(size);
  ForwardArgs args{s.geo_a, s.geo_b, s.box, s.lists, s.counts, s.cap, N, size, tiles_x, tiles, active, target, out,
                   1.f / static_cast<float>(static_cast<double>(size) * size * 3)};
  for (int64_t b0 = 0; b0 < B; b0 += kMaxGridY) {
    const unsigned nb = static_cast<unsigned>(std::min<int64_t>(kMaxGridY, B - b0));
    const dim3 bin_grid(static_cast<unsigned>(blocks_for(tiles, kBinThreads)), nb);
    bin_kernel<<<bin_grid, kBinThreads, 0, stream>>>(s.box, active, N, tiles_x, tiles, s.cap, s.lists, s.counts, b0);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    forward_kernel<kLoss><<<dim3(static_cast<unsigned>(tiles), nb), kBlock, 0, stream>>>(args, b0);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <class Epilogue>
cudaError_t launch_gather(const Scratch& s, const float* grad_image, int64_t total, int64_t N, int size,
                          const Epilogue& epi, cudaStream_t stream) {
  if (total == 0) return cudaSuccess;
  gather_kernel<Epilogue><<<blocks_for(total, kGatherBlock), kGatherBlock, 0, stream>>>(
      s.geo_a, s.geo_b, s.box, grad_image, total, N, size, epi);
  return cudaGetLastError();
}

}  // namespace

int num_tiles(int size) {
  const int t = (size + kTile - 1) / kTile;
  return t * t;
}

cudaError_t render_forward(const float* params, const uint8_t* alive, int64_t B, int64_t N, int size,
                           Scratch scratch, float* image, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  cudaError_t err = launch_setup(params, alive, B * N, size, scratch, stream);
  if (err != cudaSuccess) return err;
  return launch_bin_forward<false>(B, N, size, scratch, nullptr, nullptr, image, stream);
}

cudaError_t render_backward(const float* params, const uint8_t* alive, const float* grad_image, int64_t B,
                            int64_t N, int size, Scratch scratch, float* grad_params, cudaStream_t stream) {
  const int64_t total = B * N;
  cudaError_t err = launch_setup(params, alive, total, size, scratch, stream);
  if (err != cudaSuccess) return err;
  return launch_gather(scratch, grad_image, total, N, size, GradEpilogue{params, alive, grad_params}, stream);
}

cudaError_t fit_steps(float* params, float* exp_avg, float* exp_avg_sq, const uint8_t* alive,
                      const uint8_t* active, const float* counts, const float* target, int64_t B, int64_t N,
                      int size, const FitSettings& f, Scratch scratch, float* grad_image, cudaStream_t stream) {
  const int64_t total = B * N;
  if (total == 0 || f.num_steps <= 0) return cudaSuccess;
  cudaError_t err = launch_setup(params, alive, total, size, scratch, stream);
  if (err != cudaSuccess) return err;
  AdamEpilogue epi{params, exp_avg, exp_avg_sq, alive, active, counts, nullptr, nullptr, nullptr, size};
  for (int k = 0; k < 3; ++k) epi.lr[k] = f.lr[k];
  epi.beta1 = static_cast<float>(f.beta1);
  epi.beta2 = static_cast<float>(f.beta2);
  epi.one_minus_beta1 = static_cast<float>(1.0 - f.beta1);
  epi.one_minus_beta2 = static_cast<float>(1.0 - f.beta2);
  epi.eps = f.eps;
  epi.min_scale = f.min_scale;
  epi.lambda_l1 = f.lambda_l1;
  const double pi = 3.14159265358979323846;
  for (int64_t k = 0; k < f.num_steps; ++k) {
    const int64_t it = f.it0 + k;
    const double t = static_cast<double>(it + 1);
    const double frac = static_cast<double>(it) / static_cast<double>(std::max<int64_t>(f.iters_total - 1, 1));
    // a linear warm-up over the first lr_warmup iterations, times: constant, then a cosine down to lr_final
    // over the last lr_decay of the schedule (fit_ops._lr_scale)
    const double warm = f.lr_warmup > 0 ? std::min(1.0, t / static_cast<double>(f.lr_warmup)) : 1.0;
    const double start = 1.0 - f.lr_decay;
    const double sched = warm * (frac <= start ? 1.0
                                               : f.lr_final + (1.0 - f.lr_final) * 0.5 *
                                                                  (1.0 + std::cos(pi * ((frac - start) / f.lr_decay))));
    epi.step_scale = static_cast<float>(sched / (1.0 - std::pow(f.beta1, t)));
    epi.bc2 = static_cast<float>(1.0 - std::pow(f.beta2, t));
    err = launch_bin_forward<true>(B, N, size, scratch, active, target, grad_image, stream);
    if (err != cudaSuccess) return err;
    epi.next_geo_a = scratch.next_geo_a;
    epi.next_geo_b = scratch.next_geo_b;
    epi.next_box = scratch.next_box;
    err = launch_gather(scratch, grad_image, total, N, size, epi, stream);
    if (err != cudaSuccess) return err;
    std::swap(scratch.geo_a, scratch.next_geo_a);  // the next iteration reads what this one wrote
    std::swap(scratch.geo_b, scratch.next_geo_b);
    std::swap(scratch.box, scratch.next_box);
  }
  return cudaSuccess;
}

cudaError_t prune_mask(const float* params, const uint8_t* alive, int64_t B, int64_t N, float tau, uint8_t* keep,
                       cudaStream_t stream) {
  if (B == 0 || N == 0) return cudaSuccess;
  for (int64_t b0 = 0; b0 < B; b0 += kMaxGridY) {
    const unsigned nb = static_cast<unsigned>(std::min<int64_t>(kMaxGridY, B - b0));
    prune_kernel<<<nb, kPruneBlock, 0, stream>>>(params, alive, N, tau, keep, b0);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace gsv
