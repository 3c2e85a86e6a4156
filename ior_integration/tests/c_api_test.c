/*
 * c_api_test.c - exercises every function of benchfs_c_api.h from C, with the bad-input
 * table, against the cluster named by BENCHFS_REGISTRY. Exits non-zero (after printing
 * each mismatch) if any call returns other than what the header documents.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchfs_c_api.h"

static int failures;

static void expect(const char *what, long long got, long long want)
{
    if (got != want) {
        fprintf(stderr, "FAIL %s: got %lld, want %lld (%s)\n", what, got, want,
                benchfs_strerror());
        failures++;
        return;
    }
    if (want < 0 && benchfs_strerror()[0] == '\0') {
        fprintf(stderr, "FAIL %s: no message for %lld\n", what, want);
        failures++;
    }
}

static void files(void)
{
    benchfs_file *f = NULL, *g = NULL;
    char buf[64] = {0};
    benchfs_stat_t st;
    benchfs_statfs_t fs;

    expect("create", benchfs_create("/c/f", 0644, &f), 0);
    expect("pwrite", benchfs_pwrite(f, "hello world", 11, 0), 11);
    expect("pread", benchfs_pread(f, buf, sizeof buf, 0), 11);
    expect("pread data", memcmp(buf, "hello world", 11), 0);
    expect("fsync", benchfs_fsync(f), 0);
    expect("sync", benchfs_sync(), 0);
    expect("close", benchfs_close(f), 0);
    expect("size", benchfs_get_file_size("/c/f"), 11);
    expect("stat", benchfs_stat("//c/./f/", &st), 0);
    expect("stat size", (long long)st.size, 11);
    expect("stat type", st.mode & 0170000, 0100000);
    expect("open rdonly", benchfs_open("/c/f", BENCHFS_O_RDONLY, 0, &g), 0);
    expect("pread rdonly", benchfs_pread(g, buf, 5, 6), 5);
    expect("pread rdonly data", memcmp(buf, "world", 5), 0);
    expect("pwrite rdonly", benchfs_pwrite(g, "x", 1, 0), -EBADF);
    expect("close rdonly", benchfs_close(g), 0);
    expect("open excl", benchfs_open("/c/f", BENCHFS_O_CREAT | BENCHFS_O_EXCL | BENCHFS_O_RDWR,
                                     0644, &g), -EEXIST);
    expect("open trunc", benchfs_open("/c/f", BENCHFS_O_WRONLY | BENCHFS_O_TRUNC, 0, &g), 0);
    expect("close trunc", benchfs_close(g), 0);
    expect("size after trunc", benchfs_get_file_size("/c/f"), 0);
    expect("truncate", benchfs_truncate("/c/f", 4096), 0);
    expect("size after truncate", benchfs_get_file_size("/c/f"), 4096);
    expect("access", benchfs_access("/c/f", BENCHFS_R_OK | BENCHFS_W_OK), 0);
    expect("access F_OK", benchfs_access("/c/f", BENCHFS_F_OK), 0);
    expect("rename", benchfs_rename("/c/f", "/c/g"), 0);
    expect("access renamed", benchfs_access("/c/f", BENCHFS_F_OK), -ENOENT);
    expect("remove", benchfs_remove("/c/g"), 0);
    expect("remove again", benchfs_remove("/c/g"), -ENOENT);
    expect("statfs", benchfs_statfs(&fs), 0);
    expect("statfs targets", (long long)fs.targets, 4);
}

static void dirs(void)
{
    benchfs_dir *d = NULL;
    benchfs_file *f = NULL;
    char name[256];
    int type = 0;

    expect("mkdir", benchfs_mkdir("/c/d", 0755), 0);
    expect("mkdir again", benchfs_mkdir("/c/d", 0755), -EEXIST);
    expect("create in dir", benchfs_create("/c/d/x", 0644, &f), 0);
    expect("close in dir", benchfs_close(f), 0);
    expect("opendir", benchfs_opendir("/c/d", &d), 0);
    expect("readdir small", benchfs_readdir(d, name, 1, &type), -ENAMETOOLONG);
    expect("readdir", benchfs_readdir(d, name, sizeof name, &type), 1);
    expect("readdir name", strcmp(name, "x"), 0);
    expect("readdir type", type, BENCHFS_DT_REG);
    expect("readdir end", benchfs_readdir(d, name, sizeof name, &type), 0);
    expect("closedir", benchfs_closedir(d), 0);
    expect("closedir again", benchfs_closedir(d), -EBADF);
    expect("rmdir not empty", benchfs_rmdir("/c/d"), -ENOTEMPTY);
    expect("remove in dir", benchfs_remove("/c/d/x"), 0);
    expect("rmdir", benchfs_rmdir("/c/d"), 0);
}

static void bad_inputs(void)
{
    benchfs_file *f = NULL, *closed = NULL;
    benchfs_dir *d = NULL;
    char buf[16], longpath[5000];
    benchfs_stat_t st;
    int type;

    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    expect("create ok", benchfs_create("/c/ok", 0644, &f), 0);
    expect("create closed", benchfs_create("/c/closed", 0644, &closed), 0);
    expect("close closed", benchfs_close(closed), 0);

    expect("create NULL path", benchfs_create(NULL, 0644, &f), -EINVAL);
    expect("create NULL out", benchfs_create("/c/x", 0644, NULL), -EINVAL);
    expect("create relative", benchfs_create("c/x", 0644, &f), -EINVAL);
    expect("create ..", benchfs_create("/c/../x", 0644, &f), -EINVAL);
    expect("create long", benchfs_create(longpath, 0644, &f), -ENAMETOOLONG);
    expect("open bad flags", benchfs_open("/c/ok", 0x10000, 0, &f), -EINVAL);
    expect("open NULL out", benchfs_open("/c/ok", 0, 0, NULL), -EINVAL);
    expect("close NULL", benchfs_close(NULL), -EINVAL);
    expect("close twice", benchfs_close(closed), -EBADF);
    expect("close bogus", benchfs_close((benchfs_file *)(uintptr_t)0xdeadbeef), -EBADF);
    expect("pwrite closed", benchfs_pwrite(closed, buf, 4, 0), -EBADF);
    expect("pread closed", benchfs_pread(closed, buf, 4, 0), -EBADF);
    expect("fsync closed", benchfs_fsync(closed), -EBADF);
    expect("pwrite NULL", benchfs_pwrite(f, NULL, 4, 0), -EINVAL);
    expect("pread NULL", benchfs_pread(f, NULL, 4, 0), -EINVAL);
    expect("pwrite huge", benchfs_pwrite(f, buf, UINT64_MAX, 0), -EINVAL);
    expect("pread huge offset", benchfs_pread(f, buf, 4, UINT64_MAX), -EINVAL);
    expect("pwrite negative size", benchfs_pwrite(f, buf, (uint64_t)-16, 0), -EINVAL);
    expect("pread negative offset", benchfs_pread(f, buf, 4, (uint64_t)-4096), -EINVAL);
    expect("truncate negative", benchfs_truncate("/c/ok", (uint64_t)-1), -EINVAL);
    expect("mkdir relative", benchfs_mkdir("c/d2", 0755), -EINVAL);
    expect("mkdir long", benchfs_mkdir(longpath, 0755), -ENAMETOOLONG);
    expect("rename to relative", benchfs_rename("/c/ok", "c/ok2"), -EINVAL);
    expect("rename through ..", benchfs_rename("/c/ok", "/c/../ok2"), -EINVAL);
    expect("open for writing, unknown flag", benchfs_open("/c/ok", BENCHFS_O_RDWR | 0x4000, 0, &f),
           -EINVAL);
    expect("opendir on a file", benchfs_opendir("/c/ok", &d), -ENOTDIR);
    expect("create under a file", benchfs_create("/c/ok/x", 0644, &f), -ENOTDIR);
    expect("remove NULL", benchfs_remove(NULL), -EINVAL);
    expect("stat NULL out", benchfs_stat("/c/ok", NULL), -EINVAL);
    expect("stat relative", benchfs_stat("ok", &st), -EINVAL);
    expect("stat long", benchfs_stat(longpath, &st), -ENAMETOOLONG);
    expect("size NULL", benchfs_get_file_size(NULL), -EINVAL);
    expect("access bad mode", benchfs_access("/c/ok", 99), -EINVAL);
    expect("mkdir NULL", benchfs_mkdir(NULL, 0755), -EINVAL);
    expect("rmdir ..", benchfs_rmdir("/.."), -EINVAL);
    expect("rename NULL", benchfs_rename(NULL, "/c/y"), -EINVAL);
    expect("truncate huge", benchfs_truncate("/c/ok", UINT64_MAX), -EINVAL);
    expect("statfs NULL", benchfs_statfs(NULL), -EINVAL);
    expect("opendir NULL out", benchfs_opendir("/c", NULL), -EINVAL);
    expect("opendir missing", benchfs_opendir("/c/none", &d), -ENOENT);
    expect("readdir NULL", benchfs_readdir(NULL, buf, sizeof buf, &type), -EINVAL);
    expect("readdir NULL type", benchfs_readdir((benchfs_dir *)(uintptr_t)8, buf, 16, NULL),
           -EINVAL);
    expect("closedir NULL", benchfs_closedir(NULL), -EINVAL);
    expect("register NULL", benchfs_register(NULL, 16), -EINVAL);
    expect("register huge", benchfs_register(buf, UINT64_MAX), -EINVAL);
    expect("unregister NULL", benchfs_unregister(NULL, 16), -EINVAL);
    expect("init unknown key", benchfs_init(NULL, "colour=blue"), -EINVAL);

    /* Still serving. */
    expect("pwrite after", benchfs_pwrite(f, "fine", 4, 0), 4);
    expect("close after", benchfs_close(f), 0);
    expect("remove ok", benchfs_remove("/c/ok"), 0);
    expect("remove closed", benchfs_remove("/c/closed"), 0);
}

int main(void)
{
    static char big[1 << 20];

    if (benchfs_api_version() != BENCHFS_API_VERSION ||
        strncmp(benchfs_version(), "benchfs ", 8) != 0) {
        fprintf(stderr, "FAIL version %d %s\n", benchfs_api_version(), benchfs_version());
        return 1;
    }
    expect("stat before init", benchfs_stat("/", NULL), -EINVAL);
    expect("init", benchfs_init(NULL, "timeout_ms=10000,wait_ms=30000"), 0);
    expect("nested init", benchfs_init(NULL, "timeout_ms=10000,wait_ms=30000"), 0);
    expect("mkdir /c", benchfs_mkdir("/c", 0755), 0);
    files();
    dirs();
    bad_inputs();
    expect("register", benchfs_register(big, sizeof big), 0);
    expect("unregister", benchfs_unregister(big, sizeof big), 0);
    expect("rmdir /c", benchfs_rmdir("/c"), 0);
    expect("nested finalize", benchfs_finalize(), 0);
    expect("still connected", benchfs_access("/", BENCHFS_F_OK), 0);
    expect("finalize", benchfs_finalize(), 0);
    expect("finalize again", benchfs_finalize(), -EINVAL);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("c_api_test: all passed\n");
    return 0;
}
