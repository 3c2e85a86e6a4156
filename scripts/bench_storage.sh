#!/usr/bin/env bash
# Compares the BenchFS chunk store with fio on the same directory, in one run.
#
# Usage: scripts/bench_storage.sh [DIR]
#
# DIR must be on a disk-backed file system (O_DIRECT); it defaults to a fresh directory under
# the build's target directory. For each case, fio (io_uring engine, O_DIRECT, registered
# buffers) and the chunk store (benches/storage_ratio.rs) run the same block size and queue
# depth for the same time over a region of the same size, one after the other. One line per
# case:
#
#   RESULT name=<case> benchfs=<value> reference=<value> unit=<MiB/s|IOPS> ratio=<r>
#
# Both sides run pinned to the same CPU (a BenchFS shard is a pinned thread), alternately,
# BENCH_REPEAT times each; the best run of each side is reported, so a slow moment of a shared
# virtual disk does not decide the ratio.
#
# Environment: BENCH_SECONDS (default 10) measured seconds per run, BENCH_REGION_MIB (default
# 1024) size of the region worked on, BENCH_REPEAT (default 3) runs per side and case,
# BENCH_CPU (default: the last CPU) where both sides run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${BENCH_SECONDS:-10}"
region_mib="${BENCH_REGION_MIB:-1024}"
repeat="${BENCH_REPEAT:-3}"
cpu="${BENCH_CPU:-$(($(nproc) - 1))}"

if ! command -v fio >/dev/null 2>&1; then
    echo "bench_storage.sh: fio is missing; run scripts/setup.sh" >&2
    exit 1
fi

if [ $# -ge 1 ]; then
    base="$1"
    mkdir -p "$base"
    work="$(mktemp -d "$base/bench-storage.XXXXXX")"
else
    mkdir -p "$root/target"
    work="$(mktemp -d "$root/target/bench-storage.XXXXXX")"
fi
trap 'rm -rf "$work"' EXIT

# Build once, then run the benchmark binary directly so build output stays out of the timing.
cd "$root"
# shellcheck source=scripts/bench_lib.sh
. "$root/scripts/bench_lib.sh"
driver="$(bench_driver storage_ratio)"

# fio_run RW BS IODEPTH: prints bandwidth in MiB/s for sequential, IOPS for 4 KiB cases.
fio_run() {
    local rw="$1" bs="$2" depth="$3" terse
    terse="$(taskset -c "$cpu" fio --name=reference --directory="$work" --filename=fio.data \
        --size="${region_mib}M" --rw="$rw" --bs="$bs" --iodepth="$depth" \
        --ioengine=io_uring --direct=1 --fixedbufs --randrepeat=1 \
        --ramp_time=1 --runtime="$seconds" --time_based \
        --output-format=terse --terse-version=3)"
    rm -f "$work/fio.data"
    # Terse v3: fields 7/8 are read KiB/s and IOPS, 48/49 the same for writes.
    echo "$terse" | awk -F';' -v rw="$rw" -v bs="$bs" '{
        bw = (rw ~ /write/) ? $48 : $7; iops = (rw ~ /write/) ? $49 : $8;
        if (bs == "4k") printf "%.1f\n", iops; else printf "%.1f\n", bw / 1024 }'
}

# benchfs_run CASE: prints the chunk store's value for CASE.
benchfs_run() {
    taskset -c "$cpu" "$driver" --dir "$work/benchfs" --case "$1" --seconds "$seconds" --region-mib "$region_mib" |
        sed -n 's/^BENCHFS .* value=\([0-9.]*\) .*/\1/p'
    rm -rf "$work/benchfs"
}

# best A B: the larger of two figures (an empty one loses).
best() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || (b != "" && b + 0 > a + 0)) print b; else print a }'
}

run_case() {
    local name="$1" rw="$2" bs="$3" depth="$4" unit="$5" reference="" benchfs="" i figure
    for ((i = 0; i < repeat; i++)); do
        figure="$(fio_run "$rw" "$bs" "$depth")"
        if [ -z "$figure" ]; then
            echo "bench_storage.sh: fio produced no figure for $name" >&2
            exit 1
        fi
        reference="$(best "$reference" "$figure")"
        figure="$(benchfs_run "$name")"
        if [ -z "$figure" ]; then
            echo "bench_storage.sh: the chunk store produced no figure for $name" >&2
            exit 1
        fi
        benchfs="$(best "$benchfs" "$figure")"
    done
    awk -v n="$name" -v b="$benchfs" -v r="$reference" -v u="$unit" 'BEGIN {
        printf "RESULT name=%s benchfs=%s reference=%s unit=%s ratio=%.3f\n", n, b, r, u,
            (r > 0 ? b / r : 0) }'
}

run_case seq-write-4MiB write 4m 8 MiB/s
run_case seq-read-4MiB read 4m 8 MiB/s
run_case rand-read-4KiB randread 4k 64 IOPS
run_case rand-write-4KiB randwrite 4k 64 IOPS
