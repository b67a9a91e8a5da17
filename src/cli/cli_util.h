/* What every tern subcommand shares: option parsing with one style of
 * error message ("tern CMD: problem", then a pointer to --help), number
 * parsing with range checks, reading a whole file, and holding tensor data
 * until a GGUF file is written. */
#ifndef TERN_CLI_UTIL_H
#define TERN_CLI_UTIL_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include "engine/image.h"

#define CLI_OK 0
#define CLI_FAIL 1  /* the command ran and failed */
#define CLI_USAGE 2 /* bad command line */

/* Prints "tern CMD: MESSAGE" and "Try 'tern CMD --help'." to stderr;
 * returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "tern CMD: MESSAGE" to stderr; returns CLI_FAIL. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* getopt_long with tern's messages: returns the next option as getopt_long
 * does, -1 at the end (operands are then argv[optind..]), or '?' after
 * printing "unknown option" / "option needs a value" (the caller returns
 * CLI_USAGE). Option letters are permuted, so operands and options may
 * come in any order. tern.c sets optind = 0 before each command, which
 * makes getopt start over. */
int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts);

/* Parse a whole string as a number in [min, max]; on failure print
 * "tern CMD: OPT: 'S' is not ... " and return false. */
bool cli_parse_int(const char *cmd, const char *opt, const char *s, long long min, long long max,
                   long long *out);
bool cli_parse_float(const char *cmd, const char *opt, const char *s, double min, double max,
                     double *out);

/* Formats a message into the caller's err buffer (nothing if err is NULL
 * or errlen is 0). */
void cli_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads the whole file into a malloc'd buffer with a NUL after the last
 * byte (so text can be used as a string); sets *len (if len is not NULL)
 * to the byte count. Returns NULL with errno set (EIO on a read error) if
 * the file cannot be opened, read or held in memory. */
char *cli_read_file(const char *path, size_t *len);

/* Reads and decodes a JPEG or PNG file (at most 64 MiB and 100 Mpixels); errors name the file. */
int cli_load_image(const char *path, int min_edge, img_rgb *out, char *err, size_t errlen);

#endif
