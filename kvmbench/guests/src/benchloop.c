/*
 * benchloop - the guest code of `kvmbench bench`: one mechanism hit per
 * loop iteration and as little else as possible.
 *
 * Arguments: MODE N
 *   call   call bench_target() N times (a breakpoint on it is the hit;
 *          it begins with push %rbp, as -O0 functions do)
 *   write  store the loop index to bench_var N times (a watchpoint)
 * Exits 0; EXIT_USAGE for an unknown mode.
 */
#include "runtime.h"

/* Alone in its page: a page-granular watchpoint sees only these stores. */
volatile unsigned long bench_var OWN_PAGE("bench_var");

NOINLINE void bench_target(void)
{
}

NOINLINE void bench_call(unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        bench_target();
}

NOINLINE void bench_write(unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        bench_var = i;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    unsigned long n = arg_int(argc, argv, 2, 1000);

    if (str_eq(mode, "call")) {
        bench_call(n);
    } else if (str_eq(mode, "write")) {
        bench_write(n);
    } else {
        printf("usage: benchloop call|write N\n");
        return EXIT_USAGE;
    }
    return 0;
}
