/*
 * bitops - bt, bts, btr, btc on memory with immediate and register bit
 * offsets, including register offsets that address a quadword other than
 * the operand's (SDM vol. 2A, BT: the bit string extends past the operand,
 * and a negative offset reaches below it), a 32-bit form and lock bts.
 *
 * Case "bitops" (default N 4).  Watched: bits and bits_far = bits + 64, on
 * one page.  bt only reads; bts/btr/btc read and store (a store of the
 * value already there when the bit was set/clear already).
 *
 * Ground truth: count_<site> per execution; stores_/changes_/reads_ of
 * bits and bits_far; bitops_result (checksummed) sums the tested bits.
 */
#include "corpus.h"

        CORPUS_BEGIN
        CASE bitops, case_bitops, 4

        PAGEDATA bitops
        OBJECT bits, 8
        .quad 0
        .skip 56
        OBJECT bits_far, 8
        .quad 0

        .data
        .balign 8
OBJECT bitops_result, 8
        .quad 0
        CHECKSUMMED bits, 72
        CHECKSUMMED bitops_result, 8

        WATCHED bits
        WATCHED bits_far
        COUNTER count_bt_imm
        COUNTER count_btr_imm
        COUNTER count_bts_imm
        COUNTER count_bts_imm_again
        COUNTER count_btc_imm
        COUNTER count_lock_bts
        COUNTER count_bts_reg
        COUNTER count_bt_reg
        COUNTER count_btr_reg_neg
        COUNTER count_btc_reg
        COUNTER count_btsl_reg

/* The site read-modify-wrote \obj as `\op $\bit` does: apply the same to
 * the shadow in a register and note the store. */
.macro RMW_DONE obj, op, bit
        mov     shadow_\obj(%rip), %rdx
        \op     $\bit, %rdx
        NOTE_RMW \obj, %rdx
.endm

        .text
FUNC case_bitops
        push    %rbx
        push    %r12
        push    %r13
        mov     %rdi, %r12
        xor     %ebx, %ebx
        xor     %r13d, %r13d
.Lround:
        cmp     %r12, %rbx
        jae     .Ldone

SITE site_bt_imm
        btq     $5, bits(%rip)
        adc     $0, %r13
        COUNT count_bt_imm
        NOTE_READ bits

SITE site_btr_imm
        btrq    $5, bits(%rip)
        adc     $0, %r13
        COUNT count_btr_imm
        RMW_DONE bits, btr, 5

SITE site_bts_imm
        btsq    $5, bits(%rip)
        adc     $0, %r13
        COUNT count_bts_imm
        RMW_DONE bits, bts, 5

SITE site_bts_imm_again
        btsq    $5, bits(%rip)
        adc     $0, %r13
        COUNT count_bts_imm_again
        RMW_DONE bits, bts, 5

SITE site_btc_imm
        btcq    $7, bits(%rip)
        adc     $0, %r13
        COUNT count_btc_imm
        RMW_DONE bits, btc, 7

SITE site_lock_bts
        lock btsq $9, bits(%rip)
        adc     $0, %r13
        COUNT count_lock_bts
        RMW_DONE bits, bts, 9

        /* bit 515 of the string at bits: bit 3 of bits + 8 * (515 >> 6) */
        mov     $515, %eax
SITE site_bts_reg
        btsq    %rax, bits(%rip)
        adc     $0, %r13
        COUNT count_bts_reg
        RMW_DONE bits_far, bts, 3

        /* bits 515..518 in turn: bits_far, bits 3..6 */
        mov     %ebx, %eax
        and     $3, %eax
        add     $515, %eax
SITE site_bt_reg
        btq     %rax, bits(%rip)
        adc     $0, %r13
        COUNT count_bt_reg
        NOTE_READ bits_far

        /* bit -509 of the string at bits_far: bit 3 of bits_far - 64 = bits */
        mov     $-509, %rax
SITE site_btr_reg_neg
        btrq    %rax, bits_far(%rip)
        adc     $0, %r13
        COUNT count_btr_reg_neg
        RMW_DONE bits, btr, 3

        mov     $515, %eax
SITE site_btc_reg
        btcq    %rax, bits(%rip)
        adc     $0, %r13
        COUNT count_btc_reg
        RMW_DONE bits_far, btc, 3

        /* 32-bit form: bit 545 = bit 1 of the dword at bits + 4 * 17 = bits_far + 4 */
        mov     $545, %eax
SITE site_btsl_reg
        btsl    %eax, bits(%rip)
        adc     $0, %r13
        COUNT count_btsl_reg
        RMW_DONE bits_far, bts, 33

        inc     %rbx
        jmp     .Lround
.Ldone:
        mov     %r13, bitops_result(%rip)
        pop     %r13
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_bitops

        CORPUS_END
