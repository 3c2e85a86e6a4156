#!/usr/bin/env bash
# Compares a local BenchFS cluster with fio on the same directory, in one run: sequential
# write and read bandwidth of 4 client processes against 4 fio jobs, and metadata rates.
#
# Usage: scripts/bench.sh [DIR]
#
# DIR must be on a disk-backed file system (O_DIRECT; not tmpfs); it defaults to a fresh
# directory under the build's target directory. Each repetition runs, one after the other:
#
#   fio        4 jobs (--numjobs=4 --group_reporting), each a file of BENCH_SIZE_MIB written
#              sequentially, then read back: io_uring, O_DIRECT, registered buffers, 4 MiB
#              blocks, BENCH_IODEPTH in flight per job, no preallocation (the chunk store
#              does not preallocate either). Size-based, not timed, so both sides move the
#              same bytes.
#   BenchFS    a fresh cluster of 2 servers x 1 shard (--no-numa) with its data in DIR,
#              driven by benchfs-load with 4 processes: file per process, 4 MiB transfers,
#              BENCH_SIZE_MIB per process, write then read (--no-verify); then create, stat,
#              rename (there and back, 2 per file) and unlink of BENCH_FILES empty files and
#              mkdir of BENCH_FILES directories per process, and BENCH_LISTINGS (default
#              200) listings per process of a directory of 1000 files; then the same
#              sequential write and read by 4 fio jobs (psync, 4 MiB blocks) running on
#              the same cluster through the LD_PRELOAD library (libbenchfs_preload.so),
#              without buffer scrambling (benchfs-load --no-verify does not refill its
#              buffers either), compared with benchfs-load's native figures. The cluster is
#              stopped and its data removed after each repetition.
#
# O_DIRECT on both sides keeps the page cache out. The best run of each side is reported, so
# a slow moment of a shared virtual disk does not decide the ratio. Output, one line each:
#
#   RESULT name=seq-write benchfs=<MiB/s> reference=<fio MiB/s> unit=MiB/s ratio=<r>
#   RESULT name=seq-read benchfs=<MiB/s> reference=<fio MiB/s> unit=MiB/s ratio=<r>
#   RESULT name=preload-seq-write benchfs=<fio through the preload> reference=<native> ...
#   RESULT name=preload-seq-read ...
#   RESULT name=create benchfs=<ops/s> unit=ops/s     (also stat, rename, unlink, mkdir)
#   RESULT name=readdir-1000 benchfs=<listings/s> unit=ops/s
#
# Target: ratio >= 0.85 for seq-write and seq-read, the disk being the bottleneck; for the
# preload rows (unmodified programs against the native client) ratio >= 0.8.
#
# Environment: BENCH_SIZE_MIB (default 1024) MiB per process and per fio job, BENCH_IODEPTH
# (default 8) fio queue depth per job, BENCH_FILES (default 2000) files per process for the
# metadata phases, BENCH_REPEAT (default 3) runs per side. UCX_TLS and UCX_NET_DEVICES pick
# the transports; unless UCX_TLS is set, shared memory (UCX_TLS=posix,cma), what UCX uses
# between processes of one node, so that the disk is what is measured. For TCP on loopback
# (which costs CPU time that a small machine's disk-bound run does not have to spare):
# UCX_TLS=tcp UCX_NET_DEVICES=lo scripts/bench.sh.
# Progress goes to stderr; the RESULT lines to stdout. The directory, the cluster and every
# file are removed on exit, also on failure or Ctrl-C.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bench_lib.sh
source "$root/scripts/bench_lib.sh"
bin="$root/target/release"
me="bench.sh"
size_mib="${BENCH_SIZE_MIB:-1024}"
iodepth="${BENCH_IODEPTH:-8}"
files="${BENCH_FILES:-2000}"
listings="${BENCH_LISTINGS:-200}"
repeat="${BENCH_REPEAT:-3}"
procs=4
servers=2

say() {
    echo "$me: $*" >&2 2>/dev/null || true
}

die() {
    say "$*"
    exit 1
}

for knob in size_mib iodepth files listings repeat; do
    case "${!knob}" in
        '' | *[!0-9]* | 0) die "a BENCH_ setting is not a positive integer: $knob='${!knob}'" ;;
    esac
done

if ! command -v fio >/dev/null 2>&1; then
    die "fio is missing; run scripts/setup.sh"
fi

if [ -z "${UCX_TLS:-}" ]; then
    export UCX_TLS=posix,cma
fi

# Build first, quietly, so that build output stays out of the measurements.
log="$(mktemp)"
if ! (cd "$root" && cargo build --release --bins --quiet &&
    cargo build --release --quiet -p benchfs-preload) >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "the build failed"
fi
rm -f "$log"

if [ $# -ge 1 ]; then
    mkdir -p "$1"
    work="$(mktemp -d "$1/bench.XXXXXX")"
else
    mkdir -p "$root/target"
    work="$(mktemp -d "$root/target/bench.XXXXXX")"
fi

server_pids=()
waiter_pid=""

# The servers run with built-in defaults and the flags below only: BENCHFS_ variables of the
# caller's environment (configuration keys, or names the daemon refuses) are left out.
daemon_env=(env)
while read -r name; do
    daemon_env+=(-u "$name")
done < <(compgen -e | grep '^BENCHFS_' || true)


kill_servers() {
    local pid
    [ "${#server_pids[@]}" -gt 0 ] || return 0
    for pid in "${server_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    if ! wait_gone 15 "${server_pids[@]}"; then
        for pid in "${server_pids[@]}"; do
            kill -KILL "$pid" 2>/dev/null || true
        done
        wait_gone 5 "${server_pids[@]}" || say "could not kill every server"
    fi
    server_pids=()
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    trap '' PIPE
    set +e
    if [ -n "$waiter_pid" ]; then
        kill "$waiter_pid" 2>/dev/null
    fi
    kill_servers
    if [ "$status" -ne 0 ] && [ "$status" -lt 128 ]; then
        for f in "$work"/server-*.log; do
            [ -s "$f" ] || continue
            say "last lines of $f:"
            tail -n 20 "$f" >&2 2>/dev/null
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'trap "" PIPE; exit 141' PIPE

case "$(stat -f -c %T "$work")" in
    tmpfs | ramfs) die "$work is in memory ($(stat -f -c %T "$work")); give a directory on a disk" ;;
esac

# Enough room for one side's files at a time.
need_kib=$((procs * size_mib * 1024 + 256 * 1024))
avail_kib="$(df -Pk "$work" | awk 'NR == 2 { print $4 }')"
if [ "$avail_kib" -lt "$need_kib" ]; then
    die "$work has $((avail_kib / 1024)) MiB free; the benchmark needs $((need_kib / 1024)) MiB"
fi

# fio_run RW: the aggregate bandwidth of the 4 jobs in MiB/s.
fio_run() {
    local rw="$1" terse
    terse="$(fio --name=reference --directory="$work/fio" --numjobs="$procs" --group_reporting \
        --size="${size_mib}M" --rw="$rw" --bs=4m --iodepth="$iodepth" --ioengine=io_uring \
        --direct=1 --fixedbufs --fallocate=none --output-format=terse --terse-version=3)"
    # Terse v3: field 7 is the read bandwidth in KiB/s, field 48 the write bandwidth.
    echo "$terse" | awk -F';' -v rw="$rw" '$1 == 3 {
        printf "%.1f\n", ((rw == "write") ? $48 : $7) / 1024 }'
}

# preload_fio RW: fio's bandwidth in MiB/s through the preload, on the running cluster.
preload_fio() {
    local rw="$1" terse
    terse="$(LD_PRELOAD="$bin/libbenchfs_preload.so" BENCHFS_MOUNT=/bench-preload \
        BENCHFS_REGISTRY="$work/registry" fio --name=preload --directory=/bench-preload/fio \
        --numjobs="$procs" --group_reporting --size="${size_mib}M" --rw="$rw" --bs=4m \
        --ioengine=psync --fallocate=none --scramble_buffers=0 --output-format=terse \
        --terse-version=3)"
    echo "$terse" | awk -F';' -v rw="$rw" '$1 == 3 {
        printf "%.1f\n", ((rw == "write") ? $48 : $7) / 1024 }'
}

start_cluster() {
    local rank pid
    mkdir -p "$work/registry" "$work/data"
    for ((rank = 0; rank < servers; rank++)); do
        setsid "${daemon_env[@]}" "$bin/benchfsd" --registry-dir "$work/registry" --data-dir "$work/data" \
            --rank "$rank" --servers "$servers" --shards 1 --no-numa \
            </dev/null >"$work/server-$rank.log" 2>&1 &
        server_pids+=("$!")
    done
    # Wait for every target, failing early when a server exits during start-up.
    "$bin/benchfsctl" --registry "$work/registry" --servers "$servers" wait --timeout 60 \
        >/dev/null &
    waiter_pid=$!
    while proc_alive "$waiter_pid"; do
        for pid in "${server_pids[@]}"; do
            proc_alive "$pid" || die "a server exited during start-up"
        done
        sleep 0.1
    done
    wait "$waiter_pid" || die "the cluster did not come up"
    waiter_pid=""
}

stop_cluster() {
    "$bin/benchfsctl" --registry "$work/registry" shutdown --timeout 30 >/dev/null ||
        die "the cluster did not stop"
    wait_gone 15 "${server_pids[@]}" || die "servers still running after the shutdown"
    server_pids=()
    rm -rf "$work/registry" "$work/data" "$work"/server-*.log
}

# column PHASE FIELD FILE: a figure of benchfs-load's table.
column() {
    awk -v p="$1" -v f="$2" '$1 == p { print $f }' "$3"
}

# best A B: the larger of two figures (an empty one loses).
best() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || (b != "" && b + 0 > a + 0)) print b; else print a }'
}

# need NAME VALUE: fails when a run produced no figure.
need() {
    [ -n "$2" ] || die "no figure for $1"
}

ref_write="" ref_read="" fs_write="" fs_read="" pl_write="" pl_read=""
meta_phases="create stat rename unlink mkdir readdir"
declare -A fs_meta=()
for ((i = 1; i <= repeat; i++)); do
    say "run $i of $repeat: fio, $procs jobs x $size_mib MiB"
    mkdir -p "$work/fio"
    figure="$(fio_run write)"
    need "fio write" "$figure"
    ref_write="$(best "$ref_write" "$figure")"
    figure="$(fio_run read)"
    need "fio read" "$figure"
    ref_read="$(best "$ref_read" "$figure")"
    rm -rf "$work/fio"

    say "run $i of $repeat: BenchFS, $procs processes x $size_mib MiB, $files files each"
    start_cluster
    "$bin/benchfs-load" --registry "$work/registry" --procs "$procs" --pattern fpp \
        --dir /seq --transfer 4m --block "${size_mib}m" --no-verify --phases write,read \
        >"$work/seq.out"
    "$bin/benchfs-load" --registry "$work/registry" --procs "$procs" --pattern shared \
        --dir /meta --files "$files" --phases create,stat,rename,unlink,mkdir \
        >"$work/meta.out"
    # Listings of a directory of 1000 entries, BENCH_LISTINGS per process.
    "$bin/benchfs-load" --registry "$work/registry" --procs "$procs" --dir /list \
        --files "$listings" --listing-entries 1000 --phases readdir >>"$work/meta.out"
    "$bin/benchfsctl" --registry "$work/registry" mkdir /fio >/dev/null
    figure="$(preload_fio write)"
    need "fio write through the preload" "$figure"
    pl_write="$(best "$pl_write" "$figure")"
    figure="$(preload_fio read)"
    need "fio read through the preload" "$figure"
    pl_read="$(best "$pl_read" "$figure")"
    stop_cluster
    for phase in write read; do
        figure="$(column "$phase" 5 "$work/seq.out")"
        need "BenchFS $phase" "$figure"
        case "$phase" in
            write) fs_write="$(best "$fs_write" "$figure")" ;;
            read) fs_read="$(best "$fs_read" "$figure")" ;;
        esac
    done
    for phase in $meta_phases; do
        figure="$(column "$phase" 6 "$work/meta.out")"
        need "BenchFS $phase" "$figure"
        fs_meta[$phase]="$(best "${fs_meta[$phase]:-}" "$figure")"
    done
done

awk -v bw="$fs_write" -v rw="$ref_write" -v br="$fs_read" -v rr="$ref_read" 'BEGIN {
    printf "RESULT name=seq-write benchfs=%.1f reference=%.1f unit=MiB/s ratio=%.2f\n",
        bw, rw, (rw > 0 ? bw / rw : 0)
    printf "RESULT name=seq-read benchfs=%.1f reference=%.1f unit=MiB/s ratio=%.2f\n",
        br, rr, (rr > 0 ? br / rr : 0)
}'
awk -v pw="$pl_write" -v bw="$fs_write" -v pr="$pl_read" -v br="$fs_read" 'BEGIN {
    printf "RESULT name=preload-seq-write benchfs=%.1f reference=%.1f unit=MiB/s ratio=%.2f\n",
        pw, bw, (bw > 0 ? pw / bw : 0)
    printf "RESULT name=preload-seq-read benchfs=%.1f reference=%.1f unit=MiB/s ratio=%.2f\n",
        pr, br, (br > 0 ? pr / br : 0)
}'
for phase in $meta_phases; do
    name="$phase"
    [ "$phase" = readdir ] && name=readdir-1000
    awk -v n="$name" -v v="${fs_meta[$phase]}" \
        'BEGIN { printf "RESULT name=%s benchfs=%.1f unit=ops/s\n", n, v }'
done
