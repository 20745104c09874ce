/*
 * int3guest - a guest with its own #BP handler, for trap ownership: a
 * debugger that did not plant these int3s must hand them back to the
 * guest (re-inject), and the count must come out right.
 *
 * #BP is a trap: the saved rip already points after the int3, so the
 * handler just returns.
 *
 * Arguments: [N] (default 10).  Prints "int3 count = N"; exits 0 if the
 * handler ran N times, else 1.
 */
#include "runtime.h"

#define BP_VECTOR 3

volatile unsigned long bp_count;

NOINLINE void bp_handler(struct trap_frame *frame)
{
    (void)frame;
    bp_count++;
}

NOINLINE void do_int3(void)
{
    __asm__ volatile(".globl int3_site\n"
                     "int3_site:\n\t"
                     "int3");
}

int main(int argc, char **argv)
{
    long n = arg_int(argc, argv, 1, 10);

    set_trap_handler(BP_VECTOR, bp_handler);
    for (long i = 0; i < n; i++)
        do_int3();
    printf("int3 count = %lu\n", bp_count);
    return bp_count == (unsigned long)n ? 0 : 1;
}
