/* A program that forks and writes from the child, run under libbenchfs_preload.so.
 *
 * The parent creates DIR/shared and writes its first half; the child writes the second half
 * through the descriptor it inherited (pwrite) and a file of its own (DIR/child), exits, and
 * the parent, after waiting, reads everything back through fresh opens. A second child
 * replaces itself (exec) with a program given on the command line, keeping a BenchFS
 * descriptor without close-on-exec as its descriptor 3: that program must fail cleanly on it
 * (EBADF), not write anywhere else. Exits 0 when all holds, 1 with a message otherwise.
 *
 * Usage: fork_write DIR EXEC_CHECK_PROGRAM
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HALF (1 << 20)

static int failed(const char *what) {
    fprintf(stderr, "fork_write: %s: %s\n", what, strerror(errno));
    return 1;
}

static void fill(unsigned char *buf, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(seed * 131 + i * 7 + (i >> 9));
}

static int child_writes(int fd, const char *dir) {
    static unsigned char buf[HALF];
    char path[4096];
    fill(buf, HALF, 2);
    if (pwrite(fd, buf, HALF, HALF) != HALF)
        return failed("child pwrite on the inherited descriptor");
    if (close(fd) != 0)
        return failed("child close of the inherited descriptor");
    snprintf(path, sizeof path, "%s/child", dir);
    int own = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (own < 0)
        return failed("child open of its own file");
    fill(buf, HALF, 3);
    if (write(own, buf, 4096) != 4096)
        return failed("child write of its own file");
    if (close(own) != 0)
        return failed("child close of its own file");
    return 0;
}

static int check(const char *path, size_t offset, size_t n, unsigned seed) {
    static unsigned char want[HALF], got[HALF];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return failed(path);
    fill(want, n, seed);
    ssize_t r = pread(fd, got, n, (off_t)offset);
    close(fd);
    if (r != (ssize_t)n) {
        fprintf(stderr, "fork_write: %s: read %zd of %zu bytes at %zu\n", path, r, n, offset);
        return 1;
    }
    if (memcmp(want, got, n) != 0) {
        fprintf(stderr, "fork_write: %s: wrong bytes at %zu\n", path, offset);
        return 1;
    }
    return 0;
}

static int exec_child(int fd, const char *program) {
    pid_t pid = fork();
    if (pid < 0)
        return failed("fork for exec");
    if (pid == 0) {
        if (dup2(fd, 3) != 3)
            _exit(failed("dup2 onto 3"));
        execl(program, program, (char *)NULL);
        _exit(failed("exec"));
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return failed("waitpid after exec");
    /* The program exits 0 when a write to descriptor 3 failed with EBADF. */
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork_write: the exec'd program could use the BenchFS descriptor\n");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    static unsigned char buf[HALF];
    char shared[4096], own[4096];
    if (argc != 3) {
        fprintf(stderr, "usage: fork_write DIR EXEC_CHECK_PROGRAM\n");
        return 2;
    }
    snprintf(shared, sizeof shared, "%s/shared", argv[1]);
    snprintf(own, sizeof own, "%s/child", argv[1]);
    int fd = open(shared, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0)
        return failed("parent open");
    fill(buf, HALF, 1);
    if (write(fd, buf, HALF) != HALF)
        return failed("parent write");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return failed("fork");
    if (pid == 0)
        exit(child_writes(fd, argv[1]));
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return failed("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork_write: the child failed\n");
        return 1;
    }
    if (exec_child(fd, argv[2]) != 0)
        return 1;
    if (close(fd) != 0)
        return failed("parent close");
    struct stat st;
    if (stat(shared, &st) != 0)
        return failed("stat");
    if (st.st_size != 2 * HALF) {
        fprintf(stderr, "fork_write: size %lld, want %d\n", (long long)st.st_size, 2 * HALF);
        return 1;
    }
    if (check(shared, 0, HALF, 1) || check(shared, HALF, HALF, 2) || check(own, 0, 4096, 3))
        return 1;
    printf("fork_write: parent and child writes read back\n");
    return 0;
}
