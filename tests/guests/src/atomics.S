/*
 * atomics - xchg, cmpxchg (succeeding and failing), xadd and lock-prefixed
 * read-modify-writes on a watched quadword; plain stores of the value
 * already there; an 8-byte store and a 4-byte store that span two pages.
 *
 * Case "atomics" (default N 4).  Watched: atom (own page) and atom_cross
 * (straddling the boundary of its two pages; never locked, so no split
 * locks).  A failing cmpxchg stores the value already there (SDM vol. 2A,
 * CMPXCHG: "the destination operand receives a write cycle without regard
 * to the result of the comparison"); lock or $0 and add $0 do too.
 *
 * Ground truth: count_<site> per execution; stores_/changes_/reads_ of
 * atom and atom_cross; atomics_result (checksummed) sums what the
 * instructions returned.
 */
#include "corpus.h"

        CORPUS_BEGIN
        CASE atomics, case_atomics, 4

        PAGEDATA atomics
        OBJECT atom, 8
        .quad 0

        PAGEDATA atomics_cross
        .skip CORPUS_PAGE - 4
        OBJECT atom_cross, 8
        .quad 0
        .skip CORPUS_PAGE - 4

        .data
        .balign 8
OBJECT atomics_result, 8
        .quad 0
        CHECKSUMMED atom, 8
        CHECKSUMMED atom_cross, 8
        CHECKSUMMED atomics_result, 8

        WATCHED atom
        WATCHED atom_cross
        COUNTER count_mov_atom
        COUNTER count_mov_same
        COUNTER count_xchg
        COUNTER count_cmpxchg_ok
        COUNTER count_cmpxchg_fail
        COUNTER count_lock_cmpxchg
        COUNTER count_lock_xadd
        COUNTER count_lock_add
        COUNTER count_lock_inc
        COUNTER count_lock_or_zero
        COUNTER count_add_zero
        COUNTER count_lock_dec
        COUNTER count_load_atom
        COUNTER count_mov_cross
        COUNTER count_movl_cross_same
        COUNTER count_cmp_cross
        COUNTER count_failures

/* \obj was read and stored by the site: the shadow plus \delta is its value. */
.macro RMW_DONE obj, delta
        mov     shadow_\obj(%rip), %rdx
        add     $\delta, %rdx
        NOTE_RMW \obj, %rdx
.endm

        .text
FUNC case_atomics
        push    %rbx
        push    %r12
        push    %r13
        mov     %rdi, %r12
        xor     %ebx, %ebx
        xor     %r13d, %r13d
.Lround:
        cmp     %r12, %rbx
        jae     .Ldone

        /* atom = i/2 + 100: a new value every other round */
        mov     %rbx, %rax
        shr     $1, %rax
        add     $100, %rax
SITE site_mov_atom
        mov     %rax, atom(%rip)
        COUNT count_mov_atom
        NOTE_STORE atom, %rax
SITE site_mov_same
        mov     %rax, atom(%rip)
        COUNT count_mov_same
        NOTE_STORE atom, %rax

        mov     shadow_atom(%rip), %rax
        inc     %rax
SITE site_xchg
        xchg    %rax, atom(%rip)
        add     %rax, %r13
        COUNT count_xchg
        RMW_DONE atom, 1

        mov     shadow_atom(%rip), %rax
        lea     2(%rax), %rcx
SITE site_cmpxchg_ok
        cmpxchg %rcx, atom(%rip)
        je      1f
        COUNT count_failures
1:      COUNT count_cmpxchg_ok
        RMW_DONE atom, 2

        mov     shadow_atom(%rip), %rax
        add     $1000, %rax
        xor     %ecx, %ecx
SITE site_cmpxchg_fail
        cmpxchg %rcx, atom(%rip)
        jne     1f
        COUNT count_failures
1:      add     %rax, %r13
        COUNT count_cmpxchg_fail
        RMW_DONE atom, 0

        mov     shadow_atom(%rip), %rax
        lea     3(%rax), %rcx
SITE site_lock_cmpxchg
        lock cmpxchg %rcx, atom(%rip)
        je      1f
        COUNT count_failures
1:      COUNT count_lock_cmpxchg
        RMW_DONE atom, 3

        mov     $5, %ecx
SITE site_lock_xadd
        lock xadd %rcx, atom(%rip)
        add     %rcx, %r13
        COUNT count_lock_xadd
        RMW_DONE atom, 5

SITE site_lock_add
        lock addq $3, atom(%rip)
        COUNT count_lock_add
        RMW_DONE atom, 3

SITE site_lock_inc
        lock incq atom(%rip)
        COUNT count_lock_inc
        RMW_DONE atom, 1

SITE site_lock_or_zero
        lock orq $0, atom(%rip)
        COUNT count_lock_or_zero
        RMW_DONE atom, 0

SITE site_add_zero
        addq    $0, atom(%rip)
        COUNT count_add_zero
        RMW_DONE atom, 0

SITE site_lock_dec
        lock decq atom(%rip)
        COUNT count_lock_dec
        RMW_DONE atom, -1

SITE site_load_atom
        mov     atom(%rip), %rax
        add     %rax, %r13
        COUNT count_load_atom
        NOTE_READ atom

        /* atom_cross = (i/2) * 0x1111111111111111 + 1, across two pages */
        mov     %rbx, %rax
        shr     $1, %rax
        movabs  $0x1111111111111111, %rcx
        imul    %rcx, %rax
        inc     %rax
SITE site_mov_cross
        mov     %rax, atom_cross(%rip)
        COUNT count_mov_cross
        NOTE_STORE atom_cross, %rax

        /* its bytes 2..5 again, a 4-byte store that spans the boundary too */
        shr     $16, %rax
SITE site_movl_cross_same
        movl    %eax, atom_cross + 2(%rip)
        COUNT count_movl_cross_same
        mov     shadow_atom_cross(%rip), %rdx
        NOTE_STORE atom_cross, %rdx

SITE site_cmp_cross
        cmpq    $0, atom_cross(%rip)
        jne     1f
        COUNT count_failures
1:      COUNT count_cmp_cross
        NOTE_READ atom_cross

        inc     %rbx
        jmp     .Lround
.Ldone:
        mov     %r13, atomics_result(%rip)
        pop     %r13
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_atomics

        CORPUS_END
