// The runtime of the CPU emulation of cuda_ext's kernels (cuda_runtime.h, docs/cuda_emulation.md).
//
// A launch's blocks are shared out over OpenMP threads. Each OS thread runs one block at a time: every
// CUDA thread of the block is a fibre with its own stack (mmap'd once per OS thread, a guard page under
// each), resumed in thread order until it blocks at __syncthreads or a warp collective, or returns.
// When every fibre has stopped, the scheduler completes the collectives whose lanes have all arrived,
// or, when every live thread waits at __syncthreads, releases the barrier; anything else breaks a rule
// of the device and fails the launch with a message naming the kernel, the block and the thread.
//
// Fibre switches are a few instructions of assembly on x86-64 (callee-saved registers, the stack
// pointer, MXCSR and the x87 control word: what the SysV ABI asks a function call to preserve); other
// architectures use ucontext, slower but the same semantics.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace gsv_emu {
namespace {

constexpr int kWarpSize = 32;
constexpr size_t kStackBytes = size_t{128} << 10;  // far more than any kernel frame here

#if defined(__x86_64__)
extern "C" void gsv_emu_switch(void** save_sp, void* load_sp);
extern "C" void gsv_emu_trampoline();
// gsv_emu_switch saves the callee-saved state on the current stack and its pointer in *save_sp, then
// restores the state saved on the stack at load_sp and returns there. A new fibre's stack is laid out
// so that this "return" enters gsv_emu_trampoline with r12 = the fibre and r13 = its entry function.
asm(R"(
  .text
  .p2align 4
  .globl gsv_emu_switch
  .hidden gsv_emu_switch
  .type gsv_emu_switch, @function
gsv_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gsv_emu_switch, .-gsv_emu_switch

  .p2align 4
  .globl gsv_emu_trampoline
  .hidden gsv_emu_trampoline
  .type gsv_emu_trampoline, @function
gsv_emu_trampoline:
  movq %r12, %rdi
  andq $-16, %rsp
  callq *%r13
  ud2
  .size gsv_emu_trampoline, .-gsv_emu_trampoline
)");
#endif

enum class Wait : uint8_t { kNone, kBarrier, kCollective, kDone };

struct Fibre {
  ThreadState ts;
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  Wait wait = Wait::kNone;
  Collective kind = Collective::kShflXor;
  unsigned mask = 0;
  uint32_t payload = 0;
  int arg = 0;
  uint32_t result = 0;
};

struct Runner;
thread_local Runner* t_runner = nullptr;

void fibre_main(Fibre* f);

// One per OS thread: the fibres and stacks of the block it runs.
struct Runner {
  std::vector<Fibre> fibres;
  char* stacks = nullptr;
  size_t stack_slots = 0;
  size_t slot_bytes = 0;
#if defined(__x86_64__)
  void* sched_sp = nullptr;
#else
  ucontext_t sched_uc;
#endif
  Fibre* running = nullptr;
  Body body{};
  const char* kernel = "";
  std::string error;

  ~Runner() {
    if (stacks != nullptr) munmap(stacks, stack_slots * slot_bytes);
  }

  void reserve(size_t n) {
    if (n <= stack_slots) return;
    if (stacks != nullptr) munmap(stacks, stack_slots * slot_bytes);
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    slot_bytes = kStackBytes + page;  // the lowest page of each slot is a guard
    void* mem = mmap(nullptr, n * slot_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (mem == MAP_FAILED) {
      stacks = nullptr;
      stack_slots = 0;
      return;
    }
    stacks = static_cast<char*>(mem);
    stack_slots = n;
    for (size_t i = 0; i < n; ++i) mprotect(stacks + i * slot_bytes, page, PROT_NONE);
  }

  void start(Fibre& f, size_t slot) {
    char* top = stacks + (slot + 1) * slot_bytes;  // page aligned, so 16-byte aligned
#if defined(__x86_64__)
    auto* frame = reinterpret_cast<uint64_t*>(top - 64);
    uint32_t mxcsr = 0;
    uint16_t fcw = 0;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fcw));
    std::memset(frame, 0, 64);
    std::memcpy(frame, &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(frame) + 4, &fcw, 2);
    frame[3] = reinterpret_cast<uint64_t>(&fibre_main);  // r13
    frame[4] = reinterpret_cast<uint64_t>(&f);           // r12
    frame[7] = reinterpret_cast<uint64_t>(&gsv_emu_trampoline);
    f.sp = frame;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = top - kStackBytes;
    f.uc.uc_stack.ss_size = kStackBytes;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, reinterpret_cast<void (*)()>(&Runner::entry), 0);
#endif
  }

#if !defined(__x86_64__)
  static void entry() { fibre_main(t_runner->running); }
#endif

  void resume(Fibre& f) {
    running = &f;
#if defined(__x86_64__)
    gsv_emu_switch(&sched_sp, f.sp);
#else
    swapcontext(&sched_uc, &f.uc);
#endif
    running = nullptr;
  }

  // From the running fibre back to the scheduler; returns when the scheduler resumes it.
  void yield() {
    Fibre& f = *running;
#if defined(__x86_64__)
    gsv_emu_switch(&f.sp, sched_sp);
#else
    swapcontext(&f.uc, &sched_uc);
#endif
  }

  std::string where(const Fibre& f) const {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s: block (%u, %u, %u), thread (%u, %u, %u)", kernel, f.ts.block_idx.x,
                  f.ts.block_idx.y, f.ts.block_idx.z, f.ts.thread_idx.x, f.ts.thread_idx.y, f.ts.thread_idx.z);
    return buf;
  }

  static const char* describe(const Fibre& f) {
    switch (f.wait) {
      case Wait::kDone:
        return "has returned";
      case Wait::kBarrier:
        return "waits at __syncthreads";
      case Wait::kCollective:
        return f.kind == Collective::kBallot ? "waits at __ballot_sync" : "waits at __shfl_xor_sync";
      default:
        return "is running";
    }
  }

  // Complete every warp collective whose lanes have all arrived; false when none could be.
  bool resolve_collectives() {
    bool released = false;
    const size_t n = fibres.size();
    for (size_t w0 = 0; w0 < n && error.empty(); w0 += kWarpSize) {
      const size_t w1 = std::min(n, w0 + kWarpSize);
      const Fibre* lead = nullptr;
      for (size_t i = w0; i < w1; ++i)
        if (fibres[i].wait == Wait::kCollective) {
          lead = &fibres[i];
          break;
        }
      if (lead == nullptr) continue;
      for (int lane = 0; lane < kWarpSize; ++lane) {
        const bool in_mask = (lead->mask >> lane) & 1u;
        const size_t i = w0 + lane;
        if (i >= w1) {
          if (in_mask) error = where(*lead) + ": a collective's mask names lane " + std::to_string(lane) +
                               ", which this block does not have";
          continue;
        }
        const Fibre& f = fibres[i];
        const bool same = f.wait == Wait::kCollective && f.kind == lead->kind && f.mask == lead->mask;
        if (in_mask && !same) {
          error = where(f) + " " + describe(f) + " while lane " + std::to_string(lead->ts.thread_idx.x % kWarpSize) +
                  " of its warp " + describe(*lead) + " with a mask that includes it (divergent warp)";
        } else if (!in_mask && f.wait == Wait::kCollective) {
          error = where(f) + " " + describe(f) + " with a mask that differs from its warp's";
        }
      }
      if (!error.empty()) break;
      for (int lane = 0; lane < static_cast<int>(w1 - w0); ++lane) {
        Fibre& f = fibres[w0 + lane];
        if (!((f.mask >> lane) & 1u)) continue;
        if (f.kind == Collective::kBallot) {
          uint32_t bits = 0;
          for (int k = 0; k < static_cast<int>(w1 - w0); ++k)
            if (((f.mask >> k) & 1u) && fibres[w0 + k].payload != 0) bits |= 1u << k;
          f.result = bits;
        } else {
          const int src = lane ^ f.arg;
          if (src < 0 || src >= kWarpSize || !((f.mask >> src) & 1u)) {
            error = where(f) + ": __shfl_xor_sync reads lane " + std::to_string(src) + ", outside its mask";
            break;
          }
          f.result = fibres[w0 + src].payload;
        }
      }
      if (!error.empty()) break;
      for (size_t i = w0; i < w1; ++i)
        if (fibres[i].wait == Wait::kCollective) fibres[i].wait = Wait::kNone;
      released = true;
    }
    return released;
  }

  void run_block(dim3 grid, dim3 block, uint3 block_idx) {
    const size_t n = static_cast<size_t>(block.x) * block.y * block.z;
    fibres.assign(n, Fibre{});
    for (size_t i = 0; i < n; ++i) {
      Fibre& f = fibres[i];
      const unsigned t = static_cast<unsigned>(i);
      f.ts = ThreadState{uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)}, block_idx, block,
                         grid};
      start(f, i);
    }
    while (error.empty()) {
      for (Fibre& f : fibres)
        if (f.wait == Wait::kNone) resume(f);
      // only the scheduler sets `error` (in resolve_collectives or below), never a running fibre
      if (resolve_collectives() || !error.empty()) continue;
      size_t live = 0, at_barrier = 0;
      const Fibre* exited = nullptr;
      for (const Fibre& f : fibres) {
        if (f.wait == Wait::kDone) {
          exited = exited ? exited : &f;
          continue;
        }
        ++live;
        at_barrier += f.wait == Wait::kBarrier;
      }
      if (live == 0) return;
      if (at_barrier == live && exited == nullptr) {
        for (Fibre& f : fibres) f.wait = Wait::kNone;
        continue;
      }
      const Fibre* waiting = nullptr;
      for (const Fibre& f : fibres)
        if (f.wait == Wait::kBarrier) {
          waiting = &f;
          break;
        }
      if (waiting == nullptr) {
        error = std::string(kernel) + ": the scheduler found no thread to run and no barrier to release";
      } else if (exited != nullptr) {
        error = where(*waiting) + " waits at __syncthreads, but " + where(*exited) + " has returned";
      } else {
        error = where(*waiting) + " waits at __syncthreads, which other threads of its block never reach";
      }
    }
  }
};

void fibre_main(Fibre* f) {
  Runner& r = *t_runner;
  r.body.call(r.body.self);
  f->wait = Wait::kDone;
  r.yield();
  __builtin_trap();  // a finished fibre is never resumed
}

std::mutex g_mutex;
cudaError_t g_error = cudaSuccess;
std::string g_message;
thread_local std::string t_message_copy;

void record(const std::string& message) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_error == cudaSuccess) {
    g_error = cudaErrorLaunchFailure;
    g_message = message;
  }
}

}  // namespace

ThreadState& current() { return t_runner->running->ts; }

uint32_t warp_collective(Collective kind, unsigned mask, uint32_t payload, int arg) {
  Runner& r = *t_runner;
  Fibre& f = *r.running;
  f.kind = kind;
  f.mask = mask;
  f.payload = payload;
  f.arg = arg;
  f.wait = Wait::kCollective;
  r.yield();
  return f.result;
}

void block_barrier() {
  Runner& r = *t_runner;
  r.running->wait = Wait::kBarrier;
  r.yield();
}

void run_grid(const char* kernel, dim3 grid, dim3 block, Body body) {
  const int64_t blocks = static_cast<int64_t>(grid.x) * grid.y * grid.z;
  const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
  if (blocks == 0 || threads == 0) return;
  if (threads > 1024) {
    record(std::string(kernel) + ": " + std::to_string(threads) + " threads per block (the device allows 1024)");
    return;
  }
  std::atomic<bool> failed{false};
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < blocks; ++k) {
    if (failed.load(std::memory_order_relaxed)) continue;
    thread_local Runner runner;
    runner.reserve(threads);
    if (runner.stacks == nullptr) {
      record(std::string(kernel) + ": could not map the emulated threads' stacks");
      failed = true;
      continue;
    }
    Runner* outer = t_runner;  // nested launches do not happen, but keep the pointer sound
    t_runner = &runner;
    runner.body = body;
    runner.kernel = kernel;
    runner.error.clear();
    const uint3 idx{static_cast<unsigned>(k % grid.x), static_cast<unsigned>((k / grid.x) % grid.y),
                    static_cast<unsigned>(k / (static_cast<int64_t>(grid.x) * grid.y))};
    runner.run_block(grid, block, idx);
    t_runner = outer;
    if (!runner.error.empty()) {
      record(runner.error);
      failed = true;
    }
  }
}

}  // namespace gsv_emu

cudaError_t cudaGetLastError() {
  std::lock_guard<std::mutex> lock(gsv_emu::g_mutex);
  const cudaError_t err = gsv_emu::g_error;
  if (err != cudaSuccess) gsv_emu::t_message_copy = gsv_emu::g_message;
  gsv_emu::g_error = cudaSuccess;
  gsv_emu::g_message.clear();
  return err;
}

const char* cudaGetErrorString(cudaError_t err) {
  if (err == cudaSuccess) return "no error";
  if (err == cudaErrorLaunchFailure && !gsv_emu::t_message_copy.empty())
    return gsv_emu::t_message_copy.c_str();
  return "unspecified launch failure";
}
