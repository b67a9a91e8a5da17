/* libFuzzer target for the GGUF reader: any bytes must either be refused
 * with a message or open into a file whose every accessor is safe to call.
 * Seeds: tests/data/fuzz-seeds/ (written by tests/mkgguf). */
#include <stdint.h>
#include <string.h>

#include "engine/gguf.h"

static volatile uint64_t sink; /* keeps the reads from being optimised away */

static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++)
        h = h * 31 + b[i];
    sink += h;
}

static void walk(const gguf_file *f)
{
    sink += gguf_version(f) + gguf_alignment(f) + gguf_file_size(f);
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const char *key = gguf_key(f, i);
        if (gguf_find_key(f, key) != i) __builtin_trap();
        uint64_t u;
        int64_t s;
        double d;
        bool b;
        sink += gguf_get_u64(f, key, &u) + gguf_get_i64(f, key, &s) + gguf_get_f64(f, key, &d) +
                gguf_get_bool(f, key, &b);
        const char *str = gguf_get_str(f, key);
        if (str) touch(str, strlen(str) + 1);
        size_t len;
        str = gguf_kv_str(f, i, &len);
        if (str) touch(str, len + 1);
        gguf_vtype t = gguf_kv_type(f, i);
        if (t != GGUF_STRING && t != GGUF_ARRAY) {
            static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
            touch(gguf_kv_data(f, i), sz[t]);
        }
        if (t == GGUF_ARRAY) {
            uint64_t n = gguf_arr_len(f, i);
            gguf_vtype et = gguf_arr_type(f, i);
            if (et == GGUF_STRING) {
                for (uint64_t j = 0; j < n; j++) {
                    str = gguf_arr_str(f, i, j, &len);
                    touch(str, len + 1);
                }
                if (gguf_arr_str(f, i, n, &len)) __builtin_trap();
            } else {
                static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
                touch(gguf_arr_data(f, i), (size_t)n * sz[et]);
            }
        }
    }
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (gguf_find_tensor(f, t->name) != t) __builtin_trap();
        if (gguf_tensor_bytes(t->type, t->n_dims, t->ne) != t->nbytes) __builtin_trap();
        touch(t->name, strlen(t->name) + 1);
        touch(t->data, t->nbytes);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    char err[256];
    if (gguf_open_memory(data, size, "fuzz", &f, err, sizeof err) == GGUF_OK) {
        walk(f);
        gguf_close(f);
    } else if (f || strncmp(err, "fuzz: ", 6)) {
        __builtin_trap();
    }
    return 0;
}
