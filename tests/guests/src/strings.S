/*
 * strings - rep-prefixed string instructions (movs, stos, cmps, scas,
 * lods) with rcx 0, 1 and many, forwards and backwards, across a page
 * boundary, on watched source and destination bytes.
 *
 * Case "strings" (default N 4): N rounds; round i fills a 96-byte region
 * of src_area with the byte f(i) = i/2 + 1 (rep stosb), copies it to
 * dst_area in several ways and compares and scans it.  The region
 * [B-64, B+32) straddles the boundary B between the two pages of each
 * area; src_lo/dst_lo lie before it, src_cross/dst_cross straddle it.
 * Every copy after the first in a round stores the value already there.
 *
 * Ground truth: count_<site> per site execution (a rep instruction is one
 * execution however many iterations), stores_/changes_/reads_ of the four
 * watched quadwords.
 */
#include "corpus.h"

        CORPUS_BEGIN
        CASE strings, case_strings, 4

#define B 4096
#define REGION (B - 64)
#define REGION_LEN 96

        PAGEDATA strings_src
        OBJECT src_area, (2*B)
        .skip B - 48
        OBJECT src_lo, 8
        .skip 8
        .skip 48 - 8 - 4
        OBJECT src_cross, 8
        .skip 8
        .skip B - 4

        PAGEDATA strings_dst
        OBJECT dst_area, (2*B)
        .skip B - 48
        OBJECT dst_lo, 8
        .skip 8
        .skip 48 - 8 - 4
        OBJECT dst_cross, 8
        .skip 8
        .skip B - 4

        CHECKSUMMED (src_area+REGION), REGION_LEN
        CHECKSUMMED (dst_area+REGION), REGION_LEN

        WATCHED src_lo
        WATCHED src_cross
        WATCHED dst_lo
        WATCHED dst_cross
        COUNTER count_stosb_many
        COUNTER count_movsb_many
        COUNTER count_movsq_many
        COUNTER count_movsb_one
        COUNTER count_movsb_zero
        COUNTER count_cmpsb_many
        COUNTER count_scasb_many
        COUNTER count_lodsb_many
        COUNTER count_stosq_many
        COUNTER count_cmpsb_one
        COUNTER count_scasb_zero
        COUNTER count_lodsq
        COUNTER count_stosq
        COUNTER count_movsq
        COUNTER count_movsb_back
        COUNTER count_mismatches

/* Every read and store of a site on the four watched quadwords. */
.macro READS_SRC
        NOTE_READ src_lo
        NOTE_READ src_cross
.endm
.macro READS_DST
        NOTE_READ dst_lo
        NOTE_READ dst_cross
.endm
.macro STORES_SRC
        NOTE_STORE src_lo, %rdx
        NOTE_STORE src_cross, %rdx
.endm
.macro STORES_DST
        NOTE_STORE dst_lo, %rdx
        NOTE_STORE dst_cross, %rdx
.endm

        .text
/* void case_strings(long n) */
FUNC case_strings
        push    %rbx
        push    %r12
        mov     %rdi, %r12
        xor     %ebx, %ebx
.Lround:
        cmp     %r12, %rbx
        jae     .Ldone
        /* rdx = f(i) in every byte: the value the region holds this round */
        mov     %rbx, %rax
        shr     $1, %rax
        inc     %rax
        movabs  $0x0101010101010101, %rdx
        imul    %rax, %rdx

        lea     src_area + REGION(%rip), %rdi
        mov     $REGION_LEN, %ecx
SITE site_stosb_many
        rep stosb
        COUNT count_stosb_many
        STORES_SRC

        lea     src_area + REGION(%rip), %rsi
        lea     dst_area + REGION(%rip), %rdi
        mov     $REGION_LEN, %ecx
SITE site_movsb_many
        rep movsb
        COUNT count_movsb_many
        READS_SRC
        STORES_DST

        lea     src_area + REGION(%rip), %rsi
        lea     dst_area + REGION(%rip), %rdi
        mov     $REGION_LEN / 8, %ecx
SITE site_movsq_many
        rep movsq
        COUNT count_movsq_many
        READS_SRC
        STORES_DST

        lea     src_cross(%rip), %rsi
        lea     dst_cross(%rip), %rdi
        mov     $1, %ecx
SITE site_movsb_one
        rep movsb
        COUNT count_movsb_one
        NOTE_READ src_cross
        NOTE_STORE dst_cross, %rdx

        lea     src_cross(%rip), %rsi
        lea     dst_cross(%rip), %rdi
        xor     %ecx, %ecx
SITE site_movsb_zero
        rep movsb
        COUNT count_movsb_zero

        lea     src_area + REGION(%rip), %rsi
        lea     dst_area + REGION(%rip), %rdi
        mov     $REGION_LEN, %ecx
SITE site_cmpsb_many
        repe cmpsb
        jne     1f
        test    %rcx, %rcx
        jz      2f
1:      COUNT count_mismatches
2:      COUNT count_cmpsb_many
        READS_SRC
        READS_DST

        mov     %rdx, %rax
        lea     dst_area + REGION(%rip), %rdi
        mov     $REGION_LEN, %ecx
SITE site_scasb_many
        repe scasb
        jne     1f
        test    %rcx, %rcx
        jz      2f
1:      COUNT count_mismatches
2:      COUNT count_scasb_many
        READS_DST

        lea     src_area + REGION(%rip), %rsi
        mov     $REGION_LEN, %ecx
SITE site_lodsb_many
        rep lodsb
        COUNT count_lodsb_many
        READS_SRC
        cmp     %dl, %al
        je      1f
        COUNT count_mismatches
1:
        mov     %rdx, %rax
        lea     dst_area + REGION(%rip), %rdi
        mov     $REGION_LEN / 8, %ecx
SITE site_stosq_many
        rep stosq
        COUNT count_stosq_many
        STORES_DST

        lea     src_cross(%rip), %rsi
        lea     dst_cross(%rip), %rdi
        mov     $1, %ecx
SITE site_cmpsb_one
        repe cmpsb
        je      1f
        COUNT count_mismatches
1:      COUNT count_cmpsb_one
        NOTE_READ src_cross
        NOTE_READ dst_cross

        mov     %rdx, %rax
        not     %rax
        lea     dst_cross(%rip), %rdi
        xor     %ecx, %ecx
SITE site_scasb_zero
        repne scasb
        COUNT count_scasb_zero

        lea     src_cross(%rip), %rsi
SITE site_lodsq
        lodsq
        COUNT count_lodsq
        NOTE_READ src_cross
        cmp     %rdx, %rax
        je      1f
        COUNT count_mismatches
1:
        mov     %rdx, %rax
        lea     dst_lo(%rip), %rdi
SITE site_stosq
        stosq
        COUNT count_stosq
        NOTE_STORE dst_lo, %rdx

        lea     src_lo(%rip), %rsi
        lea     dst_lo(%rip), %rdi
SITE site_movsq
        movsq
        COUNT count_movsq
        NOTE_READ src_lo
        NOTE_STORE dst_lo, %rdx

        /* memmove's backward copy: DF=1 walks down from the region's end */
        lea     src_area + REGION + REGION_LEN - 1(%rip), %rsi
        lea     dst_area + REGION + REGION_LEN - 1(%rip), %rdi
        mov     $REGION_LEN, %ecx
        std
SITE site_movsb_back
        rep movsb
        cld
        COUNT count_movsb_back
        READS_SRC
        STORES_DST

        inc     %rbx
        jmp     .Lround
.Ldone:
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_strings

        CORPUS_END
