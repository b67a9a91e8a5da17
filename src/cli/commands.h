/* tern's subcommands. Each takes the arguments from its own name on
 * (argv[0] is the command name), prints its usage on --help, and returns
 * the exit status: 0 done, 1 failed, 2 bad usage. Adding a command is a row
 * in tern.c's table plus a cmd_NAME.c file. */
#ifndef TERN_CLI_COMMANDS_H
#define TERN_CLI_COMMANDS_H

int cmd_inspect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_stats(int argc, char **argv);

#endif
