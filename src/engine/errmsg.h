/* How the engine's modules fill a caller's (err, errlen) message buffer.
 * Internal to the engine, not a public header; header-only so that the
 * fuzz targets, which compile single engine files, need nothing more. */
#ifndef TERN_ENGINE_ERRMSG_H
#define TERN_ENGINE_ERRMSG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Formats the message into err (nothing if err is NULL or errlen is 0).
 * Returns -1 (ENG_ERR), so a failing function can return it. */
__attribute__((format(printf, 3, 4))) static inline int eng_seterr(char *err, size_t errlen,
                                                                   const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

#endif
