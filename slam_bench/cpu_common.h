// What the compiled CPU bodies share (cpu_fused.cpp: the dense loss; cpu_topk.cpp: the sparse
// top-K one): NaN-propagating min/max, vector reductions, and the row-block scheduler.
// Everything here is inline (C++17 inline variables for the scheduler's state), so the bodies,
// compiled into one library, share one scheduler.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <omp.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace slam_cpu {

template <typename T>
inline T nan_min(T a, T b) { return (std::isnan(a) || std::isnan(b)) ? std::numeric_limits<T>::quiet_NaN() : std::min(a, b); }
template <typename T>
inline T nan_max(T a, T b) { return (std::isnan(a) || std::isnan(b)) ? std::numeric_limits<T>::quiet_NaN() : std::max(a, b); }

// Lanes of `mask` (an all-ones/all-zeros comparison result) that are set, as a bit field.
template <typename T>
inline uint64_t lanes(const at::vec::Vectorized<T>& mask) {
  constexpr int W = at::vec::Vectorized<T>::size();
  const uint64_t all = (W >= 64) ? ~uint64_t(0) : ((uint64_t(1) << W) - 1);
  return ~uint64_t(mask.zero_mask()) & all;
}

template <typename T>
inline T reduce_sum(const at::vec::Vectorized<T>& v) {
  using Vec = at::vec::Vectorized<T>;
  alignas(64) T tmp[Vec::size()];
  v.store(tmp);
  T s = 0;
  for (int l = 0; l < Vec::size(); ++l) s += tmp[l];
  return s;
}

template <typename T, bool MAX>
inline T reduce_ext(const at::vec::Vectorized<T>& v) {
  using Vec = at::vec::Vectorized<T>;
  alignas(64) T tmp[Vec::size()];
  v.store(tmp);
  T s = tmp[0];
  for (int l = 1; l < Vec::size(); ++l) s = MAX ? nan_max(s, tmp[l]) : nan_min(s, tmp[l]);
  return s;
}

// One pass over a row x[0..c): its max (NaN-propagating) into mx and, when want_min, its min
// into mn; on_vec(j) is called for each full vector at j and on_tail(j) for each entry after
// them, so that a caller's other per-entry work rides on the same pass.
template <typename T, typename OnVec, typename OnTail>
inline void row_extrema(const T* x, int64_t c, bool want_min, T& mx, T& mn, const OnVec& on_vec,
                        const OnTail& on_tail) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const T inf = std::numeric_limits<T>::infinity();
  Vec vmax(-inf), vmin(inf);
  int64_t j = 0;
  for (; j + W <= c; j += W) {
    Vec v = Vec::loadu(x + j);
    vmax = at::vec::maximum(vmax, v);
    if (want_min) vmin = at::vec::minimum(vmin, v);
    on_vec(j);
  }
  mx = reduce_ext<T, true>(vmax);
  mn = reduce_ext<T, false>(vmin);
  for (; j < c; ++j) {
    mx = nan_max(mx, x[j]);
    mn = nan_min(mn, x[j]);
    on_tail(j);
  }
}

// Who takes the row blocks (slam_cpu_set_scheduler): 0 (default) torch's OpenMP team, each
// thread taking blocks from the shared counter; 1 at::parallel_for's static split (the dense
// body only; the top-K body treats it as 0); 2 the library's own helper pool (`run_shared`, the
// default until the team measured faster). torch's OpenMP workers keep spinning for a while
// after each of torch's parallel ops, on the very core a helper of the pool must wake on, so
// right after other torch work (the argument checks, the caller's own ops) the pool's helper
// started late; the team's threads are those spinning workers and start at once
// (docs/cpu_backend.md has the measurements).
inline std::atomic<int> g_scheduler{0};

// Set in a child process after fork(): libgomp's team does not survive a fork (the child's next
// parallel region waits for threads that do not exist), so a child's rows go to the helper pool,
// which starts threads of its own in a new process. (torch's own parallel ops hang there;
// PyTorch's DataLoader workers set one thread for that reason.)
inline std::atomic<bool> g_forked{false};
inline const int g_atfork_registered = pthread_atfork(nullptr, nullptr, [] { g_forked = true; });

// One team at a time: a second caller (another Python thread) while a team runs, or a caller
// already inside an OpenMP region, runs its rows alone rather than start T more threads.
inline std::mutex g_team_mu;
// The size of the last team that ran, and a participant that throws: for the tests only
// (slam_cpu_last_team_size, slam_cpu_test_throw).
inline std::atomic<int> g_last_team{0};
inline std::atomic<bool> g_test_throw{false};
constexpr int64_t kBlockElements = int64_t(1) << 14;     // rows per block: ~16K elements
constexpr int64_t kMinParallelElements = int64_t(1) << 15;  // torch's grain size

// Helper threads that join a running job when they get a core. They sleep on a condition
// variable between jobs (no spinning), and the caller waits only for helpers that joined.
struct Pool {
  std::mutex mu;
  std::condition_variable wake, done;
  std::vector<std::thread> threads;
  const std::function<void()>* job = nullptr;
  uint64_t gen = 0;
  bool open = false;
  int wanted = 0, joined = 0, active = 0;

  void loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      wake.wait(lk, [&] { return gen != seen; });
      seen = gen;
      if (!open || joined >= wanted) continue;
      ++joined;
      ++active;
      const std::function<void()>* j = job;
      lk.unlock();
      (*j)();
      lk.lock();
      if (--active == 0) done.notify_all();
    }
  }
};

inline Pool* g_pool = nullptr;
inline pid_t g_pool_pid = 0;
inline std::mutex g_run_mu;  // one job at a time; a concurrent caller runs its rows alone

inline void run_shared(int helpers, const std::function<void()>& work) {
  std::unique_lock<std::mutex> run_lk(g_run_mu, std::try_to_lock);
  if (helpers <= 0 || !run_lk.owns_lock()) {
    work();
    return;
  }
  if (g_pool == nullptr || g_pool_pid != getpid()) {  // a forked child has no threads: new pool
    g_pool = new Pool();  // never freed: helpers live as long as the process
    g_pool_pid = getpid();
  }
  Pool& p = *g_pool;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    while (int(p.threads.size()) < helpers) {
      p.threads.emplace_back([&p] { p.loop(); });
      p.threads.back().detach();
    }
    p.job = &work;
    p.open = true;
    p.wanted = helpers;
    p.joined = 0;
    ++p.gen;
  }
  p.wake.notify_all();
  work();
  std::unique_lock<std::mutex> lk(p.mu);
  p.open = false;  // late helpers no longer join
  p.done.wait(lk, [&] { return p.active == 0; });
}

// Calls participant(take) once on each thread of torch's OpenMP team (scheduler 0), or on the
// caller and each helper of the pool that joins (scheduler 2), where take(r0, r1) hands out the
// next block of rows [r0, r1) from a shared counter (false when none is left): a thread that
// starts late takes fewer blocks instead of holding a static share. (The team still ends at
// OpenMP's barrier, which waits for a thread the OS has not run yet; the pool does not wait
// for helpers that never joined. Measured on a loaded machine the two were about even.)
template <typename Participant>
void for_row_blocks(int64_t n, int64_t c, const Participant& participant) {
  const int64_t block = std::max<int64_t>(1, kBlockElements / std::max<int64_t>(c, 1));
  const int64_t nblocks = (n + block - 1) / block;
  std::atomic<int64_t> next{0};
  auto take = [&](int64_t& r0, int64_t& r1) {
    const int64_t b = next.fetch_add(1, std::memory_order_relaxed);
    if (b >= nblocks) return false;
    r0 = b * block;
    r1 = std::min(n, r0 + block);
    return true;
  };
  const std::function<void()> work = [&] {
    if (g_test_throw) throw std::runtime_error("slam_cpu_test_throw");
    participant(take);
  };
  const int threads = std::max(1, at::get_num_threads());
  const int helpers = (n * c >= kMinParallelElements && nblocks > 1)
      ? int(std::min<int64_t>(threads - 1, nblocks - 1)) : 0;
  if (g_scheduler == 2 || g_forked) {
    run_shared(helpers, work);
    return;
  }
  std::unique_lock<std::mutex> team_lk(g_team_mu, std::try_to_lock);
  if (helpers == 0 || !team_lk.owns_lock() || omp_in_parallel()) {
    g_last_team = 1;
    work();  // one thread: no parallel region
    return;
  }
  // An exception may not leave an OpenMP region (std::terminate): kept, rethrown after it.
  std::exception_ptr err;
  std::mutex err_mu;
#pragma omp parallel num_threads(helpers + 1)
  {
#pragma omp single nowait
    g_last_team = omp_get_num_threads();
    try {
      work();
    } catch (...) {
      std::lock_guard<std::mutex> g(err_mu);
      if (!err) err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace slam_cpu
