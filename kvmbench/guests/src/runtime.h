/*
 * runtime.h - the tiny runtime every bundled kvmbench guest links with.
 *
 * A guest is a freestanding x86-64 program: no libc, no operating system.
 * The VMM (kvmbench/backends/kvm) loads the ELF at IMAGE_BASE and enters
 * _start (crt0.S) in 64-bit long mode at CPL0 with interrupts disabled and
 * the first GiB identity mapped (virtual == physical, writable and
 * executable everywhere).  The guest talks to the VMM through a handful of
 * I/O ports, listed below.
 *
 * QEMU (`-kernel GUEST.elf -append "NAME ARGS..."`) boots the same ELF
 * through its PVH note instead: pvh_start (pvh_entry.S) builds that same state
 * and enters _start the same way.  There the exit port is QEMU's
 * isa-debug-exit device (iobase=0xf4, iosize=4), the console QEMU's COM1,
 * and the timer the PC's own PIT and 8259 PIC (PORT_TIMER exists only in
 * the VMM).
 *
 * The numbers here mirror kvmbench/backends/kvm/layout.py; change both
 * together.
 */
#ifndef KVMBENCH_RUNTIME_H
#define KVMBENCH_RUNTIME_H

/* ---- The boot contract (kvmbench/backends/kvm/layout.py) ---------------- */

#define IMAGE_BASE        0x100000   /* link address of every guest (link.ld) */
#define BOOT_STACK_TOP    0x80000    /* rsp at entry; _start leaves it at once */
#define GUEST_MEM_SIZE    (32 << 20) /* DEFAULT_MEM_SIZE */
#define GDT_CODE64_SELECTOR 0x08
#define GDT_DATA_SELECTOR   0x10

#define PORT_SERIAL       0x3F8      /* out byte: print one character */
#define PORT_SERIAL_LSR   0x3FD      /* in byte: always "transmitter empty" */
#define PORT_EXIT         0xF4       /* out 32-bit: end the guest, that exit code */
#define PORT_FAULT        0xF5       /* the VMM's own fault stubs; not for guests */
#define PORT_TIMER        0xF6       /* out 32-bit period in us: periodic timer; 0 stops */
#define TIMER_VECTOR      0x20       /* the vector the timer interrupt arrives on */
#define BOOT_ARGS_ADDR    0x8000     /* argv pointers, then the strings */
#define BOOT_ARGS_SIZE    0x1000

/* The PC hardware a PVH boot finds instead of PORT_TIMER: the 8254 PIT
 * (channel 0 drives IRQ 0) and the two 8259A PICs. */
#define PIT_CHANNEL0      0x40
#define PIT_COMMAND       0x43
#define PIT_HZ            1193182
#define PIC1_COMMAND      0x20
#define PIC1_DATA         0x21
#define PIC2_COMMAND      0xA0
#define PIC2_DATA         0xA1

#define PAGE_SIZE         4096

/* ---- Freestanding types (no system headers: builds stay path-free) ------ */

typedef unsigned char      u8;
typedef unsigned short     u16;
typedef unsigned int       u32;
typedef unsigned long      u64;
typedef unsigned long      size_t;
typedef __builtin_va_list  va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type)   __builtin_va_arg(ap, type)
#define va_end(ap)         __builtin_va_end(ap)
#define NULL               ((void *)0)

/*
 * Page-private globals, so that a page-granular watchpoint (a read-only
 * page) on one does not trap on unrelated stores.  OWN_PAGE("x") starts
 * a page-aligned section .pagedata.x; SAME_PAGE("x") adds more variables
 * to it.  link.ld lets nothing else share those pages.
 */
#define OWN_PAGE(name)  __attribute__((section(".pagedata." name), aligned(PAGE_SIZE)))
#define SAME_PAGE(name) __attribute__((section(".pagedata." name)))

/* Keep a function out of line at any optimisation level, so it has its own
 * symbol, frame and call sites for breakpoints, tracepoints and `finish`. */
#define NOINLINE __attribute__((noinline))

/* ---- Console and exit --------------------------------------------------- */

int putchar(int c);
/* Print the string as is: unlike C's puts, no newline is added. */
int puts(const char *s);
/* A small printf: %d %u %x %c %s %p %% and the l forms %ld %lu %lx. */
int printf(const char *fmt, ...);
/* Exit code of every bundled guest given arguments it cannot use. */
#define EXIT_USAGE 64
/* End the guest with `code` (the VMM reports it as the exit code). */
__attribute__((noreturn)) void exit(int code);

/* Decimal (or 0x-prefixed hex) integer in `s`, or `def` if s is NULL,
 * empty or not a number. */
long parse_int(const char *s, long def);
/* argv[i] parsed with parse_int, or `def` if there is no argv[i]. */
long arg_int(int argc, char **argv, int i, long def);
/* 1 if the strings are equal, else 0. */
int str_eq(const char *a, const char *b);

/* gcc may emit calls to these even in freestanding code. */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);

/* ---- Traps and interrupts ----------------------------------------------- */

/*
 * What the trap stubs in crt0.S save, lowest address first: the general
 * registers they push, the vector and error code (0 when the CPU pushes
 * none), then the frame the CPU pushed (Intel SDM vol. 3, 6.14.2).
 * A handler may change any field; the stubs restore the registers and
 * iretq to frame->rip.
 */
struct trap_frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rdi, rsi, rbp, rdx, rcx, rbx, rax;
    u64 vector;
    u64 error_code;
    u64 rip, cs, rflags, rsp, ss;  /* pushed by the CPU */
};

typedef void (*trap_handler_fn)(struct trap_frame *frame);

/* Call `fn` for `vector` (0..255); NULL restores the default handler,
 * which prints "unhandled exception N at rip=0x..." and exits 128+N. */
void set_trap_handler(int vector, trap_handler_fn fn);

/* Start (period_us > 0) or stop the periodic timer on TIMER_VECTOR: the
 * VMM's PORT_TIMER, or after a PVH boot the PIT through the PIC (the
 * runtime sends the PIC its end of interrupt after the handler).  It is
 * delivered only while interrupts are enabled. */
void timer_start(unsigned period_us);
void timer_stop(void);

/* Inline helpers are always_inline so the instruction sits where it is
 * written, even at -O0 (sti's one-instruction shadow, stepping). */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE void outb(u16 port, u8 value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

ALWAYS_INLINE void outl(u16 port, u32 value)
{
    __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}

ALWAYS_INLINE u8 inb(u16 port)
{
    u8 value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

/* The time-stamp counter: cycles at a constant rate (a few GHz), for
 * bounding waits by time rather than by iterations, whose speed varies a
 * thousandfold between hosts that run guest code natively and hosts that
 * emulate it. */
ALWAYS_INLINE u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

ALWAYS_INLINE void irq_enable(void)  { __asm__ volatile("sti" ::: "memory"); }
ALWAYS_INLINE void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
ALWAYS_INLINE void cpu_relax(void)   { __asm__ volatile("pause" ::: "memory"); }

/* The guest's entry point, called by _start. */
int main(int argc, char **argv);

/* 1 if the guest was booted through its PVH note (pvh_entry.S), as QEMU boots it. */
extern int booted_by_pvh;

/* Runtime internals, called from crt0.S and pvh_entry.S. */
void runtime_init(void);
void trap_dispatch(struct trap_frame *frame);
int pvh_boot_args(void);

#endif /* KVMBENCH_RUNTIME_H */
