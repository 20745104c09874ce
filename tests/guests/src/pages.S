/*
 * pages - code placed against page boundaries: a 1-byte instruction on the
 * last byte of a page, one on the first byte of the next, a 10-byte
 * instruction straddling a boundary; code and data on one page (the code
 * stores to that data); stores followed at once by a breakpoint site, to
 * a watched data page, to the code's own page and to another code page.
 *
 * Case "pages" (default N 4).  The code lives in four page-aligned pages
 * (pages_code, offsets below); unused bytes are int3, so a stray jump
 * ends the guest in its #BP handler.  site_last_byte is `cmc` and the next
 * instruction adds the carry to the result: executing it twice, or not at
 * all, changes pages_result.
 *
 * Ground truth: count_<site> per execution; stores_/changes_/reads_ of
 * code_data_word (on the code page), trap_page_word (on the page of
 * site_trap_page_fn) and pages_watched (a data page); pages_result
 * (checksummed).
 */
#include "corpus.h"

        CORPUS_BEGIN
        CASE pages, case_pages, 4

        PAGEDATA pages
        OBJECT pages_watched, 8
        .quad 0

        .data
        .balign 8
OBJECT pages_result, 8
        .quad 0
        CHECKSUMMED pages_result, 8
        CHECKSUMMED pages_watched, 8
        CHECKSUMMED code_data_word, 8
        CHECKSUMMED trap_page_word, 8

        WATCHED code_data_word
        WATCHED trap_page_word
        WATCHED pages_watched
        COUNTER count_last_byte
        COUNTER count_first_byte
        COUNTER count_straddle
        COUNTER count_store_same_page
        COUNTER count_after_store_same_page
        COUNTER count_store_trap_page
        COUNTER count_after_store_trap_page
        COUNTER count_trap_page_fn
        COUNTER count_store_watched
        COUNTER count_after_store_watched

        .section .text.pages, "ax"
        .balign CORPUS_PAGE, 0xcc
        .globl pages_code
pages_code:
        .org 0xf00, 0xcc
FUNC case_pages
        push    %rbx
        push    %r12
        push    %r13
        mov     %rdi, %r12
        xor     %ebx, %ebx
        xor     %r13d, %r13d
.Lround:
        cmp     %r12, %rbx
        jae     .Ldone
        bt      $0, %rbx                /* CF = i & 1 */
        jmp     site_last_byte
        .org 0xfff, 0xcc
SITE site_last_byte
        cmc
SITE site_first_byte                    /* pages_code + 0x1000 */
        adc     $0, %r13
        COUNT count_last_byte
        COUNT count_first_byte
        jmp     site_straddle
        .org 0x1ffd, 0xcc
SITE site_straddle                      /* 10 bytes, to pages_code + 0x2007 */
        movabs  $0x1122334455667788, %rax
        add     %rax, %r13
        COUNT count_straddle

        /* rax = i/2 + 1: a new value every other round */
        mov     %rbx, %rax
        shr     $1, %rax
        inc     %rax
SITE site_store_same_page
        mov     %rax, code_data_word(%rip)
SITE site_after_store_same_page
        add     %rax, %r13
        COUNT count_store_same_page
        COUNT count_after_store_same_page
        NOTE_STORE code_data_word, %rax

SITE site_store_trap_page
        mov     %rax, trap_page_word(%rip)
SITE site_after_store_trap_page
        add     %rax, %r13
        COUNT count_store_trap_page
        COUNT count_after_store_trap_page
        NOTE_STORE trap_page_word, %rax
        call    site_trap_page_fn
        add     %rax, %r13

SITE site_store_watched
        mov     %rax, pages_watched(%rip)
SITE site_after_store_watched
        add     %rax, %r13
        COUNT count_store_watched
        COUNT count_after_store_watched
        NOTE_STORE pages_watched, %rax

        inc     %rbx
        jmp     .Lround
.Ldone:
        mov     %r13, pages_result(%rip)
        pop     %r13
        pop     %r12
        pop     %rbx
        ret
ENDFUNC case_pages

        .org 0x2800, 0xcc
OBJECT code_data_word, 8                /* data on the page of the code above */
        .quad 0

        .org 0x3000, 0xcc
FUNC site_trap_page_fn                  /* a breakpoint here protects its page */
        COUNT count_trap_page_fn
        lea     1(%rax), %rax
        ret
ENDFUNC site_trap_page_fn

        .org 0x3800, 0xcc
OBJECT trap_page_word, 8                /* data on the page of site_trap_page_fn */
        .quad 0
        .balign CORPUS_PAGE, 0xcc

        CORPUS_END
