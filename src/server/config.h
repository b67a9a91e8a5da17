/* ternd configuration: defaults < /etc/ternd/ternd.conf < TERND_<KEY> environment < flags.
 * Every key lives in one table in config.c; config/ternd.conf documents each one. */
#ifndef TERN_SERVER_CONFIG_H
#define TERN_SERVER_CONFIG_H

#include <stddef.h>

#ifdef TERN_CONFIG_PATH
#define CONFIG_DEFAULT_PATH TERN_CONFIG_PATH /* from meson: sysconfdir/ternd/ternd.conf */
#else
#define CONFIG_DEFAULT_PATH "/etc/ternd/ternd.conf"
#endif
#define CONFIG_STR 512

struct config {
    /* [server] */
    char bind[CONFIG_STR];
    int port;
    int max_connections;
    int connection_timeout;           /* seconds a connection may sit idle or trickle */
    int header_timeout;               /* seconds for the request line and headers */
    int body_timeout;                 /* seconds for the request body */
    int max_connections_per_client;   /* per address; 0 = no limit */
    int rate_limit;                   /* requests per second per address; 0 = no limit */
    char allowed_hosts[CONFIG_STR];   /* Host names besides loopback names and IP literals */
    char cors_origins[CONFIG_STR];    /* CORS allow-list; "*" = any */
    char trusted_proxies[CONFIG_STR]; /* addresses/CIDRs whose X-Forwarded-For is believed */
    char tls_cert[CONFIG_STR];        /* HTTPS when both are set */
    char tls_key[CONFIG_STR];
    char api_keys[CONFIG_STR]; /* comma-separated; empty = no auth */
    char api_key_file[CONFIG_STR];
    /* [model] */
    char engine[32]; /* "model" (the real engine) or "echo" (test double) */
    char model[CONFIG_STR];
    char mmproj[CONFIG_STR];
    char model_name[128];      /* name shown by the APIs; "" = from the file name */
    char data_dir[CONFIG_STR]; /* relative model paths resolve against it */
    int threads;               /* 0 = one per core */
    int ctx_size;              /* tokens of KV cache per slot */
    int echo_delay_ms;         /* echo engine only: sleep per step */
    int echo_vision_ms;        /* echo engine only: a request with images admits this late */
    int vision_threads;        /* the vision encoder's pool; 0 = one per core */
    int vision_nice;           /* its threads' nice value */
    /* [scheduler] */
    int slots;
    int queue;
    int prefill_chunk;      /* prompt tokens prefilled per step per slot */
    int request_timeout;    /* seconds from arrival to done */
    int drain_timeout;      /* seconds SIGTERM waits for running work */
    long image_cache_bytes; /* picture embeddings kept (LRU); 0 = off */
    int prefix_cache;       /* reuse a released slot's KV for a shared prompt prefix */
    /* [limits] */
    long max_body_bytes;
    long max_header_bytes;
    long max_image_bytes;
    long max_image_pixels;
    int max_images;
    int max_prompt_tokens;
    int max_tokens; /* cap on a request's max_tokens */
    int default_max_tokens;
    int decode_concurrency; /* pictures decoded at once (after admission) */
    long decode_max_bytes;  /* decoded pixel bytes held at once */
    int jpeg_max_scans;     /* scans of one JPEG; more is refused */
    /* [stats] */
    char db[CONFIG_STR]; /* "" disables stats */
    int retention_days;
    int sample_interval;  /* seconds between samples rows */
    int stats_queue;      /* records buffered before dropping */
    int stats_retry;      /* rows that failed to write, kept and retried */
    int stats_sync_ms;    /* a finished request waits this long for its row before its last line */
    long stats_wal_bytes; /* WAL size limit */
    /* [log] */
    char log_level[16];
    char log_file[CONFIG_STR];

    char config_path[CONFIG_STR]; /* which file was read ("" = none) */
};

enum { CONFIG_OK = 0, CONFIG_ERR = -1, CONFIG_EXIT = 1 /* --help / --version printed */ };

void config_defaults(struct config *c);
/* A missing file is an error only when required (an explicit --config). */
int config_load_file(struct config *c, const char *path, int required, char *err, size_t errlen);
/* envp: NULL-terminated "KEY=value" list (environ in main, a fixture in tests). */
int config_apply_env(struct config *c, char *const *envp, char *err, size_t errlen);
/* Full startup sequence: defaults, file (--config, TERND_CONFIG or the default path),
 * environment, flags; then validation. Returns CONFIG_OK, CONFIG_ERR or CONFIG_EXIT. */
int config_load(struct config *c, int argc, char **argv, char *const *envp, char *err,
                size_t errlen);
/* Set one key from its string value, validating it. */
int config_set(struct config *c, const char *key, const char *value, char *err, size_t errlen);
int config_validate(const struct config *c, char *err, size_t errlen);
/* Resolve a possibly relative model path against data_dir into out. */
void config_resolve_path(const struct config *c, const char *path, char *out, size_t outlen);
void config_print_help(const char *prog);
/* 1 when addr (an IPv4 or IPv6 literal; an IPv4-mapped IPv6 one counts as IPv4) is one of the
 * comma-separated addresses or CIDR blocks in list (trusted_proxies), else 0. */
int config_addr_listed(const char *list, const char *addr);
/* Name of the i-th key, NULL past the last (for documentation checks). */
const char *config_key_at(int i);

/* Calls fn on each entry of a comma-separated list (spaces around entries ignored, empty
 * entries skipped) until it returns nonzero; returns that value, or 0. */
int config_list_each(const char *list, int (*fn)(const char *s, size_t n, void *arg), void *arg);

#endif
