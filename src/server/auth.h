/* Optional API keys. A request passes with "Authorization: Bearer KEY" or "X-Api-Key: KEY". */
#ifndef TERN_SERVER_AUTH_H
#define TERN_SERVER_AUTH_H

#include <stddef.h>

struct auth;

/* keys_csv: comma-separated keys (may be empty); key_file: one key per line, '#' comments,
 * (may be NULL/""). Returns NULL with err filled when the file cannot be read. */
struct auth *auth_create(const char *keys_csv, const char *key_file, char *err, size_t errlen);
void auth_destroy(struct auth *a);
int auth_enabled(const struct auth *a);
/* 1 when the request may pass. Either header may be NULL. */
int auth_check(const struct auth *a, const char *authorization, const char *x_api_key);
/* Constant-time equality of two byte strings: time depends only on the lengths. */
int auth_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
