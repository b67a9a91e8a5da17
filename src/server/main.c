/* ternd: load the config and the model, start the scheduler, stats writer and HTTP server,
 * then sleep in sigwait until a signal: SIGHUP reopens the log and reloads the TLS pair,
 * SIGTERM/SIGINT drain and exit, SIGUSR1/2 are logged and ignored. With a systemd watchdog the wait
 * wakes at half the interval to ping it (only while the engine thread is making progress). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "http.h"
#include "log.h"
#include "server.h"
#include "upload.h"

extern char **environ;

static void sample(void *ctx, struct stats_sample *out)
{
    struct server *srv = ctx;
    long peak;
    stats_rss(&out->rss_kb, &peak);
    sched_snapshot(srv->sched, &out->active_slots, &out->queued);
    out->tokens_total = metrics_get(srv->metrics, CNT_COMPLETION_TOKENS);
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

static void model_name_from_path(const char *path, char *out, size_t n)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t len = strlen(b);
    if (len >= n) len = n - 1;
    memcpy(out, b, len);
    out[len] = 0;
    char *dot = strstr(out, ".gguf");
    if (dot) *dot = 0;
}

/* Every thread inherits this mask; only main's sigwait receives these signals. */
static void block_signals(sigset_t *sigs)
{
    sigemptyset(sigs);
    sigaddset(sigs, SIGTERM);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGHUP);
    /* SIGUSR1/2 would kill the process without a drain: taken and logged instead. */
    sigaddset(sigs, SIGUSR1);
    sigaddset(sigs, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The model (or the echo test double) and what the APIs say about it. */
static int load_backend(const struct config *cfg, int threads, struct upload_decoder *decoder,
                        struct server *srv, char *err, size_t errlen)
{
    char model[CONFIG_STR + 16], mmproj[CONFIG_STR + 16], name[128];
    config_resolve_path(cfg, cfg->model, model, sizeof model);
    config_resolve_path(cfg, cfg->mmproj, mmproj, sizeof mmproj);
    int is_echo = strcmp(cfg->engine, "echo") == 0;
    if (cfg->model_name[0])
        snprintf(name, sizeof name, "%s", cfg->model_name);
    else if (is_echo)
        snprintf(name, sizeof name, "echo");
    else
        model_name_from_path(model, name, sizeof name);

    /* Named fields: the options grew one by one and a positional list would shift silently. */
    struct backend_options bo = {.model_path = model,
                                 .mmproj_path = mmproj,
                                 .model_name = name,
                                 .slots = cfg->slots,
                                 .ctx_size = cfg->ctx_size,
                                 .threads = threads,
                                 .prefill_chunk = cfg->prefill_chunk,
                                 .echo_delay_ms = cfg->echo_delay_ms,
                                 .image_cache_bytes = cfg->image_cache_bytes,
                                 .prefix_cache = cfg->prefix_cache,
                                 .vision_threads = cfg->vision_threads,
                                 .vision_nice = cfg->vision_nice,
                                 .echo_vision_ms = cfg->echo_vision_ms,
                                 .decoder = decoder};
    if (is_echo) log_warn("engine = echo: a test double that repeats the prompt, not a model");
    srv->backend =
        is_echo ? backend_echo_create(&bo, err, errlen) : backend_engine_create(&bo, err, errlen);
    if (!srv->backend) return -1;
    srv->backend->ops->info(srv->backend, &srv->info);
    if (!is_echo && srv->info.size_bytes == 0)
        srv->info.size_bytes = file_size(model) + file_size(mmproj);
    return 0;
}

/* API keys, metrics, the scheduler's engine thread and the stats writer. */
static int start_services(const struct config *cfg, struct server *srv, char *err, size_t errlen)
{
    srv->auth = auth_create(cfg->api_keys, cfg->api_key_file, err, errlen);
    srv->metrics = metrics_create();
    struct sched_options so = {cfg->slots, cfg->queue, cfg->prefill_chunk};
    if (!srv->auth || !srv->metrics ||
        !(srv->sched = sched_create(&so, srv->backend, srv->metrics, err, errlen))) {
        if (!srv->metrics) snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (cfg->db[0]) {
        struct stats_options sto = {
            cfg->db,          cfg->stats_queue,    cfg->sample_interval, cfg->retention_days,
            cfg->stats_retry, cfg->stats_wal_bytes};
        if (!(srv->stats = stats_open(&sto, sample, srv, err, errlen))) return -1;
    }
    return 0;
}

/* Sleeps until SIGTERM or SIGINT; SIGHUP reopens the log and reloads the TLS pair. With a systemd
 * watchdog it wakes at half the interval to ping it, but only while the engine thread is making
 * progress. */
static void wait_for_stop(const sigset_t *sigs, struct server *srv, struct http *http)
{
    uint64_t wd_usec = 0;
    int watchdog = sd_watchdog_enabled(0, &wd_usec) > 0;
    for (;;) {
        siginfo_t si;
        int sig;
        if (watchdog) {
            struct timespec ts = {(time_t)(wd_usec / 2000000),
                                  (long)((wd_usec / 2) % 1000000) * 1000};
            sig = sigtimedwait(sigs, &si, &ts);
            int busy;
            double hb = sched_heartbeat(srv->sched, &busy);
            if (!busy || job_now() - hb < (double)wd_usec / 1e6) sd_notify(0, "WATCHDOG=1");
        } else {
            sig = sigwaitinfo(sigs, &si);
        }
        if (sig < 0) continue;
        if (sig == SIGUSR1 || sig == SIGUSR2) {
            log_info("%s ignored (SIGTERM drains and stops, SIGHUP reopens the log)",
                     sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
            continue;
        }
        if (sig != SIGHUP) return;
        log_reopen();
        log_info("SIGHUP: log reopened");
        char err[512];
        if (http_reload_tls(http, err, sizeof err) != 0)
            log_error("SIGHUP: %s; still serving with the previous certificate", err);
        else if (http_tls(http))
            log_info("SIGHUP: certificate reloaded from %s (new connections use it)",
                     srv->cfg->tls_cert);
    }
}

/* Stop taking work, let running requests finish within the grace period, then tear down in
 * the reverse order of start-up. */
static void shut_down(const struct config *cfg, struct server *srv, struct http *http,
                      struct upload_decoder *decoder)
{
    log_info("shutting down: draining for up to %d s", cfg->drain_timeout);
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    /* Still listening: /ready says "draining" (503) so a load balancer sees it, and
     * generation endpoints answer 503 "unavailable". */
    __atomic_store_n(&srv->ready, 0, __ATOMIC_SEQ_CST); /* pairs with http.c's first_call */
    sched_drain(srv->sched, cfg->drain_timeout);
    /* Let the last final lines reach their clients before the sockets close. */
    for (int i = 0; i < 40 && http_active_generations(http) > 0; i++) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    http_stop(http);
    /* Every job has had its last unref by now (drained, connections closed), so every row is
     * queued; the stats writer samples the scheduler, so it stops before the scheduler goes. */
    stats_close(srv->stats);
    sched_destroy(srv->sched);
    srv->backend->ops->destroy(srv->backend);
    upload_decoder_destroy(decoder); /* every feed ended with its slot */
    auth_destroy(srv->auth);
    metrics_destroy(srv->metrics);
}

int main(int argc, char **argv)
{
    static struct config cfg;
    char err[512];
    int rc = config_load(&cfg, argc, argv, environ, err, sizeof err);
    if (rc == CONFIG_EXIT) return 0;
    if (rc != CONFIG_OK) {
        fprintf(stderr, "ternd: %s\n", err);
        return 2;
    }
    if (log_setup(log_level_parse(cfg.log_level), cfg.log_file) != 0)
        fprintf(stderr, "ternd: log_file %s: cannot open, logging to stderr\n", cfg.log_file);
    sigset_t sigs;
    block_signals(&sigs);

    int threads = cfg.threads > 0 ? cfg.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    struct server srv = {0};
    srv.cfg = &cfg;
    srv.started_wall = stats_wall_now();
    srv.limits =
        (struct api_limits){cfg.max_image_bytes, cfg.max_image_pixels,   cfg.max_images,
                            cfg.max_tokens,      cfg.default_max_tokens, cfg.decode_max_bytes};
    struct http *http = NULL;
    struct upload_decoder *decoder = upload_decoder_create(
        cfg.decode_concurrency, cfg.decode_max_bytes, cfg.jpeg_max_scans, err, sizeof err);
    if (!decoder || load_backend(&cfg, threads, decoder, &srv, err, sizeof err) != 0 ||
        start_services(&cfg, &srv, err, sizeof err) != 0 ||
        !(http = http_start(&srv, err, sizeof err))) {
        log_error("%s", err);
        return 1;
    }
    __atomic_store_n(&srv.ready, 1, __ATOMIC_RELEASE);
    log_info("ternd %s listening on %s://%s%s%s:%d (model %s, engine %s, kernels %s, %d slots, "
             "queue %d, %d threads%s%s)",
             TERN_VERSION, http_tls(http) ? "https" : "http", strchr(cfg.bind, ':') ? "[" : "",
             cfg.bind, strchr(cfg.bind, ':') ? "]" : "", http_port(http), srv.info.name, cfg.engine,
             eng_kernels_name(), cfg.slots, cfg.queue, threads,
             auth_enabled(srv.auth) ? ", API keys on" : "", cfg.db[0] ? ", stats on" : "");
    sd_notify(0, "READY=1\nSTATUS=serving");

    wait_for_stop(&sigs, &srv, http);
    shut_down(&cfg, &srv, http, decoder);
    log_info("stopped");
    log_close();
    return 0;
}
