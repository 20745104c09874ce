/*
 * smc - self-modifying code over the bytes a software breakpoint patches:
 * plain stores (1 and 4 bytes) and read-modify-writes (xor, inc, add) on
 * the first byte of a function, each followed by a call to it.
 *
 * Case "smc" (default N 4).  smc_target is `mov $imm32, %eax; ret`
 * (B8 imm32 C3) or, with its first byte rewritten to 05, `add $imm32,
 * %eax; ret`; it is called with eax = 100.  smc_inc_target toggles between
 * B8 (mov to eax) and B9 (mov to ecx: eax stays 100) by inc and add $-1.
 * A serialising cpuid follows each rewrite (SDM vol. 3, 8.1.3).  The
 * results depend on every byte the guest wrote: a trap byte taken as an
 * original, or an original lost under a trap, changes smc_result.
 *
 * Ground truth: count_smc_target and count_smc_inc_target (calls),
 * smc_target_byte and smc_inc_target_byte (what the guest last wrote
 * there), smc_result (checksummed with the final code bytes).
 */
#include "corpus.h"

        CORPUS_BEGIN
        CASE smc, case_smc, 4

        .data
        .balign 8
OBJECT smc_result, 8
        .quad 0
        CHECKSUMMED smc_result, 8
        CHECKSUMMED smc_target, 6
        CHECKSUMMED smc_inc_target, 6

        COUNTER count_smc_target
        COUNTER count_smc_inc_target
        COUNTER count_smc_store_byte
        COUNTER count_smc_xor
        COUNTER count_smc_store_dword
        COUNTER count_smc_inc
        COUNTER count_smc_add
        COUNTER smc_target_byte
        COUNTER smc_inc_target_byte

#define MOV_EAX 0xB8
#define MOV_ECX 0xB9
#define ADD_EAX 0x05

/* The code just rewrote itself: serialise, then call \fn with eax = 100. */
.macro CALL_REWRITTEN fn, counter
        xor     %eax, %eax
        cpuid
        mov     $100, %eax
        call    \fn
        add     %rax, %r13
        COUNT   \counter
.endm

        .section .text.smc, "ax"
        .balign CORPUS_PAGE, 0xcc
FUNC smc_target
        mov     $7, %eax
        ret
ENDFUNC smc_target
        .balign 16, 0xcc
FUNC smc_inc_target
        mov     $9, %eax
        ret
ENDFUNC smc_inc_target

        .balign 16, 0xcc
FUNC case_smc
        push    %rbx
        push    %r12
        push    %r13
        push    %r14
        mov     %rdi, %r12
        xor     %r14d, %r14d
        xor     %r13d, %r13d
.Lround:
        cmp     %r12, %r14
        jae     .Ldone

        /* plain byte store: B8 in even rounds (the value there), 05 in odd */
        mov     $MOV_EAX, %ecx
        mov     $ADD_EAX, %edx
        test    $1, %r14
        cmovnz  %edx, %ecx
SITE site_smc_store_byte
        movb    %cl, smc_target(%rip)
        COUNT count_smc_store_byte
        movzbq  %cl, %rcx
        mov     %rcx, smc_target_byte(%rip)
        CALL_REWRITTEN smc_target, count_smc_target

        /* read-modify-write: toggle B8 <-> 05 */
SITE site_smc_xor
        xorb    $(MOV_EAX ^ ADD_EAX), smc_target(%rip)
        COUNT count_smc_xor
        xorq    $(MOV_EAX ^ ADD_EAX), smc_target_byte(%rip)
        CALL_REWRITTEN smc_target, count_smc_target

        /* a 4-byte store over the opcode and the immediate's low bytes */
        lea     7(%r14), %ecx
        shl     $8, %ecx
        or      $MOV_EAX, %ecx
SITE site_smc_store_dword
        movl    %ecx, smc_target(%rip)
        COUNT count_smc_store_dword
        movq    $MOV_EAX, smc_target_byte(%rip)
        CALL_REWRITTEN smc_target, count_smc_target

        /* B8 -> B9 by inc, back by add $-1 */
SITE site_smc_inc
        incb    smc_inc_target(%rip)
        COUNT count_smc_inc
        movq    $MOV_ECX, smc_inc_target_byte(%rip)
        CALL_REWRITTEN smc_inc_target, count_smc_inc_target
SITE site_smc_add
        addb    $0xff, smc_inc_target(%rip)
        COUNT count_smc_add
        movq    $MOV_EAX, smc_inc_target_byte(%rip)
        CALL_REWRITTEN smc_inc_target, count_smc_inc_target

        inc     %r14
        jmp     .Lround
.Ldone:
        mov     %r13, smc_result(%rip)
        pop     %r14
        pop     %r13
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_smc
        .balign CORPUS_PAGE, 0xcc

        CORPUS_END
