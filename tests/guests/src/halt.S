/*
 * halt - the guest's own hlt: with a periodic timer it waits for the next
 * tick; after cli it waits forever.
 *
 * Case "halt" (default N 8): a 500 us timer on TIMER_VECTOR; N times
 * `sti; hlt; cli`, storing the round to halt_var (watched) and reading it
 * back.  A hlt keeps its meaning when it returns only after a tick's
 * handler ran: halt_woken_by_tick counts those, halt_spurious the others
 * (0 on any CPU: nothing else can wake it here).
 *
 * Cases "clihlt" and "clihlt_timer" (the latter with the timer running):
 * `cli; hlt` at site_cli_hlt, looping there if ever resumed.  Nothing can
 * wake it; the VMM must say so rather than loop.
 *
 * Ground truth: count_hlt, count_halt_loop, halt_woken_by_tick,
 * halt_spurious; stores_/changes_/reads_ of halt_var.
 */
#include "corpus.h"

#define TIMER_VECTOR 0x20
#define PERIOD_US 500

        CORPUS_BEGIN
        CASE halt, case_halt, 8
        CASE clihlt, case_clihlt, 1
        CASE clihlt_timer, case_clihlt_timer, 1

        PAGEDATA halt
        OBJECT halt_var, 8
        .quad 0

        .data
        .balign 8
OBJECT halt_ticks, 8
        .quad 0
        CHECKSUMMED halt_var, 8

        WATCHED halt_var
        COUNTER count_hlt
        COUNTER count_halt_loop
        COUNTER halt_woken_by_tick
        COUNTER halt_spurious

        .text
/* void halt_tick(struct trap_frame *): the timer's handler */
FUNC halt_tick
        incq    halt_ticks(%rip)
        ret
ENDFUNC halt_tick

FUNC case_halt
        push    %rbx
        push    %r12
        push    %r13
        mov     %rdi, %r12
        mov     $TIMER_VECTOR, %edi
        lea     halt_tick(%rip), %rsi
        call    set_trap_handler
        mov     $PERIOD_US, %edi
        call    timer_start
        xor     %ebx, %ebx
.Lround:
        cmp     %r12, %rbx
        jae     .Ldone
        mov     halt_ticks(%rip), %r13
        sti
SITE site_hlt
        hlt
        cli
        COUNT count_hlt
        cmp     halt_ticks(%rip), %r13
        je      1f
        COUNT halt_woken_by_tick
        jmp     2f
1:      COUNT halt_spurious
2:
SITE site_halt_loop
        mov     %rbx, halt_var(%rip)
        COUNT count_halt_loop
        NOTE_STORE halt_var, %rbx
        mov     halt_var(%rip), %rax
        NOTE_READ halt_var
        inc     %rax
        mov     %rax, %rbx
        jmp     .Lround
.Ldone:
        call    timer_stop
        pop     %r13
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_halt

FUNC case_clihlt
        cli
SITE site_cli_hlt
        hlt
        jmp     site_cli_hlt
ENDFUNC case_clihlt

FUNC case_clihlt_timer
        mov     $PERIOD_US, %edi
        call    timer_start
        jmp     case_clihlt
ENDFUNC case_clihlt_timer

        CORPUS_END
