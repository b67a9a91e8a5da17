/* Hugging Face safetensors files, memory-mapped read-only.
 *
 * A file is an 8-byte little-endian header length, a JSON header naming
 * each tensor's dtype, shape and byte range, then the raw data. A model
 * directory holds model.safetensors or shards listed in
 * model.safetensors.index.json; st_open_dir handles both. Every header
 * field and byte range is checked before use. */
#ifndef TERN_CLI_SAFETENSORS_H
#define TERN_CLI_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 4

typedef enum { ST_F32, ST_F16, ST_BF16, ST_OTHER } st_dtype;

typedef struct {
    const char *name;
    const char *file; /* path of the shard it lives in */
    st_dtype dtype;
    const char *dtype_name; /* as written in the header: "F32", "I64", ... */
    int n_dims;
    int64_t shape[ST_MAX_DIMS]; /* torch order: shape[0] is the outermost */
    int64_t numel;
    const void *data; /* into the mapping; unaligned */
    size_t nbytes;
} st_tensor;

typedef struct st_set st_set;

int st_open_file(const char *path, st_set **out, char *err, size_t errlen);
int st_open_dir(const char *dir, st_set **out, char *err, size_t errlen);
void st_close(st_set *s);

int st_count(const st_set *s);
const st_tensor *st_at(const st_set *s, int i);
const st_tensor *st_find(const st_set *s, const char *name); /* or NULL */

/* Converts a F32/F16/BF16 tensor to floats (numel of them). */
int st_to_f32(const st_tensor *t, float *dst, char *err, size_t errlen);

#endif
