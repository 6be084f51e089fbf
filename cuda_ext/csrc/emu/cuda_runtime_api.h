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
