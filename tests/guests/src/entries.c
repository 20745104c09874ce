/*
 * entries - function entries of the shapes gcc emits at -O2 and -Os
 * without frame pointers, frameless leaves, a hot loop and tail calls;
 * built as entries-O2.elf and entries-Os.elf.
 *
 * Case "entries" (default N 20): N rounds calling every function below.
 * Callers count the calls (calls_<fn>, before each call, so a function's
 * own entry stays as gcc shapes it); a tail call counts for its target
 * too.  The first instruction of each function, as gcc 12 emits it here,
 * is noted beside it; tests/test_corpus_build.py checks that together they
 * cover every shape the corpus promises.
 *
 * Case "frameless" (default N 3): calls frameless_walk through
 * call_with_decoy_rbp, which sets rbp to a fake frame whose "return
 * address" is decoy_target: a debugger that takes rbp for a frame pointer
 * in a frameless function finds decoy_target there, not the real caller
 * (the global label frameless_return_site).  hot_loop does the same
 * naturally: gcc keeps its running sum in rbp while hot_leaf runs.
 *
 * Ground truth: calls_<fn>; results_sum (checksummed).
 */
#include "corpus.h"

#define ENTRY __attribute__((noipa))

COUNTER_PAGE volatile u64 calls_leaf_lea;
COUNTERS volatile u64 calls_leaf_test;
COUNTERS volatile u64 calls_leaf_xor;
COUNTERS volatile u64 calls_leaf_count;
COUNTERS volatile u64 calls_store_if;
COUNTERS volatile u64 calls_load_first;
COUNTERS volatile u64 calls_local_array;
COUNTERS volatile u64 calls_keeps_rbx;
COUNTERS volatile u64 calls_keeps_many;
COUNTERS volatile u64 calls_tail_only;
COUNTERS volatile u64 calls_tail_after_add;
COUNTERS volatile u64 calls_tail_target;
COUNTERS volatile u64 calls_loop_first;
COUNTERS volatile u64 calls_hot_leaf;
COUNTERS volatile u64 calls_decoy_target;
COUNTERS volatile u64 calls_frameless_walk;
COUNTERS volatile u64 hot_iterations;

volatile u64 results_sum;
volatile long scratch[4];
volatile long table[16] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3};

/* -- leaves: no stack frame at all -------------------------------------- */

ENTRY long leaf_lea(long a, long b)          /* lea (%rdi,%rsi), %rax */
{
    return a + b;
}

ENTRY long leaf_test(long x)                 /* lea; test (-Os: mov $17) */
{
    if (x == 0)
        return 17;
    return x * 3;
}

ENTRY long leaf_xor(const volatile long *p, long n)   /* test %rsi, %rsi (-Os: xor) */
{
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += p[i];
    return sum;
}

ENTRY void store_if(volatile long *p, long v)   /* test %rdi, %rdi */
{
    if (p != NULL)
        *p = v;
}

ENTRY long leaf_count(u64 x)                /* xor %eax, %eax */
{
    long n = 0;
    while (x != 0) {
        n += x & 1;
        x >>= 1;
    }
    return n;
}

ENTRY long load_first(const volatile long *p)          /* mov (%rdi), %rax */
{
    return *p * 2 + p[1];
}

ENTRY long hot_leaf(long x)                  /* the hot loop's callee */
{
    return (x ^ (x >> 3)) + 1;
}

/* -- functions with a frame of some kind -------------------------------- */

ENTRY void fill(long *buf, long x)
{
    for (int i = 0; i < 4; i++)
        buf[i] = x + i;
}

ENTRY long local_array(long x)               /* sub $N, %rsp */
{
    long buf[4];

    fill(buf, x);
    return buf[0] + buf[3];
}

ENTRY long keeps_rbx(long x)                 /* push %rbx */
{
    long y = hot_leaf(x);
    return y + x;
}

ENTRY long keeps_many(long a, long b, long c)   /* push %r14 */
{
    long x = hot_leaf(a);
    long y = hot_leaf(b);
    long z = hot_leaf(c);
    return x * a + y * b + z * c;
}

ENTRY long tail_target(long x)
{
    return x * 7 + 1;
}

ENTRY long tail_only(long x)                 /* jmp tail_target */
{
    return tail_target(x);
}

ENTRY long tail_after_add(long x)            /* add $5, %rdi; jmp tail_target */
{
    return tail_target(x + 5);
}

ENTRY long loop_first(long n)                /* lea or xor */
{
    long sum = 0;
    while (n-- > 0)
        sum += n;
    return sum;
}

/* A loop whose body is one call: breakpoints in a hot loop.  At -O2 and
 * -Os gcc keeps a loop variable in rbp here: hot_leaf runs with rbp as
 * data. */
ENTRY long hot_loop(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++) {
        hot_iterations++;
        calls_hot_leaf++;
        sum += hot_leaf(i);
    }
    return sum;
}

/* -- frameless functions reached with rbp holding data ------------------ */

ENTRY long decoy_target(long x)
{
    return x + 1000;
}

/* Walks the table without a frame; its rbp is whatever the caller left. */
ENTRY long frameless_walk(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += table[i & 15] * (i + 1);
    return sum;
}

/* A fake frame: [rbp] = a saved rbp, [rbp + 8] = decoy_target. */
volatile u64 decoy_frame[2];

/* frameless_walk(n) with rbp = decoy_frame (rbp is callee-saved: put back).
 * The call returns to the global label frameless_return_site. */
NOINLINE long call_with_decoy_rbp(long n)
{
    long result;

    decoy_frame[0] = (u64)decoy_frame;
    decoy_frame[1] = (u64)decoy_target;
    __asm__ volatile(
        "push %%rbp\n\t"
        "lea decoy_frame(%%rip), %%rbp\n\t"
        "call frameless_walk\n\t"
        ".globl frameless_return_site\n"
        "frameless_return_site:\n\t"
        "pop %%rbp"
        : "=a"(result), "+D"(n)
        :
        : "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "memory", "cc");
    return result;
}

/* -- cases --------------------------------------------------------------- */

static void case_entries(long n)
{
    u64 sum = 0;

    for (long i = 0; i < n; i++) {
        calls_leaf_lea++;
        sum += leaf_lea(i, 2);
        calls_leaf_test++;
        sum += leaf_test(i & 1);
        calls_leaf_xor++;
        sum += leaf_xor(table, i & 15);
        calls_load_first++;
        sum += load_first(&table[i & 7]);
        calls_local_array++;
        sum += local_array(i);
        calls_keeps_rbx++;
        calls_hot_leaf++;
        sum += keeps_rbx(i);
        calls_keeps_many++;
        calls_hot_leaf += 3;
        sum += keeps_many(i, i + 1, i + 2);
        calls_tail_only++;
        calls_tail_target++;
        sum += tail_only(i);
        calls_tail_after_add++;
        calls_tail_target++;
        sum += tail_after_add(i);
        calls_leaf_count++;
        sum += leaf_count(i);
        calls_store_if++;
        store_if((i & 3) ? &scratch[i & 3] : NULL, i);
        sum += scratch[i & 3];
        calls_loop_first++;
        sum += loop_first(i & 7);
    }
    sum += hot_loop(n * 4);
    results_sum += sum;
}

static void case_frameless(long n)
{
    u64 sum = 0;

    for (long i = 0; i < n; i++) {
        calls_frameless_walk++;
        sum += call_with_decoy_rbp(8 + i);
        calls_decoy_target++;
        sum += decoy_target(i);
    }
    results_sum += sum;
}

const struct corpus_case corpus_cases[] = {
    {"entries", case_entries, 20},
    {"frameless", case_frameless, 3},
    {NULL, NULL, 0},
};

#define C(name) {#name, &name}
const struct corpus_counter corpus_counters[] = {
    C(calls_leaf_lea), C(calls_leaf_test), C(calls_leaf_xor), C(calls_leaf_count), C(calls_store_if), C(calls_load_first),
    C(calls_local_array), C(calls_keeps_rbx), C(calls_keeps_many), C(calls_tail_only),
    C(calls_tail_after_add), C(calls_tail_target), C(calls_loop_first), C(calls_hot_leaf),
    C(calls_decoy_target), C(calls_frameless_walk), C(hot_iterations),
    {NULL, NULL},
};

const struct corpus_range corpus_checksummed[] = {
    {&results_sum, &results_sum + 1, NULL},
    {NULL, NULL, NULL},
};
