/* tern stats: the request statistics ternd keeps in SQLite, over a time window, as a table
 * (the same numbers GET /stats returns). Reads the database directly, read-only. */
#include <stdio.h>
#include <string.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "server/stats.h"

#define CMD "stats"

static const char usage_text[] =
    "usage: tern stats [--db PATH] [--window SECONDS]\n"
    "\n"
    "Summarise the requests ternd served: count, errors, latency percentiles,\n"
    "tokens per second and peak memory, from its stats database.\n"
    "\n"
    "  --db PATH          stats database (default /var/lib/ternd/stats.db)\n"
    "  --window SECONDS   only requests that arrived in the last SECONDS;\n"
    "                     0 = all (default 3600)\n"
    "  -h, --help         show this help\n";

int cmd_stats(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 1},
        {"window", required_argument, NULL, 2},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = "/var/lib/ternd/stats.db";
    double window = 3600;
    int ch;
    while ((ch = cli_getopt(CMD, argc, argv, "h", longopts)) != -1) {
        switch (ch) {
        case 1: db = optarg; break;
        case 2:
            if (!cli_parse_float(CMD, "--window", optarg, 0, 1e10, &window)) return CLI_USAGE;
            break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return CLI_USAGE;
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);

    struct stats_summary s;
    char err[512];
    if (stats_query(db, window, stats_wall_now(), &s, err, sizeof err) != 0)
        return cli_error(CMD, "%s", err);
    char span[32];
    if (window > 0)
        snprintf(span, sizeof span, "last %.0f s", window);
    else
        snprintf(span, sizeof span, "all time");
    printf("%-28s %s\n", "database", db);
    printf("%-28s %s\n", "window", span);
    printf("%-28s %lld\n", "requests", s.requests);
    printf("%-28s %lld\n", "generations", s.generations);
    printf("%-28s %lld\n", "errors", s.errors);
    printf("%-28s %10s %10s %10s\n", "", "p50", "p95", "p99");
    printf("%-28s %10.1f %10.1f %10.1f\n", "latency (ms)", s.latency_p50_ms, s.latency_p95_ms,
           s.latency_p99_ms);
    printf("%-28s %10.1f %10.1f %10.1f\n", "time to first token (ms)", s.ttft_p50_ms, s.ttft_p95_ms,
           s.ttft_p99_ms);
    printf("%-28s %lld\n", "prompt tokens", s.prompt_tokens);
    printf("%-28s %lld\n", "completion tokens", s.completion_tokens);
    printf("%-28s %.1f\n", "decode tokens/s", s.decode_tokens_per_s);
    printf("%-28s %.2f\n", "throughput tokens/s", s.throughput_tokens_per_s);
    printf("%-28s %.1f\n", "peak RSS (MiB)", s.rss_peak_kb / 1024.0);
    return CLI_OK;
}
