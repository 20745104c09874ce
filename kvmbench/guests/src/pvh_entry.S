/*
 * pvh_entry.S - the second way in: the Xen/x86 PVH boot ABI, which QEMU takes
 * for `-kernel GUEST.elf` (and which kvmbench's own VMM ignores: it enters
 * _start at e_entry, already in long mode).
 *
 * The ABI (Xen docs/misc/pvh.pandoc, "x86/HVM direct boot ABI"): an ELF
 * note XEN_ELFNOTE_PHYS32_ENTRY names a 32-bit entry point; the loader
 * enters it in 32-bit protected mode with paging off, flat 4 GiB code
 * and data segments, and ebx = the physical address of struct
 * hvm_start_info (magic 0x336ec578 at offset 0, the command line's
 * physical address at offset 24).
 *
 * pvh_start does what the VMM does before a guest's first instruction
 * (kvmbench/backends/kvm/boot.py): the same identity page tables for the
 * first GiB (2 MiB pages), the same GDT, long mode with the same CR0,
 * CR4 and EFER, the arguments at BOOT_ARGS_ADDR (from the command line,
 * one word per argument), rsp = BOOT_STACK_TOP, rdi = argc, rsi = argv,
 * every other register 0 and rflags 0x2, then a jump to _start.
 */

/* Numbers from runtime.h and kvmbench/backends/kvm/layout.py; this file
 * does not include runtime.h (it is C). */
#define PML4_ADDR           0x1000
#define PDPT_ADDR           0x2000
#define PD_ADDR             0x3000
#define GDT_ADDR            0x4000
#define BOOT_ARGS_ADDR      0x8000
#define BOOT_ARGS_SIZE      0x1000
#define BOOT_STACK_TOP      0x80000
#define GDT_CODE64_SELECTOR 0x08
#define GDT_DATA_SELECTOR   0x10

#define XEN_ELFNOTE_PHYS32_ENTRY  18
#define HVM_START_MAGIC           0x336ec578
#define HVM_START_CMDLINE_PADDR   24

#define PAGE_PRESENT_RW     0x3
#define PAGE_HUGE           0x80
#define CR0_LONG_MODE       0x80010033   /* PE MP ET NE WP PG, as boot.py */
#define CR4_PAE             0x20
#define MSR_EFER            0xC0000080
#define EFER_LME            0x100

/*
 * The note, in the image and in a PT_NOTE segment of its own (link.ld).
 * Name "Xen" (4 bytes with its NUL) and a 4-byte descriptor: the 32-bit
 * physical entry point, as the ABI's ELFNOTE(..., .long, entry) has it.
 */
        .section .note.pvh, "a", @note
        .balign 4
        .long   4                       /* namesz */
        .long   4                       /* descsz */
        .long   XEN_ELFNOTE_PHYS32_ENTRY
        .asciz  "Xen"
        .balign 4
        .long   pvh_start

        .section .text.pvh, "ax"
        .code32
        .globl  pvh_start
        .type   pvh_start, @function
pvh_start:
        cli
        cld
        movl    $1, booted_by_pvh

        /* Copy the command line out of low memory before the page tables
         * and arguments are written there: the loader may have put it
         * anywhere.  At most BOOT_ARGS_SIZE - 1 bytes; pvh_cmdline is in
         * .data, zero-filled, so the copy stays NUL-terminated. */
        cmpl    $HVM_START_MAGIC, (%ebx)
        jne     2f
        movl    HVM_START_CMDLINE_PADDR(%ebx), %esi
        testl   %esi, %esi
        jz      2f
        movl    $pvh_cmdline, %edi
        movl    $BOOT_ARGS_SIZE - 1, %ecx
1:      lodsb
        testb   %al, %al
        jz      2f
        stosb
        loop    1b
2:
        /* Page tables: PML4[0] -> PDPT, PDPT[0] -> PD, 512 2 MiB pages. */
        movl    $PML4_ADDR, %edi
        movl    $(3 * 4096) / 4, %ecx
        xorl    %eax, %eax
        rep stosl
        movl    $PDPT_ADDR | PAGE_PRESENT_RW, PML4_ADDR
        movl    $PD_ADDR | PAGE_PRESENT_RW, PDPT_ADDR
        movl    $PD_ADDR, %edi
        movl    $PAGE_PRESENT_RW | PAGE_HUGE, %eax
        movl    $512, %ecx
3:      movl    %eax, (%edi)
        addl    $0x200000, %eax
        addl    $8, %edi
        loop    3b

        /* GDT: null, 64-bit code, data (the VMM's three entries). */
        movl    $GDT_ADDR, %edi
        movl    $pvh_gdt, %esi
        movl    $pvh_gdt_end - pvh_gdt, %ecx
        rep movsb
        lgdt    pvh_gdtr

        /* Long mode (Intel SDM vol. 3, 10.8.5): PAE, CR3, EFER.LME, then
         * paging on; the far jump loads the 64-bit code segment. */
        movl    $CR4_PAE, %eax
        movl    %eax, %cr4
        movl    $PML4_ADDR, %eax
        movl    %eax, %cr3
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $EFER_LME, %eax
        wrmsr
        movl    $CR0_LONG_MODE, %eax
        movl    %eax, %cr0
        ljmp    $GDT_CODE64_SELECTOR, $pvh_start64

        .code64
pvh_start64:
        movl    $GDT_DATA_SELECTOR, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %fs
        movl    %eax, %gs
        movl    %eax, %ss
        movq    $BOOT_STACK_TOP, %rsp
        call    pvh_boot_args               /* argc in eax; argv at BOOT_ARGS_ADDR */
        movl    %eax, %edi
        movl    $BOOT_ARGS_ADDR, %esi
        xorl    %eax, %eax                  /* the registers the VMM leaves 0 */
        xorl    %ebx, %ebx
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        xorl    %ebp, %ebp
        xorl    %r8d, %r8d
        xorl    %r9d, %r9d
        xorl    %r10d, %r10d
        xorl    %r11d, %r11d
        xorl    %r12d, %r12d
        xorl    %r13d, %r13d
        xorl    %r14d, %r14d
        xorl    %r15d, %r15d
        pushq   $0x2                        /* rflags: only the reserved bit */
        popfq
        jmp     _start
        .size   pvh_start, . - pvh_start

        .section .rodata.pvh, "a"
        .balign 8
pvh_gdt:
        .quad   0
        .quad   0x00AF9A000000FFFF          /* 64-bit code, DPL 0 (SDM vol. 3, 3.4.5) */
        .quad   0x00CF92000000FFFF          /* data, DPL 0 */
pvh_gdt_end:
pvh_gdtr:
        .word   pvh_gdt_end - pvh_gdt - 1
        .long   GDT_ADDR

        .section .note.GNU-stack, "", @progbits
