/* tern: the command-line front end, git style: `tern COMMAND [options]`.
 * Each command is a row below and a cmd_NAME.c file; this file only finds
 * the command and handles help and the version. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_util.h"
#include "cli/commands.h"

#ifndef TERN_VERSION
#define TERN_VERSION "unknown"
#endif

typedef struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} tern_command;

static const tern_command commands[] = {
    {"inspect", "show a GGUF file's header, metadata, tensors and size by type", cmd_inspect},
    {"quantize", "re-type a GGUF file's weight matrices (ternary, binary, int8, float)",
     cmd_quantize},
    {"mkmodel", "write a random-weight model of a real architecture's shapes", cmd_mkmodel},
    {"bench", "measure kernel speed per type and shape (--kernels), or a model's", cmd_bench},
    {"convert", "Hugging Face Idefics3/SmolVLM checkpoint to a GGUF pair (text + mmproj)",
     cmd_convert},
    {"run", "answer one prompt (about one image), streaming the text", cmd_run},
    {"perplexity", "score a JSONL test set's answers: perplexity and exact match", cmd_perplexity},
    {"stats", "request statistics from ternd's database (count, latency, tokens/s)", cmd_stats},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: tern COMMAND [options]\n"
                 "       tern help COMMAND | tern COMMAND --help\n"
                 "       tern --version\n\n"
                 "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

static const tern_command *find(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

static int unknown(const char *name)
{
    fprintf(stderr, "tern: '%s' is not a tern command; 'tern help' lists them.\n", name);
    return CLI_USAGE;
}

static int run(const tern_command *c, int argc, char **argv)
{
    optind = 0; /* each command parses its own options from a fresh start */
    return c->run(argc, argv);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *arg = argv[1];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h") || (!strcmp(arg, "help") && argc == 2)) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(arg, "--version") || !strcmp(arg, "version")) {
        printf("tern %s\n", TERN_VERSION);
        return CLI_OK;
    }
    if (!strcmp(arg, "help")) {
        if (argc > 3) {
            fprintf(stderr, "tern help: one command at a time\n");
            return CLI_USAGE;
        }
        const tern_command *c = find(argv[2]);
        if (!c) return unknown(argv[2]);
        static char help_opt[] = "--help";
        char *help_argv[] = {argv[2], help_opt, NULL};
        return run(c, 2, help_argv);
    }
    if (arg[0] == '-') {
        fprintf(stderr, "tern: unknown option '%s'; 'tern --help' shows the usage.\n", arg);
        return CLI_USAGE;
    }
    const tern_command *c = find(arg);
    if (!c) return unknown(arg);
    return run(c, argc - 1, argv + 1);
}
