/*
 * corpus.h - what every corpus guest shares: its ground-truth counters, the
 * case table the driver runs, and the checksummed ranges.
 *
 * A corpus guest counts, itself, how often each interesting instruction
 * executes and how often each watched variable is stored to, changed and
 * read.  The counters live on the page .pagedata.zz_counters, which no
 * test watches, and driver.c prints them at exit as "name value" lines
 * (parsed by tests/corpus.py), followed by "checksum 0x..." over the
 * guest's results.
 *
 * Counting rule (the engine's rule, issue 9): one count per execution of
 * an instruction, however many iterations a rep prefix makes it do or
 * however many pages its access spans.  A read-modify-write counts as a
 * read and a store; a store counts as a change when the watched bytes
 * differ after it.
 *
 * Included by C (the structs) and by GNU assembly (the macros).
 */
#ifndef CORPUS_H
#define CORPUS_H

#define CORPUS_PAGE 4096

#ifdef __ASSEMBLER__

/* CR0 and CR4 bits (SDM vol. 3, 2.5) a guest sets for SSE and XSAVE. */
#define CR0_MP       (1 << 1)
#define CR0_EM       (1 << 2)
#define CR4_OSFXSR   (1 << 9)
#define CR4_OSXMMEXCPT (1 << 10)
#define CR4_OSXSAVE  (1 << 18)

/* Open a page-private data section (link.ld keeps .pagedata.* apart). */
.macro PAGEDATA name
        .section .pagedata.\name, "aw", @progbits
        .balign CORPUS_PAGE
.endm

/* The counter page and the counter table; once, at the top of a guest. */
.macro CORPUS_BEGIN
        .pushsection .pagedata.zz_counters, "aw", @progbits
        .balign CORPUS_PAGE
        .popsection
        .pushsection .data.corpus_counters, "aw", @progbits
        .balign 8
        .globl corpus_counters
corpus_counters:
        .popsection
        .pushsection .data.corpus_checksummed, "aw", @progbits
        .balign 8
        .globl corpus_checksummed
corpus_checksummed:
        .popsection
        .pushsection .data.corpus_cases, "aw", @progbits
        .balign 8
        .globl corpus_cases
corpus_cases:
        .popsection
.endm

/* Terminate the tables; once, at the bottom of a guest. */
.macro CORPUS_END
        .pushsection .data.corpus_counters, "aw", @progbits
        .quad 0, 0
        .popsection
        .pushsection .data.corpus_checksummed, "aw", @progbits
        .quad 0, 0, 0
        .popsection
        .pushsection .data.corpus_cases, "aw", @progbits
        .quad 0, 0, 0
        .popsection
        .section .note.GNU-stack, "", @progbits
.endm

/* A ground-truth counter, printed at exit as "name value". */
.macro COUNTER name
        .pushsection .pagedata.zz_counters, "aw", @progbits
        .balign 8
        .globl \name
        .type \name, @object
        .size \name, 8
\name:  .quad 0
        .popsection
        .pushsection .rodata.corpus_names, "a", @progbits
.Lcounter_name_\name:
        .asciz "\name"
        .popsection
        .pushsection .data.corpus_counters, "aw", @progbits
        .quad .Lcounter_name_\name, \name
        .popsection
.endm

/* Counters for a watched variable: storing instructions, those that
 * changed it, reading instructions, and instructions that did either (a
 * read-modify-write is one access); plus a shadow (the value the guest
 * knows it holds, kept without reading it). */
.macro WATCHED name
        COUNTER stores_\name
        COUNTER changes_\name
        COUNTER reads_\name
        COUNTER accesses_\name
        .pushsection .pagedata.zz_counters, "aw", @progbits
        .balign 16
shadow_\name: .quad 0, 0
        .popsection
.endm

/* A case: the driver runs \fn(n) for argv[1] == "\name", n = argv[2] or \n. */
.macro CASE name, fn, n
        .pushsection .rodata.corpus_names, "a", @progbits
.Lcase_name_\name:
        .asciz "\name"
        .popsection
        .pushsection .data.corpus_cases, "aw", @progbits
        .quad .Lcase_name_\name, \fn, \n
        .popsection
.endm

/* Include [start, start + length) in the printed checksum. */
.macro CHECKSUMMED start, length
        .pushsection .data.corpus_checksummed, "aw", @progbits
        .quad \start, \start + \length, 0
        .popsection
.endm

/* A global code label a test breaks on by name. */
.macro SITE name
        .globl \name
\name:
.endm

/* Count one execution.  Changes the arithmetic flags except CF. */
.macro COUNT name
        incq    \name(%rip)
.endm

/* The instruction before stored to \obj, which now holds \reg (computed
 * by the guest on its own path): one store, and a change if \reg differs
 * from the shadow.  Clobbers the flags. */
.macro NOTE_STORE obj, reg
        incq    stores_\obj(%rip)
        incq    accesses_\obj(%rip)
        cmp     \reg, shadow_\obj(%rip)
        je      .Lnote_same\@
        incq    changes_\obj(%rip)
        mov     \reg, shadow_\obj(%rip)
.Lnote_same\@:
.endm

/* The instruction before read \obj. */
.macro NOTE_READ obj
        incq    reads_\obj(%rip)
        incq    accesses_\obj(%rip)
.endm

/* The instruction before read and stored \obj (one access), which now
 * holds \reg.  Clobbers the flags. */
.macro NOTE_RMW obj, reg
        incq    reads_\obj(%rip)
        NOTE_STORE \obj, \reg
.endm

/* Begin a function symbol \name (global, typed, for symbolizers). */
.macro FUNC name
        .globl \name
        .type \name, @function
\name:
.endm

.macro ENDFUNC name
        .size \name, . - \name
.endm

/* A watched object symbol of \size bytes. */
.macro OBJECT name, size
        .globl \name
        .type \name, @object
        .size \name, \size
\name:
.endm

#else /* C */

#include "runtime.h"

/* One "name value" line at exit. */
struct corpus_counter {
    const char *name;
    const volatile u64 *value;
};

/* A case the driver can run by name. */
struct corpus_case {
    const char *name;
    void (*run)(long n);
    long default_n;
};

/* A range of results the checksum covers; a named one also gets its own
 * "checksum_<name>" line (all ranges of that name together). */
struct corpus_range {
    const volatile void *start;
    const volatile void *end;
    const char *name;
};

/* Provided by each guest (assembly tables or C arrays), zero-terminated. */
extern const struct corpus_counter corpus_counters[];
extern const struct corpus_case corpus_cases[];
extern const struct corpus_range corpus_checksummed[];

/* Page-private counters in C guests. */
#define COUNTER_PAGE __attribute__((section(".pagedata.zz_counters"), aligned(CORPUS_PAGE)))
#define COUNTERS     __attribute__((section(".pagedata.zz_counters")))

/* FNV-1a over bytes: the guests' checksum (no table, no SSE). */
u64 corpus_fnv(u64 hash, const volatile void *start, u64 length);
#define CORPUS_FNV_BASIS 0xcbf29ce484222325UL

/* Called by the driver around each case: tests break here to arm and to
 * disarm requests, so that the runtime's start-up and the report at exit
 * run undisturbed. */
void corpus_case_begin(void);
void corpus_case_end(void);

#endif /* __ASSEMBLER__ */
#endif /* CORPUS_H */
