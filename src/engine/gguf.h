/* GGUF v3 model files: a validating, memory-mapped reader and a writer.
 *
 * The reader maps the file read-only, checks every length, offset, type and
 * shape before anything is used, and hands out zero-copy tensor views.
 * All returned pointers live until gguf_close(). Errors are returned as
 * GGUF_ERR with a message naming the file and the problem. */
#ifndef TERN_ENGINE_GGUF_H
#define TERN_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/blocks.h"

#define GGUF_OK 0
#define GGUF_ERR (-1)
#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef enum {
    GGUF_UINT8 = 0,
    GGUF_INT8 = 1,
    GGUF_UINT16 = 2,
    GGUF_INT16 = 3,
    GGUF_UINT32 = 4,
    GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_UINT64 = 10,
    GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
} gguf_vtype;

typedef struct {
    const char *name; /* NUL-terminated copy */
    kt_type type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length (innermost); unused dims are 1 */
    uint64_t offset;           /* from the start of the data section */
    size_t nbytes;
    const void *data; /* into the mapping */
} gguf_tensor;

/* ---- reading ---- */

typedef struct gguf_file gguf_file;

int gguf_open(const char *path, gguf_file **out, char *err, size_t errlen);
/* Same checks on a buffer the caller keeps alive (used by the fuzzer);
 * name is what error messages call it. */
int gguf_open_memory(const void *buf, size_t len, const char *name, gguf_file **out, char *err,
                     size_t errlen);
void gguf_close(gguf_file *f);

const char *gguf_path(const gguf_file *f);
uint32_t gguf_version(const gguf_file *f);
size_t gguf_alignment(const gguf_file *f);
size_t gguf_file_size(const gguf_file *f);

int gguf_n_kv(const gguf_file *f);
int gguf_find_key(const gguf_file *f, const char *key); /* index or -1 */
const char *gguf_key(const gguf_file *f, int i);        /* NULL if i is out of range */
gguf_vtype gguf_kv_type(const gguf_file *f, int i);     /* GGUF_ARRAY if out of range */

/* Scalar getters convert between integer widths when the value fits and
 * return false (leaving *out alone) when the key is absent or of another
 * kind. They are what model loading uses for hyperparameters. */
bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f64(const gguf_file *f, const char *key, double *out); /* any number */
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
const char *gguf_get_str(const gguf_file *f, const char *key); /* NUL-terminated, or NULL */

/* Raw access by index (an index out of range gives NULL or 0). For a
 * scalar, gguf_kv_data points at the value (little-endian, as in the file;
 * may be unaligned: memcpy it). Strings use gguf_kv_str. */
const void *gguf_kv_data(const gguf_file *f, int i);
const char *gguf_kv_str(const gguf_file *f, int i, size_t *len);

/* Arrays: element type and count; numeric elements are contiguous at
 * gguf_arr_data (unaligned); string elements via gguf_arr_str. For a key
 * that is not an array, gguf_arr_type is its own type and the length 0.
 * Arrays of arrays are refused when the file is opened. */
gguf_vtype gguf_arr_type(const gguf_file *f, int i);
uint64_t gguf_arr_len(const gguf_file *f, int i);
const void *gguf_arr_data(const gguf_file *f, int i);
const char *gguf_arr_str(const gguf_file *f, int i, uint64_t j, size_t *len);

int gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* or NULL */

/* The reader's view of tensor types (kept apart from types.c so the reader
 * stands alone): lower-case name ("tq2_0") or NULL if unknown, and the
 * bytes of a tensor of that shape, or 0 if the type is unknown or the
 * shape invalid (a dimension <= 0, a row not a multiple of the block). */
const char *gguf_type_name(kt_type t);
size_t gguf_tensor_bytes(kt_type t, int n_dims, const int64_t *ne);

/* ---- writing ---- */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_create(void);
void gguf_writer_destroy(gguf_writer *w);

/* Setting a key that exists replaces it. Strings and arrays are copied.
 * A setter that fails (bad key, out of memory) makes gguf_write fail with
 * its message. general.alignment, if set, must be a uint32 power of two. */
void gguf_set_u8(gguf_writer *w, const char *key, uint8_t v);
void gguf_set_i8(gguf_writer *w, const char *key, int8_t v);
void gguf_set_u16(gguf_writer *w, const char *key, uint16_t v);
void gguf_set_i16(gguf_writer *w, const char *key, int16_t v);
void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_set_i64(gguf_writer *w, const char *key, int64_t v);
void gguf_set_f32(gguf_writer *w, const char *key, float v);
void gguf_set_f64(gguf_writer *w, const char *key, double v);
void gguf_set_bool(gguf_writer *w, const char *key, bool v);
void gguf_set_str(gguf_writer *w, const char *key, const char *v);
/* Numeric (or bool) array of n elements of type et, packed little-endian. */
void gguf_set_arr(gguf_writer *w, const char *key, gguf_vtype et, const void *data, uint64_t n);
void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* Copy key i of an open file, whatever its type. */
void gguf_set_from(gguf_writer *w, const gguf_file *f, int i);

/* A buffer of bytes (at least 1) that the writer owns and frees in gguf_writer_destroy: for
 * tensor data made only to be written. NULL if out of memory. */
void *gguf_writer_alloc(gguf_writer *w, size_t bytes);

/* Tensor data is referenced, not copied: keep it alive until the write.
 * Tensors are laid out in the order added, each aligned. Names are 1 to 63
 * bytes (ggml's limit). */
int gguf_add_tensor(gguf_writer *w, const char *name, kt_type type, int n_dims, const int64_t *ne,
                    const void *data, char *err, size_t errlen);

/* Writes to path.tmp, then renames: a failed write never leaves a half file. */
int gguf_write(gguf_writer *w, const char *path, char *err, size_t errlen);

#endif
