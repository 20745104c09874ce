/*
 * crt0.S - guest entry point and trap stubs.
 *
 * The VMM enters _start in 64-bit mode at CPL0, interrupts off, with
 * rdi = argc, rsi = argv and rsp = BOOT_STACK_TOP (runtime.h).
 */

/* Numbers from runtime.h; this file does not include it (it is C). */

#define STACK_SIZE 0x10000   /* the runtime's own 64 KiB stack, in .bss */

        .section .text.start, "ax"
        .globl  _start
        .type   _start, @function
_start:
        lea     runtime_stack_top(%rip), %rsp  /* leave the boot stack */
        xor     %ebp, %ebp                  /* end of the frame-pointer chain */
        cld
        mov     %rdi, %r12                  /* keep argc, argv across the */
        mov     %rsi, %r13                  /* calls below (callee-saved) */

        lea     __bss_start(%rip), %rdi     /* zero .bss (the VMM does too, */
        lea     __bss_end(%rip), %rcx       /* but do not rely on it) */
        sub     %rdi, %rcx
        xor     %eax, %eax
        rep stosb

        call    runtime_init                /* IDT */
        mov     %r12, %rdi
        mov     %r13, %rsi
        call    main
        mov     %eax, %edi
        call    exit                        /* does not return */
1:      hlt
        jmp     1b
        .size   _start, . - _start

/*
 * One 16-byte stub per vector, 256 of them, at trap_stubs + 16 * vector.
 * The CPU pushes an error code for some exceptions only (Intel SDM vol. 3,
 * table 6-1); for the others the stub pushes a 0 so that every trap_frame
 * looks the same.  (A software `int N` to one of those vectors pushes no
 * error code and would confuse the frame: the guests never do that.)
 */
        .section .text.traps, "ax"
        .balign 16
        .globl  trap_stubs
trap_stubs:
        .set    .Lvec, 0
        .rept   256
        .balign 16
        .if (.Lvec == 8) || (.Lvec >= 10 && .Lvec <= 14) || (.Lvec == 17) || (.Lvec == 21) || (.Lvec == 29) || (.Lvec == 30)
        .else
        pushq   $0                          /* no error code from the CPU */
        .endif
        pushq   $.Lvec
        jmp     trap_common
        .set    .Lvec, .Lvec + 1
        .endr
        .size   trap_stubs, . - trap_stubs

/*
 * Save every general register below the vector and error code, making a
 * struct trap_frame at rsp; call trap_dispatch(frame); restore and iretq.
 * The CPU aligned rsp to 16 before pushing its frame, and 22 quadwords
 * keep it aligned for the call.
 */
        .globl  trap_common
        .type   trap_common, @function
trap_common:
        push    %rax
        push    %rbx
        push    %rcx
        push    %rdx
        push    %rbp
        push    %rsi
        push    %rdi
        push    %r8
        push    %r9
        push    %r10
        push    %r11
        push    %r12
        push    %r13
        push    %r14
        push    %r15
        mov     %rsp, %rdi
        cld
        call    trap_dispatch
        pop     %r15
        pop     %r14
        pop     %r13
        pop     %r12
        pop     %r11
        pop     %r10
        pop     %r9
        pop     %r8
        pop     %rdi
        pop     %rsi
        pop     %rbp
        pop     %rdx
        pop     %rcx
        pop     %rbx
        pop     %rax
        add     $16, %rsp                   /* drop vector and error code */
        iretq
        .size   trap_common, . - trap_common

        .section .bss.stack, "aw", @nobits
        .balign 16
        .globl  runtime_stack, runtime_stack_top
runtime_stack:
        .skip   STACK_SIZE
runtime_stack_top:

        .section .note.GNU-stack, "", @progbits
