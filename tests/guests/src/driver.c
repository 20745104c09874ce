/*
 * driver.c - main() of every corpus guest: runs the cases named on the
 * command line and prints the ground truth.
 *
 * Arguments: [CASE|all] [N].  Runs CASE (or every case) with N (or the
 * case's default), then prints each counter as "name value" and
 * "checksum 0x..." over the guest's checksummed results.  Exits 0, or
 * EXIT_USAGE for an unknown case.
 */
#include "corpus.h"

/* 1 while a case runs (on the counter page: no test watches it), so a test
 * can tell that a stop came after the case ended. */
COUNTER_PAGE volatile u64 corpus_in_case;

/* Keep the calls and their own entry points at every optimisation level. */
__attribute__((noipa)) void corpus_case_begin(void)
{
    __asm__ volatile("" ::: "memory");
}

__attribute__((noipa)) void corpus_case_end(void)
{
    __asm__ volatile("" ::: "memory");
}

u64 corpus_fnv(u64 hash, const volatile void *start, u64 length)
{
    const volatile u8 *p = start;

    for (u64 i = 0; i < length; i++) {
        hash ^= p[i];
        hash *= 0x100000001b3UL;
    }
    return hash;
}

static u64 range_fnv(u64 hash, const struct corpus_range *r)
{
    return corpus_fnv(hash, r->start, (u64)((const volatile u8 *)r->end - (const volatile u8 *)r->start));
}

static const struct corpus_range *first_of_name(const struct corpus_range *r)
{
    for (const struct corpus_range *s = corpus_checksummed; s != r; s++)
        if (s->name != NULL && str_eq(s->name, r->name))
            return s;
    return r;
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "all";
    long n = arg_int(argc, argv, 2, 0);
    int ran = 0;

    for (const struct corpus_case *c = corpus_cases; c->name != NULL; c++) {
        if (!str_eq(which, "all") && !str_eq(which, c->name))
            continue;
        corpus_in_case = 1;
        corpus_case_begin();
        c->run(n > 0 ? n : c->default_n);
        corpus_in_case = 0;
        corpus_case_end();
        ran++;
    }
    if (ran == 0) {
        printf("unknown case %s\n", which);
        return EXIT_USAGE;
    }
    for (const struct corpus_counter *c = corpus_counters; c->name != NULL; c++)
        printf("%s %lu\n", c->name, *c->value);
    for (const struct corpus_range *r = corpus_checksummed; r->start != NULL; r++) {
        if (r->name == NULL || first_of_name(r) != r)
            continue;
        u64 named = CORPUS_FNV_BASIS;
        for (const struct corpus_range *s = r; s->start != NULL; s++)
            if (s->name != NULL && str_eq(s->name, r->name))
                named = range_fnv(named, s);
        printf("checksum_%s 0x%lx\n", r->name, named);
    }
    u64 hash = CORPUS_FNV_BASIS;
    for (const struct corpus_range *r = corpus_checksummed; r->start != NULL; r++)
        hash = range_fnv(hash, r);
    printf("checksum 0x%lx\n", hash);
    return 0;
}
