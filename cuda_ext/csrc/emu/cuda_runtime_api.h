// The host-side CUDA runtime types of the CPU emulation (docs/cuda_emulation.md): what splat_cuda.h
// and cuda_ops.cpp need (cudaError_t, cudaStream_t, float4, int4, dim3). Found before the real
// toolkit's header because the emulation build puts csrc/emu/ first on the include path.
#pragma once

#include <cstddef>
#include <cstdint>

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorLaunchFailure = 719,  // the emulation's word for a kernel that broke a rule of the device
};

struct CUstream_emu;
using cudaStream_t = CUstream_emu*;

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }

// The first error of the launches since the last call (then cleared), as on the device.
cudaError_t cudaGetLastError();
// For cudaErrorLaunchFailure: which rule which thread of which launch broke.
const char* cudaGetErrorString(cudaError_t err);

// The emulation's checking mode (cuda_runtime.h, docs/cuda_emulation.md), host side.
namespace gsv_emu {
// On: blocks and threads run in orders drawn from `seed`, one OS thread, and every memory access of the
// kernel code is checked. Off: the fast, parallel, fixed order.
void set_checking(bool on, uint64_t seed);
bool checking();
// The global buffers of the next launches on this OS thread, named for the messages: [base, base + bytes)
// in granules of `granule` bytes (its element size); `redzone` bytes on each side belong to no buffer, so
// an access there is reported as an overrun of this one.
void register_buffer(const char* name, const void* base, size_t bytes, size_t granule, size_t redzone);
void unregister_buffer(const void* base);
}  // namespace gsv_emu
