// The device side of the CPU emulation of cuda_ext's kernels (docs/cuda_emulation.md): the CUDA
// keywords, built-in variables and intrinsics that csrc/*.cuh and splat_cuda.cu use, so those sources
// compile unchanged as C++ (the build rewrites only the `kernel<<<grid, block, smem, stream>>>(args)`
// launches of splat_cuda.cu into gsv_emu::launch calls).
//
// A launch runs its blocks one after another on each OpenMP thread; inside a block every CUDA thread
// is a fibre with its own stack, run until it reaches __syncthreads, a warp collective or its end
// (emu_runtime.cpp). So barriers and warp shuffles/ballots exchange data exactly as on the device, and
// a kernel that breaks their rules (a barrier some threads skip or left early for, a full-mask
// collective with lanes missing, lanes of one warp at different collectives) fails its launch with a
// message naming the thread, instead of computing something.
//
// __shared__ arrays are function-local statics, one copy per OS thread: a block's fibres share them, as
// a block shares shared memory, and two blocks never run on one OS thread at once.
//
// In checking mode (gsv_emu::set_checking) blocks run in a seeded random order and a block's threads in a
// new random order after every barrier, and every load and store of the kernel code (compiled with the
// compiler's thread-sanitizer instrumentation, whose hooks emu_runtime.cpp implements) is checked against
// shadow memory: a race on a global buffer or on shared memory, or an access outside every buffer of the
// launch, fails the launch naming kernel, block, thread and buffer.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>

#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

namespace gsv_emu {

// The CUDA thread running now (valid inside a launch only).
struct ThreadState {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
ThreadState& current();

enum class Collective : int { kShflXor = 1, kBallot = 2 };
// Blocks the calling thread until every lane of `mask` in its warp has reached a collective; checks
// that they all reached the same one with the same mask and returns this lane's result: for kShflXor
// the `payload` of lane (lane ^ arg), for kBallot the bits of the lanes whose payload is non-zero.
uint32_t warp_collective(Collective kind, unsigned mask, uint32_t payload, int arg);
// Blocks until every thread of the block reaches a __syncthreads.
void block_barrier();

// Runs body() once per thread of a grid × block launch (emu_runtime.cpp). A broken rule is recorded
// for cudaGetLastError and ends the launch.
struct Body {
  void (*call)(void*);
  void* self;
  const void* args;  // the launch's copy of the kernel arguments (read by every thread)
  size_t args_bytes;
};
void run_grid(const char* kernel, dim3 grid, dim3 block, Body body);

// What `kernel<<<grid, block, smem, stream>>>(args...)` becomes in the emulation build (`name` is the
// kernel's name as written in the launch, for error messages).
template <class... Params, class... Args>
void launch(const char* name, dim3 grid, dim3 block, size_t /*dynamic shared memory: unused here*/, cudaStream_t,
            void (*kernel)(Params...), Args&&... args) {
  struct Bound {
    void (*kernel)(Params...);
    std::tuple<std::decay_t<Params>...> args;
    static void call(void* self) {
      auto* b = static_cast<Bound*>(self);
      std::apply(b->kernel, b->args);  // each thread gets its own copy of the by-value parameters
    }
  } bound{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
  run_grid(name, grid, block, Body{&Bound::call, &bound, &bound, sizeof bound});
}

template <class T>
uint32_t bits_of(T v) {
  static_assert(sizeof(T) == 4, "the emulated warp shuffles move 32-bit values");
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

template <class T>
T from_bits(uint32_t u) {
  T v;
  std::memcpy(&v, &u, 4);
  return v;
}

}  // namespace gsv_emu

#define threadIdx (::gsv_emu::current().thread_idx)
#define blockIdx (::gsv_emu::current().block_idx)
#define blockDim (::gsv_emu::current().block_dim)
#define gridDim (::gsv_emu::current().grid_dim)

inline void __syncthreads() { ::gsv_emu::block_barrier(); }

template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  (void)width;  // our kernels shuffle across whole warps
  return ::gsv_emu::from_bits<T>(
      ::gsv_emu::warp_collective(::gsv_emu::Collective::kShflXor, mask, ::gsv_emu::bits_of(v), lane_mask));
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::gsv_emu::warp_collective(::gsv_emu::Collective::kBallot, mask, predicate != 0, 0);
}

inline int __popc(unsigned v) { return __builtin_popcount(v); }

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// Round-to-nearest arithmetic that nvcc never fuses into FMAs; the emulation is built with
// -ffp-contract=off, so every float operation is rounded on its own (as in the CPU op).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }

// CUDA's integer min/max overloads used by device code.
inline int min(int a, int b) { return b < a ? b : a; }
inline int max(int a, int b) { return a < b ? b : a; }
inline int64_t min(int64_t a, int64_t b) { return b < a ? b : a; }
inline int64_t max(int64_t a, int64_t b) { return a < b ? b : a; }
