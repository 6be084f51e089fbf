// Device helpers shared by the kernel stages: the per-Gaussian setup (conic and cull box) and the
// per-pixel quadratic form, in the CPU op's (cpu_render.cpp) order of operations and without fused
// multiply-adds (the _rn intrinsics are never contracted; the CPU op builds with -ffp-contract=off), so
// q has the same bits on both sides. Both then keep a pair iff q < Q_MAX: at that edge the weight
// w = max(0, e^{−q} − e^{−Q_MAX}) is continuous but its derivative jumps from −e^{−Q_MAX} to 0, and
// deciding on identical q keeps the gradients equal there too (docs/format.md, Rendering).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace gsv {

constexpr float kQMax = 4.5f;
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// e^{−Q_MAX}, the weight subtracted at the edge; the same expf on both sides of the fit.
__device__ __forceinline__ float weight_cut() { return expf(-kQMax); }

// An empty box: j1 < j0 and i1 < i0, so box loops run zero times (with no overflow near INT_MAX), and
// since every rectangle tested against boxes starts at a pixel ≥ 0, j1 = −1 never meets one.
__device__ __forceinline__ int4 empty_box() { return make_int4(0, -1, 0, -1); }

// Does the inclusive box meet the inclusive rectangle [x0, x1] × [y0, y1] (x0, y0 ≥ 0)? Empty boxes never do.
__device__ __forceinline__ bool box_meets(int4 bx, int x0, int x1, int y0, int y1) {
  return bx.x <= x1 && bx.y >= x0 && bx.z <= y1 && bx.w >= y0;
}

__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }

__device__ __forceinline__ int clip_index(float v, int size) {
  return static_cast<int>(fminf(fmaxf(v, -1.f), static_cast<float>(size)));
}

struct Setup {
  float4 a;  // (x, y, a, b)
  float4 b;  // (c, r, g, b)
  int4 box;
};

// Centre, conic Σ⁻¹ = [[a, b], [b, c]] of Σ = LLᵀ, L = [[u, 0], [t, z]], and the pixel box holding
// every pixel centre with q ≤ Q_MAX: half-widths √(2·Q_MAX·Σxx) = 3|u| and 3·√(t² + z²), clipped to
// the canvas. Outside the box w = 0 exactly, so the box only bounds the work.
__device__ __forceinline__ Setup setup_gaussian(const float* p, int size) {
  const float x = p[0], y = p[1], u = p[2], t = p[3], z = p[4];
  const float uz = mul(u, z), tt_zz = add(mul(t, t), mul(z, z));
  const float inv_det = 1.f / mul(uz, uz);  // IEEE division and sqrtf (no fast-math)
  Setup s;
  s.a = make_float4(x, y, mul(tt_zz, inv_det), mul(-mul(u, t), inv_det));
  s.b = make_float4(mul(mul(u, u), inv_det), p[5], p[6], p[7]);
  const float ex = mul(3.f, fabsf(u)), ey = mul(3.f, sqrtf(tt_zz));  // √(2·4.5) = 3
  const float cx = sub(x, 0.5f), cy = sub(y, 0.5f);
  const int j0 = max(0, clip_index(ceilf(sub(cx, ex)), size));
  const int j1 = min(size - 1, clip_index(floorf(add(cx, ex)), size));
  const int i0 = max(0, clip_index(ceilf(sub(cy, ey)), size));
  const int i1 = min(size - 1, clip_index(floorf(add(cy, ey)), size));
  s.box = (j0 > j1 || i0 > i1) ? empty_box() : make_int4(j0, j1, i0, i1);
  return s;
}

// The quadratic form at offset (dx, dy) from the centre: 0.5·(a·dx·dx + 2·b·dx·dy + c·dy·dy), left to
// right, each operation rounded, as the CPU op evaluates it.
__device__ __forceinline__ float quad(float4 ga, float c, float dx, float dy) {
  const float axx = mul(mul(ga.z, dx), dx);
  const float bxy = mul(mul(mul(2.f, ga.w), dx), dy);
  const float cyy = mul(mul(c, dy), dy);
  return mul(0.5f, add(add(axx, bxy), cyy));
}

// Sums a Gaussian gathers from dL/dpixel over its box: d/d(x, y), d/d(a, b, c) of the conic, d/d(rgb).
struct Grad8 {
  float sx, sy, sa, sb, sc, cr, cg, cb;
};

__device__ __forceinline__ Grad8 zero_grad8() { return Grad8{0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}; }

// Butterfly sum over the warp: every lane ends with the same bits (each step adds the same two
// operands in both lanes, and float addition is commutative), in a fixed order: deterministic.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = kWarp / 2; m > 0; m >>= 1) v += __shfl_xor_sync(kFullMask, v, m);
  return v;
}

__device__ __forceinline__ Grad8 warp_sum(Grad8 s) {
  return Grad8{warp_sum(s.sx), warp_sum(s.sy), warp_sum(s.sa), warp_sum(s.sb),
               warp_sum(s.sc), warp_sum(s.cr), warp_sum(s.cg), warp_sum(s.cb)};
}

// One lane's share of a Gaussian's gather: the warp tiles the box with 8×4 patches, lane (lx, ly)
// takes pixel (j0 + lx + 8m, i0 + ly + 4n). `v` is the image's dL/dpixel plane [S, S, 3].
__device__ __forceinline__ Grad8 gather_lane(const Setup& g, const float* __restrict__ v, int size, int lane,
                                             float cut) {
  Grad8 s = zero_grad8();
  const float4 ga = g.a;
  const float c = g.b.x, r = g.b.y, gr = g.b.z, bl = g.b.w;
  for (int i = g.box.z + (lane >> 3); i <= g.box.w; i += 4) {
    const float dy = static_cast<float>(i) + 0.5f - ga.y;
    const float* row = v + static_cast<int64_t>(i) * size * 3;
    for (int j = g.box.x + (lane & 7); j <= g.box.y; j += 8) {
      const float dx = static_cast<float>(j) + 0.5f - ga.x;
      const float q = quad(ga, c, dx, dy);
      if (q >= kQMax) continue;  // outside the support (NaN passes on, as in the CPU op)
      const float e = expf(-q);
      const float w = e - cut;
      if (w <= 0.f) continue;
      const float* vp = row + static_cast<int64_t>(j) * 3;
      const float v0 = __ldg(vp), v1 = __ldg(vp + 1), v2 = __ldg(vp + 2);
      s.cr += v0 * w;
      s.cg += v1 * w;
      s.cb += v2 * w;
      const float gq = -e * (v0 * r + v1 * gr + v2 * bl);  // dL/dq
      // dq/dμ = −Σ⁻¹d; dq/da = ½dx², dq/db = dx·dy, dq/dc = ½dy²
      s.sx -= gq * (ga.z * dx + ga.w * dy);
      s.sy -= gq * (ga.w * dx + c * dy);
      s.sa += gq * 0.5f * dx * dx;
      s.sb += gq * dx * dy;
      s.sc += gq * 0.5f * dy * dy;
    }
  }
  return s;
}

// d/d(x, y, l11, l21, l22, r, g, b) from the gathered sums: the conic's chain rule in L = [[u, 0], [t, z]]
// (a = (t² + z²)/(u²z²), b = −t/(u z²), c = 1/z²), the same expressions as the CPU op.
__device__ __forceinline__ void chain_to_params(const Grad8& s, const float* p, float* g) {
  const float u = p[2], t = p[3], z = p[4];
  const float u2 = u * u, z2 = z * z;
  const float da_du = -2.f * (t * t + z2) / (u2 * u * z2), da_dt = 2.f * t / (u2 * z2),
              da_dz = -2.f * t * t / (u2 * z2 * z);
  const float db_du = t / (u2 * z2), db_dt = -1.f / (u * z2), db_dz = 2.f * t / (u * z2 * z);
  const float dc_dz = -2.f / (z2 * z);
  g[0] = s.sx;
  g[1] = s.sy;
  g[2] = s.sa * da_du + s.sb * db_du;
  g[3] = s.sa * da_dt + s.sb * db_dt;
  g[4] = s.sa * da_dz + s.sb * db_dz + s.sc * dc_dz;
  g[5] = s.cr;
  g[6] = s.cg;
  g[7] = s.cb;
}

// Keep l11, l22 ≥ min_scale, flipping the signs of L's first column first so Σ is unchanged
// (fit.py's _constrain). Written with comparisons so a NaN stays NaN, as torch's clamp_ leaves it.
__device__ __forceinline__ void constrain(float* p, float min_scale) {
  if (p[2] < 0.f) {
    p[2] = -p[2];
    p[3] = -p[3];
  }
  if (p[2] < min_scale) p[2] = min_scale;
  const float z = fabsf(p[4]);
  p[4] = z < min_scale ? min_scale : z;
}

}  // namespace gsv
