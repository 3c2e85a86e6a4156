/*
 * aiori-BENCHFS.c - IOR/mdtest backend for BenchFS.
 *
 * Talks to a BenchFS cluster through the C API of libbenchfs (benchfs_c_api.h).
 * Select it with "-a BENCHFS"; the cluster is named by its registry directory
 * (--benchfs.registry=DIR, or the BENCHFS_REGISTRY environment variable).
 *
 * Notes on IOR's calling conventions that shape this file:
 * - get_options and get_version run in every process for every compiled-in backend before
 *   any test starts, so they have no side effects (no connection is made there).
 * - initialize/finalize run once per test after MPI_Init, and IO500 nests them; the library
 *   counts references, so each call maps to one benchfs_init/benchfs_finalize.
 * - IOR's open flags are its own (IOR_RDONLY 0x01, IOR_WRONLY 0x02, ...), not O_*.
 * - statfs, mkdir, rmdir, access and stat must be set: IOR silently substitutes POSIX
 *   calls when they are NULL.
 * - The remove callback is called "remove" in current IOR and "delete" in IOR 4.0.0;
 *   configure defines BENCHFS_AIORI_DELETE for the latter.
 */

#ifdef HAVE_CONFIG_H
#  include "config.h"
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <benchfs_c_api.h>

#include "ior.h"
#include "aiori.h"
#include "utilities.h"

/************************** O P T I O N S *****************************/

typedef struct {
        char *registry;        /* registry directory of the cluster */
        long long chunk_size;  /* chunk size of created files, bytes (0: library default) */
        int timeout_ms;        /* per-request deadline (0: library default) */
        int servers;           /* servers to wait for (0: as published) */
        char *data_path;       /* "message" or "rma" (NULL: library default) */
        char *extra;           /* further key=value pairs passed to benchfs_init */
} benchfs_options_t;

static option_help *BENCHFS_options(aiori_mod_opt_t **init_backend_options,
                                    aiori_mod_opt_t *init_values)
{
        benchfs_options_t *o = malloc(sizeof(*o));
        if (o == NULL)
                ERR("out of memory");
        if (init_values != NULL)
                memcpy(o, init_values, sizeof(*o));
        else
                memset(o, 0, sizeof(*o));
        *init_backend_options = (aiori_mod_opt_t *) o;

        option_help h[] = {
                {0, "benchfs.registry", "Registry directory of the BenchFS cluster (default: $BENCHFS_REGISTRY)",
                 OPTION_OPTIONAL_ARGUMENT, 's', &o->registry},
                {0, "benchfs.chunk-size", "Chunk size of the files this process creates, e.g. 4m (default: library's)",
                 OPTION_OPTIONAL_ARGUMENT, 'l', &o->chunk_size},
                {0, "benchfs.timeout", "Deadline of every request in ms (default: library's)",
                 OPTION_OPTIONAL_ARGUMENT, 'd', &o->timeout_ms},
                {0, "benchfs.servers", "Number of servers to wait for (default: as published in the registry)",
                 OPTION_OPTIONAL_ARGUMENT, 'd', &o->servers},
                {0, "benchfs.data-path", "Data path: message or rma (default: library's)",
                 OPTION_OPTIONAL_ARGUMENT, 's', &o->data_path},
                {0, "benchfs.options", "Further comma-separated key=value options for benchfs_init",
                 OPTION_OPTIONAL_ARGUMENT, 's', &o->extra},
                LAST_OPTION
        };
        option_help *help = malloc(sizeof(h));
        if (help == NULL)
                ERR("out of memory");
        memcpy(help, h, sizeof(h));
        return help;
}

static int BENCHFS_check_params(aiori_mod_opt_t *options)
{
        benchfs_options_t *o = (benchfs_options_t *) options;
        if (o == NULL)
                return 0;
        if (o->chunk_size < 0)
                ERR("--benchfs.chunk-size must not be negative");
        if (o->timeout_ms < 0)
                ERR("--benchfs.timeout must not be negative");
        if (o->servers < 0)
                ERR("--benchfs.servers must not be negative");
        if (o->data_path != NULL && strcmp(o->data_path, "message") != 0
            && strcmp(o->data_path, "rma") != 0)
                ERRF("--benchfs.data-path must be message or rma, not \"%s\"", o->data_path);
        return 0;
}

/************************** S T A T E *****************************/

static aiori_xfer_hint_t *hints = NULL;

/* Handed out instead of a real handle in dry runs. */
static char dry_run_handle;

static int dry_run(void)
{
        return hints != NULL && hints->dryRun;
}

static int file_per_proc(void)
{
        return hints != NULL && hints->filePerProc;
}

static void BENCHFS_xfer_hints(aiori_xfer_hint_t *params)
{
        hints = params;
}

/* Turns a negative errno from the library into IOR's -1/errno convention. */
static int to_posix(int rc)
{
        if (rc < 0) {
                errno = -rc;
                return -1;
        }
        return 0;
}

/* Appends ",key=value" (without the comma at the start) to buf. */
static void append_option(char *buf, size_t len, const char *key, const char *value)
{
        size_t used = strlen(buf);
        int n = snprintf(buf + used, len - used, "%s%s=%s", used > 0 ? "," : "", key, value);
        if (n < 0 || (size_t) n >= len - used)
                ERR("BenchFS options too long");
}

static void BENCHFS_initialize(aiori_mod_opt_t *options)
{
        benchfs_options_t *o = (benchfs_options_t *) options;
        char opts[4096] = "";
        char num[32];

        if (benchfs_api_version() != BENCHFS_API_VERSION)
                ERRF("libbenchfs implements API version %d, this backend was built for %d",
                     benchfs_api_version(), BENCHFS_API_VERSION);

        if (o != NULL) {
                if (o->chunk_size > 0) {
                        snprintf(num, sizeof(num), "%lld", o->chunk_size);
                        append_option(opts, sizeof(opts), "chunk_size", num);
                }
                if (o->timeout_ms > 0) {
                        snprintf(num, sizeof(num), "%d", o->timeout_ms);
                        append_option(opts, sizeof(opts), "timeout_ms", num);
                }
                if (o->servers > 0) {
                        snprintf(num, sizeof(num), "%d", o->servers);
                        append_option(opts, sizeof(opts), "servers", num);
                }
                if (o->data_path != NULL && o->data_path[0] != '\0')
                        append_option(opts, sizeof(opts), "data_path", o->data_path);
                if (o->extra != NULL && o->extra[0] != '\0') {
                        size_t used = strlen(opts);
                        int n = snprintf(opts + used, sizeof(opts) - used, "%s%s",
                                         used > 0 ? "," : "", o->extra);
                        if (n < 0 || (size_t) n >= sizeof(opts) - used)
                                ERR("BenchFS options too long");
                }
        }

        int rc = benchfs_init(o != NULL ? o->registry : NULL, opts[0] != '\0' ? opts : NULL);
        if (rc < 0)
                ERRF("benchfs_init(registry=%s, options=\"%s\") failed: %s",
                     (o != NULL && o->registry != NULL) ? o->registry : "$BENCHFS_REGISTRY",
                     opts, benchfs_strerror());
}

static void BENCHFS_finalize(aiori_mod_opt_t *options)
{
        (void) options;
        if (benchfs_finalize() < 0)
                WARNF("benchfs_finalize() failed: %s", benchfs_strerror());
}

static char *BENCHFS_get_version(void)
{
        return (char *) benchfs_version();
}

/************************** F I L E S *****************************/

/*
 * Opens with IOR flags. The handle is always read-write unless IOR asks for a read-only
 * open without IOR_CREAT (mdtest reads through handles it created, and its read phase opens
 * with flags 0, IOR with IOR_RDONLY).
 *
 * IOR_TRUNC is honoured only for file-per-process access. For a shared file every rank calls
 * create with IOR_WRONLY|IOR_CREAT|IOR_TRUNC at the same time; truncating there would let a
 * late rank cut off data an early rank has already written. IOR removes the file before the
 * write phase anyway (unless -E keeps it), so a fresh file is empty.
 */
static aiori_fd_t *open_file(const char *what, char *path, int iorflags)
{
        benchfs_file *f = NULL;
        int rc;

        if (dry_run())
                return (aiori_fd_t *) &dry_run_handle;

        int creat = (iorflags & IOR_CREAT) != 0;
        int excl = (iorflags & IOR_EXCL) != 0;
        int trunc = (iorflags & IOR_TRUNC) != 0 && file_per_proc();
        int writable = creat || (iorflags & (IOR_WRONLY | IOR_RDWR | IOR_APPEND)) != 0;

        if (creat && !excl && !trunc) {
                /* an existing file is opened, never truncated; the handle is read-write */
                rc = benchfs_create(path, 0664, &f);
        } else {
                int flags = writable ? BENCHFS_O_RDWR : BENCHFS_O_RDONLY;
                if (creat)
                        flags |= BENCHFS_O_CREAT;
                if (creat && excl)
                        flags |= BENCHFS_O_EXCL;
                if (trunc)
                        flags |= BENCHFS_O_TRUNC;
                rc = benchfs_open(path, flags, 0664, &f);
        }
        if (rc < 0) {
                WARNF("[RANK %03d]: %s of \"%s\" (IOR flags 0x%x) failed: %s",
                      rank, what, path, iorflags, benchfs_strerror());
                errno = -rc;
                return NULL;
        }
        return (aiori_fd_t *) f;
}

static aiori_fd_t *BENCHFS_create(char *path, int iorflags, aiori_mod_opt_t *options)
{
        (void) options;
        return open_file("create", path, iorflags | IOR_CREAT);
}

static aiori_fd_t *BENCHFS_open(char *path, int iorflags, aiori_mod_opt_t *options)
{
        (void) options;
        return open_file("open", path, iorflags);
}

static int BENCHFS_mknod(char *path)
{
        benchfs_file *f = NULL;

        if (dry_run())
                return 0;
        int rc = benchfs_create(path, 0664, &f);
        if (rc < 0) {
                WARNF("[RANK %03d]: mknod of \"%s\" failed: %s", rank, path, benchfs_strerror());
                return to_posix(rc);
        }
        rc = benchfs_close(f);
        if (rc < 0)
                WARNF("[RANK %03d]: close of \"%s\" failed: %s", rank, path, benchfs_strerror());
        return to_posix(rc);
}

/* Transfers all `length` bytes (a short count makes IOR abort), fsyncing after writes when
 * asked to. Returns the bytes moved, fewer at end of file, or -1 on error. */
static IOR_offset_t BENCHFS_xfer(int access, aiori_fd_t *fd, IOR_size_t *buffer,
                                 IOR_offset_t length, IOR_offset_t offset,
                                 aiori_mod_opt_t *options)
{
        benchfs_file *f = (benchfs_file *) fd;
        char *buf = (char *) buffer;
        IOR_offset_t done = 0;

        (void) options;
        if (dry_run())
                return length;
        if (length < 0 || offset < 0) {
                WARNF("[RANK %03d]: invalid transfer of %lld bytes at %lld", rank,
                      (long long) length, (long long) offset);
                return -1;
        }

        while (done < length) {
                uint64_t left = (uint64_t) (length - done);
                uint64_t at = (uint64_t) (offset + done);
                int64_t n;

                if (access == WRITE)
                        n = benchfs_pwrite(f, buf + done, left, at);
                else
                        n = benchfs_pread(f, buf + done, left, at);

                if (n < 0) {
                        WARNF("[RANK %03d]: %s of %llu bytes at offset %llu failed: %s", rank,
                              access == WRITE ? "write" : "read", (unsigned long long) left,
                              (unsigned long long) at, benchfs_strerror());
                        return -1;
                }
                if (n == 0) {
                        if (access == WRITE) {
                                WARNF("[RANK %03d]: write at offset %llu made no progress", rank,
                                      (unsigned long long) at);
                                return -1;
                        }
                        WARNF("[RANK %03d]: read stopped at end of file (offset %llu, %llu bytes short)",
                              rank, (unsigned long long) at, (unsigned long long) left);
                        break;
                }
                done += n;
        }

        if (access == WRITE && hints != NULL && hints->fsyncPerWrite) {
                int rc = benchfs_fsync(f);
                if (rc < 0) {
                        WARNF("[RANK %03d]: fsync after write failed: %s", rank, benchfs_strerror());
                        return -1;
                }
        }
        return done;
}

static void BENCHFS_fsync(aiori_fd_t *fd, aiori_mod_opt_t *options)
{
        (void) options;
        if (dry_run())
                return;
        if (benchfs_fsync((benchfs_file *) fd) < 0)
                WARNF("[RANK %03d]: fsync failed: %s", rank, benchfs_strerror());
}

static void BENCHFS_close(aiori_fd_t *fd, aiori_mod_opt_t *options)
{
        (void) options;
        if (dry_run())
                return;
        if (benchfs_close((benchfs_file *) fd) < 0)
                WARNF("[RANK %03d]: close failed: %s", rank, benchfs_strerror());
}

static void BENCHFS_remove(char *path, aiori_mod_opt_t *options)
{
        (void) options;
        if (dry_run())
                return;
        if (benchfs_remove(path) < 0)
                WARNF("[RANK %03d]: remove of \"%s\" failed: %s", rank, path, benchfs_strerror());
}

static IOR_offset_t BENCHFS_get_file_size(aiori_mod_opt_t *options, char *path)
{
        (void) options;
        if (dry_run())
                return 0;
        int64_t size = benchfs_get_file_size(path);
        if (size < 0)
                ERRF("[RANK %03d]: size of \"%s\" unknown: %s", rank, path, benchfs_strerror());
        return (IOR_offset_t) size;
}

static void BENCHFS_sync(aiori_mod_opt_t *options)
{
        (void) options;
        if (dry_run())
                return;
        if (benchfs_sync() < 0)
                WARNF("[RANK %03d]: sync failed: %s", rank, benchfs_strerror());
}

/************************** N A M E S P A C E *****************************/

/*
 * BenchFS has no inode limit: every free block is counted as a free inode, so IOR's
 * "Used Inodes" shows the share of files in that total.
 */
static int BENCHFS_statfs(const char *path, ior_aiori_statfs_t *st, aiori_mod_opt_t *options)
{
        benchfs_statfs_t s;
        const uint64_t bsize = 4096;

        (void) path;
        (void) options;
        if (dry_run())
                return 0;
        int rc = benchfs_statfs(&s);
        if (rc < 0) {
                WARNF("statfs failed: %s", benchfs_strerror());
                return to_posix(rc);
        }
        st->f_bsize = bsize;
        st->f_blocks = s.total_bytes / bsize;
        st->f_bfree = s.free_bytes / bsize;
        st->f_bavail = s.available_bytes / bsize;
        st->f_ffree = st->f_bavail;
        st->f_files = s.files + st->f_ffree;
        return 0;
}

static int BENCHFS_mkdir(const char *path, mode_t mode, aiori_mod_opt_t *options)
{
        (void) options;
        if (dry_run())
                return 0;
        return to_posix(benchfs_mkdir(path, (uint32_t) mode));
}

static int BENCHFS_rmdir(const char *path, aiori_mod_opt_t *options)
{
        (void) options;
        if (dry_run())
                return 0;
        return to_posix(benchfs_rmdir(path));
}

static int BENCHFS_access(const char *path, int mode, aiori_mod_opt_t *options)
{
        int m = 0;

        (void) options;
        if (dry_run())
                return 0;
        if (mode & R_OK)
                m |= BENCHFS_R_OK;
        if (mode & W_OK)
                m |= BENCHFS_W_OK;
        if (mode & X_OK)
                m |= BENCHFS_X_OK;
        return to_posix(benchfs_access(path, m));
}

static void ns_to_timespec(int64_t ns, struct timespec *ts)
{
        ts->tv_sec = (time_t) (ns / 1000000000LL);
        ts->tv_nsec = (long) (ns % 1000000000LL);
        if (ts->tv_nsec < 0) {
                ts->tv_sec -= 1;
                ts->tv_nsec += 1000000000L;
        }
}

static int BENCHFS_stat(const char *path, struct stat *buf, aiori_mod_opt_t *options)
{
        benchfs_stat_t s;

        (void) options;
        if (dry_run())
                return 0;
        int rc = benchfs_stat(path, &s);
        if (rc < 0)
                return to_posix(rc);
        memset(buf, 0, sizeof(*buf));
        buf->st_ino = (ino_t) s.ino;
        buf->st_mode = (mode_t) s.mode;
        buf->st_nlink = (nlink_t) s.nlink;
        buf->st_uid = getuid();
        buf->st_gid = getgid();
        buf->st_size = (off_t) s.size;
        buf->st_blocks = (blkcnt_t) s.blocks;
        buf->st_blksize = (blksize_t) s.blksize;
        ns_to_timespec(s.atime_ns, &buf->st_atim);
        ns_to_timespec(s.mtime_ns, &buf->st_mtim);
        ns_to_timespec(s.ctime_ns, &buf->st_ctim);
        return 0;
}

static int BENCHFS_rename(const char *from, const char *to, aiori_mod_opt_t *options)
{
        (void) options;
        if (dry_run())
                return 0;
        return to_posix(benchfs_rename(from, to));
}

/************************** B A C K E N D *****************************/

ior_aiori_t benchfs_aiori = {
        .name = "BENCHFS",
        .name_legacy = NULL,
        .create = BENCHFS_create,
        .mknod = BENCHFS_mknod,
        .open = BENCHFS_open,
        .xfer_hints = BENCHFS_xfer_hints,
        .xfer = BENCHFS_xfer,
        .close = BENCHFS_close,
#ifdef BENCHFS_AIORI_DELETE
        .delete = BENCHFS_remove,
#else
        .remove = BENCHFS_remove,
#endif
        .get_version = BENCHFS_get_version,
        .fsync = BENCHFS_fsync,
        .get_file_size = BENCHFS_get_file_size,
        .statfs = BENCHFS_statfs,
        .mkdir = BENCHFS_mkdir,
        .rmdir = BENCHFS_rmdir,
        .access = BENCHFS_access,
        .stat = BENCHFS_stat,
        .initialize = BENCHFS_initialize,
        .finalize = BENCHFS_finalize,
        .rename = BENCHFS_rename,
        .get_options = BENCHFS_options,
        .check_params = BENCHFS_check_params,
        .sync = BENCHFS_sync,
        .enable_mdtest = true,
};
