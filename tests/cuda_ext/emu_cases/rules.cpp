// Small kernels that keep or break the device's rules, run through the CPU emulation's shim
// (cuda_ext/csrc/emu) by tests/cuda_ext/test_emulation.py, which compiles this file with
// emu_runtime.cpp into a plain shared library and calls run_case through ctypes.
#include <cstdio>
#include <cstring>

#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 64;

// Every thread: a block sum through shared memory and a barrier, a warp sum through shuffles, and a
// ballot of the odd lanes. out[block * kThreads + t] = block sum, out[...] + kThreads·grid = warp sum, …
__global__ void good_kernel(float* out, int blocks) {
  __shared__ float s[kThreads];
  const int t = threadIdx.x;
  s[t] = static_cast<float>(blockIdx.x * 1000 + t);
  __syncthreads();
  float block_sum = 0.f;
  for (int k = 0; k < kThreads; ++k) block_sum += s[k];
  float v = static_cast<float>(t);
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  const unsigned odd = __ballot_sync(0xffffffffu, t & 1);
  const int o = blockIdx.x * kThreads + t;
  out[o] = block_sum;
  out[o + blocks * kThreads] = v;
  out[o + 2 * blocks * kThreads] = static_cast<float>(__popc(odd));
}

// Reads a neighbour's shared-memory slot, with or without the barrier that makes it safe.
__global__ void neighbour_kernel(float* out, bool barrier) {
  __shared__ float s[kThreads];
  const int t = threadIdx.x;
  s[t] = static_cast<float>(t + 1);
  if (barrier) __syncthreads();
  out[t] = s[(t + 1) % kThreads];
  if (barrier) __syncthreads();
  s[t] = -1.f;  // leave the slot stale for the next launch, as a real block's would be
}

__global__ void early_return_kernel(float* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

__global__ void divergent_kernel(float* out) {
  float v = 1.f;
  if (threadIdx.x % 2) {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = v;
}

__global__ void exited_lane_kernel(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}

// Two threads of different blocks store to one address, no atomic: a race on the device.
// Thread 0 of every block stores to out[0], the others to slots of their own.
__global__ void racy_store_kernel(float* out) {
  out[threadIdx.x == 0 ? 0 : 1 + blockIdx.x * kThreads + threadIdx.x] = static_cast<float>(blockIdx.x);
}

// Thread t writes out[t + 1]: the last one writes one element past the buffer.
__global__ void overrun_kernel(float* out) { out[threadIdx.x + 1] = 1.f; }

// Each block reduces its slots through shared memory; `barrier` = false drops the barrier between the
// writes and the reads (a shared-memory race however the threads are scheduled).
__global__ void shared_race_kernel(float* out, bool barrier) {
  __shared__ float s[kThreads];
  s[threadIdx.x] = 1.f;
  if (barrier) __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.f;
    for (int k = 0; k < kThreads; ++k) sum += s[k];
    out[blockIdx.x] = sum;
  }
}

}  // namespace

// `check`: run in the emulator's checking mode (orders from `seed`) with out[0, n_out) registered as the
// launch's one buffer, with `red` floats of red zone the caller leaves on each side of it.
extern "C" int run_case(int which, float* out, int blocks, char* msg, int msg_len, int check, int n_out, int seed,
                        int red) {
  cudaGetLastError();  // start clean
  if (check) {
    gsv_emu::set_checking(true, static_cast<uint64_t>(seed));
    gsv_emu::register_buffer("out", out, static_cast<size_t>(n_out) * sizeof(float), sizeof(float),
                             static_cast<size_t>(red) * sizeof(float));
  }
  switch (which) {
    case 0:
      good_kernel<<<blocks, kThreads, 0, nullptr>>>(out, blocks);
      break;
    case 1:
      neighbour_kernel<<<1, kThreads, 0, nullptr>>>(out, true);
      break;
    case 2:
      neighbour_kernel<<<1, kThreads, 0, nullptr>>>(out, false);
      break;
    case 3:
      early_return_kernel<<<1, kThreads, 0, nullptr>>>(out);
      break;
    case 4:
      divergent_kernel<<<1, kThreads, 0, nullptr>>>(out);
      break;
    case 5:
      exited_lane_kernel<<<1, kThreads, 0, nullptr>>>(out);
      break;
    case 6:
      racy_store_kernel<<<blocks, kThreads, 0, nullptr>>>(out);
      break;
    case 7:
      overrun_kernel<<<1, kThreads, 0, nullptr>>>(out);
      break;
    case 8:
      shared_race_kernel<<<blocks, kThreads, 0, nullptr>>>(out, true);
      break;
    case 9:
      shared_race_kernel<<<blocks, kThreads, 0, nullptr>>>(out, false);
      break;
    default:
      return -1;
  }
  if (check) {
    gsv_emu::unregister_buffer(out);
    gsv_emu::set_checking(false, 0);
  }
  const cudaError_t err = cudaGetLastError();
  std::snprintf(msg, msg_len, "%s", err == cudaSuccess ? "" : cudaGetErrorString(err));
  return static_cast<int>(err);
}
