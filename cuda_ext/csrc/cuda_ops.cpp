// Torch side of gsv_cuda_ops: checks device, dtype, shape and contiguity with TORCH_CHECK, allocates
// outputs and scratch, and calls the torch-free launchers of splat_cuda.cu on the current stream.
// Importing the module needs no GPU; every op refuses tensors that are not on a CUDA device.
//
// Built with GSV_CUDA_EMULATION (cuda_ext.build emu), the same code is the host side of the CPU
// emulation of the kernels (docs/cuda_emulation.md): it takes CPU tensors, and the launchers run the
// kernel sources on the CPU.
#include <torch/extension.h>
#ifndef GSV_CUDA_EMULATION
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstring>
#include <optional>
#include <vector>

#include "splat_cuda.h"

namespace {

#ifdef GSV_CUDA_EMULATION
constexpr const char* kDeviceName = "CPU (the kernels' emulation)";
bool on_device(const torch::Tensor& t) { return t.is_cpu(); }
using DeviceGuard = std::optional<int>;  // nothing to select on the CPU
DeviceGuard guard_device(const torch::Tensor&) { return std::nullopt; }
cudaStream_t current_stream() { return nullptr; }
#else
constexpr const char* kDeviceName = "CUDA";
bool on_device(const torch::Tensor& t) { return t.is_cuda(); }
using DeviceGuard = c10::cuda::CUDAGuard;
DeviceGuard guard_device(const torch::Tensor& t) { return DeviceGuard(t.device()); }
cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
#endif

void check_cuda(const torch::Tensor& t, const char* op, const char* name, torch::ScalarType dtype) {
  TORCH_CHECK(on_device(t), op, ": ", name, " must be a ", kDeviceName, " tensor, got one on ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

void check_same_device(const torch::Tensor& a, const torch::Tensor& b, const char* op) {
  TORCH_CHECK(a.device() == b.device(), op, ": tensors on different devices (", a.device(), ", ", b.device(), ")");
}

// params [B, N, 8] float32 and alive [B, N] bool on one CUDA device.
void check_splats(const torch::Tensor& params, const torch::Tensor& alive, const char* op) {
  check_cuda(params, op, "params", torch::kFloat);
  check_cuda(alive, op, "alive", torch::kBool);
  TORCH_CHECK(params.dim() == 3 && params.size(2) == 8, op, ": params must be [B, N, 8], got ", params.sizes());
  TORCH_CHECK(alive.dim() == 2 && alive.size(0) == params.size(0) && alive.size(1) == params.size(1), op,
              ": alive must be [B, N] = ", params.sizes().slice(0, 2), ", got ", alive.sizes());
  TORCH_CHECK(params.size(1) < (int64_t{1} << 31), op, ": at most 2^31 − 1 Gaussians per image");
  check_same_device(params, alive, op);
}

void check_size(int64_t size, const char* op) {
  TORCH_CHECK(size >= 1 && size <= 65536, op, ": size must be in [1, 65536], got ", size);
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(err));
}

// The memory the kernels of one op see, by name. On the device, and in the emulation outside its checking
// mode, a tensor's own memory. In checking mode (docs/cuda_emulation.md) each is a copy registered with
// the emulator between red zones that belong to no buffer, so an overrun of one buffer never lands in
// another; the copies of the buffers the op writes go back to their tensors when the op ends.
class DeviceBuffers {
 public:
  DeviceBuffers() = default;
  DeviceBuffers(const DeviceBuffers&) = delete;
  DeviceBuffers& operator=(const DeviceBuffers&) = delete;

  template <class T>
  T* get(const torch::Tensor& t, const char* name, bool writes) {
    return static_cast<T*>(add(t, name, writes));
  }
  const uint8_t* bytes(const torch::Tensor& t, const char* name) {
    return static_cast<const uint8_t*>(add(t, name, false));
  }
  uint8_t* bytes_out(const torch::Tensor& t, const char* name) { return static_cast<uint8_t*>(add(t, name, true)); }

#ifdef GSV_CUDA_EMULATION
  ~DeviceBuffers() {
    for (Copy& c : copies_) {
      gsv_emu::unregister_buffer(c.base);
      if (c.writes) std::memcpy(c.tensor.data_ptr(), c.base, c.bytes);
    }
  }

 private:
  struct Copy {
    torch::Tensor tensor, storage;
    void* base;
    size_t bytes;
    bool writes;
  };
  std::vector<Copy> copies_;

  void* add(const torch::Tensor& t, const char* name, bool writes) {
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    if (!gsv_emu::checking() || bytes == 0) return t.data_ptr();
    const size_t redzone = bytes + 4096;  // past any overrun a wrong index computation makes in the tests
    auto storage = torch::empty({static_cast<int64_t>(bytes + 2 * redzone)}, t.options().dtype(torch::kByte));
    void* base = storage.data_ptr<uint8_t>() + redzone;
    std::memcpy(base, t.data_ptr(), bytes);
    gsv_emu::register_buffer(name, base, bytes, t.element_size(), redzone);
    copies_.push_back(Copy{t, storage, base, bytes, writes});
    return base;
  }
#else
 private:
  void* add(const torch::Tensor& t, const char*, bool) { return t.data_ptr(); }
#endif
};

// Scratch tensors live as long as the returned holder; the struct holds their pointers.
struct ScratchHolder {
  torch::Tensor geo_a, geo_b, box, lists, counts, next_geo_a, next_geo_b, next_box;
  gsv::Scratch view;
};

// `for_fit`: also the second setup buffers the fused fit writes (splat_cuda.h).
ScratchHolder make_scratch(DeviceBuffers& buf, const torch::Tensor& params, int64_t size, int64_t tile_cap,
                           bool for_fit = false) {
  TORCH_CHECK(tile_cap >= 1, "tile_cap must be ≥ 1, got ", tile_cap);
  const int64_t B = params.size(0), N = params.size(1);
  const int64_t cap = std::max<int64_t>(1, std::min<int64_t>(N, tile_cap));
  const int64_t tiles = gsv::num_tiles(static_cast<int>(size));
  auto f = params.options();
  auto i = params.options().dtype(torch::kInt);
  ScratchHolder s{torch::empty({B * N, 4}, f), torch::empty({B * N, 4}, f), torch::empty({B * N, 4}, i),
                  torch::empty({B, tiles, cap}, i), torch::empty({B, tiles}, i)};
  if (for_fit) {
    s.next_geo_a = torch::empty({B * N, 4}, f);
    s.next_geo_b = torch::empty({B * N, 4}, f);
    s.next_box = torch::empty({B * N, 4}, i);
  }
  auto f4 = [&](const torch::Tensor& t, const char* name) {
    return t.defined() ? reinterpret_cast<float4*>(buf.get<float>(t, name, true)) : nullptr;
  };
  auto i4 = [&](const torch::Tensor& t, const char* name) {
    return t.defined() ? reinterpret_cast<int4*>(buf.get<int>(t, name, true)) : nullptr;
  };
  s.view = gsv::Scratch{f4(s.geo_a, "geo_a"),
                        f4(s.geo_b, "geo_b"),
                        i4(s.box, "box"),
                        buf.get<int>(s.lists, "lists", true),
                        buf.get<int>(s.counts, "counts", true),
                        static_cast<int>(cap),
                        f4(s.next_geo_a, "next_geo_a"),
                        f4(s.next_geo_b, "next_geo_b"),
                        i4(s.next_box, "next_box")};
  return s;
}

}  // namespace

// image [B, S, S, 3]
torch::Tensor render_fwd(torch::Tensor params, torch::Tensor alive, int64_t size, int64_t tile_cap) {
  check_splats(params, alive, "render_fwd");
  check_size(size, "render_fwd");
  const DeviceGuard guard = guard_device(params);
  const int64_t B = params.size(0), N = params.size(1);
  auto image = torch::empty({B, size, size, 3}, params.options());
  if (B == 0) return image;
  {
    DeviceBuffers buf;
    ScratchHolder s = make_scratch(buf, params, size, tile_cap);
    check_launch(gsv::render_forward(buf.get<float>(params, "params", false), buf.bytes(alive, "alive"), B, N,
                                     static_cast<int>(size), s.view, buf.get<float>(image, "image", true),
                                     current_stream()),
                 "render_fwd");
  }  // checking mode: the image copied back
  return image;
}

// d params [B, N, 8] from d image [B, S, S, 3]
torch::Tensor render_bwd(torch::Tensor params, torch::Tensor alive, torch::Tensor grad_image) {
  check_splats(params, alive, "render_bwd");
  check_cuda(grad_image, "render_bwd", "grad_image", torch::kFloat);
  check_same_device(params, grad_image, "render_bwd");
  TORCH_CHECK(grad_image.dim() == 4 && grad_image.size(0) == params.size(0) && grad_image.size(3) == 3 &&
                  grad_image.size(1) == grad_image.size(2),
              "render_bwd: grad_image must be [B, S, S, 3], got ", grad_image.sizes());
  const int64_t size = grad_image.size(1);
  check_size(size, "render_bwd");
  const DeviceGuard guard = guard_device(params);
  auto grad = torch::empty_like(params);
  if (params.numel() == 0) return grad;
  {
    DeviceBuffers buf;
    ScratchHolder s = make_scratch(buf, params, size, 1);  // the gather needs no tile lists
    check_launch(gsv::render_backward(buf.get<float>(params, "params", false), buf.bytes(alive, "alive"),
                                      buf.get<float>(grad_image, "grad_image", false), params.size(0),
                                      params.size(1), static_cast<int>(size), s.view,
                                      buf.get<float>(grad, "grad_params", true), current_stream()),
                 "render_bwd");
  }
  return grad;
}

// In place on params, exp_avg, exp_avg_sq: num_steps fused iterations (splat_cuda.h).
void fit_steps(torch::Tensor params, torch::Tensor exp_avg, torch::Tensor exp_avg_sq, torch::Tensor alive,
               torch::Tensor active, torch::Tensor target, int64_t it0, int64_t num_steps, int64_t iters_total,
               std::vector<double> lr, double lr_final, double lr_decay, int64_t lr_warmup, double lambda_l1,
               double min_scale,
               double beta1, double beta2, double eps, int64_t tile_cap) {
  const char* op = "fit_steps";
  check_splats(params, alive, op);
  check_cuda(exp_avg, op, "exp_avg", torch::kFloat);
  check_cuda(exp_avg_sq, op, "exp_avg_sq", torch::kFloat);
  check_cuda(active, op, "active", torch::kBool);
  check_cuda(target, op, "target", torch::kFloat);
  for (const auto* t : {&exp_avg, &exp_avg_sq, &active, &target}) check_same_device(params, *t, op);
  TORCH_CHECK(exp_avg.sizes() == params.sizes() && exp_avg_sq.sizes() == params.sizes(), op,
              ": exp_avg and exp_avg_sq must match params ", params.sizes());
  const int64_t B = params.size(0), N = params.size(1);
  TORCH_CHECK(active.dim() == 1 && active.size(0) == B, op, ": active must be [B = ", B, "], got ", active.sizes());
  TORCH_CHECK(target.dim() == 4 && target.size(0) == B && target.size(3) == 3 && target.size(1) == target.size(2),
              op, ": target must be [B, S, S, 3], got ", target.sizes());
  const int64_t size = target.size(1);
  check_size(size, op);
  TORCH_CHECK(lr.size() == 3, op, ": lr must hold 3 step sizes (xy, chol, rgb), got ", lr.size());
  TORCH_CHECK(it0 >= 0 && num_steps >= 0 && iters_total >= 1, op, ": need it0 ≥ 0, num_steps ≥ 0, iters_total ≥ 1");
  TORCH_CHECK(lr_decay > 0.0 && lr_decay <= 1.0, op, ": lr_decay must be in (0, 1], got ", lr_decay);
  TORCH_CHECK(lr_warmup >= 0, op, ": lr_warmup must be ≥ 0, got ", lr_warmup);
  const DeviceGuard guard = guard_device(params);
  if (params.numel() == 0 || num_steps == 0) return;
  DeviceBuffers buf;
  ScratchHolder s = make_scratch(buf, params, size, tile_cap, /*for_fit=*/true);
  auto grad_image = torch::empty_like(target);
  const int64_t gaussian_dim = 1;
  auto counts = alive.sum(at::IntArrayRef(gaussian_dim), false, torch::kFloat);  // the L1 term's n_b
  gsv::FitSettings f{{static_cast<float>(lr[0]), static_cast<float>(lr[1]), static_cast<float>(lr[2])},
                     lr_final,
                     lr_decay,
                     lr_warmup,
                     static_cast<float>(lambda_l1),
                     static_cast<float>(min_scale),
                     beta1,
                     beta2,
                     static_cast<float>(eps),
                     it0,
                     num_steps,
                     iters_total};
  check_launch(gsv::fit_steps(buf.get<float>(params, "params", true), buf.get<float>(exp_avg, "exp_avg", true),
                              buf.get<float>(exp_avg_sq, "exp_avg_sq", true), buf.bytes(alive, "alive"),
                              buf.bytes(active, "active"), buf.get<float>(counts, "counts", false),
                              buf.get<float>(target, "target", false), B, N, static_cast<int>(size), f, s.view,
                              buf.get<float>(grad_image, "grad_image", true), current_stream()),
               op);
}

// keep [B, N] bool
torch::Tensor prune_mask(torch::Tensor params, torch::Tensor alive, double tau) {
  check_splats(params, alive, "prune_mask");
  const DeviceGuard guard = guard_device(params);
  auto keep = torch::zeros_like(alive);
  {
    DeviceBuffers buf;
    check_launch(gsv::prune_mask(buf.get<float>(params, "params", false), buf.bytes(alive, "alive"),
                                 params.size(0), params.size(1), static_cast<float>(tau), buf.bytes_out(keep, "keep"),
                                 current_stream()),
                 "prune_mask");
  }
  return keep;
}

// The ops touch no Python object once their arguments are converted: they release the GIL, so other
// Python threads (a progress bar, a utilisation sampler) run while thousands of launches queue up.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
  m.def("render_fwd", &render_fwd, "splat sum forward on CUDA: image [B, S, S, 3]", release());
  m.def("render_bwd", &render_bwd, "splat sum backward on CUDA: d params [B, N, 8]", release());
  m.def("fit_steps", &fit_steps, "fused fit iterations on CUDA, in place", release());
  m.def("prune_mask", &prune_mask, "luminosity pruning mask on CUDA", release());
#ifdef GSV_CUDA_EMULATION
  m.def("set_checking", &gsv_emu::set_checking, "the emulation's checking mode: on/off and its seed",
        pybind11::arg("on"), pybind11::arg("seed") = 0);
  m.def("checking", &gsv_emu::checking, "whether the emulation's checking mode is on");
#endif
}
