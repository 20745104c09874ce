/*
 * pvh.c - what the PVH entry (pvh_entry.S) needs in C: the flag that says the
 * guest came in that way, and the command line turned into argc/argv.
 */
#include "runtime.h"

/* Both in .data, not .bss: pvh_start writes them before _start clears .bss. */
int booted_by_pvh __attribute__((section(".data"))) = 0;
char pvh_cmdline[BOOT_ARGS_SIZE] __attribute__((section(".data"))) = {0};

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

/*
 * Lay out the words of pvh_cmdline at BOOT_ARGS_ADDR as the VMM lays out
 * argv (kvmbench/backends/kvm/boot.py, write_boot_args): argc + 1 pointers
 * (the last NULL), then the NUL-terminated strings.  The command line is
 * the whole argv, program name first ("fib 20").  Words that would not fit
 * in BOOT_ARGS_SIZE are dropped (the host refuses such argument lists).
 * Called by pvh_start on the boot stack, before _start; returns argc.
 */
int pvh_boot_args(void)
{
    int argc = 0, chars = 0;
    const char *p = pvh_cmdline;

    /* Count the words that fit, with their pointers and terminators. */
    for (;;) {
        while (is_space(*p))
            p++;
        if (*p == '\0')
            break;
        int len = 0;
        while (p[len] != '\0' && !is_space(p[len]))
            len++;
        if ((argc + 2) * 8 + chars + len + 1 > BOOT_ARGS_SIZE)
            break;
        argc++;
        chars += len + 1;
        p += len;
    }

    char **argv = (char **)(u64)BOOT_ARGS_ADDR;
    char *strings = (char *)(u64)(BOOT_ARGS_ADDR + (argc + 1) * 8);
    p = pvh_cmdline;
    for (int i = 0; i < argc; i++) {
        while (is_space(*p))
            p++;
        argv[i] = strings;
        while (*p != '\0' && !is_space(*p))
            *strings++ = *p++;
        *strings++ = '\0';
    }
    argv[argc] = NULL;
    return argc;
}
