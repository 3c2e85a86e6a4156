/*
 * mpi_patterns_test.c - IOR's access patterns through the C API, from every rank of an MPI
 * job, the way the IOR backend issues them, against the cluster named by BENCHFS_REGISTRY.
 *
 *   1. one shared file created by all ranks at once, each rank writing its own segment;
 *   2. one shared file of interleaved 47008-byte records (IOR hard), all ranks at once;
 *   3. file per process, 1 MiB transfers.
 *
 * After every write phase the files are closed, all ranks meet, and each file is read by a
 * different rank than its writer; every rank checks the file size, the sizes seen by all ranks
 * are compared, and every byte is verified. Exits non-zero on any mismatch (on every rank).
 *
 * Usage: mpirun -np N mpi_patterns_test [DIR]   (DIR: a BenchFS directory, default /mpi)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "benchfs_c_api.h"

#define SEGMENT_BYTES (8ull << 20)  /* pattern 1: bytes per rank */
#define RECORD_BYTES 47008ull       /* pattern 2: IOR hard's transfer and block size */
#define RECORDS_PER_RANK 200ull
#define FPP_BYTES (16ull << 20)     /* pattern 3: bytes per file */
#define TRANSFER_BYTES (1ull << 20) /* patterns 1 and 3 */

static int rank, ranks, failures;
static char dir[256];

static void fail(const char *what, long long got, const char *path)
{
    fprintf(stderr, "FAIL rank %d: %s %s: %lld (%s)\n", rank, what, path, got,
            benchfs_strerror());
    failures++;
}

/* The byte pattern of a file: the 8-byte word at file offset `off` (a multiple of 8) is a
 * function of the offset and the file's tag, so misplaced or stale data never matches. */
static uint64_t word_at(uint64_t off, uint64_t tag)
{
    uint64_t x = (off + 1) * 0x9e3779b97f4a7c15ull ^ tag;
    x ^= x >> 31;
    return x * 0xbf58476d1ce4e5b9ull;
}

static void fill(unsigned char *buf, uint64_t len, uint64_t off, uint64_t tag)
{
    for (uint64_t i = 0; i < len; i += 8) {
        uint64_t w = word_at(off + i, tag);
        memcpy(buf + i, &w, 8);
    }
}

/* Returns the file offset of the first wrong byte in buf (len bytes read at off), or -1. */
static long long first_mismatch(const unsigned char *buf, uint64_t len, uint64_t off,
                                uint64_t tag)
{
    for (uint64_t i = 0; i < len; i += 8) {
        uint64_t w = word_at(off + i, tag);
        if (memcmp(buf + i, &w, 8) != 0)
            return (long long)(off + i);
    }
    return -1;
}

static void write_range(benchfs_file *f, const char *path, uint64_t off, uint64_t len,
                        uint64_t tag, unsigned char *buf)
{
    fill(buf, len, off, tag);
    int64_t n = benchfs_pwrite(f, buf, len, off);
    if (n != (int64_t)len)
        fail("pwrite", n, path);
}

static void verify_range(benchfs_file *f, const char *path, uint64_t off, uint64_t len,
                         uint64_t tag, unsigned char *buf)
{
    memset(buf, 0, len);
    int64_t n = benchfs_pread(f, buf, len, off);
    if (n != (int64_t)len) {
        fail("pread", n, path);
        return;
    }
    long long bad = first_mismatch(buf, len, off, tag);
    if (bad >= 0) {
        fprintf(stderr, "FAIL rank %d: %s: wrong data at offset %lld\n", rank, path, bad);
        failures++;
    }
}

/* Every rank checks the size of `path`; all ranks must see `want`. */
static void check_size_everywhere(const char *path, int64_t want)
{
    int64_t mine = benchfs_get_file_size(path), *all = calloc((size_t)ranks, sizeof *all);
    MPI_Allgather(&mine, 1, MPI_INT64_T, all, 1, MPI_INT64_T, MPI_COMM_WORLD);
    for (int r = 0; r < ranks; r++)
        if (all[r] != want && rank == 0) {
            fprintf(stderr, "FAIL: rank %d sees size %" PRId64 " of %s, want %" PRId64 "\n",
                    r, all[r], path, want);
            failures++;
        }
    free(all);
}

/* All ranks create `path` at once, as IOR does for a shared file (never truncating). */
static benchfs_file *create_shared(const char *path)
{
    benchfs_file *f = NULL;
    if (rank == 0) {
        int rc = benchfs_remove(path);
        if (rc != 0 && rc != -ENOENT)
            fail("remove", rc, path);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    int rc = benchfs_create(path, 0644, &f);
    if (rc != 0)
        fail("create", rc, path);
    return f;
}

static void close_checked(benchfs_file *f, const char *path)
{
    int rc = benchfs_close(f);
    if (rc != 0)
        fail("close", rc, path);
}

static benchfs_file *open_read(const char *path)
{
    benchfs_file *f = NULL;
    int rc = benchfs_open(path, BENCHFS_O_RDONLY, 0, &f);
    if (rc != 0)
        fail("open", rc, path);
    return f;
}

static void segmented_shared(unsigned char *buf)
{
    char path[300];
    snprintf(path, sizeof path, "%s/shared", dir);
    benchfs_file *f = create_shared(path);
    if (f) {
        for (uint64_t o = 0; o < SEGMENT_BYTES; o += TRANSFER_BYTES)
            write_range(f, path, (uint64_t)rank * SEGMENT_BYTES + o, TRANSFER_BYTES, 1, buf);
        close_checked(f, path);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    check_size_everywhere(path, (int64_t)(SEGMENT_BYTES * (uint64_t)ranks));
    uint64_t reader_of = (uint64_t)((rank + 1) % ranks);
    if ((f = open_read(path))) {
        for (uint64_t o = 0; o < SEGMENT_BYTES; o += TRANSFER_BYTES)
            verify_range(f, path, reader_of * SEGMENT_BYTES + o, TRANSFER_BYTES, 1, buf);
        close_checked(f, path);
    }
}

static void interleaved_records(unsigned char *buf)
{
    char path[300];
    snprintf(path, sizeof path, "%s/hard", dir);
    benchfs_file *f = create_shared(path);
    if (f) {
        for (uint64_t s = 0; s < RECORDS_PER_RANK; s++)
            write_range(f, path, (s * (uint64_t)ranks + (uint64_t)rank) * RECORD_BYTES,
                        RECORD_BYTES, 2, buf);
        close_checked(f, path);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    check_size_everywhere(path, (int64_t)(RECORDS_PER_RANK * (uint64_t)ranks * RECORD_BYTES));
    uint64_t other = (uint64_t)((rank + 1) % ranks);
    if ((f = open_read(path))) {
        for (uint64_t s = 0; s < RECORDS_PER_RANK; s++)
            verify_range(f, path, (s * (uint64_t)ranks + other) * RECORD_BYTES, RECORD_BYTES,
                         2, buf);
        close_checked(f, path);
    }
}

static void file_per_process(unsigned char *buf)
{
    char path[300];
    benchfs_file *f = NULL;
    snprintf(path, sizeof path, "%s/fpp.%d", dir, rank);
    int rc = benchfs_open(path, BENCHFS_O_WRONLY | BENCHFS_O_CREAT | BENCHFS_O_TRUNC, 0644, &f);
    if (rc != 0) {
        fail("open for writing", rc, path);
    } else {
        for (uint64_t o = 0; o < FPP_BYTES; o += TRANSFER_BYTES)
            write_range(f, path, o, TRANSFER_BYTES, 3 + (uint64_t)rank, buf);
        close_checked(f, path);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    int other = (rank + 1) % ranks;
    snprintf(path, sizeof path, "%s/fpp.%d", dir, other);
    benchfs_stat_t st;
    if ((rc = benchfs_stat(path, &st)) != 0)
        fail("stat", rc, path);
    else if (st.size != FPP_BYTES)
        fail("stat size", (long long)st.size, path);
    if ((f = open_read(path))) {
        for (uint64_t o = 0; o < FPP_BYTES; o += TRANSFER_BYTES)
            verify_range(f, path, o, TRANSFER_BYTES, 3 + (uint64_t)other, buf);
        close_checked(f, path);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    snprintf(path, sizeof path, "%s/fpp.%d", dir, rank);
    if ((rc = benchfs_remove(path)) != 0)
        fail("remove", rc, path);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "/mpi");
    unsigned char *buf = malloc(TRANSFER_BYTES);
    int rc = benchfs_init(NULL, "timeout_ms=30000,wait_ms=60000");
    if (rc != 0) {
        fail("init", rc, "");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0 && (rc = benchfs_mkdir(dir, 0755)) != 0 && rc != -EEXIST)
        fail("mkdir", rc, dir);
    MPI_Barrier(MPI_COMM_WORLD);

    segmented_shared(buf);
    interleaved_records(buf);
    file_per_process(buf);

    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        char path[300];
        snprintf(path, sizeof path, "%s/shared", dir);
        if ((rc = benchfs_remove(path)) != 0)
            fail("remove", rc, path);
        snprintf(path, sizeof path, "%s/hard", dir);
        if ((rc = benchfs_remove(path)) != 0)
            fail("remove", rc, path);
        if ((rc = benchfs_rmdir(dir)) != 0)
            fail("rmdir", rc, dir);
    }
    if ((rc = benchfs_finalize()) != 0)
        fail("finalize", rc, "");
    free(buf);

    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0 && total == 0)
        printf("mpi_patterns_test: %d ranks, all passed\n", ranks);
    MPI_Finalize();
    return total == 0 ? 0 : 1;
}
