/* Unit tests: API key parsing and checks, constant-time compare. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/auth.h"

#include "../testutil.h"

START_TEST(equal)
{
    ck_assert(auth_equal("abc", 3, "abc", 3));
    ck_assert(!auth_equal("abc", 3, "abd", 3));
    ck_assert(!auth_equal("abc", 3, "abcd", 4));
    ck_assert(!auth_equal("abcabc", 6, "abc", 3)); /* wrap-around reads must not make these equal */
    ck_assert(!auth_equal("", 0, "a", 1));
    ck_assert(auth_equal("", 0, "", 0));
}
END_TEST

START_TEST(disabled_passes)
{
    char err[128];
    struct auth *a = auth_create("", NULL, err, sizeof err);
    ck_assert_ptr_nonnull(a);
    ck_assert(!auth_enabled(a));
    ck_assert(auth_check(a, NULL, NULL));
    auth_destroy(a);
}
END_TEST

START_TEST(keys_and_headers)
{
    char err[128], path[] = "/tmp/ternd-keys-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "# keys\nfilekey\n\n  spaced  \r\n";
    ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    struct auth *a = auth_create(" one , two", path, err, sizeof err);
    unlink(path);
    ck_assert_ptr_nonnull(a);
    ck_assert(auth_enabled(a));
    ck_assert(auth_check(a, "Bearer one", NULL));
    ck_assert(auth_check(a, "bearer two", NULL));
    ck_assert(auth_check(a, NULL, "filekey"));
    ck_assert(auth_check(a, NULL, "spaced"));
    ck_assert(!auth_check(a, NULL, "# keys"));
    ck_assert(!auth_check(a, "Bearer on", NULL));
    ck_assert(!auth_check(a, "Basic one", NULL));
    ck_assert(!auth_check(a, NULL, NULL));
    ck_assert(!auth_check(a, "Bearer ", NULL));
    auth_destroy(a);
}
END_TEST

START_TEST(missing_file)
{
    char err[128];
    ck_assert_ptr_null(auth_create("", "/nonexistent/keys", err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/keys"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("auth");
    tcase_add_test(tc, equal);
    tcase_add_test(tc, disabled_passes);
    tcase_add_test(tc, keys_and_headers);
    tcase_add_test(tc, missing_file);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
