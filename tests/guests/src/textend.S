/*
 * textend.S - linked last, so its section ends .text (link.ld places
 * input sections in link order): corpus_text_end bounds the code a guest
 * checksums, from _start.
 */
        .section .text.zz_end, "ax"
        .globl corpus_text_end
corpus_text_end:
        .section .note.GNU-stack, "", @progbits
