/*
 * stack - push, pop, call, ret, pushf, popf, push/pop of memory, enter and
 * leave, on a stack of the guest's own whose top two slots are watched.
 *
 * Case "stack" (default N 4), interrupts off.  The case switches rsp to
 * stack_top; stack_slot is the quadword just below it, stack_slot2 the
 * one below that.  The pushed rflags are known: after `xor %eax, %eax`
 * with IF clear they are 0x46 (PF, ZF and the always-set bit 1), so a
 * debugger's TF must not show in them.
 *
 * Ground truth: count_<site> per execution; stores_/changes_/reads_ of
 * both slots; stack_result (checksummed) sums what was popped.
 */
#include "corpus.h"

        CORPUS_BEGIN
        CASE stack, case_stack, 4

        PAGEDATA stack
        .skip 2 * CORPUS_PAGE - 16
        OBJECT stack_slot2, 8
        .quad 0
        OBJECT stack_slot, 8
        .quad 0
        .globl stack_top
stack_top:

        .data
        .balign 8
OBJECT stack_data, 8
        .quad 0x5eed
OBJECT stack_out, 8
        .quad 0
OBJECT stack_result, 8
        .quad 0
        CHECKSUMMED stack_slot2, 16
        CHECKSUMMED stack_out, 16

        WATCHED stack_slot
        WATCHED stack_slot2
        COUNTER count_push
        COUNTER count_call
        COUNTER count_leaf_load
        COUNTER count_ret
        COUNTER count_pop
        COUNTER count_pushf
        COUNTER count_pop_flags
        COUNTER count_push_flags_back
        COUNTER count_popf
        COUNTER count_push_mem
        COUNTER count_pop_mem
        COUNTER count_enter
        COUNTER count_leave
        COUNTER count_mov_slot
        COUNTER count_push_same
        COUNTER count_wrong

        .pushsection .pagedata.zz_counters, "aw", @progbits
saved_rsp: .quad 0
        .popsection

        .text
/* Reads the caller's pushed value explicitly; its ret reads stack_slot2. */
FUNC stack_leaf
SITE site_leaf_load
        mov     8(%rsp), %rax
        COUNT count_leaf_load
        NOTE_READ stack_slot
SITE site_ret
        ret
ENDFUNC stack_leaf

FUNC case_stack
        push    %rbx
        push    %rbp
        push    %r12
        push    %r13
        mov     %rdi, %r12
        xor     %r13d, %r13d
        mov     %rsp, saved_rsp(%rip)
        lea     stack_top(%rip), %rsp
        xor     %ebx, %ebx
.Lround:
        cmp     %r12, %rbx
        jae     .Ldone
        /* rcx = i/2 + 7: a new value every other round */
        mov     %rbx, %rcx
        shr     $1, %rcx
        add     $7, %rcx

SITE site_push
        push    %rcx
        COUNT count_push
        NOTE_STORE stack_slot, %rcx

        lea     site_call_return(%rip), %rdx
SITE site_call
        call    stack_leaf
SITE site_call_return
        COUNT count_call
        COUNT count_ret
        NOTE_STORE stack_slot2, %rdx
        NOTE_READ stack_slot2
        add     %rax, %r13

SITE site_pop
        pop     %rax
        COUNT count_pop
        NOTE_READ stack_slot
        add     %rax, %r13

        xor     %eax, %eax
SITE site_pushf
        pushfq
        COUNT count_pushf
        mov     $0x46, %edx
        NOTE_STORE stack_slot, %rdx
SITE site_pop_flags
        pop     %rax
        COUNT count_pop_flags
        NOTE_READ stack_slot
        cmp     $0x46, %rax
        je      1f
        COUNT count_wrong
1:
SITE site_push_flags_back
        push    %rax
        COUNT count_push_flags_back
        NOTE_STORE stack_slot, %rax
SITE site_popf
        popfq
        COUNT count_popf
        NOTE_READ stack_slot

SITE site_push_mem
        pushq   stack_data(%rip)
        COUNT count_push_mem
        mov     $0x5eed, %edx
        NOTE_STORE stack_slot, %rdx
SITE site_pop_mem
        popq    stack_out(%rip)
        COUNT count_pop_mem
        NOTE_READ stack_slot

        lea     1(%rcx), %rbp
        mov     %rbp, %rdx
SITE site_enter
        enter   $16, $0
        COUNT count_enter
        NOTE_STORE stack_slot, %rdx
SITE site_leave
        leave
        COUNT count_leave
        NOTE_READ stack_slot
        add     %rbp, %r13

SITE site_mov_slot
        mov     %rcx, -8(%rsp)
        COUNT count_mov_slot
        NOTE_STORE stack_slot, %rcx
SITE site_push_same
        push    %rcx
        COUNT count_push_same
        NOTE_STORE stack_slot, %rcx
        add     $8, %rsp

        inc     %rbx
        jmp     .Lround
.Ldone:
        mov     saved_rsp(%rip), %rsp
        mov     %r13, stack_result(%rip)
        pop     %r13
        pop     %r12
        pop     %rbp
        pop     %rbx
        ret
ENDFUNC case_stack

        CORPUS_END
