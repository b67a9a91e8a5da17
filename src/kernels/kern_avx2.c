/* AVX2 + FMA + F16C kernels (kern_x86.h), and the vectorised activation
 * quantizer that every x86 level uses. Built with -mavx2 -mfma -mf16c. */
#define KG_PREFIX kern_avx2_
#define KG_ISA KERN_ISA_AVX2
#define KX_VNNI 0
#define KX_VBMI 0
#include "kernels/kern_x86.h"

#include <math.h>

/* Same arithmetic as kern_quantize_row, step for step, so the result is
 * bit-identical: max|x| (NaN ignored like fmaxf), x * (127 / max) rounded
 * half to even, clamped to [-127, 127]. */
void kern_avx2_quantize_row(const float *x, int n, int8_t *q, int16_t *gsum, float *scale)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) /* max_ps returns its second operand for NaN */
        m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float amax = _mm_cvtss_f32(h);

    *scale = amax / 127.0f;
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    __m256i v[4];
    for (int g = 0; g < n / KERN_GROUP; g++) {
        const float *xg = x + (size_t)g * KERN_GROUP;
        for (int k = 0; k < 4; k++) {
            __m256 f = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xg + 8 * k), id),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v[k] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(f, hi), lo));
        }
        __m256i p =
            _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        p = _mm256_permutevar8x32_epi32(p, order);
        _mm256_storeu_si256((__m256i *)(q + (size_t)g * KERN_GROUP), p);
        /* sum of q as sum of (q + 128) over unsigned bytes, minus 32 * 128 */
        __m256i s = _mm256_sad_epu8(_mm256_xor_si256(p, bias), _mm256_setzero_si256());
        __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        t = _mm_add_epi64(t, _mm_unpackhi_epi64(t, t));
        gsum[g] = (int16_t)(_mm_cvtsi128_si32(t) - 32 * 128);
    }
}

/* F16C: eight halves per vcvtph2ps; the tail through the reference. */
void kern_avx2_f16_to_f32_row(const kt_f16 *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    kern_f16_to_f32_row(x + i, y + i, n - i);
}

/* Four rows at a time, one FMA accumulator each, reduced together.
 * avx2_dots and avx2_wsum are kern_neon.c's neon_dots and neon_wsum at
 * twice the width; like the tile kernels they stay written out per ISA,
 * since a shared loop would need a macro per intrinsic. */
static void avx2_dots(const float *q, const float *m, size_t stride, int T, int n, float *out)
{
    int n8 = n & ~7, t = 0;
    for (; t + 4 <= T; t += 4) {
        const float *r0 = m + (size_t)t * stride, *r1 = r0 + stride, *r2 = r1 + stride,
                    *r3 = r2 + stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < n8; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(r0 + i), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(r1 + i), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(r2 + i), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(r3 + i), a3);
        }
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        for (int i = n8; i < n; i++)
            s = _mm_add_ps(s,
                           _mm_mul_ps(_mm_set1_ps(q[i]), _mm_setr_ps(r0[i], r1[i], r2[i], r3[i])));
        _mm_storeu_ps(out + t, s);
    }
    for (; t < T; t++) {
        const float *r = m + (size_t)t * stride;
        __m256 a = _mm256_setzero_ps();
        for (int i = 0; i < n8; i += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(r + i), a);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        float v = _mm_cvtss_f32(s);
        for (int i = n8; i < n; i++)
            v += q[i] * r[i];
        out[t] = v;
    }
}

/* 32 outputs at a time held in four accumulators across all rows. */
static void avx2_wsum(const float *w, const float *m, size_t stride, int T, int n, float *out)
{
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < T; t++) {
            const float *r = m + (size_t)t * stride + i;
            __m256 wv = _mm256_set1_ps(w[t]);
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r), a0);
            a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r + 8), a1);
            a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r + 16), a2);
            a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r + 24), a3);
        }
        _mm256_storeu_ps(out + i, a0);
        _mm256_storeu_ps(out + i + 8, a1);
        _mm256_storeu_ps(out + i + 16, a2);
        _mm256_storeu_ps(out + i + 24, a3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int t = 0; t < T; t++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(w[t]), _mm256_loadu_ps(m + (size_t)t * stride + i),
                                a);
        _mm256_storeu_ps(out + i, a);
    }
    kern_ref_attn.wsum(w, m + i, stride, T, n - i, out + i); /* the last columns */
}

/* kern_exp_approx, eight lanes at a time (FMA where it adds). */
static inline __m256 avx2_exp(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n =
        _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static float ka_exp_sum(float *s, int T)
{
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int t = 0;
    for (; t + 8 <= T; t += 8)
        m8 = _mm256_max_ps(m8, _mm256_loadu_ps(s + t));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    float mx = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
    for (; t < T; t++)
        mx = s[t] > mx ? s[t] : mx;
    __m256 m = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
    t = 0;
    for (; t + 8 <= T; t += 8) {
        __m256 e = avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(s + t), m));
        _mm256_storeu_ps(s + t, e);
        acc = _mm256_add_ps(acc, e);
    }
    h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float sum = _mm_cvtss_f32(h);
    for (; t < T; t++) {
        s[t] = kern_exp_approx(s[t] - mx);
        sum += s[t];
    }
    return sum;
}

/* kern_attn.h's tiles: up to 6 queries x 16 keys or value columns in twelve
 * accumulators, two loads and six broadcasts per step (eight accumulators,
 * at four queries, left the FMA units no slack for their latency). */
#define KA_TILES
#define KA_QB 6
#define KA_W 16
/* Prefetch distances: the next key tile (K^T rows lie pages apart, where the
 * hardware prefetcher stops) and the value row KA_PF ahead. */
#define KA_PF 16

static inline __attribute__((always_inline)) void ka_scores_tile(int qa, const float *q, size_t qs,
                                                                 const float *kt, size_t kts, int n,
                                                                 float scale, float *s, int T)
{
    __m256 a0[KA_QB], a1[KA_QB];
    for (int a = 0; a < qa; a++)
        a0[a] = a1[a] = _mm256_setzero_ps();
    for (int d = 0; d < n; d++) {
        const float *kr = kt + (size_t)d * kts;
        _mm_prefetch((const char *)(kr + KA_W), _MM_HINT_T0); /* the next key tile */
        __m256 k0 = _mm256_loadu_ps(kr), k1 = _mm256_loadu_ps(kr + 8);
        for (int a = 0; a < qa; a++) {
            __m256 x = _mm256_broadcast_ss(q + (size_t)a * qs + d);
            a0[a] = _mm256_fmadd_ps(x, k0, a0[a]);
            a1[a] = _mm256_fmadd_ps(x, k1, a1[a]);
        }
    }
    __m256 sc = _mm256_set1_ps(scale);
    for (int a = 0; a < qa; a++) {
        _mm256_storeu_ps(s + (size_t)a * T, _mm256_mul_ps(a0[a], sc));
        _mm256_storeu_ps(s + (size_t)a * T + 8, _mm256_mul_ps(a1[a], sc));
    }
}

static inline __attribute__((always_inline)) void ka_wsum_tile(int qa, const float *p, int T,
                                                               const float *v, size_t vs, int t0,
                                                               int t1, float *out, size_t os)
{
    __m256 a0[KA_QB], a1[KA_QB];
    for (int a = 0; a < qa; a++) {
        a0[a] = _mm256_loadu_ps(out + (size_t)a * os);
        a1[a] = _mm256_loadu_ps(out + (size_t)a * os + 8);
    }
    for (int t = t0; t < t1; t++) {
        const float *vr = v + (size_t)t * vs;
        _mm_prefetch((const char *)(vr + KA_PF * vs), _MM_HINT_T0);
        __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
        for (int a = 0; a < qa; a++) {
            __m256 x = _mm256_broadcast_ss(p + (size_t)a * T + t);
            a0[a] = _mm256_fmadd_ps(x, v0, a0[a]);
            a1[a] = _mm256_fmadd_ps(x, v1, a1[a]);
        }
    }
    for (int a = 0; a < qa; a++) {
        _mm256_storeu_ps(out + (size_t)a * os, a0[a]);
        _mm256_storeu_ps(out + (size_t)a * os + 8, a1[a]);
    }
}

#include "kernels/kern_attn.h"

const kern_attn_ops kern_avx2_attn = {avx2_dots, avx2_wsum, ka_block};

void kern_avx2_gelu_row(float *x, size_t n)
{
    const __m256 k = _mm256_set1_ps(-2.0f * 0.7978845608028654f), c = _mm256_set1_ps(0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, v), _mm256_mul_ps(v, v), v));
        _mm256_storeu_ps(x + i, _mm256_div_ps(v, _mm256_add_ps(one, avx2_exp(u))));
    }
    kern_gelu_row(x + i, n - i);
}

void kern_avx2_swiglu_row(float *g, const float *u, size_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, avx2_exp(_mm256_xor_ps(v, neg))));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    kern_swiglu_row(g + i, u + i, n - i);
}
