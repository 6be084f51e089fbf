// The runtime of the CPU emulation of cuda_ext's kernels (cuda_runtime.h, docs/cuda_emulation.md).
//
// A launch's blocks are shared out over OpenMP threads. Each OS thread runs one block at a time: every
// CUDA thread of the block is a fibre with its own stack (mmap'd once per OS thread, a guard page under
// each), resumed in thread order until it blocks at __syncthreads or a warp collective, or returns.
// When every fibre has stopped, the scheduler completes the collectives whose lanes have all arrived,
// or, when every live thread waits at __syncthreads, releases the barrier; anything else breaks a rule
// of the device and fails the launch with a message naming the kernel, the block and the thread.
//
// Checking mode (set_checking): one OS thread runs the blocks in a seeded random order, and the fibres of
// a block in a fresh random order every round. The kernel translation unit is compiled with
// -fsanitize=thread, so the compiler calls __tsan_read<n> / __tsan_write<n> before each of its loads and
// stores; the hooks at the end of this file (this file is not instrumented) check them while a fibre runs:
// an address in a registered buffer against its shadow (the last writer and reader of each granule in
// this launch: two threads touching a granule without a barrier between them, one of them writing, is a
// race; threads of different blocks never have one), an address in the OS thread's static TLS block
// (the __shared__ arrays) against a per-block shadow, the fibres' own stacks, their built-in variables and
// the launch's kernel arguments are free, and anything else is an access outside every buffer (an
// overrun when it falls in a buffer's red zone). The first violation fails the launch.
//
// Fibre switches are a few instructions of assembly on x86-64 (callee-saved registers, the stack
// pointer, MXCSR and the x87 control word: what the SysV ABI asks a function call to preserve); other
// architectures use ucontext, slower but the same semantics.
#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <numeric>
#include <random>
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

std::atomic<bool> g_checking{false};
std::atomic<uint64_t> g_seed{0};
std::atomic<uint32_t> g_launches{0};  // launch numbers: a shadow entry of an older launch is empty

struct Range {
  uintptr_t lo = 0, hi = 0;
  bool has(uintptr_t a) const { return a >= lo && a < hi; }
};

// Who last wrote and read a granule: thread + 1 (0: nobody), its block and the block's barrier count then.
struct Shadow {
  uint32_t stamp = 0;  // the launch (global buffers) or block run (shared memory) it belongs to
  uint32_t w_thread = 0, w_block = 0, w_epoch = 0;
  uint32_t r_thread = 0, r_block = 0, r_epoch = 0;
};

struct Buffer {
  std::string name;
  uintptr_t base;
  size_t bytes, granule, redzone;
  std::vector<Shadow> shadow;
};
thread_local std::vector<Buffer> t_buffers;  // registered by the host code that launches on this thread

// The static TLS block of this library for the calling thread: where the __shared__ arrays live.
Range tls_block() {
  struct Found {
    uintptr_t self;
    Range r;
  } found{reinterpret_cast<uintptr_t>(&tls_block), {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* f = static_cast<Found*>(data);
        bool mine = false;
        size_t tls_bytes = 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
          if (ph.p_type == PT_LOAD && f->self >= lo && f->self < lo + ph.p_memsz) mine = true;
          if (ph.p_type == PT_TLS) tls_bytes = ph.p_memsz;
        }
        if (!mine) return 0;
        if (info->dlpi_tls_data != nullptr) {
          const auto lo = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
          f->r = Range{lo, lo + tls_bytes};
        }
        return 1;
      },
      &found);
  return found.r;
}

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
  // checking mode
  bool check = false;
  std::mt19937_64 rng;
  uint32_t launch = 0, block_linear = 0, block_stamp = 0, epoch = 0;
  dim3 grid_dim;
  Range stack_range, fibre_range, args_range, shared_range;
  std::vector<Shadow> shared_shadow;
  std::string violation;  // set by a hook inside a fibre; the scheduler turns it into the launch's error
  size_t last_buffer = 0;  // the buffer of the last checked access: accesses come in runs

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
    stack_range = Range{reinterpret_cast<uintptr_t>(stacks), reinterpret_cast<uintptr_t>(stacks) + n * slot_bytes};
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

  // "kernel: block (x, y, z), thread (x, y, z)" of a linear block and thread index.
  std::string who(uint32_t block, uint32_t thread) const {
    const dim3 bd = fibres.empty() ? dim3() : fibres[0].ts.block_dim;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s: block (%u, %u, %u), thread (%u, %u, %u)", kernel, block % grid_dim.x,
                  (block / grid_dim.x) % grid_dim.y, block / (grid_dim.x * grid_dim.y), thread % bd.x,
                  (thread / bd.x) % bd.y, thread / (bd.x * bd.y));
    return buf;
  }

  // A load or store of `size` bytes at `a` by the running fibre (checking mode).
  void check_access(uintptr_t a, size_t size, bool write) {
    if (!violation.empty() || stack_range.has(a) || fibre_range.has(a) || args_range.has(a)) return;
    const auto thread = static_cast<uint32_t>(running - fibres.data());
    const char* verb = write ? "writes" : "reads";
    if (shared_range.has(a)) {
      const size_t g0 = (a - shared_range.lo) / 4, g1 = (a + size - 1 - shared_range.lo) / 4;
      for (size_t g = g0; g <= g1 && g < shared_shadow.size() && violation.empty(); ++g)
        check_granule(shared_shadow[g], block_stamp, thread, write, "shared memory", g * 4, shared_range.hi - shared_range.lo,
                      4);
      return;
    }
    Buffer* hit = nullptr;
    if (last_buffer < t_buffers.size() && a >= t_buffers[last_buffer].base &&
        a < t_buffers[last_buffer].base + t_buffers[last_buffer].bytes) {
      hit = &t_buffers[last_buffer];
    } else {
      for (size_t i = 0; i < t_buffers.size() && hit == nullptr; ++i)
        if (a >= t_buffers[i].base && a < t_buffers[i].base + t_buffers[i].bytes) hit = &t_buffers[last_buffer = i];
    }
    auto past_end = [&](const Buffer& b) {
      violation = who(block_linear, thread) + " " + verb + " " + std::to_string(size) + " bytes at byte " +
                  std::to_string(a - b.base) + " of `" + b.name + "` (" + std::to_string(b.bytes) +
                  " bytes): past its end (out of bounds)";
    };
    if (hit != nullptr) {
      Buffer& b = *hit;
      if (a + size > b.base + b.bytes) {
        past_end(b);
        return;
      }
      const size_t g0 = (a - b.base) / b.granule, g1 = (a + size - 1 - b.base) / b.granule;
      for (size_t g = g0; g <= g1 && violation.empty(); ++g)
        check_granule(b.shadow[g], launch, thread, write, b.name.c_str(), g * b.granule, b.bytes, b.granule);
      return;
    }
    for (const Buffer& b : t_buffers) {
      if (a + size > b.base - b.redzone && a < b.base) {
        violation = who(block_linear, thread) + " " + verb + " " + std::to_string(size) + " bytes " +
                    std::to_string(b.base - a) + " bytes before the start of `" + b.name + "` (out of bounds)";
        return;
      }
      if (a >= b.base + b.bytes && a < b.base + b.bytes + b.redzone) {
        past_end(b);
        return;
      }
    }
    char addr[32];
    std::snprintf(addr, sizeof addr, "%p", reinterpret_cast<void*>(a));
    violation = who(block_linear, thread) + " " + verb + " " + std::to_string(size) + " bytes at " + addr +
                ", outside every buffer of the launch, its stack, its shared memory and its arguments (out of bounds)";
  }

  // One granule's shadow: a race when another thread touched it in this launch (global) or block run
  // (shared) with no barrier between, one of the two accesses a write.
  void check_granule(Shadow& e, uint32_t stamp, uint32_t thread, bool write, const char* name, size_t byte,
                     size_t bytes, size_t granule) {
    if (e.stamp != stamp) e = Shadow{stamp};
    const uint32_t me = thread + 1;
    auto unordered = [&](uint32_t other, uint32_t block, uint32_t ep) {
      return other != 0 && (other != me || block != block_linear) && !(block == block_linear && ep < epoch);
    };
    const char* kind = nullptr;
    uint32_t other = 0, other_block = 0;
    if (unordered(e.w_thread, e.w_block, e.w_epoch)) {
      kind = write ? "wrote it (a write-write race)" : "wrote it (a read-after-write race)";
      other = e.w_thread, other_block = e.w_block;
    } else if (write && unordered(e.r_thread, e.r_block, e.r_epoch)) {
      kind = "read it (a write-after-read race)";
      other = e.r_thread, other_block = e.r_block;
    }
    if (kind != nullptr) {
      violation = who(block_linear, thread) + (write ? " writes `" : " reads `") + name + "` at byte " +
                  std::to_string(byte) + " (element " + std::to_string(byte / granule) + " of " +
                  std::to_string(bytes / granule) + "), which " + who(other_block, other - 1) +
                  " also " + kind + " with no barrier between them";
      return;
    }
    if (write) {
      e.w_thread = me, e.w_block = block_linear, e.w_epoch = epoch;
    } else {
      e.r_thread = me, e.r_block = block_linear, e.r_epoch = epoch;
    }
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
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    if (check) {
      fibre_range = Range{reinterpret_cast<uintptr_t>(fibres.data()), reinterpret_cast<uintptr_t>(fibres.data() + n)};
      epoch = 0;
      ++block_stamp;
    }
    while (error.empty()) {
      if (check) std::shuffle(order.begin(), order.end(), rng);
      for (size_t i : order)
        if (fibres[i].wait == Wait::kNone) resume(fibres[i]);
      if (!violation.empty()) {  // a hook's finding (a fibre never sets `error` itself)
        error = violation;
        return;
      }
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
        ++epoch;  // accesses before the barrier are ordered before those after it
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

namespace {

// The (x, y, z) index of linear block k of a grid.
uint3 block_index(int64_t k, dim3 grid) {
  return uint3{static_cast<unsigned>(k % grid.x), static_cast<unsigned>((k / grid.x) % grid.y),
               static_cast<unsigned>(k / (static_cast<int64_t>(grid.x) * grid.y))};
}

// Stacks for `threads` fibres on this OS thread's runner; false (the launch's error recorded) when they
// cannot be mapped.
bool reserve_stacks(Runner& runner, size_t threads, const char* kernel) {
  runner.reserve(threads);
  if (runner.stacks != nullptr) return true;
  record(std::string(kernel) + ": could not map the emulated threads' stacks");
  return false;
}

// Checking mode: every block on the calling thread, in a random order drawn from the seed and the launch.
void run_grid_checked(const char* kernel, dim3 grid, dim3 block, Body body, int64_t blocks, size_t threads) {
  thread_local Runner runner;
  if (!reserve_stacks(runner, threads, kernel)) return;
  const uint32_t launch = g_launches.fetch_add(1) + 1;
  runner.rng.seed(g_seed.load() * 0x9E3779B97F4A7C15ull + launch);
  runner.check = true;
  runner.launch = launch;
  runner.grid_dim = grid;
  runner.body = body;
  runner.kernel = kernel;
  runner.args_range = Range{reinterpret_cast<uintptr_t>(body.args), reinterpret_cast<uintptr_t>(body.args) + body.args_bytes};
  if (runner.shared_range.hi == 0) runner.shared_range = tls_block();  // fixed for the thread's lifetime
  runner.shared_shadow.resize((runner.shared_range.hi - runner.shared_range.lo + 3) / 4);
  for (Buffer& b : t_buffers) b.shadow.resize((b.bytes + b.granule - 1) / b.granule);
  std::vector<int64_t> order(static_cast<size_t>(blocks));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::shuffle(order.begin(), order.end(), runner.rng);
  Runner* outer = t_runner;
  t_runner = &runner;
  for (int64_t k : order) {
    runner.error.clear();
    runner.violation.clear();
    runner.block_linear = static_cast<uint32_t>(k);
    runner.run_block(grid, block, block_index(k, grid));
    if (!runner.error.empty()) {
      record(runner.error);
      break;
    }
  }
  t_runner = outer;
  runner.check = false;
}

}  // namespace

void set_checking(bool on, uint64_t seed) {
  g_seed = seed;
  g_checking = on;
}

bool checking() { return g_checking.load(); }

void register_buffer(const char* name, const void* base, size_t bytes, size_t granule, size_t redzone) {
  t_buffers.push_back(Buffer{name, reinterpret_cast<uintptr_t>(base), bytes, granule < 1 ? 1 : granule, redzone, {}});
}

void unregister_buffer(const void* base) {
  const auto a = reinterpret_cast<uintptr_t>(base);
  t_buffers.erase(std::remove_if(t_buffers.begin(), t_buffers.end(), [a](const Buffer& b) { return b.base == a; }),
                  t_buffers.end());
}

void run_grid(const char* kernel, dim3 grid, dim3 block, Body body) {
  const int64_t blocks = static_cast<int64_t>(grid.x) * grid.y * grid.z;
  const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
  if (blocks == 0 || threads == 0) return;
  if (threads > 1024) {
    record(std::string(kernel) + ": " + std::to_string(threads) + " threads per block (the device allows 1024)");
    return;
  }
  if (g_checking.load()) {
    run_grid_checked(kernel, grid, block, body, blocks, threads);
    return;
  }
  std::atomic<bool> failed{false};
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < blocks; ++k) {
    if (failed.load(std::memory_order_relaxed)) continue;
    thread_local Runner runner;
    if (!reserve_stacks(runner, threads, kernel)) {
      failed = true;
      continue;
    }
    Runner* outer = t_runner;  // nested launches do not happen, but keep the pointer sound
    t_runner = &runner;
    runner.body = body;
    runner.kernel = kernel;
    runner.error.clear();
    runner.run_block(grid, block, block_index(k, grid));
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

// The hooks of the compiler's thread-sanitizer instrumentation, which the kernel translation unit is
// built with (cuda_ext.build): the memory checks of checking mode; nothing outside a running fibre.
namespace {
inline void on_access(const void* a, size_t size, bool write) {
  gsv_emu::Runner* r = gsv_emu::t_runner;
  if (r != nullptr && r->check && r->running != nullptr) r->check_access(reinterpret_cast<uintptr_t>(a), size, write);
}
}  // namespace

extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
void __tsan_read_range(void* a, size_t n) { on_access(a, n, false); }
void __tsan_write_range(void* a, size_t n) { on_access(a, n, true); }
#define GSV_TSAN_HOOKS(n)                                                      \
  void __tsan_read##n(void* a) { on_access(a, n, false); }                     \
  void __tsan_write##n(void* a) { on_access(a, n, true); }                     \
  void __tsan_unaligned_read##n(void* a) { on_access(a, n, false); }           \
  void __tsan_unaligned_write##n(void* a) { on_access(a, n, true); }           \
  void __tsan_volatile_read##n(void* a) { on_access(a, n, false); }            \
  void __tsan_volatile_write##n(void* a) { on_access(a, n, true); }
GSV_TSAN_HOOKS(1)
GSV_TSAN_HOOKS(2)
GSV_TSAN_HOOKS(4)
GSV_TSAN_HOOKS(8)
GSV_TSAN_HOOKS(16)
#undef GSV_TSAN_HOOKS
}
