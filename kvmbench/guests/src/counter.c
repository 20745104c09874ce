/*
 * counter - globals written in a known pattern, for watchpoint tests.
 *
 * Every loop iteration i (0 <= i < N):
 *   increment()                     counter += 1
 *   add_ten()        if i % 2 == 0  counter += 10
 *   double_counter() if i % 5 == 4  counter *= 2
 *   reset_counter()  if i % 25 == 20 counter = 0
 *   bump_a() once, bump_b() twice, ... bump_f() six times: each adds 1 to
 *     its own watch_X, so watch_X is written (1..6) * N times in all
 *   reader()                        reads read_me READS_PER_CALL times
 * and once, before the loop, writer_of_read_me() sets read_me = 42.
 *
 * Each of those functions stores to its variable exactly once per call.
 * counter, the watch_* group and read_me each have pages of their own;
 * the guest's own tallies (*_writes, read_me_reads) live elsewhere, so a
 * page-granular watchpoint sees only the stores listed above.
 *
 * For N = 100 that ends with counter = 48 after 174 writes.
 *
 * At exit it prints, one per line, "name value writes=N" (and reads=N for
 * read_me), then exits 0.
 *
 * Arguments: [N] (default 100).
 */
#include "runtime.h"

#define READS_PER_CALL 3

volatile unsigned long counter OWN_PAGE("counter");

volatile unsigned long watch_a OWN_PAGE("watch");
volatile unsigned long watch_b SAME_PAGE("watch");
volatile unsigned long watch_c SAME_PAGE("watch");
volatile unsigned long watch_d SAME_PAGE("watch");
volatile unsigned long watch_e SAME_PAGE("watch");
volatile unsigned long watch_f SAME_PAGE("watch");

volatile unsigned long read_me OWN_PAGE("read_me");

/* The guest's own tallies, in .bss, away from the watched pages. */
volatile unsigned long counter_writes;
volatile unsigned long watch_a_writes, watch_b_writes, watch_c_writes;
volatile unsigned long watch_d_writes, watch_e_writes, watch_f_writes;
volatile unsigned long read_me_writes;
volatile unsigned long read_me_reads;
volatile unsigned long read_sum;

NOINLINE void increment(void)
{
    counter = counter + 1;
    counter_writes++;
}

NOINLINE void add_ten(void)
{
    counter = counter + 10;
    counter_writes++;
}

NOINLINE void double_counter(void)
{
    counter = counter * 2;
    counter_writes++;
}

NOINLINE void reset_counter(void)
{
    counter = 0;
    counter_writes++;
}

NOINLINE void bump_a(void) { watch_a = watch_a + 1; watch_a_writes++; }
NOINLINE void bump_b(void) { watch_b = watch_b + 1; watch_b_writes++; }
NOINLINE void bump_c(void) { watch_c = watch_c + 1; watch_c_writes++; }
NOINLINE void bump_d(void) { watch_d = watch_d + 1; watch_d_writes++; }
NOINLINE void bump_e(void) { watch_e = watch_e + 1; watch_e_writes++; }
NOINLINE void bump_f(void) { watch_f = watch_f + 1; watch_f_writes++; }

NOINLINE void writer_of_read_me(void)
{
    read_me = 42;
    read_me_writes++;
}

/* Only reads read_me (never stores to it). */
NOINLINE void reader(void)
{
    for (int k = 0; k < READS_PER_CALL; k++) {
        read_sum += read_me;
        read_me_reads++;
    }
}

NOINLINE void iteration(long i)
{
    increment();
    if (i % 2 == 0)
        add_ten();
    if (i % 5 == 4)
        double_counter();
    if (i % 25 == 20)
        reset_counter();

    bump_a();
    for (int k = 0; k < 2; k++) bump_b();
    for (int k = 0; k < 3; k++) bump_c();
    for (int k = 0; k < 4; k++) bump_d();
    for (int k = 0; k < 5; k++) bump_e();
    for (int k = 0; k < 6; k++) bump_f();

    reader();
}

int main(int argc, char **argv)
{
    long n = arg_int(argc, argv, 1, 100);

    writer_of_read_me();
    for (long i = 0; i < n; i++)
        iteration(i);

    printf("counter %lu writes=%lu\n", counter, counter_writes);
    printf("watch_a %lu writes=%lu\n", watch_a, watch_a_writes);
    printf("watch_b %lu writes=%lu\n", watch_b, watch_b_writes);
    printf("watch_c %lu writes=%lu\n", watch_c, watch_c_writes);
    printf("watch_d %lu writes=%lu\n", watch_d, watch_d_writes);
    printf("watch_e %lu writes=%lu\n", watch_e, watch_e_writes);
    printf("watch_f %lu writes=%lu\n", watch_f, watch_f_writes);
    printf("read_me %lu writes=%lu reads=%lu\n", read_me, read_me_writes, read_me_reads);
    return 0;
}
