/* Leveled logging to stderr (journald captures it) or to a file that SIGHUP reopens. */
#ifndef TERN_SERVER_LOG_H
#define TERN_SERVER_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* path NULL or "" logs to stderr. Returns 0, or -1 when the file cannot be opened
 * (logging then stays on stderr). */
int log_setup(int level, const char *path);
/* Reopen the log file (after logrotate moved it). No-op on stderr. */
int log_reopen(void);
void log_close(void);
int log_level_parse(const char *name); /* -1 when unknown */
/* Copies in to out (NUL-terminated, cut to fit) with control bytes, DEL, backslash, C1
 * controls and invalid UTF-8 written as \xNN: one printable line. Returns its length. */
size_t log_escape(const char *in, char *out, size_t outlen);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
