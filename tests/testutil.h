/* What the Check unit tests share: reading a fixture file whole and
 * running a suite from main. Header-only so each test stays one .c file. */
#ifndef TERN_TESTUTIL_H
#define TERN_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file in a malloc'd buffer with a NUL after it (so text reads
 * as a string); *len (if len is not NULL) gets the byte count. The
 * calling test fails if the file cannot be read. */
static inline char *tu_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    ck_assert_msg(n >= 0, "cannot size %s", path);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

/* Runs every test of s (in forked processes unless fork is CK_NOFORK;
 * CK_FORK_GETENV leaves it to Check's CK_FORK variable) and returns the
 * exit status for main. */
static inline int tu_run(Suite *s, enum fork_status fork)
{
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, fork);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
