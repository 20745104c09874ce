/*
 * callmix - ten functions called in an irregular but fixed pattern, for
 * tracepoint tests: the guest's own counters calls[i] say how many times
 * f<i> really ran.
 *
 * Each of N rounds draws a number from an LCG and calls one function:
 * f0 often, f9 rarely.  Some calls nest: f7 calls f8, and f3 calls f4
 * twice.  At exit prints "f0 calls=N" ... "f9 calls=N", one per line,
 * and exits 0.
 *
 * Arguments: [N] (default 1000).
 */
#include "runtime.h"

#define NFUNCS 10

volatile unsigned long calls[NFUNCS];
unsigned int lcg_state = 2024;

NOINLINE void f0(void) { calls[0]++; }
NOINLINE void f1(void) { calls[1]++; }
NOINLINE void f2(void) { calls[2]++; }
NOINLINE void f4(void) { calls[4]++; }
NOINLINE void f3(void) { calls[3]++; f4(); f4(); }
NOINLINE void f5(void) { calls[5]++; }
NOINLINE void f6(void) { calls[6]++; }
NOINLINE void f8(void) { calls[8]++; }
NOINLINE void f7(void) { calls[7]++; f8(); }
NOINLINE void f9(void) { calls[9]++; }

/* Numerical Recipes' LCG; the top bits are the random ones. */
NOINLINE unsigned int next_random(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state >> 24;  /* 0..255 */
}

/* One round: pick a function with a skewed distribution and call it. */
NOINLINE void play_round(void)
{
    unsigned int r = next_random();

    if (r < 80)        /* 80/256 */
        f0();
    else if (r < 130)  /* 50/256 */
        f1();
    else if (r < 160)
        f2();
    else if (r < 180)
        f3();
    else if (r < 200)
        f4();
    else if (r < 220)
        f5();
    else if (r < 235)
        f6();
    else if (r < 245)
        f7();
    else if (r < 252)
        f8();
    else               /* 4/256 */
        f9();
}

int main(int argc, char **argv)
{
    long n = arg_int(argc, argv, 1, 1000);

    for (long i = 0; i < n; i++)
        play_round();
    for (int i = 0; i < NFUNCS; i++)
        printf("f%d calls=%lu\n", i, calls[i]);
    return 0;
}
