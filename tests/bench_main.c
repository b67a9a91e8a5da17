/* Runs `tern bench` on its own until the tern front end (src/cli/tern.c)
 * carries the command: bench_main --kernels [options]. */
int cmd_bench(int argc, char **argv);

int main(int argc, char **argv)
{
    return cmd_bench(argc, argv);
}
