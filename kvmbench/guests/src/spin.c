/*
 * spin - never ends and prints nothing: for pause, interrupt (the
 * notebook's stop button) and attaching to a running guest.
 */
#include "runtime.h"

volatile unsigned long spins OWN_PAGE("spins");

NOINLINE void spin_forever(void)
{
    for (;;)
        spins++;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    spin_forever();
    return 0;
}
