// CPU (OpenMP) forward and backward of the splat sum of docs/format.md, Rendering, in pixel units of an S×S canvas:
//   image[b, i, j, :] = Σ_g rgb_g · max(0, exp(−q_g(p)) − exp(−Q_MAX)),  p = (j + 0.5, i + 0.5),
//   q_g(p) = ½ dᵀ Σ_g⁻¹ d,  d = p − μ_g,  Σ_g = L_g L_gᵀ,  L_g = [[l11, 0], [l21, l22]].
// Each Gaussian visits the pixels of its q ≤ Q_MAX bounding box (clipped to the canvas); outside the
// ellipse w = 0 exactly, so the box only bounds the work and never changes the result. A pair counts
// iff q < Q_MAX, with q and the box computed in the same order as the CUDA kernels (splat_common.cuh),
// so the two agree on every pair, and so on the gradient's jump at the edge.
// Forward: Gaussian-parallel into per-thread canvases, summed at the end (no atomics; static schedule,
// so the result is the same run to run for a given thread count).
// Backward: Gaussian-parallel gather of dL/dimage over the same box; the chain (conic → L, μ) in registers.

#include <torch/extension.h>

#include <cmath>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr double kQMax = 4.5;

template <typename T>
struct Gauss {
  T x, y, a, b, c;  // centre (px) and conic Σ⁻¹ = [[a, b], [b, c]]
  int j0, j1, i0, i1;  // inclusive pixel box, clipped; empty when j0 > j1 or i0 > i1
};

template <typename T>
Gauss<T> setup(const T* xy, const T* L, int64_t size) {
  Gauss<T> g;
  const T u = L[0], t = L[1], z = L[2];
  const T inv_det = T(1) / ((u * z) * (u * z));
  g.x = xy[0];
  g.y = xy[1];
  g.a = (t * t + z * z) * inv_det;
  g.b = -(u * t) * inv_det;
  g.c = (u * u) * inv_det;
  const T r = std::sqrt(T(2) * T(kQMax));
  const T ex = r * std::abs(u), ey = r * std::sqrt(t * t + z * z);
  // pixel j has its centre at j + 0.5: |j + 0.5 − x| ≤ ex
  const T lo_x = std::ceil(g.x - T(0.5) - ex), hi_x = std::floor(g.x - T(0.5) + ex);
  const T lo_y = std::ceil(g.y - T(0.5) - ey), hi_y = std::floor(g.y - T(0.5) + ey);
  // fmax/fmin as the kernels' fmaxf/fminf: a NaN bound becomes −1, so a Gaussian with a NaN centre or
  // scale gets an empty box (never an undefined float→int cast); ops.py rejects such input before here
  auto clip = [size](T v) { return static_cast<int>(std::fmin(std::fmax(v, T(-1)), T(size))); };
  g.j0 = std::max(0, clip(lo_x));
  g.j1 = std::min<int>(size - 1, clip(hi_x));
  g.i0 = std::max(0, clip(lo_y));
  g.i1 = std::min<int>(size - 1, clip(hi_y));
  return g;
}

template <typename T>
void forward_impl(const T* xy, const T* L, const T* rgb, const int64_t* ids, int64_t n, int64_t num_images,
                  int64_t size, T* out) {
  const int64_t plane = num_images * size * size * 3;
  const T cut = std::exp(-T(kQMax));
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  std::vector<T> partial(static_cast<size_t>(threads - 1) * plane, T(0));
#pragma omp parallel num_threads(threads)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    T* canvas = tid == 0 ? out : partial.data() + static_cast<size_t>(tid - 1) * plane;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < n; ++k) {
      const Gauss<T> g = setup(xy + 2 * k, L + 3 * k, size);
      const T r = rgb[3 * k], gr = rgb[3 * k + 1], bl = rgb[3 * k + 2];
      T* img = canvas + ids[k] * size * size * 3;
      for (int i = g.i0; i <= g.i1; ++i) {
        const T dy = T(i) + T(0.5) - g.y;
        for (int j = g.j0; j <= g.j1; ++j) {
          const T dx = T(j) + T(0.5) - g.x;
          const T q = T(0.5) * (g.a * dx * dx + T(2) * g.b * dx * dy + g.c * dy * dy);
          if (q >= T(kQMax)) continue;  // the edge decided on q alone, as the CUDA kernels do
          const T w = std::exp(-q) - cut;
          if (w <= T(0)) continue;
          T* px = img + (static_cast<int64_t>(i) * size + j) * 3;
          px[0] += r * w;
          px[1] += gr * w;
          px[2] += bl * w;
        }
      }
    }
  }
  for (int t = 1; t < threads; ++t) {
    const T* src = partial.data() + static_cast<size_t>(t - 1) * plane;
#pragma omp parallel for
    for (int64_t e = 0; e < plane; ++e) out[e] += src[e];
  }
}

template <typename T>
void backward_impl(const T* xy, const T* L, const T* rgb, const int64_t* ids, const T* grad, int64_t n,
                   int64_t size, T* gxy, T* gL, T* grgb) {
  const T cut = std::exp(-T(kQMax));
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < n; ++k) {
    const Gauss<T> g = setup(xy + 2 * k, L + 3 * k, size);
    const T r = rgb[3 * k], gr = rgb[3 * k + 1], bl = rgb[3 * k + 2];
    const T* v = grad + ids[k] * size * size * 3;
    T sx = 0, sy = 0, sa = 0, sb = 0, sc = 0, cr = 0, cg = 0, cb = 0;
    for (int i = g.i0; i <= g.i1; ++i) {
      const T dy = T(i) + T(0.5) - g.y;
      for (int j = g.j0; j <= g.j1; ++j) {
        const T dx = T(j) + T(0.5) - g.x;
        const T q = T(0.5) * (g.a * dx * dx + T(2) * g.b * dx * dy + g.c * dy * dy);
        if (q >= T(kQMax)) continue;
        const T e = std::exp(-q);
        const T w = e - cut;
        if (w <= T(0)) continue;
        const T* vp = v + (static_cast<int64_t>(i) * size + j) * 3;
        cr += vp[0] * w;
        cg += vp[1] * w;
        cb += vp[2] * w;
        const T gq = -e * (vp[0] * r + vp[1] * gr + vp[2] * bl);  // dL/dq
        // dq/dμ = −Σ⁻¹d; dq/da = ½dx², dq/db = dx·dy, dq/dc = ½dy²
        sx -= gq * (g.a * dx + g.b * dy);
        sy -= gq * (g.b * dx + g.c * dy);
        sa += gq * T(0.5) * dx * dx;
        sb += gq * dx * dy;
        sc += gq * T(0.5) * dy * dy;
      }
    }
    // conic from L: a = (t² + z²)/(u²z²), b = −t/(u z²), c = 1/z²
    const T u = L[3 * k], t = L[3 * k + 1], z = L[3 * k + 2];
    const T u2 = u * u, z2 = z * z;
    const T da_du = -T(2) * (t * t + z2) / (u2 * u * z2), da_dt = T(2) * t / (u2 * z2), da_dz = -T(2) * t * t / (u2 * z2 * z);
    const T db_du = t / (u2 * z2), db_dt = -T(1) / (u * z2), db_dz = T(2) * t / (u * z2 * z);
    const T dc_dz = -T(2) / (z2 * z);
    gxy[2 * k] = sx;
    gxy[2 * k + 1] = sy;
    gL[3 * k] = sa * da_du + sb * db_du;
    gL[3 * k + 1] = sa * da_dt + sb * db_dt;
    gL[3 * k + 2] = sa * da_dz + sb * db_dz + sc * dc_dz;
    grgb[3 * k] = cr;
    grgb[3 * k + 1] = cg;
    grgb[3 * k + 2] = cb;
  }
}

void check(const torch::Tensor& xy, const torch::Tensor& L, const torch::Tensor& rgb, const torch::Tensor& ids) {
  TORCH_CHECK(xy.device().is_cpu() && L.device().is_cpu() && rgb.device().is_cpu() && ids.device().is_cpu(),
              "render_cpu: all tensors must be on the CPU");
  TORCH_CHECK(xy.dim() == 2 && xy.size(1) == 2, "render_cpu: xy must be [N, 2], got ", xy.sizes());
  TORCH_CHECK(L.dim() == 2 && L.size(1) == 3 && L.size(0) == xy.size(0), "render_cpu: chol must be [N, 3], got ", L.sizes());
  TORCH_CHECK(rgb.dim() == 2 && rgb.size(1) == 3 && rgb.size(0) == xy.size(0), "render_cpu: rgb must be [N, 3], got ", rgb.sizes());
  TORCH_CHECK(ids.dim() == 1 && ids.size(0) == xy.size(0) && ids.scalar_type() == torch::kLong, "render_cpu: image_ids must be long [N]");
  TORCH_CHECK(xy.scalar_type() == L.scalar_type() && xy.scalar_type() == rgb.scalar_type(), "render_cpu: xy, chol, rgb must share a dtype");
  TORCH_CHECK(xy.is_contiguous() && L.is_contiguous() && rgb.is_contiguous() && ids.is_contiguous(), "render_cpu: inputs must be contiguous");
}

}  // namespace

// image [B, S, S, 3]
torch::Tensor render_cpu_fwd(torch::Tensor xy, torch::Tensor chol, torch::Tensor rgb, torch::Tensor ids, int64_t num_images, int64_t size) {
  check(xy, chol, rgb, ids);
  auto out = torch::zeros({num_images, size, size, 3}, xy.options());
  AT_DISPATCH_FLOATING_TYPES(xy.scalar_type(), "render_cpu_fwd", [&] {
    forward_impl<scalar_t>(xy.data_ptr<scalar_t>(), chol.data_ptr<scalar_t>(), rgb.data_ptr<scalar_t>(), ids.data_ptr<int64_t>(),
                           xy.size(0), num_images, size, out.data_ptr<scalar_t>());
  });
  return out;
}

// (d xy [N, 2], d chol [N, 3], d rgb [N, 3]) from d image [B, S, S, 3]
std::vector<torch::Tensor> render_cpu_bwd(torch::Tensor xy, torch::Tensor chol, torch::Tensor rgb, torch::Tensor ids, torch::Tensor grad) {
  check(xy, chol, rgb, ids);
  TORCH_CHECK(grad.dim() == 4 && grad.size(3) == 3 && grad.size(1) == grad.size(2) && grad.is_contiguous() &&
                  grad.scalar_type() == xy.scalar_type(),
              "render_cpu: grad must be a contiguous [B, S, S, 3] of the inputs' dtype");
  auto gxy = torch::empty_like(xy), gL = torch::empty_like(chol), grgb = torch::empty_like(rgb);
  AT_DISPATCH_FLOATING_TYPES(xy.scalar_type(), "render_cpu_bwd", [&] {
    backward_impl<scalar_t>(xy.data_ptr<scalar_t>(), chol.data_ptr<scalar_t>(), rgb.data_ptr<scalar_t>(), ids.data_ptr<int64_t>(),
                            grad.data_ptr<scalar_t>(), xy.size(0), grad.size(1), gxy.data_ptr<scalar_t>(),
                            gL.data_ptr<scalar_t>(), grgb.data_ptr<scalar_t>());
  });
  return {gxy, gL, grgb};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("render_cpu_fwd", &render_cpu_fwd, "splat sum forward on CPU (OpenMP)");
  m.def("render_cpu_bwd", &render_cpu_bwd, "splat sum backward on CPU (OpenMP)");
}
