/*
 * probe - tiny programs the host capability probe runs (kvmbench probe).
 *
 * argv[1] picks one; each ends with a normal exit even if no debugger
 * catches anything, so a mechanism the host does not deliver shows up as
 * "exited without a stop", never as a hang.
 *
 *   int3      int3 once at probe_int3_site (inside probe_int3()); the
 *             guest's own #BP handler just returns
 *   hlt       one hlt at probe_hlt_site, inside probe_hlt() (IF=0: the
 *             VMM sees a HLT exit)
 *   exec      call probe_target() 100 times
 *   write     store to probe_var 100 times
 *   read      load probe_var 100 times
 *   step      run probe_step_code: straight-line nops and movs
 *   irq       timer at 1000 us, interrupts on; exit 0 once probe_ticks
 *             reaches 3, or 2 if it did not within about a second
 *   sti_step  a pending timer tick, then probe_sti_block (sti, nop,
 *             cpuid, wrmsr, cli) for single-step conformance (the
 *             interrupt must not be delivered while stepping), then
 *             interrupts on until a tick arrives (probe_ticks > 0)
 *   movdr     one mov to DR0 at probe_movdr_site (DR7.GD conformance:
 *             with general detect on, the mov raises #DB before it runs)
 *
 * Exits 0 (irq: 2 on too few ticks); EXIT_USAGE for an unknown mode.
 */
#include "runtime.h"

#define PROBE_REPEAT 100
#define PROBE_IRQ_TICKS 3
/* Waits end on whichever bound comes first: iterations (in case the TSC
 * does not advance) or TSC cycles (guests run natively on some hosts and
 * emulated, a thousand times slower, on others). */
#define PROBE_IRQ_SPINS 200000000UL
#define PROBE_IRQ_CYCLES (1UL << 32)       /* 1-2 s at 2-4 GHz */
#define PROBE_PENDING_SPINS 10000000UL
#define PROBE_PENDING_CYCLES 10000000UL    /* 2-5 ms: a 1 ms tick falls due */
#define BP_VECTOR 3
#define GP_VECTOR 13

/* Alone in its page: a page-granular watchpoint sees only these stores. */
volatile unsigned long probe_var OWN_PAGE("probe_var");

volatile unsigned long probe_sink;
volatile unsigned long probe_bp_hits;
volatile unsigned long probe_ticks;
volatile unsigned long probe_gp_skips;
volatile unsigned long probe_spins;

extern char probe_wrmsr_site[];

/* ---- int3 ---- */

NOINLINE void probe_bp_handler(struct trap_frame *frame)
{
    (void)frame;    /* #BP is a trap: rip is already past the int3 */
    probe_bp_hits++;
}

NOINLINE void probe_int3(void)
{
    __asm__ volatile(".globl probe_int3_site\n"
                     "probe_int3_site:\n\t"
                     "int3");
}

/* ---- hlt ---- */

NOINLINE void probe_hlt(void)
{
    __asm__ volatile(".globl probe_hlt_site\n"
                     "probe_hlt_site:\n\t"
                     "hlt");
}

/* ---- exec, write, read ---- */

NOINLINE void probe_target(void)
{
}

NOINLINE void probe_exec(void)
{
    for (int i = 0; i < PROBE_REPEAT; i++)
        probe_target();
}

NOINLINE void probe_write(void)
{
    for (int i = 0; i < PROBE_REPEAT; i++)
        probe_var = i;
}

NOINLINE void probe_read(void)
{
    for (int i = 0; i < PROBE_REPEAT; i++)
        probe_sink += probe_var;
}

/* ---- step: fixed, known instructions (no compiler in between) ---- */

void probe_step_code(void);
__asm__(".text\n"
        ".globl probe_step_code\n"
        ".type probe_step_code, @function\n"
        "probe_step_code:\n\t"
        "nop\n\t"                 /* 90 */
        "mov $1, %eax\n\t"        /* b8 01 00 00 00 */
        "mov %eax, %ecx\n\t"      /* 89 c1 */
        "nop\n\t"                 /* 90 */
        "mov $2, %eax\n\t"        /* b8 02 00 00 00 */
        "ret\n"
        ".size probe_step_code, . - probe_step_code\n");

/* ---- irq ---- */

NOINLINE void probe_tick_handler(struct trap_frame *frame)
{
    (void)frame;
    probe_ticks++;
}

NOINLINE int probe_irq(void)
{
    u64 start = rdtsc();

    set_trap_handler(TIMER_VECTOR, probe_tick_handler);
    timer_start(1000);
    irq_enable();
    for (probe_spins = 0; probe_spins < PROBE_IRQ_SPINS; probe_spins++)
        if (probe_ticks >= PROBE_IRQ_TICKS || rdtsc() - start > PROBE_IRQ_CYCLES)
            break;
    irq_disable();
    timer_stop();
    return probe_ticks >= PROBE_IRQ_TICKS ? 0 : 2;
}

/* ---- sti_step ---- */

/*
 * The single-step case of the Linux KVM selftest debug_regs.c: step
 * across sti (and its one-instruction interrupt shadow), cpuid and wrmsr
 * (which KVM emulates or exits for) and cli, with a timer interrupt
 * pending all along.  The wrmsr writes 0 to IA32_TSC_DEADLINE (0x6e0),
 * which disarms a timer we never armed; should the host refuse it with
 * #GP, probe_gp_handler skips the instruction.
 */
void probe_sti_step(void);
__asm__(".text\n"
        ".globl probe_sti_step, probe_sti_block, probe_sti_block_end, probe_wrmsr_site\n"
        ".type probe_sti_step, @function\n"
        "probe_sti_step:\n\t"
        "push %rbx\n"             /* cpuid clobbers it; callee-saved */
        "probe_sti_block:\n\t"
        "sti\n\t"
        "nop\n\t"
        "xor %eax, %eax\n\t"
        "cpuid\n\t"
        "mov $0x6e0, %ecx\n\t"
        "xor %eax, %eax\n\t"
        "xor %edx, %edx\n"
        "probe_wrmsr_site:\n\t"
        "wrmsr\n\t"
        "cli\n"
        "probe_sti_block_end:\n\t"
        "pop %rbx\n\t"
        "ret\n"
        ".size probe_sti_step, . - probe_sti_step\n");

#define WRMSR_SIZE 2  /* 0f 30 */

NOINLINE void probe_gp_handler(struct trap_frame *frame)
{
    if (frame->rip != (u64)probe_wrmsr_site) {
        printf("unhandled exception 13 at rip=0x%lx\n", frame->rip);
        exit(128 + GP_VECTOR);
    }
    frame->rip += WRMSR_SIZE;
    probe_gp_skips++;
}

NOINLINE void probe_sti(void)
{
    u64 start = rdtsc();

    set_trap_handler(TIMER_VECTOR, probe_tick_handler);
    set_trap_handler(GP_VECTOR, probe_gp_handler);
    timer_start(1000);
    /* Interrupts are off: let a tick fall due so it is pending at the sti. */
    for (probe_spins = 0; probe_spins < PROBE_PENDING_SPINS; probe_spins++)
        if (rdtsc() - start > PROBE_PENDING_CYCLES)
            break;
    probe_sti_step();
    /* Now let the pending tick in (probe_ticks > 0 shows one was due). */
    start = rdtsc();
    irq_enable();
    for (probe_spins = 0; probe_spins < PROBE_PENDING_SPINS; probe_spins++)
        if (probe_ticks > 0 || rdtsc() - start > PROBE_PENDING_CYCLES)
            break;
    irq_disable();
    timer_stop();
}

/* ---- movdr ---- */

NOINLINE void probe_movdr(void)
{
    __asm__ volatile(".globl probe_movdr_site\n"
                     "xor %%eax, %%eax\n\t"
                     "probe_movdr_site:\n\t"
                     "mov %%rax, %%dr0" ::: "rax");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    if (str_eq(mode, "int3")) {
        set_trap_handler(BP_VECTOR, probe_bp_handler);
        probe_int3();
    } else if (str_eq(mode, "hlt")) {
        probe_hlt();
    } else if (str_eq(mode, "exec")) {
        probe_exec();
    } else if (str_eq(mode, "write")) {
        probe_write();
    } else if (str_eq(mode, "read")) {
        probe_read();
    } else if (str_eq(mode, "step")) {
        probe_step_code();
    } else if (str_eq(mode, "irq")) {
        return probe_irq();
    } else if (str_eq(mode, "sti_step")) {
        probe_sti();
    } else if (str_eq(mode, "movdr")) {
        probe_movdr();
    } else {
        printf("usage: probe int3|hlt|exec|write|read|step|irq|sti_step|movdr\n");
        return EXIT_USAGE;
    }
    return 0;
}
