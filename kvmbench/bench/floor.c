/*
 * floor.c - the least KVM work one counted hit of each debug mechanism needs.
 *
 * `kvmbench bench` divides this program's time per hit by kvmbench's on the
 * same guest and hit count (DESIGN.md, "Measuring against the floor").  It boots a bundled guest exactly as the Python VMM does
 * (kvmbench/backends/kvm/layout.py, boot.py, machine.py), arms one
 * mechanism on one address and counts the hits until the guest exits.
 *
 * Usage: floor MECHANISM ELF_PATH N SYMBOL_ADDR [MODE]
 *   MECHANISM    hw-exec | hw-watch | hlt-trap | page-trap | single-step | none
 *   ELF_PATH     the guest, normally kvmbench/guests/bin/benchloop.elf
 *   N            hits the guest makes (its second argument)
 *   SYMBOL_ADDR  hex address of bench_target (hw-exec, hlt-trap) or of
 *                bench_var (hw-watch, page-trap); unused by single-step and none
 *   MODE         the guest's first argument; default `write` for page-trap,
 *                `call` otherwise
 *
 * Prints one line of JSON on success:
 *   {"mechanism": "hw-exec", "hits": 2000, "seconds": 0.165, "per_hit_us": 82.6,
 *    "first_hit_seconds": 0.068, "resume": "step"}
 * `seconds` runs from the first KVM_RUN to the guest's exit
 * (CLOCK_MONOTONIC), so it includes the guest's start-up; `per_hit_us` is
 * seconds / hits; `first_hit_seconds` (absent for `none`) is when the first
 * hit came, to tell start-up from hits.  `hits` counts traps taken:
 * single-step counts every step, `none` (no debugging: the guest's own run
 * time) reports N.  `resume` (hw-exec only) is how a hit was resumed: "rf",
 * or "step" on hosts that ignore RF (see run_hw_exec).
 *
 * The KVM work of one hit:
 *   hw-exec      KVM_RUN -> debug exit; RF through the sync area
 *   hlt-trap     KVM_RUN -> hlt exit; rip -= 1, restore the byte,
 *                SET_GUEST_DEBUG(step); KVM_RUN -> debug exit; re-patch,
 *                SET_GUEST_DEBUG(0)
 *   hw-watch     KVM_RUN -> debug exit (a data breakpoint is a trap: the
 *                store has retired, nothing to step over)
 *   page-trap    KVM_RUN -> MMIO exit; copy the stored bytes into RAM
 *   single-step  KVM_RUN -> debug exit
 *
 * On failure: one line on stderr and exit status
 *   1  the mechanism did not behave (unexpected exit, wrong hit count,
 *      guest exit code not 0, an ioctl failed while running)
 *   2  bad arguments or guest image
 *   3  the host lacks what the mechanism needs (/dev/kvm, a capability)
 *
 * Registers go through the run page's sync area (KVM_CAP_SYNC_REGS,
 * api.rst "kvm_valid_regs/kvm_dirty_regs"), so a hit that only changes
 * registers costs a single KVM_RUN.
 *
 * Plain C11 with libc (<elf.h> ships with it) and <linux/kvm.h>; built by
 * kvmbench/bench/floor.py with gcc -O2 -Wall -Werror.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, clock_gettime under -std=c11 */

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- The boot contract (kvmbench/backends/kvm/layout.py) ----------------- */

#define MEM_SIZE            (32u << 20)
#define PML4_ADDR           0x1000
#define PDPT_ADDR           0x2000
#define PD_ADDR             0x3000
#define GDT_ADDR            0x4000
#define IDT_ADDR            0x5000
#define BOOT_ARGS_ADDR      0x8000
#define BOOT_ARGS_SIZE      0x1000
#define BOOT_STACK_TOP      0x80000
#define GDT_CODE64_SELECTOR 0x08
#define GDT_DATA_SELECTOR   0x10
#define PORT_SERIAL         0x3f8
#define PORT_SERIAL_LSR     0x3fd
#define PORT_EXIT           0xf4
#define PORT_FAULT          0xf5
#define PORT_TIMER          0xf6
#define PAGE_SIZE           0x1000u

/* Control registers (SDM vol. 3, 2.5), EFER (2.2.1), RFLAGS (2.3). */
#define CR0_PE (1u << 0)
#define CR0_MP (1u << 1)
#define CR0_ET (1u << 4)
#define CR0_NE (1u << 5)
#define CR0_WP (1u << 16)
#define CR0_PG (1u << 31)
#define CR4_PAE (1u << 5)
#define EFER_LME (1u << 8)
#define EFER_LMA (1u << 10)
#define RFLAGS_RESERVED 0x2u
#define RFLAGS_TF (1u << 8)
#define RFLAGS_RF (1u << 16)

/* DR7 (SDM vol. 3, 18.2.4): L0 with R/W0 = 00 (execute) and LEN0 = 00;
 * bit 10 is reserved and set, as KVM keeps it (DR7_FIXED_1). */
#define DR7_FIXED_1 0x400u
#define DR7_L0      0x1u
/* R/W0 = 01 (break on data writes) and LEN0 = 10 (8 bytes). */
#define DR7_RW0_WRITE (0x1u << 16)
#define DR7_LEN0_8    (0x2u << 18)
/* DR6 (SDM vol. 3, 18.2.3): B0 (DR0 matched), BS (single-step). */
#define DR6_B0 (1u << 0)
#define DR6_BS (1u << 14)

#define HLT_OPCODE 0xf4

enum { FAIL_MECHANISM = 1, FAIL_USAGE = 2, FAIL_HOST = 3 };

enum mechanism { HW_EXEC, HW_WATCH, HLT_TRAP, PAGE_TRAP, SINGLE_STEP, NONE };

static const char *const mechanism_names[] = {
    [HW_EXEC] = "hw-exec",
    [HW_WATCH] = "hw-watch",
    [HLT_TRAP] = "hlt-trap",
    [PAGE_TRAP] = "page-trap",
    [SINGLE_STEP] = "single-step",
    [NONE] = "none",
};

static const char *exit_reason_name(uint32_t reason)
{
    switch (reason) {
    case KVM_EXIT_IO: return "KVM_EXIT_IO";
    case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
    case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
    case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
    case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTR: return "KVM_EXIT_INTR";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    default: return "unknown exit";
    }
}

/* ---- Errors: one line on stderr, then exit ------------------------------- */

/* Names the mechanism in error lines once it is known. */
static const char *current_mechanism;

__attribute__((noreturn, format(printf, 2, 3)))
static void fail(int status, const char *fmt, ...)
{
    va_list ap;

    if (current_mechanism != NULL)
        fprintf(stderr, "floor %s: ", current_mechanism);
    else
        fputs("floor: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

/* Every ioctl goes through here: a failure names the ioctl and errno and
 * exits with `status` (FAIL_HOST while setting up, FAIL_MECHANISM once
 * running).  KVM_RUN is retried after a signal (KVM_EXIT_INTR). */
static int xioctl(int status, int fd, unsigned long request, const char *name, void *arg)
{
    int r;

    do {
        r = ioctl(fd, request, arg);
    } while (r < 0 && errno == EINTR && request == KVM_RUN);
    if (r < 0)
        fail(status, "%s failed: %s (errno %d)", name, strerror(errno), errno);
    return r;
}

#define IOCTL(status, fd, req, arg) xioctl((status), (fd), (req), #req, (arg))

/* ---- The machine --------------------------------------------------------- */

struct machine {
    int kvm, vm, vcpu;
    uint8_t *ram;
    struct kvm_run *run;
    struct kvm_regs *regs; /* &run->s.regs.regs: valid between runs */
};

static void set_memslot(struct machine *m, uint32_t slot, uint64_t start, uint64_t size,
                        uint32_t flags)
{
    struct kvm_userspace_memory_region region = {
        .slot = slot,
        .flags = flags,
        .guest_phys_addr = start,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)(m->ram + start),
    };

    IOCTL(FAIL_HOST, m->vm, KVM_SET_USER_MEMORY_REGION, &region);
}

/* All of RAM in one slot, or (page trap) three: below the page, the page
 * itself read-only, above it.  A store to a KVM_MEM_READONLY slot exits
 * as KVM_EXIT_MMIO with is_write set (api.rst, KVM_SET_USER_MEMORY_REGION). */
static void install_memslots(struct machine *m, uint64_t readonly_page)
{
    if (readonly_page == UINT64_MAX) {
        set_memslot(m, 0, 0, MEM_SIZE, 0);
        return;
    }
    set_memslot(m, 0, 0, readonly_page, 0);
    set_memslot(m, 1, readonly_page, PAGE_SIZE, KVM_MEM_READONLY);
    set_memslot(m, 2, readonly_page + PAGE_SIZE, MEM_SIZE - readonly_page - PAGE_SIZE, 0);
}

static void write_u64(struct machine *m, uint64_t address, uint64_t value)
{
    memcpy(m->ram + address, &value, sizeof value);
}

/* Identity paging for the first GiB with 2 MiB pages, and the GDT
 * (boot.write_boot_structures).  The IDT stays zero: the guest's runtime
 * loads its own before anything can fault. */
static void write_boot_structures(struct machine *m)
{
    static const uint64_t gdt[] = {0, 0x00af9a000000ffffull, 0x00cf92000000ffffull};

    write_u64(m, PML4_ADDR, PDPT_ADDR | 0x3);
    write_u64(m, PDPT_ADDR, PD_ADDR | 0x3);
    for (uint64_t i = 0; i < 512; i++)
        write_u64(m, PD_ADDR + i * 8, (i << 21) | 0x83); /* present, RW, 2 MiB */
    memcpy(m->ram + GDT_ADDR, gdt, sizeof gdt);
}

/* Copy the PT_LOAD segments to p_paddr; return the entry (boot.load_elf). */
static uint64_t load_elf(struct machine *m, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint8_t *image;
    Elf64_Ehdr eh;

    if (fd < 0)
        fail(FAIL_USAGE, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0)
        fail(FAIL_USAGE, "%s: %s", path, strerror(errno));
    if ((size_t)st.st_size < sizeof eh)
        fail(FAIL_USAGE, "%s: not an ELF file", path);
    image = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (image == MAP_FAILED)
        fail(FAIL_USAGE, "%s: mmap: %s", path, strerror(errno));
    close(fd);
    memcpy(&eh, image, sizeof eh);
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_machine != EM_X86_64)
        fail(FAIL_USAGE, "%s: not an x86-64 ELF64 image", path);
    if (eh.e_phentsize != sizeof(Elf64_Phdr) ||
        eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > (uint64_t)st.st_size)
        fail(FAIL_USAGE, "%s: bad program header table", path);
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;

        memcpy(&ph, image + eh.e_phoff + i * sizeof ph, sizeof ph);
        if (ph.p_type != PT_LOAD)
            continue;
        /* Below the boot stack lie the page tables and the GDT. */
        if (ph.p_paddr < BOOT_STACK_TOP || ph.p_memsz > MEM_SIZE ||
            ph.p_paddr > MEM_SIZE - ph.p_memsz || ph.p_filesz > ph.p_memsz ||
            ph.p_offset + ph.p_filesz > (uint64_t)st.st_size)
            fail(FAIL_USAGE, "%s: segment at %#llx+%#llx does not fit guest memory", path,
                 (unsigned long long)ph.p_paddr, (unsigned long long)ph.p_memsz);
        memcpy(m->ram + ph.p_paddr, image + ph.p_offset, ph.p_filesz);
        memset(m->ram + ph.p_paddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
    }
    munmap(image, (size_t)st.st_size);
    return eh.e_entry;
}

/* argv pointers at BOOT_ARGS_ADDR, then the strings (boot.write_boot_args). */
static void write_boot_args(struct machine *m, int argc, const char *const *argv)
{
    uint64_t pointers = BOOT_ARGS_ADDR;
    uint64_t strings = BOOT_ARGS_ADDR + (uint64_t)(argc + 1) * 8;

    for (int i = 0; i < argc; i++) {
        size_t len = strlen(argv[i]) + 1;

        if (strings + len > BOOT_ARGS_ADDR + BOOT_ARGS_SIZE)
            fail(FAIL_USAGE, "guest arguments exceed %u bytes", BOOT_ARGS_SIZE);
        write_u64(m, pointers + (uint64_t)i * 8, strings);
        memcpy(m->ram + strings, argv[i], len);
        strings += len;
    }
    write_u64(m, pointers + (uint64_t)argc * 8, 0);
}

/* CPUID before SREGS: KVM refuses EFER.LME for a vCPU without LM. */
static void set_supported_cpuid(struct machine *m)
{
    for (uint32_t nent = 128; nent <= 4096; nent *= 2) {
        struct kvm_cpuid2 *cpuid =
            calloc(1, sizeof *cpuid + nent * sizeof(struct kvm_cpuid_entry2));

        if (cpuid == NULL)
            fail(FAIL_HOST, "out of memory");
        cpuid->nent = nent;
        if (ioctl(m->kvm, KVM_GET_SUPPORTED_CPUID, cpuid) == 0) {
            IOCTL(FAIL_HOST, m->vcpu, KVM_SET_CPUID2, cpuid);
            free(cpuid);
            return;
        }
        free(cpuid);
        if (errno != E2BIG)
            fail(FAIL_HOST, "KVM_GET_SUPPORTED_CPUID failed: %s (errno %d)", strerror(errno),
                 errno);
    }
    fail(FAIL_HOST, "KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

/* Flat 64-bit mode (boot.long_mode_sregs). */
static void set_long_mode_sregs(struct machine *m)
{
    struct kvm_sregs sregs;
    struct kvm_segment code = {
        .base = 0, .limit = 0xffffffff, .selector = GDT_CODE64_SELECTOR,
        .type = 0xb, .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
    };
    struct kvm_segment data = {
        .base = 0, .limit = 0xffffffff, .selector = GDT_DATA_SELECTOR,
        .type = 0x3, .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };

    IOCTL(FAIL_HOST, m->vcpu, KVM_GET_SREGS, &sregs);
    sregs.cs = code;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    /* VM entry wants a busy 64-bit TSS in TR (SDM vol. 3, 27.3.1.2). */
    sregs.tr = (struct kvm_segment){
        .base = 0, .limit = 0x67, .selector = 0, .type = 0xb, .present = 1, .s = 0, .g = 0,
    };
    sregs.gdt = (struct kvm_dtable){.base = GDT_ADDR, .limit = 3 * 8 - 1};
    sregs.idt = (struct kvm_dtable){.base = IDT_ADDR, .limit = 256 * 16 - 1};
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    IOCTL(FAIL_HOST, m->vcpu, KVM_SET_SREGS, &sregs);
}

static void require_extension(struct machine *m, long cap, const char *name, long want)
{
    int r = ioctl(m->kvm, KVM_CHECK_EXTENSION, cap);

    if (r < 0 || (r & want) != want)
        fail(FAIL_HOST, "the host's KVM lacks %s", name);
}

static void boot(struct machine *m, const char *elf_path, int argc, const char *const *argv,
                 uint64_t readonly_page)
{
    struct kvm_regs regs;
    uint64_t entry;
    int mmap_size;

    m->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (m->kvm < 0)
        fail(FAIL_HOST, "/dev/kvm: %s", strerror(errno));
    require_extension(m, KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS", KVM_SYNC_X86_REGS);
    if (readonly_page != UINT64_MAX)
        require_extension(m, KVM_CAP_READONLY_MEM, "KVM_CAP_READONLY_MEM", 1);
    m->vm = IOCTL(FAIL_HOST, m->kvm, KVM_CREATE_VM, (void *)0);
    m->ram = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m->ram == MAP_FAILED)
        fail(FAIL_HOST, "guest memory: %s", strerror(errno));
    install_memslots(m, readonly_page);
    m->vcpu = IOCTL(FAIL_HOST, m->vm, KVM_CREATE_VCPU, (void *)0);
    mmap_size = IOCTL(FAIL_HOST, m->kvm, KVM_GET_VCPU_MMAP_SIZE, (void *)0);
    m->run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, m->vcpu, 0);
    if (m->run == MAP_FAILED)
        fail(FAIL_HOST, "mmap of the run page: %s", strerror(errno));

    write_boot_structures(m);
    entry = load_elf(m, elf_path);
    write_boot_args(m, argc, argv);
    set_supported_cpuid(m);
    set_long_mode_sregs(m);

    regs = (struct kvm_regs){
        .rip = entry, .rsp = BOOT_STACK_TOP, .rdi = (uint64_t)argc, .rsi = BOOT_ARGS_ADDR,
        .rflags = RFLAGS_RESERVED,
    };
    IOCTL(FAIL_HOST, m->vcpu, KVM_SET_REGS, &regs);
    /* From here on registers travel in the run page; until the first
     * KVM_RUN the sync area is empty, so seed it (machine.Machine.boot). */
    m->run->kvm_valid_regs = KVM_SYNC_X86_REGS;
    m->run->s.regs.regs = regs;
    m->run->kvm_dirty_regs = 0;
    m->regs = &m->run->s.regs.regs;
}

static void set_guest_debug(struct machine *m, uint32_t control, uint64_t dr0, uint64_t dr7)
{
    struct kvm_guest_debug debug = {.control = control};

    debug.arch.debugreg[0] = dr0;
    debug.arch.debugreg[7] = dr7;
    IOCTL(FAIL_MECHANISM, m->vcpu, KVM_SET_GUEST_DEBUG, &debug);
}

/* ---- Running --------------------------------------------------------------- */

/* What one run measured. */
struct tally {
    uint64_t hits;
    uint64_t limit;            /* more hits than this is a failure, not a hang */
    struct timespec first_hit; /* valid once hits > 0 */
    const char *resume;        /* hw-exec: how a hit is resumed, "rf" or "step" */
};

static void count_hit(struct tally *t)
{
    if (t->hits == 0)
        clock_gettime(CLOCK_MONOTONIC, &t->first_hit);
    if (++t->hits > t->limit)
        fail(FAIL_MECHANISM, "more than %llu hits", (unsigned long long)t->limit);
}

/* Serve an I/O exit (machine._serve_io); return 1 when the guest exited. */
static int serve_io(struct machine *m)
{
    struct kvm_run *run = m->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    uint32_t value = 0;

    if (run->io.direction == KVM_EXIT_IO_IN) {
        /* The serial line is always ready; other ports are absent. */
        memset(data, run->io.port == PORT_SERIAL_LSR ? 0x60 : 0xff,
               (size_t)run->io.size * run->io.count);
        return 0;
    }
    memcpy(&value, data, run->io.size < sizeof value ? run->io.size : sizeof value);
    switch (run->io.port) {
    case PORT_EXIT:
        if (value != 0)
            fail(FAIL_MECHANISM, "guest exited with code %u", value);
        return 1;
    case PORT_FAULT:
        fail(FAIL_MECHANISM, "guest crashed: exception %u", value & 0xff);
    default:
        return 0; /* console output, timer requests: ignored */
    }
}

/* KVM_RUN until an exit that is not I/O; return its reason, or
 * KVM_EXIT_IO once the guest has written its exit code. */
static uint32_t run_until_event(struct machine *m)
{
    for (;;) {
        IOCTL(FAIL_MECHANISM, m->vcpu, KVM_RUN, (void *)0);
        if (m->run->exit_reason != KVM_EXIT_IO)
            return m->run->exit_reason;
        if (serve_io(m))
            return KVM_EXIT_IO;
    }
}

__attribute__((noreturn))
static void unexpected(struct machine *m, uint32_t reason, const char *expected)
{
    if (reason == KVM_EXIT_DEBUG)
        fail(FAIL_MECHANISM, "KVM_EXIT_DEBUG at pc=%#llx (dr6 %#llx), expected %s",
             (unsigned long long)m->run->debug.arch.pc,
             (unsigned long long)m->run->debug.arch.dr6, expected);
    if (reason == KVM_EXIT_INTERNAL_ERROR)
        fail(FAIL_MECHANISM, "KVM_EXIT_INTERNAL_ERROR (suberror %u) at rip=%#llx, expected %s",
             m->run->internal.suberror, (unsigned long long)m->regs->rip, expected);
    fail(FAIL_MECHANISM, "%s (%u) at rip=%#llx, expected %s", exit_reason_name(reason), reason,
         (unsigned long long)m->regs->rip, expected);
}

/* A debug exit that is one single-step off `from` (DR6.BS, SDM vol. 3,
 * 18.2.3); anything else fails, naming `what`. */
static void expect_step_off(struct machine *m, uint32_t reason, uint64_t from, const char *what)
{
    if (reason != KVM_EXIT_DEBUG || !(m->run->debug.arch.dr6 & DR6_BS) ||
        m->run->debug.arch.pc == from)
        unexpected(m, reason, what);
}

#define HW_EXEC_ARMED (KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP)
#define STEPPING (KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_BLOCKIRQ)

/* Step off the breakpoint with the slot disarmed, then re-arm it. */
static void step_off_slot(struct machine *m, uint64_t target, uint64_t dr7)
{
    set_guest_debug(m, STEPPING, 0, 0);
    expect_step_off(m, run_until_event(m), target, "the step off the breakpoint");
    set_guest_debug(m, HW_EXEC_ARMED, target, dr7);
}

/*
 * Hardware execute slot: DR0 = target, DR7.L0 execute.  A hit is a
 * fault-like #DB before the instruction runs, so it is resumed with RF set
 * (SDM vol. 3, 18.3.1.1) written through the sync area: one KVM_RUN a hit.
 *
 * Some hosts ignore RF (kvm_pvm: DR0 fires again at the same rip, RF still
 * set), so the first hit finds out: RF, then one single-step with the slot
 * still armed.  A step exit means RF works; a DR0 exit at the target means
 * it does not, and every hit is then resumed by the next cheapest thing
 * that works: disarm the slot, single-step, re-arm (two KVM_RUNs and two
 * SET_GUEST_DEBUGs).  kvmbench's engine must do the same on such a host.
 */
static void run_hw_exec(struct machine *m, struct tally *t, uint64_t target)
{
    const uint64_t dr7 = DR7_FIXED_1 | DR7_L0;
    uint32_t reason;

    set_guest_debug(m, HW_EXEC_ARMED, target, dr7);
    while ((reason = run_until_event(m)) == KVM_EXIT_DEBUG) {
        if (m->run->debug.arch.pc != target || !(m->run->debug.arch.dr6 & DR6_B0))
            unexpected(m, reason, "the DR0 breakpoint");
        count_hit(t);
        if (t->resume == NULL) {
            m->regs->rflags |= RFLAGS_RF;
            m->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
            set_guest_debug(m, HW_EXEC_ARMED | STEPPING, target, dr7);
            reason = run_until_event(m);
            if (reason == KVM_EXIT_DEBUG && m->run->debug.arch.pc == target &&
                (m->run->debug.arch.dr6 & DR6_B0)) {
                t->resume = "step";
                m->regs->rflags &= ~(uint64_t)RFLAGS_RF;
                m->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
                step_off_slot(m, target, dr7);
            } else {
                expect_step_off(m, reason, target, "a step past the breakpoint with RF set");
                t->resume = "rf";
                set_guest_debug(m, HW_EXEC_ARMED, target, dr7);
            }
        } else if (t->resume[0] == 'r') {
            m->regs->rflags |= RFLAGS_RF;
            m->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
        } else {
            step_off_slot(m, target, dr7);
        }
    }
    if (reason != KVM_EXIT_IO)
        unexpected(m, reason, "a DR0 debug exit");
}

/*
 * Software trap, the textbook step-over.  No irqchip is created, so hlt
 * exits to userspace (KVM_EXIT_HLT) with rip after it: a one-byte trap on
 * hosts where int3 cannot reach userspace.  Per hit:
 *   KVM_RUN -> KVM_EXIT_HLT; rip -= 1; put the original byte back;
 *   SET_GUEST_DEBUG(SINGLESTEP | BLOCKIRQ); KVM_RUN -> debug exit after
 *   the original instruction; re-patch hlt; SET_GUEST_DEBUG(0); KVM_RUN.
 * BLOCKIRQ keeps an interrupt from being taken inside the step (none can
 * come here: no irqchip, nothing injected).
 *
 * KVM arms a single-step at the rip it sees during SET_GUEST_DEBUG (x86.c
 * keeps it as singlestep_rip and adds TF only while the guest is there),
 * but the sync area reaches the vCPU at the next KVM_RUN, after that: the
 * rewound rip would lose the step.  Setting TF in the synced rflags keeps
 * it at no extra ioctl; KVM hides that TF from reads while stepping
 * (kvm_get_rflags) and clears it at SET_GUEST_DEBUG(0).
 */
static void run_hlt_trap(struct machine *m, struct tally *t, uint64_t target)
{
    const uint8_t original = m->ram[target];
    uint32_t reason;

    m->ram[target] = HLT_OPCODE;
    while ((reason = run_until_event(m)) == KVM_EXIT_HLT) {
        if (m->regs->rip != target + 1)
            fail(FAIL_MECHANISM, "hlt exit at rip=%#llx, expected %#llx",
                 (unsigned long long)m->regs->rip, (unsigned long long)target + 1);
        count_hit(t);
        m->regs->rip = target;
        m->regs->rflags |= RFLAGS_TF;
        m->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
        m->ram[target] = original;
        set_guest_debug(m, STEPPING, 0, 0);
        expect_step_off(m, run_until_event(m), target, "the step over the trapped instruction");
        m->ram[target] = HLT_OPCODE;
        set_guest_debug(m, 0, 0, 0);
    }
    if (reason != KVM_EXIT_IO)
        unexpected(m, reason, "a hlt exit");
}

/* Page trap: the target's page sits in a read-only memslot, so each store
 * to it exits as MMIO; completing the store is copying its bytes into
 * guest RAM (the instruction itself has already retired). */
static void run_page_trap(struct machine *m, struct tally *t, uint64_t page)
{
    uint32_t reason;

    while ((reason = run_until_event(m)) == KVM_EXIT_MMIO) {
        struct kvm_run *run = m->run;
        uint64_t address = run->mmio.phys_addr;
        uint32_t len = run->mmio.len;

        if (!run->mmio.is_write || len > sizeof run->mmio.data || address < page ||
            address + len > page + PAGE_SIZE)
            fail(FAIL_MECHANISM, "MMIO %s of %u bytes at %#llx, expected a store to page %#llx",
                 run->mmio.is_write ? "write" : "read", len, (unsigned long long)address,
                 (unsigned long long)page);
        count_hit(t);
        memcpy(m->ram + address, run->mmio.data, len);
    }
    if (reason != KVM_EXIT_IO)
        unexpected(m, reason, "an MMIO exit");
}

/* Hardware write watch: DR0 over the 8-byte variable; each store exits
 * after it retired (a trap, SDM vol. 3, 18.2.5), so resuming is KVM_RUN. */
static void run_hw_watch(struct machine *m, struct tally *t, uint64_t target)
{
    uint32_t reason;

    set_guest_debug(m, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, target,
                    DR7_FIXED_1 | DR7_L0 | DR7_RW0_WRITE | DR7_LEN0_8);
    while ((reason = run_until_event(m)) == KVM_EXIT_DEBUG) {
        if (!(m->run->debug.arch.dr6 & DR6_B0))
            unexpected(m, reason, "a DR0 data breakpoint exit");
        count_hit(t);
    }
    if (reason != KVM_EXIT_IO)
        unexpected(m, reason, "a DR0 data breakpoint exit");
}

/* Single-step: one KVM_RUN per instruction until the guest exits. */
static void run_single_step(struct machine *m, struct tally *t)
{
    uint32_t reason;

    set_guest_debug(m, STEPPING, 0, 0);
    while ((reason = run_until_event(m)) == KVM_EXIT_DEBUG) {
        if (!(m->run->debug.arch.dr6 & DR6_BS))
            unexpected(m, reason, "a single-step exit");
        count_hit(t);
    }
    if (reason != KVM_EXIT_IO)
        unexpected(m, reason, "a single-step exit");
}

static void run_none(struct machine *m)
{
    uint32_t reason = run_until_event(m);

    if (reason != KVM_EXIT_IO)
        unexpected(m, reason, "the guest's exit");
}

/* ---- main -------------------------------------------------------------------- */

static uint64_t parse_u64(const char *s, int base, const char *what)
{
    char *end;
    unsigned long long value;

    errno = 0;
    value = strtoull(s, &end, base);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
        fail(FAIL_USAGE, "%s: not a number: %s", what, s);
    return value;
}

/* argv[0] of the guest: the image's file name without its extension, as
 * the Python VMM passes it. */
static const char *image_stem(const char *path)
{
    static char stem[256];
    const char *base = strrchr(path, '/');
    char *dot;

    snprintf(stem, sizeof stem, "%s", base != NULL ? base + 1 : path);
    dot = strrchr(stem, '.');
    if (dot != NULL && dot != stem)
        *dot = '\0';
    return stem;
}

static double seconds_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    struct machine m = {0};
    struct tally t = {0};
    enum mechanism mech = NONE;
    struct timespec start, end;
    uint64_t n, address, readonly_page = UINT64_MAX;
    const char *mode;
    const char *guest_argv[3];
    int found = 0;
    double seconds;

    if (argc != 5 && argc != 6)
        fail(FAIL_USAGE,
             "usage: floor hw-exec|hw-watch|hlt-trap|page-trap|single-step|none ELF N SYMBOL_ADDR [MODE]");
    for (int i = 0; i <= NONE; i++) {
        if (strcmp(argv[1], mechanism_names[i]) == 0) {
            mech = (enum mechanism)i;
            found = 1;
        }
    }
    if (!found)
        fail(FAIL_USAGE, "unknown mechanism %s", argv[1]);
    current_mechanism = mechanism_names[mech];
    n = parse_u64(argv[3], 10, "N");
    if (n == 0)
        fail(FAIL_USAGE, "N must be at least 1");
    address = parse_u64(argv[4], 16, "SYMBOL_ADDR");
    mode = argc == 6 ? argv[5] : (mech == PAGE_TRAP || mech == HW_WATCH) ? "write" : "call";
    if ((mech == HW_EXEC || mech == HW_WATCH || mech == HLT_TRAP || mech == PAGE_TRAP) &&
        (address < BOOT_STACK_TOP || address >= MEM_SIZE))
        fail(FAIL_USAGE, "SYMBOL_ADDR %#llx is outside the guest image",
             (unsigned long long)address);
    if (mech == PAGE_TRAP)
        readonly_page = address & ~(uint64_t)(PAGE_SIZE - 1);
    t.limit = mech == SINGLE_STEP ? UINT64_MAX : n;

    guest_argv[0] = image_stem(argv[2]);
    guest_argv[1] = mode;
    guest_argv[2] = argv[3];
    boot(&m, argv[2], 3, guest_argv, readonly_page);

    clock_gettime(CLOCK_MONOTONIC, &start);
    switch (mech) {
    case HW_EXEC: run_hw_exec(&m, &t, address); break;
    case HW_WATCH: run_hw_watch(&m, &t, address); break;
    case HLT_TRAP: run_hlt_trap(&m, &t, address); break;
    case PAGE_TRAP: run_page_trap(&m, &t, readonly_page); break;
    case SINGLE_STEP: run_single_step(&m, &t); break;
    case NONE: run_none(&m); break;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    seconds = seconds_between(&start, &end);

    if (mech == NONE) {
        /* Nothing to count: the guest's N iterations are the "hits". */
        t.hits = n;
    } else if (mech != SINGLE_STEP && t.hits != n) {
        fail(FAIL_MECHANISM, "%llu hits, expected %llu", (unsigned long long)t.hits,
             (unsigned long long)n);
    } else if (t.hits == 0) {
        fail(FAIL_MECHANISM, "no hits");
    }
    printf("{\"mechanism\": \"%s\", \"hits\": %llu, \"seconds\": %.9f, \"per_hit_us\": %.4f",
           mechanism_names[mech], (unsigned long long)t.hits, seconds,
           seconds / (double)t.hits * 1e6);
    if (mech != NONE)
        printf(", \"first_hit_seconds\": %.9f", seconds_between(&start, &t.first_hit));
    if (t.resume != NULL)
        printf(", \"resume\": \"%s\"", t.resume);
    printf("}\n");
    return 0;
}
