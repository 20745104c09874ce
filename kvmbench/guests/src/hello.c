/* hello - the smallest guest: print one line, exit 0. */
#include "runtime.h"

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    puts("Hello from a kvmbench guest!\n");
    return 0;
}
