/* API key checks. Every configured key is compared, in constant time, on every request, so the
 * response time does not reveal how much of a guess matched or which key it resembled. */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct auth {
    char **keys;
    int n;
};

int auth_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Walk the longer length; reads wrap inside each string so nothing is out of bounds. */
    size_t n = alen > blen ? alen : blen;
    unsigned diff = (unsigned)(alen ^ blen);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = alen ? (unsigned char)a[i % alen] : 0;
        unsigned char y = blen ? (unsigned char)b[i % blen] : 0;
        diff |= (unsigned)(x ^ y);
    }
    return diff == 0;
}

static int add_key(struct auth *a, const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    if (n == 0 || *s == '#') return 0;
    char **k = realloc(a->keys, (size_t)(a->n + 1) * sizeof *k);
    if (!k) return -1;
    a->keys = k;
    if (!(k[a->n] = strndup(s, n))) return -1;
    a->n++;
    return 0;
}

struct auth *auth_create(const char *keys_csv, const char *key_file, char *err, size_t errlen)
{
    struct auth *a = calloc(1, sizeof *a);
    if (!a) goto oom;
    for (const char *p = keys_csv ? keys_csv : ""; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (add_key(a, p, n) != 0) goto oom;
        p += n + (e ? 1 : 0);
    }
    if (key_file && *key_file) {
        FILE *fp = fopen(key_file, "r");
        if (!fp) {
            snprintf(err, errlen, "api_key_file %s: cannot open", key_file);
            auth_destroy(a);
            return NULL;
        }
        char line[1024];
        while (fgets(line, sizeof line, fp))
            if (add_key(a, line, strlen(line)) != 0) {
                fclose(fp);
                goto oom;
            }
        fclose(fp);
        if (a->n == 0) {
            snprintf(err, errlen, "api_key_file %s: no keys in file", key_file);
            auth_destroy(a);
            return NULL;
        }
    }
    return a;
oom:
    snprintf(err, errlen, "auth: out of memory");
    auth_destroy(a);
    return NULL;
}

void auth_destroy(struct auth *a)
{
    if (!a) return;
    for (int i = 0; i < a->n; i++)
        free(a->keys[i]);
    free(a->keys);
    free(a);
}

int auth_enabled(const struct auth *a)
{
    return a && a->n > 0;
}

int auth_check(const struct auth *a, const char *authorization, const char *x_api_key)
{
    if (!auth_enabled(a)) return 1;
    const char *given = NULL;
    if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
        given = authorization + 7;
        while (*given == ' ')
            given++;
    } else if (x_api_key) {
        given = x_api_key;
    }
    if (!given) return 0;
    size_t glen = strlen(given);
    int ok = 0;
    for (int i = 0; i < a->n; i++)
        ok |= auth_equal(given, glen, a->keys[i], strlen(a->keys[i]));
    return ok;
}
