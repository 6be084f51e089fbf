// Forward stage: per-Gaussian setup, per-tile lists, and the pixel-parallel splat sum.
//
// - setup_kernel: one thread per Gaussian writes its centre, conic, colour and pixel box (Scratch).
// - bin_kernel: one thread per (image, 16×16 tile) walks the image's boxes in index order and lists the
//   Gaussians that meet its tile. Every lane of a warp reads the same box at the same step (one
//   broadcast load), and the list comes out in ascending index order: deterministic, no atomics.
// - forward_kernel: one 256-thread block per (tile, image), one thread per pixel; each warp owns an
//   8×4 patch and skips a Gaussian whose box misses the patch. The tile's Gaussians pass through
//   shared memory in chunks of 256. A tile whose list overflowed (count > cap) scans all N boxes
//   instead, compacting the hits in index order with warp ballots, so the order, and the sum, is the
//   same either way. In loss mode it writes dL/dpixel of mean((image − target)²) instead of the image.
#pragma once

#include "splat_common.cuh"

namespace gsv {

constexpr int kTile = 16;
constexpr int kBlock = kTile * kTile;  // 256 threads: one per pixel of a tile
constexpr int kBinThreads = 128;

__global__ void setup_kernel(const float* __restrict__ params, const uint8_t* __restrict__ alive, int64_t total,
                             int size, float4* __restrict__ geo_a, float4* __restrict__ geo_b,
                             int4* __restrict__ box) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  if (!alive[idx]) {
    geo_a[idx] = make_float4(0.f, 0.f, 0.f, 0.f);
    geo_b[idx] = make_float4(0.f, 0.f, 0.f, 0.f);
    box[idx] = empty_box();
    return;
  }
  const Setup s = setup_gaussian(params + idx * 8, size);
  geo_a[idx] = s.a;
  geo_b[idx] = s.b;
  box[idx] = s.box;
}

// grid (ceil(tiles / kBinThreads), images in this launch); b_off: first image of the launch.
__global__ void bin_kernel(const int4* __restrict__ box, const uint8_t* __restrict__ active, int64_t N, int tiles_x,
                           int tiles, int cap, int* __restrict__ lists, int* __restrict__ counts, int64_t b_off) {
  const int64_t b = b_off + blockIdx.y;
  const int tile = blockIdx.x * blockDim.x + threadIdx.x;
  if (tile >= tiles || (active != nullptr && !active[b])) return;
  const int x0 = (tile % tiles_x) * kTile, y0 = (tile / tiles_x) * kTile;
  const int x1 = x0 + kTile - 1, y1 = y0 + kTile - 1;
  const int4* bb = box + b * N;
  int* out = lists + (b * tiles + tile) * static_cast<int64_t>(cap);
  int n = 0;
#pragma unroll 4
  for (int64_t g = 0; g < N; ++g) {  // independent loads: unrolled so several are in flight
    if (box_meets(bb[g], x0, x1, y0, y1)) {
      if (n < cap) out[n] = static_cast<int>(g);
      ++n;
    }
  }
  counts[b * tiles + tile] = n;
}

struct ForwardArgs {
  const float4* geo_a;
  const float4* geo_b;
  const int4* box;
  const int* lists;
  const int* counts;
  int cap;
  int64_t N;
  int size;
  int tiles_x;
  int tiles;
  const uint8_t* active;  // nullptr: every image
  const float* target;    // loss mode: [B, S, S, 3]
  float* out;             // image, or dL/dpixel in loss mode
  float inv_numel;        // loss mode: 1 / (S·S·3), the mean's normaliser
};

// grid (tiles, images in this launch), block kBlock.
template <bool kLoss>
__global__ void __launch_bounds__(kBlock) forward_kernel(ForwardArgs args, int64_t b_off) {
  __shared__ float4 s_a[kBlock];
  __shared__ float4 s_b[kBlock];
  __shared__ int4 s_box[kBlock];
  __shared__ int s_warp[kBlock / kWarp];

  const int64_t b = b_off + blockIdx.y;
  if (args.active != nullptr && !args.active[b]) return;  // the whole block leaves together
  const int tile = blockIdx.x;
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const int tx0 = (tile % args.tiles_x) * kTile, ty0 = (tile / args.tiles_x) * kTile;
  // warp patch 8×4: warps (0, 1) cover rows 0–3, (2, 3) rows 4–7, …
  const int wx0 = tx0 + (warp & 1) * 8, wy0 = ty0 + (warp >> 1) * 4;
  const int wx1 = wx0 + 7, wy1 = wy0 + 3;
  const int px = wx0 + (lane & 7), py = wy0 + (lane >> 3);
  const float pxc = static_cast<float>(px) + 0.5f, pyc = static_cast<float>(py) + 0.5f;
  const float cut = weight_cut();
  const int64_t base_g = b * args.N;
  float acc_r = 0.f, acc_g = 0.f, acc_b = 0.f;

  // Sum the n Gaussians staged in shared memory, in staging order.
  auto eval = [&](int n) {
    for (int k = 0; k < n; ++k) {
      const int4 bx = s_box[k];
      if (!box_meets(bx, wx0, wx1, wy0, wy1)) continue;  // the same answer for the whole warp
      if (px < bx.x || px > bx.y || py < bx.z || py > bx.w) continue;  // the CPU op's box, per pixel
      const float4 ga = s_a[k], gb = s_b[k];
      const float q = quad(ga, gb.x, pxc - ga.x, pyc - ga.y);
      if (q >= kQMax) continue;
      const float w = expf(-q) - cut;
      if (w <= 0.f) continue;
      acc_r += gb.y * w;
      acc_g += gb.z * w;
      acc_b += gb.w * w;
    }
  };

  const int count = args.counts[b * args.tiles + tile];
  if (count <= args.cap) {
    const int* list = args.lists + (b * args.tiles + tile) * static_cast<int64_t>(args.cap);
    for (int start = 0; start < count; start += kBlock) {
      const int n = min(kBlock, count - start);
      if (tid < n) {
        const int64_t g = base_g + list[start + tid];
        s_a[tid] = args.geo_a[g];
        s_b[tid] = args.geo_b[g];
        s_box[tid] = args.box[g];
      }
      __syncthreads();
      eval(n);
      __syncthreads();  // before the next chunk overwrites shared memory
    }
  } else {
    const int x1 = tx0 + kTile - 1, y1 = ty0 + kTile - 1;
    for (int64_t start = 0; start < args.N; start += kBlock) {
      const int64_t g = start + tid;
      int4 bx = empty_box();
      if (g < args.N) bx = args.box[base_g + g];
      const bool hit = box_meets(bx, tx0, x1, ty0, y1);
      const unsigned ballot = __ballot_sync(kFullMask, hit);
      if (lane == 0) s_warp[warp] = __popc(ballot);
      __syncthreads();
      int offset = 0, n = 0;
      for (int w = 0; w < kBlock / kWarp; ++w) {
        offset += w < warp ? s_warp[w] : 0;
        n += s_warp[w];
      }
      if (hit) {
        const int slot = offset + __popc(ballot & ((1u << lane) - 1u));
        s_a[slot] = args.geo_a[base_g + g];
        s_b[slot] = args.geo_b[base_g + g];
        s_box[slot] = bx;
      }
      __syncthreads();
      eval(n);
      __syncthreads();  // s_warp and the stage are rewritten next round
    }
  }

  if (px >= args.size || py >= args.size) return;  // tiles overhang the canvas when 16 ∤ S
  const int64_t o = ((b * args.size + py) * args.size + px) * 3;
  if (kLoss) {
    // d/dimage of mean((image − target)²): (2·diff)·(1/numel), the factors autograd multiplies
    args.out[o] = (2.f * (acc_r - args.target[o])) * args.inv_numel;
    args.out[o + 1] = (2.f * (acc_g - args.target[o + 1])) * args.inv_numel;
    args.out[o + 2] = (2.f * (acc_b - args.target[o + 2])) * args.inv_numel;
  } else {
    args.out[o] = acc_r;
    args.out[o + 1] = acc_g;
    args.out[o + 2] = acc_b;
  }
}

}  // namespace gsv
