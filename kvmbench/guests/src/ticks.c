/*
 * ticks - timer interrupts while the guest works, for stepping with
 * interrupts pending and for breakpoints inside an interrupt handler.
 *
 * Handles TIMER_VECTOR, starts a 1000 us periodic timer, enables
 * interrupts and calls work() until N ticks arrived.
 *
 * Arguments: [N] (default 20).  Prints "ticks = T work = M" (T is N, or
 * N + 1 if one more tick slips in before irq_disable); exits 0.
 */
#include "runtime.h"

volatile unsigned long ticks;
volatile unsigned long work_done;

NOINLINE void tick_handler(struct trap_frame *frame)
{
    (void)frame;
    ticks++;
}

NOINLINE void work(void)
{
    work_done++;
}

int main(int argc, char **argv)
{
    unsigned long target = arg_int(argc, argv, 1, 20);

    set_trap_handler(TIMER_VECTOR, tick_handler);
    timer_start(1000);
    irq_enable();
    while (ticks < target)
        work();
    irq_disable();
    timer_stop();
    printf("ticks = %lu work = %lu\n", ticks, work_done);
    return 0;
}
