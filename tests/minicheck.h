/* The few Check calls test_kernels.c uses, for cross builds (make test-arm)
 * where no aarch64 build of the Check library is installed. A failed
 * assertion prints and jumps back to the runner, which counts it. */
#ifndef TERN_MINICHECK_H
#define TERN_MINICHECK_H

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#define CK_NORMAL 0
#define MC_MAX 32

typedef void (*mc_fn)(void);
typedef struct {
    const char *name[MC_MAX];
    mc_fn fn[MC_MAX];
    int n;
} TCase;
typedef struct {
    TCase *tc[MC_MAX];
    int n;
} Suite;
typedef struct {
    Suite *s;
    int failed;
} SRunner;

static jmp_buf mc_jmp;

#define START_TEST(name) static void name(void)
#define END_TEST
#define ck_assert_msg(cond, ...)                                                                   \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            longjmp(mc_jmp, 1);                                                                    \
        }                                                                                          \
    } while (0)
#define ck_assert(c) ck_assert_msg((c), "assertion failed: %s", #c)
#define MC_CMP(a, op, b)                                                                           \
    ck_assert_msg((long long)(a)op(long long)(b), "%s %s %s: %lld vs %lld", #a, #op, #b,           \
                  (long long)(a), (long long)(b))
#define ck_assert_int_eq(a, b) MC_CMP(a, ==, b)
#define ck_assert_int_gt(a, b) MC_CMP(a, >, b)
#define ck_assert_int_ge(a, b) MC_CMP(a, >=, b)
#define ck_assert_int_le(a, b) MC_CMP(a, <=, b)
#define ck_assert_ptr_null(p) ck_assert_msg((p) == NULL, "%s is not NULL", #p)
#define ck_assert_ptr_nonnull(p) ck_assert_msg((p) != NULL, "%s is NULL", #p)
#define ck_assert_str_eq(a, b) ck_assert_msg(strcmp((a), (b)) == 0, "%s != %s", (a), (b))
#define ck_assert_float_eq(a, b) ck_assert_msg((a) == (b), "%g != %g", (double)(a), (double)(b))
#define tcase_add_test(tc, f) mc_add((tc), #f, (f))

static Suite mc_suite;
static TCase mc_cases[MC_MAX];
static int mc_ncases;

static inline Suite *suite_create(const char *name)
{
    (void)name;
    return &mc_suite;
}
static inline TCase *tcase_create(const char *name)
{
    (void)name;
    return &mc_cases[mc_ncases++];
}
static inline void tcase_set_timeout(TCase *tc, double s)
{
    (void)tc;
    (void)s;
}
static inline void mc_add(TCase *tc, const char *name, mc_fn fn)
{
    tc->name[tc->n] = name;
    tc->fn[tc->n++] = fn;
}
static inline void suite_add_tcase(Suite *s, TCase *tc)
{
    s->tc[s->n++] = tc;
}
static inline SRunner *srunner_create(Suite *s)
{
    static SRunner r;
    r.s = s;
    return &r;
}
static inline void srunner_run_all(SRunner *r, int mode)
{
    (void)mode;
    volatile int total = 0; /* volatile: live across longjmp */
    for (volatile int i = 0; i < r->s->n; i++)
        for (volatile int k = 0; k < r->s->tc[i]->n; k++) {
            total++;
            if (setjmp(mc_jmp) == 0) {
                r->s->tc[i]->fn[k]();
                printf("ok   %s\n", r->s->tc[i]->name[k]);
            } else {
                printf("FAIL %s\n", r->s->tc[i]->name[k]);
                r->failed++;
            }
        }
    printf("%d tests, %d failed\n", total, r->failed);
}
static inline int srunner_ntests_failed(SRunner *r)
{
    return r->failed;
}
static inline void srunner_free(SRunner *r)
{
    (void)r;
}

#endif
