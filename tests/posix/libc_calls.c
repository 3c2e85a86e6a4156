/* The semantics of the libc calls libbenchfs_preload.so stands in front of, checked one by one
 * on a BenchFS directory (run by scripts/test_posix.sh under the preload).
 *
 * Usage: libc_calls BENCHFS_DIR LOCAL_DIR
 * Prints one line per failed expectation and exits 1 if there was any.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

static int failures;
static const char *base;
static const char *local;

#define EXPECT(cond)                                                                     \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            printf("line %d: expected %s (errno %d: %s)\n", __LINE__, #cond, errno,      \
                   strerror(errno));                                                     \
            failures++;                                                                  \
        }                                                                                \
    } while (0)
#define EXPECT_ERR(call, code) EXPECT((call) == -1 && errno == (code))

static char *at(const char *name) {
    static char bufs[8][PATH_MAX];
    static int next;
    char *p = bufs[next++ % 8];
    snprintf(p, PATH_MAX, "%s/%s", base, name);
    return p;
}

static void files_and_offsets(void) {
    int fd = open(at("f"), O_CREAT | O_EXCL | O_RDWR, 0644);
    EXPECT(fd >= 0);
    EXPECT_ERR(open(at("f"), O_CREAT | O_EXCL | O_RDWR, 0644), EEXIST);
    EXPECT(write(fd, "hello world", 11) == 11);
    EXPECT(lseek(fd, 0, SEEK_CUR) == 11);
    EXPECT(lseek(fd, 0, SEEK_END) == 11);
    EXPECT(lseek(fd, 3, SEEK_DATA) == 3);
    EXPECT(lseek(fd, 3, SEEK_HOLE) == 11);
    EXPECT_ERR(lseek(fd, 11, SEEK_DATA), ENXIO);
    EXPECT_ERR(lseek(fd, -1, SEEK_SET), EINVAL);
    char buf[64] = {0};
    EXPECT(pread(fd, buf, 5, 6) == 5 && memcmp(buf, "world", 5) == 0);
    EXPECT(pread(fd, buf, 5, 100) == 0);
    /* dup shares the offset, like the kernel's open file description. */
    int copy = dup(fd);
    EXPECT(copy >= 0 && copy != fd);
    EXPECT(lseek(copy, 0, SEEK_SET) == 0);
    EXPECT(lseek(fd, 0, SEEK_CUR) == 0);
    EXPECT(read(copy, buf, 5) == 5 && memcmp(buf, "hello", 5) == 0);
    EXPECT(lseek(fd, 0, SEEK_CUR) == 5);
    EXPECT(dup2(copy, 40) == 40);
    EXPECT(close(copy) == 0);
    struct stat st;
    EXPECT(fstat(40, &st) == 0 && st.st_size == 11 && S_ISREG(st.st_mode));
    EXPECT(close(40) == 0);
    EXPECT_ERR(fstat(40, &st), EBADF);
    /* Status and descriptor flags. */
    EXPECT((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR);
    EXPECT(fcntl(fd, F_SETFL, O_APPEND) == 0 && (fcntl(fd, F_GETFL) & O_APPEND));
    EXPECT(write(fd, "!", 1) == 1 && lseek(fd, 0, SEEK_CUR) == 12);
    EXPECT(fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 && fcntl(fd, F_GETFD) == FD_CLOEXEC);
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    EXPECT_ERR(fcntl(fd, F_SETLK, &lock), ENOLCK);
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 100);
    EXPECT(high >= 100 && fstat(high, &st) == 0 && st.st_size == 12);
    EXPECT(close(high) == 0);
    /* Vectored I/O. */
    struct iovec iov[2] = {{"abc", 3}, {"defg", 4}};
    EXPECT(pwritev(fd, iov, 2, 20) == 7);
    char a[3], b[4];
    struct iovec in[2] = {{a, 3}, {b, 4}};
    EXPECT(preadv(fd, in, 2, 20) == 7 && memcmp(a, "abc", 3) == 0 && memcmp(b, "defg", 4) == 0);
    EXPECT(pread(fd, buf, 8, 12) == 8 && memcmp(buf, "\0\0\0\0\0\0\0\0", 8) == 0);
    /* Truncate through the handle: its close must not restore the old size. */
    EXPECT(ftruncate(fd, 4) == 0);
    EXPECT(close(fd) == 0);
    EXPECT(stat(at("f"), &st) == 0 && st.st_size == 4);
    EXPECT(truncate(at("f"), 10) == 0 && stat(at("f"), &st) == 0 && st.st_size == 10);
    /* What BenchFS descriptors cannot do. */
    fd = open(at("f"), O_RDONLY);
    EXPECT(fd >= 0);
    /* ENODEV from the preload; EBADF when UCX's memory hooks, which patch mmap in every
     * loaded object once the client is connected, hand the call to the kernel directly. */
    EXPECT(mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED &&
           (errno == ENODEV || errno == EBADF));
    EXPECT(isatty(fd) == 0);
    EXPECT_ERR(write(fd, "x", 1), EBADF);
    EXPECT(close(fd) == 0);
    EXPECT_ERR(close(fd), EBADF);
}

static void stdio_streams(void) {
    FILE *f = fopen(at("stdio.txt"), "w");
    EXPECT(f != NULL);
    if (!f)
        return;
    for (int i = 0; i < 1000; i++)
        fprintf(f, "line %d\n", i);
    EXPECT(fclose(f) == 0);
    f = fopen(at("stdio.txt"), "a+");
    EXPECT(f != NULL && fputs("tail\n", f) >= 0 && fclose(f) == 0);
    f = fopen(at("stdio.txt"), "r");
    EXPECT(f != NULL);
    if (!f)
        return;
    char line[64];
    EXPECT(fgets(line, sizeof line, f) && strcmp(line, "line 0\n") == 0);
    EXPECT(fseek(f, -5, SEEK_END) == 0 && fgets(line, sizeof line, f) && strcmp(line, "tail\n") == 0);
    EXPECT(ftell(f) > 5000);
    struct stat st;
    EXPECT(fileno(f) >= 0 && fstat(fileno(f), &st) == 0 && st.st_size == ftell(f));
    EXPECT(fclose(f) == 0);
    int fd = open(at("stdio.txt"), O_RDONLY);
    f = fdopen(fd, "r");
    EXPECT(f != NULL && fgets(line, sizeof line, f) && strcmp(line, "line 0\n") == 0);
    if (f)
        EXPECT(fclose(f) == 0);
    EXPECT(fopen(at("missing/x"), "r") == NULL && errno == ENOENT);
}

static void directories(void) {
    EXPECT(mkdir(at("d"), 0755) == 0);
    EXPECT_ERR(mkdir(at("d"), 0755), EEXIST);
    int dfd = open(at("d"), O_RDONLY | O_DIRECTORY);
    EXPECT(dfd >= 0);
    EXPECT(mkdirat(dfd, "sub", 0755) == 0);
    int fd = openat(dfd, "sub/g", O_CREAT | O_WRONLY, 0600);
    EXPECT(fd >= 0 && write(fd, "12345", 5) == 5 && close(fd) == 0);
    struct stat st;
    EXPECT(fstatat(dfd, "sub/g", &st, 0) == 0 && st.st_size == 5 && (st.st_mode & 0777) == 0600);
    EXPECT(fstatat(dfd, "", &st, AT_EMPTY_PATH) == 0 && S_ISDIR(st.st_mode));
    struct statx sx;
    EXPECT(statx(dfd, "sub/g", 0, STATX_BASIC_STATS, &sx) == 0 && sx.stx_size == 5);
    EXPECT(renameat(dfd, "sub/g", dfd, "sub/h") == 0);
    EXPECT_ERR(unlinkat(dfd, "sub", 0), EISDIR);
    EXPECT_ERR(unlinkat(dfd, "sub", AT_REMOVEDIR), ENOTEMPTY);
    EXPECT_ERR(open(at("d/sub/h"), O_RDONLY | O_DIRECTORY), ENOTDIR);
    EXPECT_ERR(open(at("d"), O_WRONLY), EISDIR);
    EXPECT_ERR(openat(dfd, "sub/h/x", O_RDONLY), ENOTDIR);
    for (int i = 0; i < 300; i++) {
        char name[32];
        snprintf(name, sizeof name, "sub/n%03d", i);
        fd = openat(dfd, name, O_CREAT | O_WRONLY, 0644);
        EXPECT(fd >= 0 && close(fd) == 0);
    }
    DIR *dir = fdopendir(openat(dfd, "sub", O_RDONLY | O_DIRECTORY));
    EXPECT(dir != NULL);
    if (dir) {
        int files = 0, dots = 0;
        long mark = -1;
        struct dirent *e;
        errno = 0;
        while ((e = readdir(dir)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                dots++;
                EXPECT(e->d_type == DT_DIR);
                continue;
            }
            EXPECT(e->d_type == DT_REG && e->d_ino != 0);
            if (++files == 150)
                mark = telldir(dir);
        }
        EXPECT(errno == 0 && files == 301 && dots == 2);
        seekdir(dir, mark);
        int rest = 0;
        while (readdir(dir) != NULL)
            rest++;
        EXPECT(rest == 151);
        rewinddir(dir);
        EXPECT(readdir(dir) != NULL);
        EXPECT(fstat(dirfd(dir), &st) == 0 && S_ISDIR(st.st_mode));
        EXPECT(closedir(dir) == 0);
    }
    EXPECT(opendir(at("d/sub/h")) == NULL && errno == ENOTDIR);
    EXPECT(opendir(at("nothing")) == NULL && errno == ENOENT);
    EXPECT(close(dfd) == 0);
}

static void attributes_and_paths(void) {
    struct stat st;
    EXPECT(chmod(at("f"), 0400) == 0 && stat(at("f"), &st) == 0 && (st.st_mode & 07777) == 0400);
    EXPECT(access(at("f"), R_OK) == 0);
    EXPECT_ERR(access(at("f"), W_OK), EACCES);
    EXPECT(chmod(at("f"), 0644) == 0);
    struct timespec times[2] = {{1000000000, 5}, {1234567890, 123456789}};
    EXPECT(utimensat(AT_FDCWD, at("f"), times, 0) == 0);
    EXPECT(stat(at("f"), &st) == 0 && st.st_mtim.tv_sec == 1234567890 &&
           st.st_mtim.tv_nsec == 123456789 && st.st_atim.tv_sec == 1000000000);
    EXPECT(chown(at("f"), geteuid(), getegid()) == 0);
    EXPECT_ERR(chown(at("f"), geteuid() + 1, -1), EPERM);
    struct statfs fs;
    EXPECT(statfs(base, &fs) == 0 && fs.f_type == 0x42465331 && fs.f_blocks > 0);
    char resolved[PATH_MAX];
    EXPECT(realpath(at("d/./sub/../sub//h"), resolved) && strcmp(resolved, at("d/sub/h")) == 0);
    EXPECT(realpath(at("d/none"), resolved) == NULL && errno == ENOENT);
    char target[PATH_MAX];
    EXPECT(readlink(at("f"), target, sizeof target) == -1 && errno == EINVAL);
    EXPECT_ERR(symlink("f", at("sym")), EPERM);
    EXPECT_ERR(link(at("f"), at("hard")), EPERM);
    char there[PATH_MAX];
    snprintf(there, sizeof there, "%s/moved", local);
    EXPECT_ERR(rename(at("f"), there), EXDEV);
    /* The current directory. */
    char cwd[PATH_MAX];
    EXPECT(chdir(at("d")) == 0 && getcwd(cwd, sizeof cwd) && strcmp(cwd, at("d")) == 0);
    EXPECT(stat("sub/h", &st) == 0 && st.st_size == 5);
    EXPECT(chdir("sub") == 0 && access("h", F_OK) == 0);
    EXPECT(chdir("../..") == 0 && stat("f", &st) == 0);
    int dfd = open(at("d/sub"), O_RDONLY | O_DIRECTORY);
    EXPECT(fchdir(dfd) == 0 && access("n000", F_OK) == 0 && close(dfd) == 0);
    EXPECT(chdir(local) == 0 && getcwd(cwd, sizeof cwd) && strcmp(cwd, local) == 0);
    EXPECT_ERR(access("n000", F_OK), ENOENT);
}

static void *thread_writes(void *arg) {
    long id = (long)arg;
    char path[PATH_MAX], buf[8192], back[8192];
    snprintf(path, sizeof path, "%s/thread%ld", base, id);
    memset(buf, 'a' + (int)id, sizeof buf);
    for (int round = 0; round < 20; round++) {
        int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
        if (fd < 0 || pwrite(fd, buf, sizeof buf, 0) != sizeof buf ||
            pread(fd, back, sizeof back, 0) != sizeof back || memcmp(buf, back, sizeof buf) ||
            close(fd) != 0)
            return (void *)1;
    }
    return NULL;
}

static void threads(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        EXPECT(pthread_create(&t[i], NULL, thread_writes, (void *)i) == 0);
    for (int i = 0; i < 4; i++) {
        void *result;
        EXPECT(pthread_join(t[i], &result) == 0 && result == NULL);
    }
}

static void descriptor_ranges(void) {
    int fd = open(at("f"), O_RDONLY);
    EXPECT(fd >= 0 && dup2(fd, 60) == 60 && close(fd) == 0);
    EXPECT(close_range(60, 60, 0) == 0);
    struct stat st;
    EXPECT_ERR(fstat(60, &st), EBADF);
    /* A local file may now take descriptor 60 and must work as usual. */
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/local.txt", local);
    int lfd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    EXPECT(lfd >= 0 && dup2(lfd, 60) == 60 && write(60, "ok", 2) == 2 && close(60) == 0);
    EXPECT(close(lfd) == 0 && stat(path, &st) == 0 && st.st_size == 2);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: libc_calls BENCHFS_DIR LOCAL_DIR\n");
        return 2;
    }
    base = argv[1];
    local = argv[2];
    EXPECT(mkdir(base, 0755) == 0);
    files_and_offsets();
    stdio_streams();
    directories();
    attributes_and_paths();
    threads();
    descriptor_ranges();
    printf("libc_calls: %d failed expectations\n", failures);
    return failures ? 1 : 0;
}
