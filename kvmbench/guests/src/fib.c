/*
 * fib - textbook recursion, for breakpoint hit counts, backtraces and
 * `finish`.  fib(n) makes fib_calls(n) = 2 * fib(n + 1) - 1 calls to fib:
 * 21891 for the default n = 20.
 *
 * Arguments: [n] (default 20).
 */
#include "runtime.h"

NOINLINE long fib(long n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

int main(int argc, char **argv)
{
    long n = arg_int(argc, argv, 1, 20);
    long result = fib(n);

    printf("fib(%ld) = %ld\n", n, result);
    return 0;
}
