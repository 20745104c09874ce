/*
 * checksum - a small -O2/-Os workload that checksums its own code and
 * data at exit, for the property and concurrency tests: whatever a
 * debugger inserted and removed, a run must print exactly what an
 * undisturbed run prints.
 *
 * Case "checksum" (default N 12): N rounds of stores to watched globals
 * (some changing the value, some storing the value already there), reads,
 * a byte copy between two buffers, a hot loop over a leaf and a
 * tail call.  The driver then prints the counters, checksum_code (FNV-1a
 * of the image's code, _start to corpus_text_end: any trap byte left
 * behind shows there), checksum_data and the combined checksum.
 *
 * Ground truth: calls_<fn>, rounds; stores_/changes_ of state_a, state_b.
 */
#include "corpus.h"

#define ENTRY __attribute__((noipa))

COUNTER_PAGE volatile u64 rounds;
COUNTERS volatile u64 calls_mix;
COUNTERS volatile u64 calls_step_a;
COUNTERS volatile u64 calls_step_b;
COUNTERS volatile u64 calls_copy_bytes;
COUNTERS volatile u64 calls_sum_bytes;
COUNTERS volatile u64 calls_spin;
COUNTERS volatile u64 calls_tail;
COUNTERS volatile u64 stores_state_a;
COUNTERS volatile u64 changes_state_a;
COUNTERS volatile u64 stores_state_b;
COUNTERS volatile u64 changes_state_b;
COUNTERS u64 shadow_b;

OWN_PAGE("checksum_a") volatile u64 state_a;
OWN_PAGE("checksum_b") volatile u64 state_b;
SAME_PAGE("checksum_b") volatile u64 state_b_neighbour;
OWN_PAGE("checksum_buf") volatile u8 buf_in[64];
SAME_PAGE("checksum_buf") volatile u8 buf_out[64];
volatile u64 result;

extern const char _start[], corpus_text_end[];

ENTRY u64 mix(u64 x)
{
    x ^= x >> 7;
    x *= 0x9e3779b97f4a7c15UL;
    return x ^ (x >> 29);
}

ENTRY void step_a(u64 i)
{
    u64 v = mix(state_a + i);

    calls_mix++;
    state_a = v;  /* always a new value */
    stores_state_a++;
    changes_state_a++;
}

ENTRY void step_b(u64 i)
{
    u64 v = i >> 1;  /* a new value every other round */

    state_b = v;
    stores_state_b++;
    if (v != shadow_b)
        changes_state_b++;
    shadow_b = v;
    state_b_neighbour = i;
}

ENTRY void copy_bytes(volatile u8 *dst, const volatile u8 *src, long n)
{
    for (long i = 0; i < n; i++)
        dst[i] = src[i];
}

ENTRY u64 sum_bytes(const volatile u8 *p, long n)
{
    u64 sum = 0;
    for (long i = 0; i < n; i++)
        sum = sum * 31 + p[i];
    return sum;
}

ENTRY u64 spin(long n)
{
    u64 acc = 0;
    for (long k = 0; k < n; k++) {
        calls_mix++;
        acc += mix(k);
    }
    return acc;
}

ENTRY u64 tail(u64 x)
{
    return mix(x + 1);
}

static void case_checksum(long n)
{
    u64 acc = 0;

    for (long i = 0; i < n; i++) {
        rounds++;
        buf_in[i & 63] = (u8)(i * 7 + 1);
        calls_step_a++;
        step_a(i);
        calls_step_b++;
        step_b(i);
        calls_copy_bytes++;
        copy_bytes(buf_out, buf_in, 16 + (i & 15));
        calls_sum_bytes++;
        acc += sum_bytes(buf_out, 32);
        calls_spin++;
        acc += spin(4);
        calls_tail++;
        calls_mix++;
        acc += tail(acc);
        acc += state_a + state_b;
    }
    result = acc;
}

const struct corpus_case corpus_cases[] = {
    {"checksum", case_checksum, 12},
    {NULL, NULL, 0},
};

#define C(name) {#name, &name}
const struct corpus_counter corpus_counters[] = {
    C(rounds), C(calls_mix), C(calls_step_a), C(calls_step_b), C(calls_copy_bytes),
    C(calls_sum_bytes), C(calls_spin), C(calls_tail),
    C(stores_state_a), C(changes_state_a), C(stores_state_b), C(changes_state_b),
    {NULL, NULL},
};

const struct corpus_range corpus_checksummed[] = {
    {_start, corpus_text_end, "code"},
    {&state_a, &state_a + 1, "data"},
    {&state_b, &state_b + 1, "data"},
    {&state_b_neighbour, &state_b_neighbour + 1, "data"},
    {buf_in, buf_in + sizeof(buf_in), "data"},
    {buf_out, buf_out + sizeof(buf_out), "data"},
    {&result, &result + 1, "data"},
    {NULL, NULL, NULL},
};
