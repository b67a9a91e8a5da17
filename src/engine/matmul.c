/* mm_matmul: quantize the activations once, then split weight rows. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/matmul.h"
#include "engine/types.h"

#define MM_ROW_ALIGN 16 /* output rows per chunk boundary: 64 bytes of floats */

/* A matmul is split over the pool only when every thread gets at least this
 * many bytes of weights x activation rows; smaller ones run on the calling
 * thread. One thread does ~10-17 KB x rows per microsecond in TQ2_0 and a
 * hand-off costs ~1 us when the workers spin, so at 32 KB per thread two
 * threads already save most of half the time; SmolVLM-256M's layer matmuls
 * (90-500 KB) ran on one thread under the former 256 KB. Chunks are
 * claimed from a counter by whichever shares run, and pool_run never waits
 * for a thread that has not started (pool.h), so a worker the OS has
 * descheduled (a shared machine) costs nothing: that wait once made a tiny
 * model's matmuls 20-50x slower on two threads than on one. One descheduled
 * while holding a chunk is still waited for. */
#define MM_SPLIT_BYTES (32 * 1024)

/* A decode step's (up to MM_SMALL_N rows) chunks hold at most this many
 * weight bytes: the threads finish a matmul within one chunk of each
 * other, and four chunks per thread of SmolVLM-256M's output matrix (30 MB
 * in Q8_0) were 3.7 MB each, ~0.3 ms that one thread could run alone at
 * the end of every token. ~6 us a chunk; a claim costs ~50 ns. Bigger
 * batches keep four chunks per thread (their GEMM tiles reuse each weight
 * row over many activation rows). */
#define MM_CHUNK_BYTES (64 * 1024)
#define MM_SMALL_N 8

/* One weight of a job: its kernel, row bytes, output and first chunk. */
typedef struct {
    const kern_ops *ops;
    const mm_weight *w;
    size_t stride;
    float *out;
    int chunk0; /* global index of its first chunk */
} mm_part;

typedef struct {
    mm_part part[MM_MAX_PARTS];
    int n_parts, n_chunks;
    int cols; /* shared by every part */
    kern_acts acts;
    const float *x;
    kern_quantize_fn quantize;
    int8_t *q;
    int8_t *q64; /* q in kern_permute64's order, for Q2_0; NULL when no part is */
    int16_t *gsum;
    float *scale;
    int chunk;
    mm_rows_fn epi; /* non-NULL: two parts of equal rows, chunked together */
    void *epi_ctx;
    _Alignas(64) atomic_int next; /* next chunk to hand out */
} mm_job;

static size_t up64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

int mm_check(const mm_weight *w, char *err, size_t errlen)
{
    const kern_ops *ops = kern_get(w->type);
    const ttype_info *ti = ttype_get(w->type);
    if (!ops || !ti) {
        snprintf(err, errlen, "matmul: no kernel for tensor type %d", (int)w->type);
        return -1;
    }
    int blk = ti->block;
    if (w->rows < 0 || w->cols <= 0 || w->cols % blk || (ops->int8_acts && w->cols % KERN_GROUP)) {
        snprintf(err, errlen, "matmul: %d x %d matrix does not fit type %d (block %d)", w->rows,
                 w->cols, (int)w->type, blk);
        return -1;
    }
    return 0;
}

size_t mm_scratch_bytes(const mm_weight *w, int n)
{
    const kern_ops *ops = kern_get(w->type);
    if (!ops || !ops->int8_acts || n <= 0) return 0;
    size_t cols = (size_t)w->cols;
    return up64(cols * (size_t)n) + up64(cols / KERN_GROUP * sizeof(int16_t) * (size_t)n) +
           up64(sizeof(float) * (size_t)n) + (w->type == KT_Q2_0 ? up64(cols * (size_t)n) : 0);
}

static void quantize_rows(void *ctx, int ith, int nth)
{
    mm_job *j = ctx;
    int n = j->acts.rows, cols = j->cols;
    for (int r = ith; r < n; r += nth) {
        j->quantize(j->x + (size_t)r * cols, cols, j->q + (size_t)r * cols,
                    j->gsum + (size_t)r * (cols / KERN_GROUP), j->scale + r);
        if (j->q64) kern_permute64(j->q + (size_t)r * cols, cols, j->q64 + (size_t)r * cols);
    }
}

static void gemm_rows(void *ctx, int ith, int nth)
{
    (void)ith;
    (void)nth;
    mm_job *j = ctx;
    for (;;) {
        int c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= j->n_chunks) return;
        if (j->epi) {
            int rows = j->part[0].w->rows, r0 = c * j->chunk;
            int r1 = r0 + j->chunk < rows ? r0 + j->chunk : rows;
            for (int k = 0; k < 2; k++) {
                const mm_part *pt = &j->part[k];
                pt->ops->gemm(pt->w->data, pt->stride, r0, r1, &j->acts, pt->out, (size_t)rows);
            }
            j->epi(j->epi_ctx, r0, r1);
            continue;
        }
        int k = 0;
        while (k + 1 < j->n_parts && c >= j->part[k + 1].chunk0)
            k++;
        const mm_part *pt = &j->part[k];
        int rows = pt->w->rows;
        int r0 = (c - pt->chunk0) * j->chunk;
        int r1 = r0 + j->chunk < rows ? r0 + j->chunk : rows;
        pt->ops->gemm(pt->w->data, pt->stride, r0, r1, &j->acts, pt->out, (size_t)rows);
    }
}

int mm_matmul(pool *p, const mm_weight *w, const float *x, int n, float *out, void *scratch)
{
    return mm_matmul_multi(p, &w, 1, x, n, &out, scratch);
}

/* Whether the weights can share one job: the same input length, and all
 * integer kernels or all float ones (one kind of activations). */
static bool mm_compatible(const mm_weight *const *ws, int nw)
{
    for (int i = 1; i < nw; i++)
        if (ws[i]->cols != ws[0]->cols ||
            kern_get(ws[i]->type)->int8_acts != kern_get(ws[0]->type)->int8_acts)
            return false;
    return true;
}

static int run_multi(pool *p, const mm_weight *const *ws, int nw, const float *x, int n,
                     float *const *outs, void *scratch, mm_rows_fn epi, void *epi_ctx)
{
    char err[128]; /* unread: the return value says it */
    if (n <= 0) return 0;
    if (nw < 1 || nw > MM_MAX_PARTS) return -1;
    for (int i = 0; i < nw; i++)
        if (mm_check(ws[i], err, sizeof err)) return -1;
    if (!mm_compatible(ws, nw)) {
        for (int i = 0; i < nw; i++)
            if (mm_matmul_multi(p, &ws[i], 1, x, n, &outs[i], scratch)) return -1;
        return 0;
    }
    int nth = p ? pool_threads(p) : 1;
    mm_job j = {.n_parts = nw, .cols = ws[0]->cols, .x = x, .epi = epi, .epi_ctx = epi_ctx};
    size_t bytes = 0, max_stride = 0;
    int rows = 0;
    for (int i = 0; i < nw; i++) {
        size_t stride = ttype_row_bytes(ttype_get(ws[i]->type), ws[i]->cols);
        max_stride = stride > max_stride ? stride : max_stride;
        j.part[i] =
            (mm_part){.ops = kern_get(ws[i]->type), .w = ws[i], .stride = stride, .out = outs[i]};
        bytes += stride * (size_t)ws[i]->rows;
        rows += ws[i]->rows;
    }
    if (nth > 1 && bytes * (size_t)n < (size_t)MM_SPLIT_BYTES * nth) {
        p = NULL;
        nth = 1;
    }
    j.acts.n = j.cols;
    j.acts.rows = n;
    if (j.part[0].ops->int8_acts) {
        size_t cols = (size_t)j.cols;
        uint8_t *s = scratch;
        j.q = (int8_t *)s;
        j.gsum = (int16_t *)(s + up64(cols * (size_t)n));
        size_t q64_at = up64(cols * (size_t)n) +
                        up64(cols / KERN_GROUP * sizeof(int16_t) * (size_t)n) +
                        up64(sizeof(float) * (size_t)n);
        j.scale = (float *)(s + up64(cols * (size_t)n) +
                            up64(cols / KERN_GROUP * sizeof(int16_t) * (size_t)n));
        for (int i = 0; i < nw; i++)
            if (ws[i]->type == KT_Q2_0) j.q64 = (int8_t *)(s + q64_at);
        j.quantize = kern_get_quantize();
        if (p && n >= 2 * nth)
            pool_run(p, quantize_rows, &j);
        else
            quantize_rows(&j, 0, 1);
        j.acts.q = j.q;
        j.acts.gsum = j.gsum;
        j.acts.scale = j.scale;
        j.acts.q64 = j.q64;
    } else {
        j.acts.f = x;
    }
    /* about four chunks per thread over all parts, whole cache lines of
     * out each; a part's last chunk may be short. Paired parts share their
     * chunks, so the rows to split are one part's. */
    if (epi) rows = ws[0]->rows;
    int chunk = (rows + 4 * nth - 1) / (4 * nth);
    if (n <= MM_SMALL_N && (size_t)chunk * max_stride > MM_CHUNK_BYTES)
        chunk = (int)(MM_CHUNK_BYTES / max_stride);
    chunk = (chunk + MM_ROW_ALIGN - 1) / MM_ROW_ALIGN * MM_ROW_ALIGN;
    j.chunk = chunk > 0 ? chunk : MM_ROW_ALIGN;
    for (int i = 0; i < (epi ? 1 : nw); i++) {
        j.part[i].chunk0 = j.n_chunks;
        j.n_chunks += (ws[i]->rows + j.chunk - 1) / j.chunk;
    }
    atomic_init(&j.next, 0);
    if (p) /* chunks are claimed, so the shares that run first do them all */
        pool_run(p, gemm_rows, &j);
    else
        gemm_rows(&j, 0, 1);
    return 0;
}

int mm_matmul_multi(pool *p, const mm_weight *const *ws, int nw, const float *x, int n,
                    float *const *outs, void *scratch)
{
    return run_multi(p, ws, nw, x, n, outs, scratch, NULL, NULL);
}

int mm_matmul_pair(pool *p, const mm_weight *a, const mm_weight *b, const float *x, int n,
                   float *out_a, float *out_b, mm_rows_fn epi, void *epi_ctx, void *scratch)
{
    const mm_weight *ws[2] = {a, b};
    float *outs[2] = {out_a, out_b};
    if (n <= 0) return 0;
    if (a->rows != b->rows || !mm_compatible(ws, 2)) {
        if (run_multi(p, ws, 2, x, n, outs, scratch, NULL, NULL)) return -1;
        epi(epi_ctx, 0, a->rows);
        return 0;
    }
    return run_multi(p, ws, 2, x, n, outs, scratch, epi, epi_ctx);
}
