#include "cli/cli_util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tern %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'tern %s --help'.\n", cmd);
    va_end(ap);
    return CLI_USAGE;
}

int cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tern %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_FAIL;
}

int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts)
{
    char opts[128];
    /* A leading ':' makes getopt report a missing value as ':' and keep quiet. */
    snprintf(opts, sizeof opts, ":%s", shortopts);
    opterr = 0;
    int c = getopt_long(argc, argv, opts, longopts, NULL);
    if (c != '?' && c != ':') return c;
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    char shortname[3] = {'-', (char)optopt, 0};
    /* For a long option, or a bundle like -xq, name what the user typed. */
    const char *name = !strncmp(arg, "--", 2) || !optopt ? arg : shortname;
    if (c == ':')
        cli_usage_error(cmd, "option '%s' needs a value", name);
    else if (!strncmp(arg, "--", 2) && strchr(arg, '='))
        cli_usage_error(cmd, "unknown option or unexpected value '%s'", arg);
    else
        cli_usage_error(cmd, "unknown option '%s'", name);
    return '?';
}

void cli_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

char *cli_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            cap = cap ? 2 * cap : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

bool cli_parse_int(const char *cmd, const char *opt, const char *s, long long min, long long max,
                   long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max) {
        cli_usage_error(cmd, "%s: '%s' is not an integer from %lld to %lld", opt, s, min, max);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_float(const char *cmd, const char *opt, const char *s, double min, double max,
                     double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < min || v > max) {
        cli_usage_error(cmd, "%s: '%s' is not a number from %g to %g", opt, s, min, max);
        return false;
    }
    *out = v;
    return true;
}

int cli_load_image(const char *path, int min_edge, img_rgb *out, char *err, size_t errlen)
{
    size_t len;
    char *data = cli_read_file(path, &len);
    if (!data) {
        cli_seterr(err, errlen, "%s: %s", path, strerror(errno ? errno : EIO));
        return -1;
    }
    img_limits lim = {.max_bytes = 64u << 20, .max_pixels = 100000000, .min_edge = min_edge};
    char ierr[256];
    int rc = img_decode(data, len, &lim, out, ierr, sizeof ierr);
    free(data);
    if (rc != 0) cli_seterr(err, errlen, "%s: %s", path, ierr);
    return rc;
}
