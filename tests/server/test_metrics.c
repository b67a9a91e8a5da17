/* Unit tests: Prometheus exposition of counters, gauges and histograms. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/metrics.h"

#include "../testutil.h"

START_TEST(render)
{
    struct metrics *m = metrics_create();
    metrics_request(m, "/generate", 200);
    metrics_request(m, "/generate", 200);
    metrics_request(m, "/generate", 503);
    metrics_add(m, CNT_COMPLETION_TOKENS, 42);
    ck_assert_int_eq(metrics_get(m, CNT_COMPLETION_TOKENS), 42);
    metrics_observe(m, HIST_TTFT_SECONDS, 0.003); /* first bucket */
    metrics_observe(m, HIST_TTFT_SECONDS, 0.2);   /* le=0.25 */
    metrics_observe(m, HIST_TTFT_SECONDS, 1000);  /* only +Inf */
    struct metrics_gauges g = {2, 4, 3, 16, 1024, 2048, 5, 0};
    char *t = metrics_render(m, &g);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(strstr(t, "# TYPE ternd_requests_total counter\n"));
    ck_assert_ptr_nonnull(
        strstr(t, "ternd_requests_total{endpoint=\"/generate\",code=\"200\"} 2\n"));
    ck_assert_ptr_nonnull(
        strstr(t, "ternd_requests_total{endpoint=\"/generate\",code=\"503\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_completion_tokens_total 42\n"));
    ck_assert_ptr_nonnull(strstr(t, "# TYPE ternd_time_to_first_token_seconds histogram\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_time_to_first_token_seconds_bucket{le=\"0.1\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_time_to_first_token_seconds_bucket{le=\"0.25\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_time_to_first_token_seconds_bucket{le=\"120\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_time_to_first_token_seconds_count 3\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_time_to_first_token_seconds_sum 1000.203000\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_queue_depth 3\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_active_slots 2\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_resident_memory_bytes 1024\n"));
    ck_assert_ptr_nonnull(strstr(t, "ternd_stats_dropped_total 5\n"));
    /* Every sample line is "name{labels} value" or "name value"; every family has HELP+TYPE. */
    int helps = 0, types = 0;
    for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "# HELP ", 7))
            helps++;
        else if (!strncmp(line, "# TYPE ", 7))
            types++;
        else {
            char *sp = strrchr(line, ' ');
            ck_assert_ptr_nonnull(sp);
            char *end;
            strtod(sp + 1, &end);
            ck_assert_msg(*end == 0, "bad value in '%s'", line);
        }
    }
    ck_assert_int_eq(helps, types);
    ck_assert_int_ge(helps, 10);
    free(t);
    metrics_destroy(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, render);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
