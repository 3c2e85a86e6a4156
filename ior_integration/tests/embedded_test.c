/*
 * embedded_test.c - every rank of an MPI job is both a storage server and a client: the
 * server is started by benchfs_init ("server=1") inside the calling process, learns its rank
 * and the server count from the launcher, and publishes itself in the registry like
 * benchfsd. Each rank writes a file that spans chunks on every server, and reads back the
 * file of another rank after all ranks closed theirs.
 *
 * Usage: mpirun -np N embedded_test DIR   (DIR: a disk-backed directory; the registry and
 *        the servers' data go below it)
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "benchfs_c_api.h"

#define FILE_BYTES (12ull << 20) /* three 4 MiB chunks */

static int rank, ranks, failures;

static void check(const char *what, long long got, long long want)
{
    if (got != want) {
        fprintf(stderr, "FAIL rank %d: %s: got %lld, want %lld (%s)\n", rank, what, got, want,
                benchfs_strerror());
        failures++;
    }
}

static unsigned char byte_of(int owner, uint64_t off)
{
    return (unsigned char)(owner * 131 + (int)(off % 251));
}

static void write_own_file(unsigned char *buf)
{
    char path[64];
    benchfs_file *f = NULL;
    snprintf(path, sizeof path, "/embedded/r%d", rank);
    for (uint64_t i = 0; i < FILE_BYTES; i++)
        buf[i] = byte_of(rank, i);
    check("create", benchfs_create(path, 0644, &f), 0);
    if (f) {
        check("pwrite", benchfs_pwrite(f, buf, FILE_BYTES, 0), (long long)FILE_BYTES);
        check("close", benchfs_close(f), 0);
    }
}

static void read_other_file(unsigned char *buf)
{
    char path[64];
    benchfs_file *f = NULL;
    int other = (rank + 1) % ranks;
    snprintf(path, sizeof path, "/embedded/r%d", other);
    check("size", benchfs_get_file_size(path), (long long)FILE_BYTES);
    memset(buf, 0, FILE_BYTES);
    check("open", benchfs_open(path, BENCHFS_O_RDONLY, 0, &f), 0);
    if (!f)
        return;
    check("pread", benchfs_pread(f, buf, FILE_BYTES, 0), (long long)FILE_BYTES);
    for (uint64_t i = 0; i < FILE_BYTES; i++)
        if (buf[i] != byte_of(other, i)) {
            check("data at offset", (long long)i, -1);
            break;
        }
    check("close read", benchfs_close(f), 0);
}

int main(int argc, char **argv)
{
    char registry[512], options[600];
    benchfs_statfs_t fs;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    snprintf(registry, sizeof registry, "%s/registry", argv[1]);
    /* Rank and server count come from the launcher's environment, as for benchfsd. */
    snprintf(options, sizeof options, "server=1,data_dir=%s/data,wait_ms=60000,timeout_ms=30000",
             argv[1]);
    int rc = benchfs_init(registry, options);
    check("init with server", rc, 0);
    if (rc != 0)
        MPI_Abort(MPI_COMM_WORLD, 1);
    check("nested init", benchfs_init(registry, options), 0);
    check("statfs", benchfs_statfs(&fs), 0);
    check("targets", (long long)fs.targets, ranks);

    unsigned char *buf = malloc(FILE_BYTES);
    if (rank == 0) {
        rc = benchfs_mkdir("/embedded", 0755);
        check("mkdir", rc == -EEXIST ? 0 : rc, 0);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    write_own_file(buf);
    MPI_Barrier(MPI_COMM_WORLD);
    read_other_file(buf);
    free(buf);

    /* Nobody's server may stop while another rank still uses it. */
    MPI_Barrier(MPI_COMM_WORLD);
    check("nested finalize", benchfs_finalize(), 0);
    check("finalize", benchfs_finalize(), 0);

    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0 && total == 0)
        printf("embedded_test: %d server ranks, all passed\n", ranks);
    MPI_Finalize();
    return total == 0 ? 0 : 1;
}
