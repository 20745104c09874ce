/*
 * sort - quicksort (Lomuto partition) of a global array filled by an LCG,
 * with every step in its own function so breakpoints can count them.
 *
 * Arguments: [count] (default 64, at most MAX_ITEMS).
 * Prints "sorted N items"; exits 0, or 1 if the array is not sorted
 * (EXIT_USAGE for a bad count).
 */
#include "runtime.h"

#define MAX_ITEMS 256

volatile long items[MAX_ITEMS];
long item_count;
unsigned long compare_calls;
unsigned long swap_calls;

NOINLINE int compare(long a, long b)
{
    compare_calls++;
    return a < b ? -1 : a > b ? 1 : 0;
}

NOINLINE void swap(long i, long j)
{
    long t = items[i];

    swap_calls++;
    items[i] = items[j];
    items[j] = t;
}

/* Lomuto: items[hi] is the pivot; returns its final index. */
NOINLINE long partition(long lo, long hi)
{
    long pivot = items[hi];
    long store = lo;

    for (long i = lo; i < hi; i++) {
        if (compare(items[i], pivot) < 0) {
            swap(i, store);
            store++;
        }
    }
    swap(store, hi);
    return store;
}

NOINLINE void quicksort(long lo, long hi)
{
    if (lo < hi) {
        long p = partition(lo, hi);
        quicksort(lo, p - 1);
        quicksort(p + 1, hi);
    }
}

/* Numerical Recipes' 32-bit LCG: the same contents on every run. */
NOINLINE void fill(long count)
{
    unsigned int state = 12345;

    for (long i = 0; i < count; i++) {
        state = state * 1664525u + 1013904223u;
        items[i] = (long)(state >> 16) % 1000;
    }
}

NOINLINE int is_sorted(long count)
{
    for (long i = 1; i < count; i++)
        if (items[i - 1] > items[i])
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    item_count = arg_int(argc, argv, 1, 64);
    if (item_count < 0 || item_count > MAX_ITEMS) {
        printf("sort: count must be 0..%d\n", MAX_ITEMS);
        return EXIT_USAGE;
    }
    fill(item_count);
    quicksort(0, item_count - 1);
    if (!is_sorted(item_count)) {
        printf("not sorted\n");
        return 1;
    }
    printf("sorted %ld items\n", item_count);
    return 0;
}
