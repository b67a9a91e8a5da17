/* Logging. The log is process-wide by nature, so its state is the one file-level global here. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static struct {
    pthread_mutex_t mu;
    int level;
    FILE *fp; /* NULL means stderr */
    char path[4096];
} g_log = {PTHREAD_MUTEX_INITIALIZER, LOG_LVL_INFO, NULL, ""};

static const char *level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0) return i;
    return -1;
}

int log_setup(int level, const char *path)
{
    pthread_mutex_lock(&g_log.mu);
    g_log.level = level;
    if (g_log.fp) fclose(g_log.fp);
    g_log.fp = NULL;
    g_log.path[0] = 0;
    int rc = 0;
    if (path && *path) {
        snprintf(g_log.path, sizeof g_log.path, "%s", path);
        g_log.fp = fopen(path, "a");
        if (!g_log.fp)
            rc = -1;
        else
            setvbuf(g_log.fp, NULL, _IOLBF, 0);
    }
    pthread_mutex_unlock(&g_log.mu);
    return rc;
}

int log_reopen(void)
{
    int rc = 0;
    pthread_mutex_lock(&g_log.mu);
    if (g_log.path[0]) {
        FILE *fp = fopen(g_log.path, "a");
        if (fp) {
            setvbuf(fp, NULL, _IOLBF, 0);
            if (g_log.fp) fclose(g_log.fp);
            g_log.fp = fp;
        } else {
            rc = -1;
        }
    }
    pthread_mutex_unlock(&g_log.mu);
    return rc;
}

void log_close(void)
{
    pthread_mutex_lock(&g_log.mu);
    if (g_log.fp) fclose(g_log.fp);
    g_log.fp = NULL;
    g_log.path[0] = 0;
    pthread_mutex_unlock(&g_log.mu);
}

/* Length of the valid UTF-8 sequence at s (not a C1 control), or 0. */
static size_t utf8_ok(const unsigned char *s)
{
    size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (s[0] >= 0xf8) n = 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (n == 2 && s[0] == 0xc2 && s[1] < 0xa0) return 0;
    return n;
}

size_t log_escape(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;
    if (!outlen) return 0;
    while (*s) {
        size_t u = *s >= 0x80 ? utf8_ok(s) : 0;
        if (u) {
            if (o + u >= outlen) break;
            memcpy(out + o, s, u);
            o += u, s += u;
        } else if (*s < 0x20 || *s >= 0x7f || *s == '\\') {
            if (o + 4 >= outlen) break;
            out[o++] = '\\', out[o++] = 'x', out[o++] = hex[*s >> 4], out[o++] = hex[*s & 15];
            s++;
        } else {
            if (o + 1 >= outlen) break;
            out[o++] = (char)*s++;
        }
    }
    out[o] = 0;
    return o;
}

void log_msg(int level, const char *fmt, ...)
{
    if (level > g_log.level) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000,
                  level_names[level < 0   ? 0
                              : level > 3 ? 3
                                          : level]);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Fields can come from clients (paths, headers, errors quoting input): one line each,
     * no terminal escapes. */
    log_escape(msg, line + n, sizeof line - (size_t)n);
    pthread_mutex_lock(&g_log.mu);
    FILE *fp = g_log.fp ? g_log.fp : stderr;
    fprintf(fp, "%s\n", line);
    fflush(fp);
    pthread_mutex_unlock(&g_log.mu);
}
