/*
 * runtime.c - console, exit, argument parsing, IDT and trap dispatch.
 *
 * Kept small on purpose: students single-step through it.
 */
#include "runtime.h"

/* ---- Console and exit --------------------------------------------------- */

int putchar(int c)
{
    /* The VMM's COM1 is always ready (PORT_SERIAL_LSR reads "transmitter
     * empty"), so there is no need to poll before writing. */
    outb(PORT_SERIAL, (u8)c);
    return (u8)c;
}

int puts(const char *s)
{
    int n = 0;
    while (s[n] != '\0')
        putchar(s[n++]);
    return n;
}

void exit(int code)
{
    outl(PORT_EXIT, (u32)code);
    /* The VMM never resumes us after PORT_EXIT; if it did, stay put. */
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---- printf ------------------------------------------------------------- */

static int print_unsigned(u64 value, unsigned base)
{
    char digits[20];  /* 2^64 has 20 decimal digits */
    int n = 0, printed = 0;

    do {
        digits[n++] = "0123456789abcdef"[value % base];
        value /= base;
    } while (value != 0);
    while (n > 0) {
        putchar(digits[--n]);
        printed++;
    }
    return printed;
}

static int print_signed(long value)
{
    if (value < 0) {
        putchar('-');
        /* Negate as unsigned so that LONG_MIN works. */
        return 1 + print_unsigned(-(u64)value, 10);
    }
    return print_unsigned((u64)value, 10);
}

int printf(const char *fmt, ...)
{
    va_list ap;
    int printed = 0;

    va_start(ap, fmt);
    for (; *fmt != '\0'; fmt++) {
        if (*fmt != '%') {
            putchar(*fmt);
            printed++;
            continue;
        }
        fmt++;
        int is_long = 0;
        if (*fmt == 'l') {
            is_long = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
            printed += print_signed(is_long ? va_arg(ap, long) : va_arg(ap, int));
            break;
        case 'u':
            printed += print_unsigned(is_long ? va_arg(ap, u64) : va_arg(ap, u32), 10);
            break;
        case 'x':
            printed += print_unsigned(is_long ? va_arg(ap, u64) : va_arg(ap, u32), 16);
            break;
        case 'p':
            printed += puts("0x");
            printed += print_unsigned((u64)va_arg(ap, void *), 16);
            break;
        case 'c':
            putchar(va_arg(ap, int));
            printed++;
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            printed += puts(s != NULL ? s : "(null)");
            break;
        }
        case '%':
            putchar('%');
            printed++;
            break;
        case '\0':  /* a lone '%' at the end */
            va_end(ap);
            return printed;
        default:    /* unknown conversion: print it as written */
            putchar('%');
            putchar(*fmt);
            printed += 2;
            break;
        }
    }
    va_end(ap);
    return printed;
}

/* ---- Arguments and strings ---------------------------------------------- */

long parse_int(const char *s, long def)
{
    long value = 0;
    int negative = 0;
    unsigned base = 10;

    if (s == NULL || *s == '\0')
        return def;
    if (*s == '-') {
        negative = 1;
        s++;
    }
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (*s == '\0')
        return def;
    for (; *s != '\0'; s++) {
        unsigned digit;
        if (*s >= '0' && *s <= '9')
            digit = *s - '0';
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            digit = *s - 'a' + 10;
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            digit = *s - 'A' + 10;
        else
            return def;
        value = value * base + digit;
    }
    return negative ? -value : value;
}

long arg_int(int argc, char **argv, int i, long def)
{
    return i < argc ? parse_int(argv[i], def) : def;
}

int str_eq(const char *a, const char *b)
{
    while (*a != '\0' && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

void *memset(void *dst, int c, size_t n)
{
    u8 *d = dst;
    while (n-- > 0)
        *d++ = (u8)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n-- > 0)
        *d++ = *s++;
    return dst;
}

/* ---- Traps -------------------------------------------------------------- */

/* A 64-bit IDT gate descriptor (Intel SDM vol. 3, 6.14.1, figure 6-8). */
struct idt_gate {
    u16 offset_low;
    u16 selector;
    u8 ist;
    u8 type_attr;   /* 0x8E: present, DPL 0, 64-bit interrupt gate */
    u16 offset_mid;
    u32 offset_high;
    u32 reserved;
} __attribute__((packed));

_Static_assert(sizeof(struct idt_gate) == 16, "IDT gates are 16 bytes");
_Static_assert(sizeof(struct trap_frame) == 22 * 8, "crt0.S pushes 22 quadwords");
_Static_assert(__builtin_offsetof(struct trap_frame, rip) == 17 * 8, "rip follows vector, error");

#define TRAP_STUB_SIZE 16  /* crt0.S: .balign 16 per stub */

extern char trap_stubs[];  /* crt0.S */

static struct idt_gate idt[256] __attribute__((aligned(16)));
static trap_handler_fn trap_handlers[256];

void set_trap_handler(int vector, trap_handler_fn fn)
{
    if (vector >= 0 && vector < 256)
        trap_handlers[vector] = fn;
}

/* Whether the master PIC has IRQ `irq` in service (8259A OCW3: read ISR). */
static int pic_in_service(int irq)
{
    outb(PIC1_COMMAND, 0x0B);
    return (inb(PIC1_COMMAND) >> irq) & 1;
}

/* Called by trap_common (crt0.S) with the frame it saved. */
void trap_dispatch(struct trap_frame *frame)
{
    trap_handler_fn fn = trap_handlers[frame->vector & 0xFF];

    if (booted_by_pvh && frame->vector == TIMER_VECTOR + 7 && !pic_in_service(7))
        return;  /* a spurious IRQ 7: the PIC wants no end of interrupt */
    if (fn != NULL) {
        fn(frame);
        if (booted_by_pvh && frame->vector == TIMER_VECTOR)
            outb(PIC1_COMMAND, 0x20);  /* non-specific EOI (8259A OCW2) */
        return;
    }
    printf("unhandled exception %lu at rip=0x%lx\n", frame->vector, frame->rip);
    exit(128 + (int)frame->vector);
}

/* Called once by _start, before main: install our IDT. Interrupt gates
 * (not trap gates) so that handlers run with interrupts off. */
void runtime_init(void)
{
    struct {
        u16 limit;
        u64 base;
    } __attribute__((packed)) idtr;

    for (int v = 0; v < 256; v++) {
        u64 stub = (u64)(trap_stubs + v * TRAP_STUB_SIZE);
        idt[v].offset_low = stub & 0xFFFF;
        idt[v].selector = GDT_CODE64_SELECTOR;
        idt[v].ist = 0;
        idt[v].type_attr = 0x8E;
        idt[v].offset_mid = (stub >> 16) & 0xFFFF;
        idt[v].offset_high = stub >> 32;
        idt[v].reserved = 0;
    }
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (u64)idt;
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

/* ---- Timer -------------------------------------------------------------- */

/*
 * After a PVH boot: the master PIC remapped so IRQ 0 arrives on
 * TIMER_VECTOR (the slave's on the 8 after it), every IRQ but 0 masked,
 * and PIT channel 0 as a rate generator at the period, clamped as the
 * VMM clamps it (at least 100 us) and to what a 16-bit divisor allows.
 */
static void pit_pic_start(unsigned period_us)
{
    u64 divisor;

    if (period_us < 100)
        period_us = 100;
    divisor = (u64)period_us * PIT_HZ / 1000000;
    if (divisor > 0xFFFF)
        divisor = 0xFFFF;

    outb(PIC1_COMMAND, 0x11);          /* ICW1: initialise, ICW4 follows */
    outb(PIC2_COMMAND, 0x11);
    outb(PIC1_DATA, TIMER_VECTOR);     /* ICW2: vector base */
    outb(PIC2_DATA, TIMER_VECTOR + 8);
    outb(PIC1_DATA, 0x04);             /* ICW3: slave on IRQ 2 */
    outb(PIC2_DATA, 0x02);
    outb(PIC1_DATA, 0x01);             /* ICW4: 8086 mode */
    outb(PIC2_DATA, 0x01);
    outb(PIC1_DATA, 0xFE);             /* mask all but IRQ 0 */
    outb(PIC2_DATA, 0xFF);

    outb(PIT_COMMAND, 0x34);           /* channel 0, lobyte/hibyte, mode 2 */
    outb(PIT_CHANNEL0, divisor & 0xFF);
    outb(PIT_CHANNEL0, divisor >> 8);
}

void timer_start(unsigned period_us)
{
    if (!booted_by_pvh) {
        outl(PORT_TIMER, period_us);
    } else if (period_us == 0) {
        timer_stop();
    } else {
        pit_pic_start(period_us);
    }
}

void timer_stop(void)
{
    if (booted_by_pvh)
        outb(PIC1_DATA, 0xFF);         /* mask IRQ 0: no more ticks */
    else
        outl(PORT_TIMER, 0);
}
