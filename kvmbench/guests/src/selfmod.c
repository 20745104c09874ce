/*
 * selfmod - code that rewrites itself, for breakpoints that must survive
 * guest stores over the bytes they patched.
 *
 * patched() returns the immediate of one `mov $imm, %eax`, at the global
 * label patch_site.  main calls it (1), rewrites the instruction to
 * return 2, calls it, rewrites it to return 3, calls it.  Exits 0 only if
 * it saw 1, 2, 3.
 */
#include "runtime.h"

#define MOV_IMM32_EAX 0xB8  /* B8+rd id: mov r32, imm32 (SDM vol. 2B, MOV) */
#define MOV_SIZE 5

extern volatile u8 patch_site[];   /* the mov below */
volatile unsigned long patch_count;

NOINLINE int patched(void)
{
    int value;

    __asm__ volatile(".globl patch_site\n"
                     "patch_site:\n\t"
                     "movl $1, %0"
                     : "=a"(value));
    return value;
}

/* Rewrite the whole instruction at patch_site as `mov $value, %eax`. */
NOINLINE void patch(int value)
{
    u8 insn[MOV_SIZE] = {
        MOV_IMM32_EAX, value & 0xFF, (value >> 8) & 0xFF,
        (value >> 16) & 0xFF, (value >> 24) & 0xFF,
    };

    for (int i = 0; i < MOV_SIZE; i++)
        patch_site[i] = insn[i];
    patch_count++;
    /* Writes to the code we are about to run: a serialising instruction
     * is the architectural way to make sure we run the new bytes (SDM
     * vol. 3, 8.1.3); the call into patched() would do on any real CPU. */
    __asm__ volatile("cpuid" : : "a"(0) : "rbx", "rcx", "rdx", "memory");
}

int main(int argc, char **argv)
{
    int results[3];

    (void)argc;
    (void)argv;
    if (patch_site[0] != MOV_IMM32_EAX) {
        printf("selfmod: unexpected opcode 0x%x at patch_site\n", patch_site[0]);
        return 3;
    }
    results[0] = patched();
    printf("patched() = %d\n", results[0]);
    patch(2);
    results[1] = patched();
    printf("patched() = %d\n", results[1]);
    patch(3);
    results[2] = patched();
    printf("patched() = %d\n", results[2]);
    return results[0] == 1 && results[1] == 2 && results[2] == 3 ? 0 : 1;
}
