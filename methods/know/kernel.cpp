// Fused CPU kernel for the KNOWN hyper-model's residual (card ../shared/papers/know.md section 2), built and
// loaded by bench/known_kernel.py. Same function as KnownNet.residual on the packed weights (KnownNet.packed),
// evaluated on blocks of LANES scalars with every intermediate in registers or L1: no [N, 160] temporaries.
//
// Packed buffer W (float32), offsets in known_kernel.py (PACKED_LAYOUT):
//   k_in [5][144] (columns h1 0:64, g1 64:72, h2 72:136, g2 136:144), b_in [144],
//   per stream j = 0, 1: k_mid [8][160] (columns a 0:64, b 64:128, add·k5 128:160), b_mid [160], k5 [64][32],
//   k_head [64], b_head [1].
#include <cmath>
#include <cstdint>

#ifndef LANES
#define LANES 16
#endif

typedef float vf __attribute__((vector_size(LANES * 4)));
typedef int32_t vi __attribute__((vector_size(LANES * 4)));

static inline vf splat(float a) { return vf{} + a; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
static inline vf vmin(vf a, vf b) { return a < b ? a : b; }

// exp with Cody-Waite range reduction and the Cephes expf polynomial (about 1 ulp on the clamped range).
static inline vf vexp(vf x) {
    x = vmin(vmax(x, splat(-87.0f)), splat(88.0f));
    const vf magic = splat(12582912.0f);                      // 1.5 * 2^23: round to nearest integer
    vf n = (x * splat(1.44269504088896341f) + magic) - magic;
    vf r = x - n * splat(0.693359375f);
    r = r - n * splat(-2.12194440e-4f);
    vf p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    p = p * r * r + r + splat(1.0f);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

enum { NIN = 5, WIN = 144, WMID = 160 };
static const long OFF_KIN = 0, OFF_BIN = NIN * WIN;
static const long OFF_STREAM = OFF_BIN + WIN;
static const long STREAM_SIZE = 8 * WMID + WMID + 64 * 32;
static const long OFF_KHEAD = OFF_STREAM + 2 * STREAM_SIZE;
static const long OFF_BHEAD = OFF_KHEAD + 64;

static inline void block(const float* W, const vf* xs, float* out, int valid) {
    const float* kin = W + OFF_KIN;
    const float* bin = W + OFF_BIN;
    const float* khead = W + OFF_KHEAD;
    vf total = splat(W[OFF_BHEAD]);
    vf e[64];
    for (int j = 0; j < 2; ++j) {
        const float* kmid = W + OFF_STREAM + j * STREAM_SIZE;
        const float* bmid = kmid + 8 * WMID;
        const float* k5 = bmid + WMID;
        const int col = 72 * j;
        vf g[8];
        _Pragma("GCC unroll 8") for (int m = 0; m < 8; ++m) {
            vf s = splat(bin[col + 64 + m]);
            _Pragma("GCC unroll 8") for (int k = 0; k < NIN; ++k) s += xs[k] * kin[k * WIN + col + 64 + m];
            g[m] = vmax(s, splat(0.0f));
        }
        for (int i = 0; i < 64; ++i) {
            vf h = splat(bin[col + i]);
            _Pragma("GCC unroll 8") for (int k = 0; k < NIN; ++k) h += xs[k] * kin[k * WIN + col + i];
            vf a = splat(bmid[i]), b = splat(bmid[64 + i]);
            _Pragma("GCC unroll 8") for (int m = 0; m < 8; ++m) {
                a += g[m] * kmid[m * WMID + i];
                b += g[m] * kmid[m * WMID + 64 + i];
            }
            e[i] = a * vexp(b * h);
        }
        for (int half = 0; half < 2; ++half) {
            const int o0 = 128 + 16 * half;
            vf acc[16];
            _Pragma("GCC unroll 16") for (int o = 0; o < 16; ++o) {
                vf s = splat(bmid[o0 + o]);
                _Pragma("GCC unroll 8") for (int m = 0; m < 8; ++m) s += g[m] * kmid[m * WMID + o0 + o];
                acc[o] = s;
            }
            for (int i = 0; i < 64; ++i) {
                const vf ev = e[i];
                const float* row = k5 + i * 32 + 16 * half;
                _Pragma("GCC unroll 16") for (int o = 0; o < 16; ++o) acc[o] += ev * row[o];
            }
            const float* kh = khead + 32 * j + 16 * half;
            _Pragma("GCC unroll 16") for (int o = 0; o < 16; ++o) total += vmax(acc[o], acc[o] * 0.3f) * kh[o];   // LeakyReLU(0.3)
        }
    }
    for (int l = 0; l < valid; ++l) out[l] = std::tanh(total[l]);
}

// n scalars whose history element k (k = 0 most forgotten .. 4 = w_0) is rows[k][i * stride]: stride 5 for an
// [n][5] row-major array, stride 1 for a window stored as 5 rows of n (no transpose). out[i] = residual, plus
// w_0 = rows[4][i * stride] when add_last (one KNOWN step: the predicted weight).
extern "C" void known_residual(const float* const* rows, int64_t stride, int64_t n, const float* W, float* out,
                               int add_last) {
    for (int64_t s = 0; s < n; s += LANES) {
        const int valid = (n - s) < LANES ? (int)(n - s) : LANES;
        vf xs[NIN];
        for (int k = 0; k < NIN; ++k) {
            xs[k] = splat(0.0f);
            if (stride == 1 && valid == LANES) {
                __builtin_memcpy(&xs[k], rows[k] + s, sizeof(vf));
            } else {
                for (int l = 0; l < valid; ++l) xs[k][l] = rows[k][(s + l) * stride];
            }
        }
        block(W, xs, out + s, valid);
        if (add_last) {
            for (int l = 0; l < valid; ++l) out[s + l] += xs[NIN - 1][l];
        }
    }
}
