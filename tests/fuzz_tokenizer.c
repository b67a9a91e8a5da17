/* libFuzzer target: any bytes encode, decode back to the same bytes, and
 * the streaming detokenizer only ever emits valid UTF-8. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"
#include "testtok.h"

static bool valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80                   ? 1
                     : (c >= 0xC2 && c <= 0xDF) ? 2
                     : (c & 0xF0) == 0xE0       ? 3
                     : (c >= 0xF0 && c <= 0xF4) ? 4
                                                : 0;
        if (!len || i + len > n) return false;
        uint32_t v = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            v = v << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 3 && (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF))) ||
            (len == 4 && (v < 0x10000 || v > 0x10FFFF)))
            return false;
        i += len;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tok *t;
    if (!t) t = tt_make();
    int n = tok_encode(t, (const char *)data, size, NULL, 0);
    if (n < 0) abort();
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (tok_encode(t, (const char *)data, size, ids, n) != n) abort();
    char *out = malloc(size + 1);
    if (tok_decode(t, ids, n, false, out, size + 1) != size || memcmp(out, data, size) != 0)
        abort();
    tok_stream *s = tok_stream_create(t);
    for (int i = 0; i <= n; i++) {
        size_t len;
        const char *p = i < n ? tok_stream_push(s, ids[i], &len) : tok_stream_flush(s, &len);
        if (!valid_utf8((const unsigned char *)p, len)) abort();
    }
    tok_stream_destroy(s);
    free(out);
    free(ids);
    return 0;
}
