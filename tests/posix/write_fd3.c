/* Exits 0 when writing to descriptor 3 fails with EBADF (a BenchFS descriptor inherited
 * through exec is unusable), 1 when the write went somewhere. Used by fork_write.c. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
    if (write(3, "x", 1) == 1) {
        fprintf(stderr, "write_fd3: the write to descriptor 3 succeeded\n");
        return 1;
    }
    return errno == EBADF ? 0 : 1;
}
