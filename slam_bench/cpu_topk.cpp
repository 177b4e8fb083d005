// The sparse top-K SLaM loss and its gradient on CPU in one parallel region: the CPU path of
// slam_loss_topk and the chunk step of fused_linear_slam_loss (slam_bench/vocab/torch_backend.py
// states the math; this body computes the same quantities with the same formulas, row by row).
//
// Per row i (V logits, K teacher pairs (id_j, y_j); a = alpha_i, b = s_i (1 - a), c = a - b):
//   pass 1  z: row max m (and min, for the value checks); the K logits gathered
//   pass 2  e = exp((z - m) inv_t), into the gradient row when one is wanted, S = sum e
//   K terms log f_j = (z_j - m) inv_t - log S; mixed (b > 0, y_j >= thresh_i): log q_j =
//           log(c f_j + b), r_j = -y_j c f_j / q_j; else log q_j = log a + log f_j, r_j = -y_j
//   loss    -sum_j y_j log q_j
//   pass 3  dz = e (-R sc / S) with R = sum_j r_j, sc = scale_i inv_t; then + r_j sc at id_j
// A row whose first id is ignore_index has loss 0 and gradient 0 and its ids are not read. Ids
// outside [0, V) (possible only with check_values=False) are clamped: the result is then
// unspecified, but nothing outside the row is read or written.
#include "cpu_common.h"

namespace {

using namespace slam_cpu;

template <typename T>
void topk_rows(int64_t n, int64_t v, int64_t kk, const T* z, const int64_t* ids, const T* p,
               const T* alpha, const T* s, const T* thresh, const T* scale, double inv_t_d,
               int64_t ignore_index, int mixing, int checks, T* rows, T* out,
               double* stats_out) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const T inv_t = T(inv_t_d);
  const T inf = std::numeric_limits<T>::infinity();
  const bool grad = scale != nullptr && out != nullptr;
  T zmin_all = inf, zmax_all = -inf;
  std::mutex all_mu;

  auto body = [&](int64_t r0, int64_t r1, T& zmin, T& zmax) {
    std::vector<T> zg(kk), rk(kk);
    std::vector<int64_t> idx(kk);
    for (int64_t i = r0; i < r1; ++i) {
      const T* zr = z + i * v;
      T* gr = grad ? out + i * v : nullptr;
      const int64_t* ir = ids + i * kk;
      const T* pr = p + i * kk;
      const bool keep = ir[0] != ignore_index;

      // pass 1: row max (NaN-propagating), and min for the value checks, which cover the
      // logits of ignored rows too (as the separate check of the other paths does)
      T m = 0, lo;
      if (keep || checks) row_extrema(zr, v, checks, m, lo, [](int64_t) {}, [](int64_t) {});
      if (checks) { zmin = nan_min(zmin, lo); zmax = nan_max(zmax, m); }
      if (!keep) {
        rows[i] = 0;
        if (gr) std::fill(gr, gr + v, T(0));
        continue;
      }
      for (int64_t q = 0; q < kk; ++q) {  // gathered before pass 2 may overwrite the row
        idx[q] = std::min<int64_t>(std::max<int64_t>(ir[q], 0), v - 1);
        zg[q] = zr[idx[q]];
      }

      // pass 2: exp and its sum
      const Vec vm(m), vit(inv_t);
      Vec vs(0);
      int64_t j = 0;
      if (gr) {
        for (; j + W <= v; j += W) {
          Vec e = ((Vec::loadu(zr + j) - vm) * vit).exp_u20();
          e.store(gr + j);
          vs = vs + e;
        }
      } else {
        for (; j + W <= v; j += W) vs = vs + ((Vec::loadu(zr + j) - vm) * vit).exp_u20();
      }
      T S = reduce_sum(vs);
      for (; j < v; ++j) {
        const T e = std::exp((zr[j] - m) * inv_t);
        if (gr) gr[j] = e;
        S += e;
      }

      // the K terms
      const T lse = std::log(S);
      const T a = alpha[i], b = s[i] * (T(1) - a), c = a - b, th = thresh[i];
      const T loga = std::log(a);
      T ylogq = 0, R = 0;
      for (int64_t q = 0; q < kk; ++q) {
        const T y = pr[q];
        const T logf = (zg[q] - m) * inv_t - lse;
        T r = -y;
        if (!mixing) {
          ylogq += y * logf;
        } else if (b > 0 && y >= th) {
          const T f = std::exp(logf);
          const T mix = c * f + b;
          ylogq += y * std::log(mix);
          r = -y * c * f / mix;
        } else {
          ylogq += y * (loga + logf);
        }
        rk[q] = r;
        R += r;
      }
      rows[i] = -ylogq;
      if (!gr) continue;

      // pass 3: dz = -f R sc everywhere (f = e / S), then r sc added at the K ids
      const T sc = scale[i] * inv_t;
      const T coef = -R * sc / S;
      const Vec vc(coef);
      j = 0;
      for (; j + W <= v; j += W) (Vec::loadu(gr + j) * vc).store(gr + j);
      for (; j < v; ++j) gr[j] *= coef;
      for (int64_t q = 0; q < kk; ++q) gr[idx[q]] += rk[q] * sc;
    }
  };
  for_row_blocks(n, v, [&](auto& take) {
    T zmin = inf, zmax = -inf;
    for (int64_t r0, r1; take(r0, r1);) body(r0, r1, zmin, zmax);
    std::lock_guard<std::mutex> g(all_mu);
    zmin_all = nan_min(zmin_all, zmin);
    zmax_all = nan_max(zmax_all, zmax);
  });
  stats_out[0] = double(zmin_all);
  stats_out[1] = double(zmax_all);
}

}  // namespace

// The C entry points (one per work dtype); 0 on success, 1 when the body threw (e.g. bad_alloc).
#define TOPK_ENTRY(NAME, T)                                                                      \
  extern "C" int NAME(int64_t n, int64_t v, int64_t kk, const T* z, const int64_t* ids,          \
                      const T* p, const T* alpha, const T* s, const T* thresh, const T* scale,   \
                      double inv_t, int64_t ignore_index, int mixing, int checks, T* rows,       \
                      T* out, double* stats) {                                                   \
    try {                                                                                        \
      topk_rows<T>(n, v, kk, z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,    \
                   checks, rows, out, stats);                                                    \
    } catch (...) {                                                                              \
      return 1;                                                                                  \
    }                                                                                            \
    return 0;                                                                                    \
  }

TOPK_ENTRY(slam_topk_cpu_f32, float)
TOPK_ENTRY(slam_topk_cpu_f64, double)
