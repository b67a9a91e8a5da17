/* HTTP over libmicrohttpd: one thread per connection (so a streaming response can block
 * waiting for tokens), routing, bodies (JSON or multipart), limits, auth, replies. */
#ifndef TERN_SERVER_HTTP_H
#define TERN_SERVER_HTTP_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "server.h"

struct http;
struct http_req;

struct http *http_start(struct server *srv, char *err, size_t errlen);
void http_stop(struct http *h);
int http_port(const struct http *h); /* the bound port (useful with port 0) */
int http_tls(const struct http *h);  /* serving HTTPS */
/* SIGHUP: rereads tls_cert/tls_key; new connections get the new pair, open ones keep the old.
 * On error (err says which file) the old pair stays in use. No-op without TLS. */
int http_reload_tls(struct http *h, char *err, size_t errlen);
/* Generation requests accepted before the drain whose answer is not yet all sent, streamed or
 * whole (shutdown waits for them briefly). */
int http_active_generations(struct http *h);

/* For route handlers. */
struct server *http_server(struct http_req *r);
const char *http_query(struct http_req *r, const char *key);
/* A POST route's JSON body (not NUL-terminated; "" when empty). */
const char *http_body(struct http_req *r, size_t *len);
void http_reply_json(struct http_req *r, int status, cJSON *body); /* takes body */
void http_reply(struct http_req *r, int status, const char *content_type, const void *body,
                size_t len); /* copies body */
void http_reply_error(struct http_req *r, const struct api_error *e);

#endif
