/* Quantizers. Sums run in double so the result does not depend on the
 * order of billions of float additions. */
#include "engine/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "engine/types.h"

static const char *const method_names[] = {"kmeans", "absmean", "twn"};

const char *quant_method_name(quant_method m)
{
    return (unsigned)m < 3 ? method_names[m] : "?";
}

bool quant_method_by_name(const char *name, quant_method *out)
{
    for (int i = 0; i < 3; i++)
        if (strcasecmp(name, method_names[i]) == 0) {
            *out = (quant_method)i;
            return true;
        }
    return false;
}

static double mean_abs(const float *w, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += fabs((double)w[i]);
    return n > 0 ? s / (double)n : 0.0;
}

/* ||w - s t|| / ||w|| */
static double tern_error(const float *w, int64_t n, const int8_t *t, float s)
{
    double e = 0.0, ww = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)w[i] - (double)s * t[i];
        e += d * d;
        ww += (double)w[i] * w[i];
    }
    return ww > 0.0 ? sqrt(e / ww) : 0.0;
}

/* Error of threshold assignment |w| > m/2 -> +-m, else 0, without storing it. */
static double kmeans_error(const float *w, int64_t n, double m)
{
    double e = 0.0, ww = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double a = fabs((double)w[i]);
        double d = a > m / 2 ? a - m : a;
        e += d * d;
        ww += a * a;
    }
    return ww > 0.0 ? sqrt(e / ww) : 0.0;
}

float quant_kmeans(const float *w, int64_t n, int max_rounds, int8_t *t, double *round_err,
                   int *rounds)
{
    double m = mean_abs(w, n);
    int k = 0;
    if (round_err) round_err[0] = kmeans_error(w, n, m);
    while (k < max_rounds) {
        double s = 0.0;
        int64_t cnt = 0;
        for (int64_t i = 0; i < n; i++) {
            double a = fabs((double)w[i]);
            if (a > m / 2) {
                s += a;
                cnt++;
            }
        }
        double next = cnt > 0 ? s / (double)cnt : 0.0;
        if (next == m) break; /* same assignment again: converged */
        m = next;
        k++;
        if (round_err) round_err[k] = kmeans_error(w, n, m);
    }
    for (int64_t i = 0; i < n; i++) {
        double a = fabs((double)w[i]);
        t[i] = a > m / 2 ? (w[i] > 0 ? 1 : -1) : 0;
    }
    if (rounds) *rounds = k;
    return (float)m;
}

float quant_absmean(const float *w, int64_t n, int8_t *t)
{
    double s = mean_abs(w, n);
    for (int64_t i = 0; i < n; i++) {
        double r = s > 0.0 ? (double)w[i] / s : 0.0;
        r = r > 1.0 ? 1.0 : r < -1.0 ? -1.0 : r == r ? r : 0.0;
        t[i] = (int8_t)lround(r);
    }
    return (float)s;
}

float quant_twn(const float *w, int64_t n, int8_t *t)
{
    double delta = 0.7 * mean_abs(w, n);
    double s = 0.0;
    int64_t cnt = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = fabs((double)w[i]);
        if (a > delta) {
            t[i] = w[i] > 0 ? 1 : -1;
            s += a;
            cnt++;
        } else {
            t[i] = 0;
        }
    }
    return cnt > 0 ? (float)(s / (double)cnt) : 0.0f;
}

float quant_binary(const float *w, int64_t n, int8_t *t)
{
    for (int64_t i = 0; i < n; i++)
        t[i] = w[i] >= 0 ? 1 : -1;
    return (float)mean_abs(w, n);
}

static float quant_one(const float *w, int64_t n, quant_method m, bool binary, int8_t *t)
{
    if (binary) return quant_binary(w, n, t);
    switch (m) {
    case QUANT_ABSMEAN: return quant_absmean(w, n, t);
    case QUANT_TWN: return quant_twn(w, n, t);
    default: return quant_kmeans(w, n, QUANT_KMEANS_MAX_ROUNDS, t, NULL, NULL);
    }
}

double quant_matrix_ternary(const float *w, int64_t rows, int64_t n, quant_method m,
                            bool per_tensor, bool binary, int8_t *t, float *row_scale)
{
    if (per_tensor) {
        float s = quant_one(w, rows * n, m, binary, t);
        for (int64_t r = 0; r < rows; r++)
            row_scale[r] = s;
        return tern_error(w, rows * n, t, s);
    }
    double e = 0.0, ww = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *wr = w + r * n;
        int8_t *tr = t + r * n;
        row_scale[r] = quant_one(wr, n, m, binary, tr);
        for (int64_t i = 0; i < n; i++) {
            double d = (double)wr[i] - (double)row_scale[r] * tr[i];
            e += d * d;
            ww += (double)wr[i] * wr[i];
        }
    }
    return ww > 0.0 ? sqrt(e / ww) : 0.0;
}

double quant_rel_error(const float *w, const float *w_hat, int64_t n)
{
    double e = 0.0, ww = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)w[i] - (double)w_hat[i];
        e += d * d;
        ww += (double)w[i] * w[i];
    }
    return ww > 0.0 ? sqrt(e / ww) : 0.0;
}

int quant_to_type(const float *w, int64_t rows, int64_t n, kt_type type, quant_method m,
                  bool per_tensor, void *dst, double *rel_err, char *err, size_t errlen)
{
    const ttype_info *ti = ttype_get(type);
    if (!ti) {
        snprintf(err, errlen, "unknown tensor type id %d", (int)type);
        return -1;
    }
    if (n <= 0 || rows < 0 || n % ti->block != 0) {
        snprintf(err, errlen, "row length %lld is not a multiple of %s's block of %d", (long long)n,
                 ti->name, ti->block);
        return -1;
    }
    size_t rb = ttype_row_bytes(ti, n);
    unsigned char *out = dst;
    int8_t *t = NULL;
    float *scales = NULL, *bscale = NULL, *row = NULL;

    if (ti->ternary || ti->binary) {
        t = malloc((size_t)(rows * n));
        scales = malloc((size_t)(rows > 0 ? rows : 1) * sizeof(float));
        bscale = malloc((size_t)(n / ti->block) * sizeof(float));
        if (!t || !scales || !bscale) {
            snprintf(err, errlen, "out of memory quantizing a %lldx%lld matrix", (long long)rows,
                     (long long)n);
            free(t);
            free(scales);
            free(bscale);
            return -1;
        }
        quant_matrix_ternary(w, rows, n, m, per_tensor, ti->binary, t, scales);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t b = 0; b < n / ti->block; b++)
                bscale[b] = scales[r];
            kt_pack_ternary(type, t + r * n, bscale, out + (size_t)r * rb, n);
        }
        free(t);
        free(scales);
        free(bscale);
    } else {
        for (int64_t r = 0; r < rows; r++)
            ti->from_float(type, w + r * n, out + (size_t)r * rb, n);
    }

    if (rel_err) {
        row = malloc((size_t)n * sizeof(float));
        if (!row) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        double e = 0.0, ww = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            ti->to_float(type, out + (size_t)r * rb, row, n);
            for (int64_t i = 0; i < n; i++) {
                double d = (double)w[r * n + i] - row[i];
                e += d * d;
                ww += (double)w[r * n + i] * w[r * n + i];
            }
        }
        *rel_err = ww > 0.0 ? sqrt(e / ww) : 0.0;
        free(row);
    }
    return 0;
}

bool quant_pick_type(kt_type want, int64_t row_len, kt_type *got)
{
    kt_type chain[4];
    int n = 0;
    chain[n++] = want;
    if (want == KT_TQ2_0 || want == KT_TQ1_0) chain[n++] = KT_Q2_0;
    if (want == KT_TQ2_0 || want == KT_TQ1_0 || want == KT_Q2_0 || want == KT_Q1_0)
        chain[n++] = KT_Q8_0;
    for (int i = 0; i < n; i++) {
        const ttype_info *ti = ttype_get(chain[i]);
        if (ti && row_len > 0 && row_len % ti->block == 0) {
            *got = chain[i];
            return true;
        }
    }
    return false;
}

int quant_llama_ftype(kt_type t)
{
    switch (t) {
    case KT_F32: return 0;
    case KT_F16: return 1;
    case KT_Q8_0: return 7;
    case KT_BF16: return 32;
    case KT_TQ1_0: return 36;
    case KT_TQ2_0: return 37;
    case KT_Q1_0: return 40;
    case KT_Q2_0: return 41;
    default: return -1;
    }
}
