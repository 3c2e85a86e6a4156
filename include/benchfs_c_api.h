/*
 * benchfs_c_api.h - the C API of BenchFS, exported by libbenchfs.so.
 *
 * Conventions
 * - Every function returns 0 (or a non-negative count) on success and a negative errno value
 *   on failure (-ENOENT, -EEXIST, -ENOTEMPTY, -EISDIR, -ENOTDIR, -EINVAL, -EIO, -ETIMEDOUT,
 *   -EBADF, -ENAMETOOLONG, ...). benchfs_strerror() then describes the last failure of the
 *   calling thread.
 * - Outputs are written only on success. Every pointer and size is checked: NULL pointers
 *   give -EINVAL (-EFAULT is never guessed), negative or oversized sizes give -EINVAL.
 * - Paths are absolute BenchFS paths; they are normalised ("//", trailing "/", ".");
 *   relative paths and ".." are refused with -EINVAL, over-long ones with -ENAMETOOLONG.
 * - Handles (benchfs_file, benchfs_dir) are opaque. A closed handle must not be used again;
 *   the library detects a handle it does not know (or knows as closed) and returns -EBADF.
 * - No call panics or unwinds across this interface.
 *
 * Threads
 * - benchfs_init/benchfs_finalize are reference-counted and may be nested (IO500 nests
 *   initialize/finalize pairs of several tests in one process); only the last finalize
 *   disconnects.
 * - Each thread that calls into the library gets its own connection to the cluster, made on
 *   its first call. A handle may only be used by the thread that opened it (-EBADF
 *   otherwise). Calls from different threads run concurrently.
 */
#ifndef BENCHFS_C_API_H
#define BENCHFS_C_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this interface; benchfs_api_version() returns the library's. */
#define BENCHFS_API_VERSION 1

/* Open flags (benchfs_open). */
#define BENCHFS_O_RDONLY 0x0
#define BENCHFS_O_WRONLY 0x1
#define BENCHFS_O_RDWR   0x2
#define BENCHFS_O_CREAT  0x40
#define BENCHFS_O_EXCL   0x80
#define BENCHFS_O_TRUNC  0x200

/* Access modes (benchfs_access), as in <unistd.h>. */
#define BENCHFS_F_OK 0
#define BENCHFS_X_OK 1
#define BENCHFS_W_OK 2
#define BENCHFS_R_OK 4

/* Entry types (benchfs_readdir), as d_type in <dirent.h>. */
#define BENCHFS_DT_DIR 4
#define BENCHFS_DT_REG 8

typedef struct benchfs_file benchfs_file;
typedef struct benchfs_dir benchfs_dir;

typedef struct benchfs_stat {
    uint64_t ino;     /* file id, unique in the cluster */
    uint32_t mode;    /* type and permission bits, as st_mode */
    uint32_t nlink;
    uint64_t size;    /* bytes */
    uint64_t blocks;  /* 512-byte blocks */
    uint64_t blksize; /* preferred I/O size (the chunk size) */
    int64_t atime_ns; /* times in ns since the epoch */
    int64_t mtime_ns;
    int64_t ctime_ns;
} benchfs_stat_t;

typedef struct benchfs_statfs {
    uint64_t total_bytes;
    uint64_t free_bytes;
    uint64_t available_bytes;
    uint64_t files;   /* inodes stored */
    uint64_t targets; /* shards of the cluster */
} benchfs_statfs_t;

/*
 * Connects to the cluster whose registry directory is `registry` (NULL: the BENCHFS_REGISTRY
 * environment variable). `options` is NULL or a comma-separated list of key=value:
 *   chunk_size=4m        chunk size of files this process creates (k/m/g suffixes)
 *   timeout_ms=30000     deadline of every request
 *   servers=N            servers to wait for (default: as published)
 *   wait_ms=60000        how long to wait for the cluster
 *   data_path=message|rma
 *   server=1             also start an embedded storage server in this process (its shards
 *   data_dir=DIR         run on their own threads and publish in the registry like benchfsd's;
 *   rank=R,servers=N     with data_dir; rank and server count default to the launcher's
 *                        environment (Open MPI, PMI, Slurm), as for benchfsd)
 *   shards=N             shards of the embedded server (default 1)
 *   slab_size=64m        registered buffer slab of each of its shards
 * Unknown keys give -EINVAL. Nested calls only count references (their options must agree).
 * With server=1 the last benchfs_finalize stops this process's server: in a job whose ranks
 * serve each other, call it only once every rank is done (e.g. after MPI_Barrier).
 */
int benchfs_init(const char *registry, const char *options);
/* Drops one reference; the last one closes every handle, disconnects and stops an embedded
 * server (after it unpublished and flushed). */
int benchfs_finalize(void);

/* Creates `path` if missing (an existing file is opened, never truncated), read-write. */
int benchfs_create(const char *path, uint32_t mode, benchfs_file **out);
/* Opens `path` with BENCHFS_O_* flags; `mode` is used with BENCHFS_O_CREAT. */
int benchfs_open(const char *path, int flags, uint32_t mode, benchfs_file **out);
/* Publishes the size written and frees the handle (also when it returns an error). */
int benchfs_close(benchfs_file *file);
/* Positional write/read of `len` bytes (all of them; a read stops at end of file): returns
 * the bytes transferred. */
int64_t benchfs_pwrite(benchfs_file *file, const void *buf, uint64_t len, uint64_t offset);
int64_t benchfs_pread(benchfs_file *file, void *buf, uint64_t len, uint64_t offset);
/* Makes the file's data and size durable. */
int benchfs_fsync(benchfs_file *file);
/* Makes everything this process wrote through open handles durable. */
int benchfs_sync(void);

int benchfs_remove(const char *path);
int benchfs_stat(const char *path, benchfs_stat_t *out);
/* The size of `path` in bytes, or a negative errno. */
int64_t benchfs_get_file_size(const char *path);
int benchfs_access(const char *path, int mode);
int benchfs_mkdir(const char *path, uint32_t mode);
int benchfs_rmdir(const char *path);
int benchfs_rename(const char *from, const char *to);
int benchfs_truncate(const char *path, uint64_t size);
int benchfs_statfs(benchfs_statfs_t *out);

/* Directory listing: readdir returns 1 and fills `name` (NUL-terminated, `name_len` bytes
 * at most, -ENAMETOOLONG if it does not fit) and `type` (BENCHFS_DT_*) per entry, 0 at the
 * end. */
int benchfs_opendir(const char *path, benchfs_dir **out);
int benchfs_readdir(benchfs_dir *dir, char *name, size_t name_len, int *type);
int benchfs_closedir(benchfs_dir *dir);

/* Optional: pins `len` bytes at `buf` ahead of time for zero-copy transfers (the RMA data
 * path); without it buffers are pinned on first use through a registration cache. */
int benchfs_register(const void *buf, uint64_t len);
int benchfs_unregister(const void *buf, uint64_t len);

/* "benchfs <version>"; valid for the life of the process. */
const char *benchfs_version(void);
/* BENCHFS_API_VERSION of the library. */
int benchfs_api_version(void);
/* The message of the calling thread's last failure ("" if none); valid until its next call. */
const char *benchfs_strerror(void);

#ifdef __cplusplus
}
#endif

#endif /* BENCHFS_C_API_H */
