// The SLaM loss and its gradient on CPU in one parallel region (see slam_bench/cpu_fused.py and
// docs/cpu_backend.md). Built on first use by slam_bench.cpu_fused with torch's headers and
// libraries, and called through ctypes with raw pointers: no Python, no aten op, inside.
//
// Per row i (C entries; T = 1 / inv_t; a = alpha_i, b = s_i (1 - a), c = a - b):
//   pass 1  z: row max m (and min, for the value checks); y: the k-th largest value t (mixing)
//   pass 2  xs = (z - m) inv_t, e = exp(xs) into the gradient row, S = sum e,
//           sy = sum y, yx = sum y xs; the mixed entries {y_j >= t, y_j > 0} listed (few)
//   mixed   q = c f + b, f = e / S: the loss's change and sbm = sum y b / q there
//   loss    lse sy - yx - sy log a - sum_mixed y (log q - log a - log f)
//   pass 3  dz = (f u - y) sc with u = sy - sbm, then f (u - y c / q) sc on the mixed entries
// Rows go in blocks to the T threads of torch's OpenMP team (T = torch's thread count), which
// take them from a shared counter (for_row_blocks, cpu_common.h): a thread that starts late
// takes fewer blocks, where a static split (at::parallel_for) gives it a whole share. Each
// participant keeps its own value-check numbers, merged at the end with NaN propagation.
#include "cpu_common.h"

namespace {

using namespace slam_cpu;

// The k-th largest of the values fed (counted with multiplicity), 1 <= k <= 32: the k largest so
// far, descending; a value enters only when above the current k-th, which after the first few
// hundred entries of a row is rare, so a row costs one vector compare per W entries. NaN never
// enters (the value checks report it; here it only has to stay memory-safe).
template <typename T>
struct TopK {
  static constexpr int64_t kMax = 32;
  T top[kMax];
  int64_t k = 1;
  void reset(int64_t k_) {
    k = k_;
    std::fill(top, top + k, -std::numeric_limits<T>::infinity());
  }
  T kth() const { return top[k - 1]; }
  void feed(T v) {
    if (!(v > top[k - 1])) return;
    int64_t p = k - 1;
    while (p > 0 && top[p - 1] < v) { top[p] = top[p - 1]; --p; }
    top[p] = v;
  }
  void feed(const at::vec::Vectorized<T>& v, const T* src) {  // src: v's W values in memory
    uint64_t hit = lanes<T>(v > at::vec::Vectorized<T>(top[k - 1]));
    while (hit) {
      const int l = __builtin_ctzll(hit);
      hit &= hit - 1;
      feed(src[l]);
    }
  }
};

// The k-th largest value of y[0..c) for k > TopK::kMax, by selection on a copy; NaN ranks
// below everything, so the order stays a strict weak order (nth_element needs one).
template <typename T>
T kth_largest_select(const T* y, int64_t c, int64_t k, std::vector<T>& buf) {
  buf.assign(y, y + c);
  std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), [](T p, T q) {
    return p > q || (!std::isnan(p) && std::isnan(q));
  });
  return buf[k - 1];
}

template <typename T>
struct Stats {  // value-check numbers: min y, max |row sum - 1|, min z, max z
  T ymin = std::numeric_limits<T>::infinity();
  T dev = 0;
  T zmin = std::numeric_limits<T>::infinity();
  T zmax = -std::numeric_limits<T>::infinity();
  void merge(const Stats& o) {
    ymin = nan_min(ymin, o.ymin); dev = nan_max(dev, o.dev);
    zmin = nan_min(zmin, o.zmin); zmax = nan_max(zmax, o.zmax);
  }
};

template <typename T>
void slam_rows(int64_t n, int64_t c, const T* z, const T* y, const T* alpha, const T* s,
               const int64_t* k_rows, int64_t k_all, const T* weight, double inv_t_d,
               double inv_n_d, int mixing, int checks, T* rows, T* grad, double* stats_out) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const T inv_t = T(inv_t_d), inv_n = T(inv_n_d);
  const T inf = std::numeric_limits<T>::infinity();
  Stats<T> all;
  std::mutex all_mu;

  // Rows [r0, r1), with this participant's scratch; its value-check numbers go into `st`.
  auto body = [&](int64_t r0, int64_t r1, Stats<T>& st) {
    std::vector<T> ebuf(grad ? 0 : c), kbuf, mf, mq;
    std::vector<int64_t> midx;
    TopK<T> topk;
    for (int64_t i = r0; i < r1; ++i) {
      const T* zr = z + i * c;
      const T* yr = y + i * c;
      T* er = grad ? grad + i * c : ebuf.data();
      const T a = alpha ? alpha[i] : T(1);
      const T b = alpha ? s[i] * (T(1) - a) : T(0);
      const T cc = a - b;
      const bool mixed_row = mixing && b > 0;

      // pass 1: row max (NaN-propagating) and min of z; the top-k threshold t of y
      int64_t k = 1;
      if (mixed_row) {
        k = k_rows ? k_rows[i] : k_all;
        k = std::min<int64_t>(std::max<int64_t>(k, 1), c);  // memory-safe for unchecked k
      }
      const bool small_k = mixed_row && k <= TopK<T>::kMax;
      if (small_k) topk.reset(k);
      T m, zlo;
      row_extrema(zr, c, checks, m, zlo,
                  [&](int64_t j) { if (small_k) topk.feed(Vec::loadu(yr + j), yr + j); },
                  [&](int64_t j) { if (small_k) topk.feed(yr[j]); });
      if (checks) { st.zmin = nan_min(st.zmin, zlo); st.zmax = nan_max(st.zmax, m); }
      T t = 0;
      if (small_k) t = topk.kth();
      else if (mixed_row) t = kth_largest_select<T>(yr, c, k, kbuf);

      // pass 2: exp, sums, and the mixed entries
      const Vec vm(m), vit(inv_t), vt(t), zero(T(0));
      Vec vs(0), vsy(0), vyx(0), vymin(inf);
      midx.clear();
      int64_t j = 0;
      for (; j + W <= c; j += W) {
        Vec xs = (Vec::loadu(zr + j) - vm) * vit;
        Vec e = xs.exp_u20();
        e.store(er + j);
        vs = vs + e;
        Vec yv = Vec::loadu(yr + j);
        vsy = vsy + yv;
        vyx = at::vec::fmadd(yv, xs, vyx);
        if (checks) vymin = at::vec::minimum(vymin, yv);
        if (mixed_row) {
          uint64_t hit = lanes<T>((yv >= vt) & (yv > zero));
          while (hit) {
            int l = __builtin_ctzll(hit);
            hit &= hit - 1;
            midx.push_back(j + l);
          }
        }
      }
      T S = reduce_sum(vs), sy = reduce_sum(vsy), yx = reduce_sum(vyx);
      T ylo = reduce_ext<T, false>(vymin);
      for (; j < c; ++j) {
        T xs = (zr[j] - m) * inv_t;
        T e = std::exp(xs);
        er[j] = e;
        S += e; sy += yr[j]; yx += yr[j] * xs; ylo = nan_min(ylo, yr[j]);
        if (mixed_row && yr[j] >= t && yr[j] > 0) midx.push_back(j);
      }
      if (checks) { st.ymin = nan_min(st.ymin, ylo); st.dev = nan_max(st.dev, std::abs(sy - T(1))); }

      const T lse = std::log(S), invS = T(1) / S;
      const T loga = std::log(a);
      T row = lse * sy - yx - loga * sy;
      T sbm = 0;
      mf.resize(midx.size());
      mq.resize(midx.size());
      for (size_t p = 0; p < midx.size(); ++p) {
        const int64_t jj = midx[p];
        const T f = er[jj] * invS;
        const T q = cc * f + b;  // >= min(a, b) > 0
        const T logf = (zr[jj] - m) * inv_t - lse;
        row -= yr[jj] * (std::log(q) - loga - logf);
        sbm += yr[jj] * b / q;
        mf[p] = f;
        mq[p] = q;
      }
      const T w = weight ? weight[i] : T(1);
      rows[i] = row * w;
      if (!grad) continue;

      // pass 3: dz = (f u - y) sc, overwriting e in place; then the mixed entries
      const T u = sy - sbm;
      const T sc = w * inv_n * inv_t;
      const Vec va(invS * u * sc), vnsc(-sc);
      j = 0;
      for (; j + W <= c; j += W) {
        Vec e = Vec::loadu(er + j);
        Vec yv = Vec::loadu(yr + j);
        at::vec::fmadd(e, va, yv * vnsc).store(er + j);
      }
      for (; j < c; ++j) er[j] = er[j] * (invS * u * sc) - yr[j] * sc;
      for (size_t p = 0; p < midx.size(); ++p) {
        const int64_t jj = midx[p];
        er[jj] = mf[p] * (u - yr[jj] * cc / mq[p]) * sc;
      }
    }
  };
  auto merge = [&](const Stats<T>& st) {
    std::lock_guard<std::mutex> g(all_mu);
    all.merge(st);
  };
  if (g_scheduler == 1) {
    // torch's OpenMP threads, one static split (kept to measure against; cpu_common.h).
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(c, 1));
    at::parallel_for(0, n, grain, [&](int64_t r0, int64_t r1) {
      Stats<T> st;
      body(r0, r1, st);
      merge(st);
    });
  } else {
    for_row_blocks(n, c, [&](auto& take) {
      Stats<T> st;
      for (int64_t r0, r1; take(r0, r1);) body(r0, r1, st);
      merge(st);
    });
  }

  stats_out[0] = double(all.ymin);
  stats_out[1] = double(all.dev);
  stats_out[2] = double(all.zmin);
  stats_out[3] = double(all.zmax);
}

}  // namespace

// The C entry points (one per work dtype); 0 on success, 1 when the body threw (e.g. bad_alloc).
#define SLAM_ENTRY(NAME, T)                                                                      \
  extern "C" int NAME(int64_t n, int64_t c, const T* z, const T* y, const T* alpha, const T* s,  \
                      const int64_t* k_rows, int64_t k_all, const T* weight, double inv_t,       \
                      double inv_n, int mixing, int checks, T* rows, T* grad, double* stats) {   \
    try {                                                                                        \
      slam_rows<T>(n, c, z, y, alpha, s, k_rows, k_all, weight, inv_t, inv_n, mixing, checks,    \
                   rows, grad, stats);                                                           \
    } catch (...) {                                                                              \
      return 1;                                                                                  \
    }                                                                                            \
    return 0;                                                                                    \
  }

extern "C" void slam_cpu_set_scheduler(int which) { g_scheduler = which; }
extern "C" int slam_cpu_last_team_size() { return g_last_team; }
extern "C" void slam_cpu_test_throw(int on) { g_test_throw = on != 0; }

SLAM_ENTRY(slam_cpu_f32, float)
SLAM_ENTRY(slam_cpu_f64, double)
