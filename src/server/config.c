/* Configuration table, parsing and validation. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#ifndef TERN_VERSION
#define TERN_VERSION "0.0.0"
#endif
#ifndef TERN_DATA_DIR
#define TERN_DATA_DIR "/usr/local/share/tern"
#endif

enum kind { K_STR, K_INT, K_LONG };

struct key {
    const char *section, *name;
    enum kind kind;
    size_t off, size; /* size: buffer size for K_STR */
    long min, max;    /* numeric range */
    const char *help;
};

#define S(sec, n, h)                                                                               \
    {                                                                                              \
        sec, #n, K_STR, offsetof(struct config, n), sizeof(((struct config *)0)->n), 0, 0, h       \
    }
#define I(sec, n, lo, hi, h)                                                                       \
    {                                                                                              \
        sec, #n, K_INT, offsetof(struct config, n), sizeof(int), lo, hi, h                         \
    }
#define L(sec, n, lo, hi, h)                                                                       \
    {                                                                                              \
        sec, #n, K_LONG, offsetof(struct config, n), sizeof(long), lo, hi, h                       \
    }

static const struct key keys[] = {
    S("server", bind, "address to listen on (127.0.0.1 = this machine only; 0.0.0.0 = LAN)"),
    I("server", port, 0, 65535, "TCP port (0 = any free port; the start-up log line names it)"),
    I("server", max_connections, 1, 100000, "simultaneous HTTP connections"),
    I("server", connection_timeout, 1, 86400, "seconds an idle or slow connection may live"),
    I("server", header_timeout, 1, 86400,
      "seconds a client has to send its request line and headers"),
    I("server", body_timeout, 1, 86400, "seconds a client has to send a request body"),
    I("server", max_connections_per_client, 0, 100000,
      "simultaneous connections from one address; 0 = no limit"),
    I("server", rate_limit, 0, 1000000, "requests per second from one address; 0 = no limit"),
    S("server", allowed_hosts,
      "comma-separated Host names accepted besides loopback names and IP addresses"),
    S("server", trusted_proxies,
      "comma-separated addresses or CIDR blocks of load balancers whose X-Forwarded-For names "
      "the client"),
    S("server", cors_origins, "comma-separated origins allowed by CORS; * = any; empty = none"),
    S("server", tls_cert, "PEM certificate (chain) file: HTTPS when set with tls_key"),
    S("server", tls_key, "PEM private key file of tls_cert"),
    S("server", api_keys, "comma-separated API keys; empty = no authentication"),
    S("server", api_key_file, "file with one API key per line"),
    S("model", engine, "inference backend: model (real engine) or echo (test double)"),
    S("model", model, "text model GGUF (relative paths resolve against data_dir)"),
    S("model", mmproj, "vision projector GGUF"),
    S("model", model_name, "model name the APIs report; empty = from the file name"),
    S("model", data_dir, "directory relative model paths resolve against"),
    I("model", threads, 0, 1024, "worker threads; 0 = one per core"),
    I("model", ctx_size, 64, 1 << 20, "KV cache tokens per slot"),
    I("model", echo_delay_ms, 0, 60000, "echo engine only: milliseconds per step"),
    I("model", echo_vision_ms, 0, 60000,
      "echo engine only: milliseconds a request with images takes to admit, off the engine thread"),
    I("model", vision_threads, 0, 1024,
      "threads of the vision encoder's own pool; 0 = one per core"),
    I("model", vision_nice, 0, 19, "nice value of the vision encoder's threads (streams first)"),
    I("scheduler", slots, 1, 256, "sequences generated at once"),
    I("scheduler", queue, 0, 100000, "requests that may wait for a slot; more get 503"),
    I("scheduler", prefill_chunk, 1, 1 << 20, "prompt tokens prefilled per step"),
    I("scheduler", request_timeout, 1, 86400, "seconds a request may take in total"),
    I("scheduler", drain_timeout, 0, 3600, "seconds SIGTERM waits for running requests"),
    L("scheduler", image_cache_bytes, 0, 1L << 40, "picture embeddings kept for reuse; 0 = off"),
    I("scheduler", prefix_cache, 0, 1, "1 = reuse a slot's KV cache for a shared prompt prefix"),
    L("limits", max_body_bytes, 1024, 1L << 32, "largest request body"),
    L("limits", max_header_bytes, 4096, 1L << 24, "per-connection memory for headers"),
    L("limits", max_image_bytes, 1024, 1L << 32, "largest encoded image"),
    L("limits", max_image_pixels, 1, 1L << 30, "largest decoded image (width*height)"),
    I("limits", max_images, 0, 64, "images per request"),
    I("limits", max_prompt_tokens, 1, 1 << 20, "longest prompt in tokens"),
    I("limits", max_tokens, 1, 1 << 20, "cap on a request's max_tokens"),
    I("limits", default_max_tokens, 1, 1 << 20, "max_tokens when a request gives none"),
    I("limits", decode_concurrency, 1, 1024,
      "threads decoding admitted requests' images (one picture per request at a time)"),
    L("limits", decode_max_bytes, 1L << 20, 1L << 40,
      "decoded image bytes; past it decodes go one at a time (a request's images must fit)"),
    I("limits", jpeg_max_scans, 1, 65535, "scans of one JPEG (progressive passes); more = 422"),
    S("stats", db, "SQLite database for request stats; empty = off"),
    I("stats", retention_days, 0, 36500, "days of rows kept; 0 = forever"),
    I("stats", sample_interval, 1, 3600, "seconds between samples rows"),
    I("stats", stats_queue, 1, 1 << 20, "records buffered for the writer before dropping"),
    I("stats", stats_retry, 0, 1 << 20, "rows that could not be written, kept and retried"),
    I("stats", stats_sync_ms, 0, 60000,
      "ms a finished request waits for its row to commit before its last line; 0 = no wait"),
    L("stats", stats_wal_bytes, 1L << 16, 1L << 34,
      "size the WAL is truncated to after a checkpoint"),
    S("log", log_level, "error, warn, info or debug"),
    S("log", log_file, "log file (reopened on SIGHUP); empty = stderr"),
};
#define NKEYS (sizeof keys / sizeof keys[0])

const char *config_key_at(int i)
{
    return i >= 0 && (size_t)i < NKEYS ? keys[i].name : NULL;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->bind, "127.0.0.1");
    c->port = 8080;
    c->max_connections = 64;
    c->connection_timeout = 30;
    c->header_timeout = 10;
    c->body_timeout = 60;
    c->max_connections_per_client = 16;
    strcpy(c->engine, "model");
    strcpy(c->model, "models/tern-demo-tq2_0.gguf");
    strcpy(c->mmproj, "models/tern-demo-mmproj-tq2_0.gguf");
    snprintf(c->data_dir, sizeof c->data_dir, "%s", TERN_DATA_DIR);
    c->threads = 0;
    c->ctx_size = 2048;
    c->echo_delay_ms = 0;
    c->vision_threads = 0;
    c->vision_nice = 19;
    c->slots = 4;
    c->queue = 16;
    c->prefill_chunk = 64;
    c->request_timeout = 300;
    c->drain_timeout = 10;
    c->image_cache_bytes = 64L << 20;
    c->prefix_cache = 1;
    c->max_body_bytes = 16L << 20;
    c->max_header_bytes = 64L << 10;
    c->max_image_bytes = 8L << 20;
    c->max_image_pixels = 4096L * 4096;
    c->max_images = 4;
    c->max_prompt_tokens = 1536;
    c->max_tokens = 1024;
    c->default_max_tokens = 256;
    c->decode_concurrency = 1;
    c->decode_max_bytes = 256L << 20;
    c->jpeg_max_scans = 64;
    c->retention_days = 30;
    c->sample_interval = 10;
    c->stats_queue = 1024;
    c->stats_retry = 4096;
    c->stats_sync_ms = 1000;
    c->stats_wal_bytes = 4L << 20;
    strcpy(c->log_level, "info");
}

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0) return &keys[i];
    return NULL;
}

static int set_key(struct config *c, const struct key *k, const char *value, char *err,
                   size_t errlen)
{
    char *base = (char *)c + k->off;
    if (k->kind == K_STR) {
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "%s: value too long (max %zu bytes)", k->name, k->size - 1);
            return CONFIG_ERR;
        }
        memcpy(base, value, strlen(value) + 1);
        return CONFIG_OK;
    }
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    while (end && (*end == ' ' || *end == '\t'))
        end++;
    if (errno || end == value || *end) {
        snprintf(err, errlen, "%s: '%s' is not an integer", k->name, value);
        return CONFIG_ERR;
    }
    if (v < k->min || v > k->max) {
        snprintf(err, errlen, "%s: %lld is out of range [%ld, %ld]", k->name, v, k->min, k->max);
        return CONFIG_ERR;
    }
    if (k->kind == K_INT)
        *(int *)base = (int)v;
    else
        *(long *)base = (long)v;
    return CONFIG_OK;
}

int config_set(struct config *c, const char *key, const char *value, char *err, size_t errlen)
{
    const struct key *k = find_key(key);
    if (!k) {
        snprintf(err, errlen, "unknown key '%s'", key);
        return CONFIG_ERR;
    }
    return set_key(c, k, value, err, errlen);
}

struct ini_ctx {
    struct config *c;
    char *err;
    size_t errlen;
    int failed;
    const char *path;
};

static int on_ini_line(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *x = user;
    if (x->failed) return 0;
    const struct key *k = find_key(name);
    char msg[512];
    if (!k || strcmp(k->section, section) != 0) {
        snprintf(x->err, x->errlen, "%s: unknown key '%s' in section [%s]", x->path, name, section);
        x->failed = 1;
        return 0;
    }
    if (set_key(x->c, k, value, msg, sizeof msg) != CONFIG_OK) {
        snprintf(x->err, x->errlen, "%s: [%s] %s", x->path, section, msg);
        x->failed = 1;
        return 0;
    }
    return 1;
}

int config_load_file(struct config *c, const char *path, int required, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        if (!required && errno == ENOENT) return CONFIG_OK;
        snprintf(err, errlen, "config %s: %s", path, strerror(errno));
        return CONFIG_ERR;
    }
    struct ini_ctx x = {c, err, errlen, 0, path};
    int rc = ini_parse_file(fp, on_ini_line, &x);
    fclose(fp);
    if (x.failed) return CONFIG_ERR;
    if (rc != 0) {
        snprintf(err, errlen, "%s: line %d: syntax error", path, rc);
        return CONFIG_ERR;
    }
    snprintf(c->config_path, sizeof c->config_path, "%s", path);
    return CONFIG_OK;
}

int config_apply_env(struct config *c, char *const *envp, char *err, size_t errlen)
{
    for (; envp && *envp; envp++) {
        const char *e = *envp;
        if (strncmp(e, "TERND_", 6) != 0) continue;
        const char *eq = strchr(e, '=');
        if (!eq) continue;
        char name[64];
        size_t n = (size_t)(eq - e - 6);
        if (n == 0 || n >= sizeof name) continue;
        for (size_t i = 0; i < n; i++) {
            char ch = e[6 + i];
            name[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
        }
        name[n] = 0;
        if (strcmp(name, "config") == 0) continue;
        const struct key *k = find_key(name);
        if (!k) {
            snprintf(err, errlen, "environment TERND_%.*s: unknown key", (int)n, e + 6);
            return CONFIG_ERR;
        }
        char msg[512];
        if (set_key(c, k, eq + 1, msg, sizeof msg) != CONFIG_OK) {
            snprintf(err, errlen, "environment TERND_%.*s: %s", (int)n, e + 6, msg);
            return CONFIG_ERR;
        }
    }
    return CONFIG_OK;
}

/* One list entry, "ADDR" or "ADDR/BITS", into 16 bytes (IPv4 as IPv4-mapped IPv6) and a prefix
 * length over them. Returns 0, or -1 when it is not one. */
static int parse_cidr(const char *s, size_t n, unsigned char a[16], int *bits)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *slash = strchr(buf, '/');
    if (slash) *slash = 0;
    int v4 = 0;
    struct in_addr a4;
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(a, mapped, 12);
        memcpy(a + 12, &a4, 4);
        v4 = 1;
    } else if (inet_pton(AF_INET6, buf, a) != 1) {
        return -1;
    }
    *bits = 128;
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || b < 0 || b > (v4 ? 32 : 128)) return -1;
        *bits = (int)b + (v4 ? 96 : 0);
    }
    return 0;
}

int config_list_each(const char *list, int (*fn)(const char *s, size_t n, void *arg), void *arg)
{
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        int rc = t > p ? fn(p, (size_t)(t - p), arg) : 0;
        if (rc) return rc;
        p = e;
    }
    return 0;
}

static int entry_matches(const char *s, size_t n, void *arg)
{
    const unsigned char *addr = arg;
    unsigned char net[16];
    int bits;
    if (parse_cidr(s, n, net, &bits) != 0) return 0;
    for (int i = 0; i < 16 && bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((addr[i] & mask) != (net[i] & mask)) return 0;
    }
    return 1;
}

int config_addr_listed(const char *list, const char *addr)
{
    unsigned char a[16];
    int bits;
    if (parse_cidr(addr, strlen(addr), a, &bits) != 0 || bits != 128) return 0;
    return config_list_each(list, entry_matches, a);
}

struct bad_entry {
    char *err;
    size_t errlen;
};

static int entry_invalid(const char *s, size_t n, void *arg)
{
    unsigned char a[16];
    int bits;
    if (parse_cidr(s, n, a, &bits) == 0) return 0;
    struct bad_entry *b = arg;
    snprintf(b->err, b->errlen, "trusted_proxies: '%.*s' is not an IP address or CIDR block",
             (int)n, s);
    return 1;
}

int config_validate(const struct config *c, char *err, size_t errlen)
{
    struct bad_entry bad = {err, errlen};
    if (config_list_each(c->trusted_proxies, entry_invalid, &bad)) return CONFIG_ERR;
    if (strcmp(c->engine, "model") != 0 && strcmp(c->engine, "echo") != 0) {
        snprintf(err, errlen, "engine: '%s' is not one of model, echo", c->engine);
        return CONFIG_ERR;
    }
    if (!c->bind[0]) {
        snprintf(err, errlen, "bind: empty address");
        return CONFIG_ERR;
    }
    if (c->default_max_tokens > c->max_tokens) {
        snprintf(err, errlen, "default_max_tokens: %d exceeds max_tokens %d", c->default_max_tokens,
                 c->max_tokens);
        return CONFIG_ERR;
    }
    if (c->max_image_bytes > c->max_body_bytes) {
        snprintf(err, errlen, "max_image_bytes: %ld exceeds max_body_bytes %ld", c->max_image_bytes,
                 c->max_body_bytes);
        return CONFIG_ERR;
    }
    if (c->max_prompt_tokens >= c->ctx_size) {
        snprintf(err, errlen, "max_prompt_tokens: %d must be below ctx_size %d",
                 c->max_prompt_tokens, c->ctx_size);
        return CONFIG_ERR;
    }
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        snprintf(err, errlen, "tls_cert and tls_key: set both or neither");
        return CONFIG_ERR;
    }
    if (log_level_parse(c->log_level) < 0) {
        snprintf(err, errlen, "log_level: '%s' is not one of error, warn, info, debug",
                 c->log_level);
        return CONFIG_ERR;
    }
    return CONFIG_OK;
}

void config_resolve_path(const struct config *c, const char *path, char *out, size_t outlen)
{
    if (!path[0] || path[0] == '/' || access(path, F_OK) == 0 || !c->data_dir[0])
        snprintf(out, outlen, "%s", path);
    else
        snprintf(out, outlen, "%s/%s", c->data_dir, path);
}

void config_print_help(const char *prog)
{
    printf(
        "usage: %s [options]\n\n"
        "Serves a ternary vision-language model over HTTP (native, Ollama and OpenAI APIs).\n\n"
        "  --config PATH     config file (default %s; env TERND_CONFIG)\n"
        "  --help            this text\n"
        "  --version         print the version\n\n"
        "Every config key is also a flag (--key VALUE or --key=VALUE; '-' or '_' alike)\n"
        "and an environment variable TERND_<KEY>. Precedence: flags > env > file > defaults.\n\n",
        prog, CONFIG_DEFAULT_PATH);
    struct config d;
    config_defaults(&d);
    const char *sec = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (strcmp(sec, k->section) != 0) printf("[%s]\n", sec = k->section);
        char def[CONFIG_STR + 2];
        const char *base = (const char *)&d + k->off;
        if (k->kind == K_STR)
            snprintf(def, sizeof def, "%s", base);
        else if (k->kind == K_INT)
            snprintf(def, sizeof def, "%d", *(const int *)base);
        else
            snprintf(def, sizeof def, "%ld", *(const long *)base);
        char flag[64];
        size_t n = 0;
        for (; k->name[n] && n + 1 < sizeof flag; n++)
            flag[n] = k->name[n] == '_' ? '-' : k->name[n];
        flag[n] = 0;
        printf("  --%-20s %s (default: %s)\n", flag, k->help, def[0] ? def : "\"\"");
    }
}

/* Flag name to key name: strip "--", '-' -> '_'. */
static void flag_to_key(const char *flag, size_t n, char *out, size_t outlen)
{
    size_t i = 0;
    for (; i < n && i + 1 < outlen; i++)
        out[i] = flag[i] == '-' ? '_' : flag[i];
    out[i] = 0;
}

/* The config file to read: --config PATH or --config=PATH, else TERND_CONFIG, else the
 * default (whose absence is no error). Also answers --help and --version (CONFIG_EXIT). */
static int find_config_file(int argc, char **argv, char *const *envp, const char **path,
                            int *required, char *err, size_t errlen)
{
    *path = CONFIG_DEFAULT_PATH;
    *required = 0;
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, "TERND_CONFIG=", 13) == 0) *path = *e + 13, *required = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            config_print_help(argv[0]);
            return CONFIG_EXIT;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("ternd %s\n", TERN_VERSION);
            return CONFIG_EXIT;
        }
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--config: missing value");
                return CONFIG_ERR;
            }
            *path = argv[++i], *required = 1;
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            *path = argv[i] + 9, *required = 1;
        }
    }
    return CONFIG_OK;
}

/* The flag at argv[*i], --key VALUE or --key=VALUE (*i then moves past its value). --config
 * is skipped: find_config_file has read it. */
static int apply_flag(struct config *c, int argc, char **argv, int *i, char *err, size_t errlen)
{
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) != 0) {
        snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
        return CONFIG_ERR;
    }
    a += 2;
    const char *eq = strchr(a, '=');
    char name[64];
    flag_to_key(a, eq ? (size_t)(eq - a) : strlen(a), name, sizeof name);
    if (strcmp(name, "config") == 0) {
        if (!eq) ++*i;
        return CONFIG_OK;
    }
    if (!eq && *i + 1 >= argc) {
        snprintf(err, errlen, "--%s: missing value", a);
        return CONFIG_ERR;
    }
    const char *value = eq ? eq + 1 : argv[++*i];
    const struct key *k = find_key(name);
    if (!k) {
        snprintf(err, errlen, "unknown option --%s (see --help)", name);
        return CONFIG_ERR;
    }
    char msg[512];
    if (set_key(c, k, value, msg, sizeof msg) != CONFIG_OK) {
        snprintf(err, errlen, "--%s", msg);
        return CONFIG_ERR;
    }
    return CONFIG_OK;
}

int config_load(struct config *c, int argc, char **argv, char *const *envp, char *err,
                size_t errlen)
{
    config_defaults(c);
    const char *path;
    int required;
    int rc = find_config_file(argc, argv, envp, &path, &required, err, errlen);
    if (rc != CONFIG_OK) return rc;
    if (config_load_file(c, path, required, err, errlen) != CONFIG_OK) return CONFIG_ERR;
    if (config_apply_env(c, envp, err, errlen) != CONFIG_OK) return CONFIG_ERR;
    for (int i = 1; i < argc; i++)
        if (apply_flag(c, argc, argv, &i, err, errlen) != CONFIG_OK) return CONFIG_ERR;
    return config_validate(c, err, errlen);
}
