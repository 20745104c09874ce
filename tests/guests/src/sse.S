/*
 * sse - 16-byte SSE moves (movdqu, movaps, movups, movdqa loads and
 * stores, one spanning a page boundary), fxsave/fxrstor and xsave/xrstor,
 * all to and from watched memory.
 *
 * The guest enables SSE itself (CR0.EM off, CR0.MP on, CR4.OSFXSR and
 * OSXMMEXCPT; SDM vol. 3, 13.1) and, for xsave, CR4.OSXSAVE and XCR0 =
 * x87 | SSE (SDM vol. 1, 13.3).  What CPUID says is absent is skipped and
 * reported as <feature>_supported 0.  The values moved are built with
 * general-register stores (no SSE arithmetic: this host's emulator lacks
 * some) and are the same in both halves, f(i) = (i/2 + 1) * 0x0101...01.
 *
 * Cases (default N 4): "sse" watches sse_buf (16 bytes, aligned) and
 * sse_cross (16 bytes across a page boundary); "fxsave" and "xsave" watch
 * the XMM0 slot (offset 160) of their save areas.
 *
 * Ground truth: count_<site> per execution; stores_/changes_/reads_ of
 * each watched object; sse_out (checksummed) holds what the loads read.
 */
#include "corpus.h"

        CORPUS_BEGIN
        CASE sse, case_sse, 4
        CASE fxsave, case_fxsave, 4
        CASE xsave, case_xsave, 4

        PAGEDATA sse
        OBJECT sse_buf, 16
        .quad 0, 0

        PAGEDATA sse_cross
        .skip CORPUS_PAGE - 8
        OBJECT sse_cross, 16
        .quad 0, 0
        .skip CORPUS_PAGE - 8

        PAGEDATA sse_fx
        OBJECT fx_area, 512
        .skip 160
        OBJECT fx_xmm0, 16
        .skip 512 - 160

        PAGEDATA sse_xs
        OBJECT xs_area, 1024
        .skip 160
        OBJECT xs_xmm0, 16
        .skip 1024 - 160

        .data
        .balign 16
sse_pattern:
        .quad 0, 0
OBJECT sse_out, 64
        .quad 0, 0, 0, 0, 0, 0, 0, 0
        CHECKSUMMED sse_out, 64
        CHECKSUMMED sse_buf, 16
        CHECKSUMMED sse_cross, 16
        CHECKSUMMED fx_xmm0, 16
        CHECKSUMMED xs_xmm0, 16

        WATCHED sse_buf
        WATCHED sse_cross
        WATCHED fx_xmm0
        WATCHED xs_xmm0
        COUNTER sse_supported
        COUNTER fxsr_supported
        COUNTER xsave_supported
        COUNTER count_movdqu_store
        COUNTER count_movaps_store
        COUNTER count_movups_store_cross
        COUNTER count_movdqu_load
        COUNTER count_movaps_load
        COUNTER count_movups_load_cross
        COUNTER count_movdqa_store
        COUNTER count_fxsave
        COUNTER count_fxrstor
        COUNTER count_xsave
        COUNTER count_xrstor

#define CPUID1_EDX_FXSR (1 << 24)
#define CPUID1_EDX_SSE2 (1 << 26)
#define CPUID1_ECX_XSAVE (1 << 26)

        .text
/* eax = 1 if CPUID.1 has SSE2 and FXSR (and, with rdi != 0, XSAVE); then
 * SSE (and XSAVE) are enabled. */
FUNC sse_enable
        push    %rbx
        push    %rdi
        mov     $1, %eax
        cpuid
        pop     %rdi
        mov     %edx, %eax
        and     $(CPUID1_EDX_FXSR | CPUID1_EDX_SSE2), %eax
        cmp     $(CPUID1_EDX_FXSR | CPUID1_EDX_SSE2), %eax
        jne     .Lno
        test    %rdi, %rdi
        jz      1f
        test    $CPUID1_ECX_XSAVE, %ecx
        jz      .Lno
1:      mov     %cr0, %rax
        and     $~CR0_EM, %rax
        or      $CR0_MP, %rax
        mov     %rax, %cr0
        mov     %cr4, %rax
        or      $(CR4_OSFXSR | CR4_OSXMMEXCPT), %rax
        test    %rdi, %rdi
        jz      2f
        or      $CR4_OSXSAVE, %rax
2:      mov     %rax, %cr4
        test    %rdi, %rdi
        jz      3f
        xor     %ecx, %ecx              /* XCR0 = x87 | SSE */
        mov     $3, %eax
        xor     %edx, %edx
        xsetbv
3:      mov     $1, %eax
        pop     %rbx
        ret
.Lno:   xor     %eax, %eax
        pop     %rbx
        ret
ENDFUNC sse_enable

/* xmm0 = f(i) in both halves, rdx = f(i), for i in rbx. */
FUNC sse_load_pattern
        mov     %rbx, %rax
        shr     $1, %rax
        inc     %rax
        movabs  $0x0101010101010101, %rdx
        imul    %rax, %rdx
        mov     %rdx, sse_pattern(%rip)
        mov     %rdx, sse_pattern + 8(%rip)
        movdqu  sse_pattern(%rip), %xmm0
        ret
ENDFUNC sse_load_pattern

FUNC case_sse
        push    %rbx
        push    %r12
        mov     %rdi, %r12
        xor     %edi, %edi
        call    sse_enable
        mov     %rax, sse_supported(%rip)
        test    %eax, %eax
        jz      .Lsse_done
        xor     %ebx, %ebx
.Lsse_round:
        cmp     %r12, %rbx
        jae     .Lsse_done
        call    sse_load_pattern

SITE site_movdqu_store
        movdqu  %xmm0, sse_buf(%rip)
        COUNT count_movdqu_store
        NOTE_STORE sse_buf, %rdx
SITE site_movaps_store
        movaps  %xmm0, sse_buf(%rip)
        COUNT count_movaps_store
        NOTE_STORE sse_buf, %rdx
SITE site_movups_store_cross
        movups  %xmm0, sse_cross(%rip)
        COUNT count_movups_store_cross
        NOTE_STORE sse_cross, %rdx

SITE site_movdqu_load
        movdqu  sse_buf(%rip), %xmm1
        COUNT count_movdqu_load
        NOTE_READ sse_buf
SITE site_movaps_load
        movaps  sse_buf(%rip), %xmm2
        COUNT count_movaps_load
        NOTE_READ sse_buf
SITE site_movups_load_cross
        movups  sse_cross(%rip), %xmm3
        COUNT count_movups_load_cross
        NOTE_READ sse_cross
SITE site_movdqa_store
        movdqa  %xmm2, sse_buf(%rip)
        COUNT count_movdqa_store
        NOTE_STORE sse_buf, %rdx

        movdqu  %xmm1, sse_out(%rip)
        movdqu  %xmm2, sse_out + 16(%rip)
        movdqu  %xmm3, sse_out + 32(%rip)
        inc     %rbx
        jmp     .Lsse_round
.Lsse_done:
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_sse

FUNC case_fxsave
        push    %rbx
        push    %r12
        mov     %rdi, %r12
        xor     %edi, %edi
        call    sse_enable
        mov     %rax, fxsr_supported(%rip)
        test    %eax, %eax
        jz      .Lfx_done
        xor     %ebx, %ebx
.Lfx_round:
        cmp     %r12, %rbx
        jae     .Lfx_done
        call    sse_load_pattern
SITE site_fxsave
        fxsave  fx_area(%rip)
        COUNT count_fxsave
        NOTE_STORE fx_xmm0, %rdx
        movdqu  sse_out + 48(%rip), %xmm0       /* clobber xmm0: fxrstor brings it back */
SITE site_fxrstor
        fxrstor fx_area(%rip)
        COUNT count_fxrstor
        NOTE_READ fx_xmm0
        movdqu  %xmm0, sse_out(%rip)
        inc     %rbx
        jmp     .Lfx_round
.Lfx_done:
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_fxsave

FUNC case_xsave
        push    %rbx
        push    %r12
        mov     %rdi, %r12
        mov     $1, %edi
        call    sse_enable
        mov     %rax, xsave_supported(%rip)
        test    %eax, %eax
        jz      .Lxs_done
        xor     %ebx, %ebx
.Lxs_round:
        cmp     %r12, %rbx
        jae     .Lxs_done
        call    sse_load_pattern
        mov     %rdx, %rcx
        mov     $3, %eax                /* x87 | SSE */
        xor     %edx, %edx
SITE site_xsave
        xsave   xs_area(%rip)
        COUNT count_xsave
        NOTE_STORE xs_xmm0, %rcx
        movdqu  sse_out + 48(%rip), %xmm0
        mov     $3, %eax
        xor     %edx, %edx
SITE site_xrstor
        xrstor  xs_area(%rip)
        COUNT count_xrstor
        NOTE_READ xs_xmm0
        movdqu  %xmm0, sse_out(%rip)
        inc     %rbx
        jmp     .Lxs_round
.Lxs_done:
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_xsave

        CORPUS_END
