/* Unit tests: config defaults, file, environment, flags, validation messages. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/config.h"

#include "../testutil.h"

static char err[512];

static const char *write_tmp(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/ternd-conf-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    return path;
}

START_TEST(defaults)
{
    struct config c;
    config_defaults(&c);
    ck_assert_str_eq(c.bind, "127.0.0.1");
    ck_assert_int_eq(c.port, 8080);
    ck_assert_int_eq(c.slots, 4);
    ck_assert_int_eq(c.queue, 16);
    ck_assert_int_eq(c.threads, 0);
    ck_assert_str_eq(c.model, "models/tern-demo-tq2_0.gguf");
    ck_assert_int_eq(config_validate(&c, err, sizeof err), CONFIG_OK);
}
END_TEST

START_TEST(file_env_flags_precedence)
{
    const char *path = write_tmp("; comment\n[server]\nport = 9000\nbind = 0.0.0.0\n"
                                 "[scheduler]\nslots = 2\nqueue = 5\n");
    char *argv[] = {"ternd", "--config", (char *)path, "--slots", "3", "--bind=::1", NULL};
    char *envp[] = {"TERND_QUEUE=7", "TERND_PORT=9100", "OTHER=1", NULL};
    struct config c;
    ck_assert_int_eq(config_load(&c, 6, argv, envp, err, sizeof err), CONFIG_OK);
    ck_assert_int_eq(c.port, 9100); /* env over file */
    ck_assert_int_eq(c.queue, 7);
    ck_assert_int_eq(c.slots, 3);    /* flag over file */
    ck_assert_str_eq(c.bind, "::1"); /* flag with = */
    ck_assert_str_eq(c.config_path, path);
    unlink(path);
}
END_TEST

START_TEST(dashes_and_underscores)
{
    char *argv[] = {"ternd", "--config",     "/dev/null", "--api-key-file",
                    "/k",    "--max_tokens", "900",       NULL};
    struct config c;
    ck_assert_int_eq(config_load(&c, 7, argv, NULL, err, sizeof err), CONFIG_OK);
    ck_assert_str_eq(c.api_key_file, "/k");
    ck_assert_int_eq(c.max_tokens, 900);
}
END_TEST

START_TEST(errors_name_the_key)
{
    struct config c;
    char *a1[] = {"ternd", "--config", "/dev/null", "--slots", "many", NULL};
    ck_assert_int_eq(config_load(&c, 5, a1, NULL, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "slots"));
    char *a2[] = {"ternd", "--config", "/dev/null", "--port", "70000", NULL};
    ck_assert_int_eq(config_load(&c, 5, a2, NULL, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "port"));
    ck_assert_ptr_nonnull(strstr(err, "range"));
    char *a3[] = {"ternd", "--config", "/dev/null", "--nope", "1", NULL};
    ck_assert_int_eq(config_load(&c, 5, a3, NULL, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "nope"));
    char *a4[] = {"ternd", "--config", "/dev/null", "--engine", "gpu", NULL};
    ck_assert_int_eq(config_load(&c, 5, a4, NULL, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "engine"));
    char *a5[] = {"ternd", "--config", "/dev/null", "--port", NULL};
    ck_assert_int_eq(config_load(&c, 4, a5, NULL, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "missing value"));

    const char *path = write_tmp("[server]\nport = 80x\n");
    char *a6[] = {"ternd", "--config", (char *)path, NULL};
    ck_assert_int_eq(config_load(&c, 3, a6, NULL, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "port"));
    ck_assert_ptr_nonnull(strstr(err, path));
    unlink(path);
    path = write_tmp("[model]\nport = 80\n"); /* a key in the wrong section */
    char *a7[] = {"ternd", "--config", (char *)path, NULL};
    ck_assert_int_eq(config_load(&c, 3, a7, NULL, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "[model]"));
    unlink(path);

    char *envp[] = {"TERND_SLOTS=0", NULL};
    char *a8[] = {"ternd", "--config", "/dev/null", NULL};
    ck_assert_int_eq(config_load(&c, 3, a8, envp, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "TERND_SLOTS"));

    char *a9[] = {"ternd", "--config", "/nonexistent/ternd.conf", NULL};
    ck_assert_int_eq(config_load(&c, 3, a9, NULL, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/ternd.conf"));
}
END_TEST

START_TEST(cross_checks)
{
    struct config c;
    config_defaults(&c);
    c.default_max_tokens = c.max_tokens + 1;
    ck_assert_int_eq(config_validate(&c, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "default_max_tokens"));
    config_defaults(&c);
    c.max_prompt_tokens = c.ctx_size;
    ck_assert_int_eq(config_validate(&c, err, sizeof err), CONFIG_ERR);
    ck_assert_ptr_nonnull(strstr(err, "max_prompt_tokens"));
}
END_TEST

START_TEST(shipped_config_parses)
{
    /* config/ternd.conf lists every key; loading it changes nothing but the stats db. */
    struct config c, d;
    config_defaults(&d);
    config_defaults(&c);
    ck_assert_msg(config_load_file(&c, SHIPPED_CONF, 1, err, sizeof err) == CONFIG_OK, "%s", err);
    ck_assert_str_eq(c.db, "/var/lib/ternd/stats.db");
    memset(c.db, 0, sizeof c.db);
    memset(c.config_path, 0, sizeof c.config_path);
    ck_assert_int_eq(memcmp(&c, &d, sizeof c), 0);
    FILE *fp = fopen(SHIPPED_CONF, "r");
    ck_assert_ptr_nonnull(fp);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    text[n] = 0;
    fclose(fp);
    for (int i = 0; config_key_at(i); i++) {
        char a1[80], a2[80];
        snprintf(a1, sizeof a1, "\n#%s =", config_key_at(i));
        snprintf(a2, sizeof a2, "\n%s =", config_key_at(i));
        ck_assert_msg(strstr(text, a1) || strstr(text, a2), "%s is not documented",
                      config_key_at(i));
    }
}
END_TEST

START_TEST(resolve_path)
{
    struct config c;
    config_defaults(&c);
    strcpy(c.data_dir, "/usr/share/tern");
    char out[1024];
    config_resolve_path(&c, "/abs/m.gguf", out, sizeof out);
    ck_assert_str_eq(out, "/abs/m.gguf");
    config_resolve_path(&c, "models/none-such.gguf", out, sizeof out);
    ck_assert_str_eq(out, "/usr/share/tern/models/none-such.gguf");
}
END_TEST

START_TEST(trusted_proxies_match)
{
    const char *list = " 10.0.0.0/8, 192.168.1.7 ,fd00::/16, 172.16.0.1/32";
    ck_assert_int_eq(config_addr_listed(list, "10.200.3.4"), 1);
    ck_assert_int_eq(config_addr_listed(list, "11.0.0.1"), 0);
    ck_assert_int_eq(config_addr_listed(list, "192.168.1.7"), 1);
    ck_assert_int_eq(config_addr_listed(list, "192.168.1.8"), 0);
    ck_assert_int_eq(config_addr_listed(list, "::ffff:10.1.2.3"), 1); /* v4-mapped = v4 */
    ck_assert_int_eq(config_addr_listed(list, "fd00:1::5"), 1);
    ck_assert_int_eq(config_addr_listed(list, "fd01::5"), 0);
    ck_assert_int_eq(config_addr_listed(list, "172.16.0.1"), 1);
    ck_assert_int_eq(config_addr_listed(list, "172.16.0.2"), 0);
    ck_assert_int_eq(config_addr_listed(list, ""), 0);
    ck_assert_int_eq(config_addr_listed(list, "10.0.0.0/8"), 0); /* an address, not a block */
    ck_assert_int_eq(config_addr_listed("", "10.0.0.1"), 0);
    ck_assert_int_eq(config_addr_listed("0.0.0.0/0", "8.8.8.8"), 1);
    ck_assert_int_eq(config_addr_listed("0.0.0.0/0", "2001:db8::1"), 0);
    ck_assert_int_eq(config_addr_listed("10.1.2.0/23", "10.1.3.255"), 1);
    ck_assert_int_eq(config_addr_listed("10.1.2.0/23", "10.1.4.0"), 0);

    struct config c;
    char err[256];
    config_defaults(&c);
    ck_assert_int_eq(config_set(&c, "trusted_proxies", "10.0.0.1, 10.0.0.0/33", err, sizeof err),
                     CONFIG_OK);
    ck_assert_int_eq(config_validate(&c, err, sizeof err), CONFIG_ERR);
    ck_assert_str_eq(err, "trusted_proxies: '10.0.0.0/33' is not an IP address or CIDR block");
    ck_assert_int_eq(config_set(&c, "trusted_proxies", "::1, 10.0.0.0/8", err, sizeof err),
                     CONFIG_OK);
    ck_assert_int_eq(config_validate(&c, err, sizeof err), CONFIG_OK);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, file_env_flags_precedence);
    tcase_add_test(tc, dashes_and_underscores);
    tcase_add_test(tc, errors_name_the_key);
    tcase_add_test(tc, cross_checks);
    tcase_add_test(tc, shipped_config_parses);
    tcase_add_test(tc, resolve_path);
    tcase_add_test(tc, trusted_proxies_match);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
