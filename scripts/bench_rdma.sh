#!/usr/bin/env bash
# Compares the BenchFS transport with ucx_perftest over the same UCX transport, in one run.
#
# Usage: scripts/bench_rdma.sh
#
# For shared memory (UCX_TLS=posix,cma) and TCP on the loopback device, it runs, one after
# the other, ucx_perftest (server and client processes) and benches/rdma_ratio.rs (which
# starts its own server process) for:
#   am-lat-8B     round trip of an 8-byte request and its reply (ours: BenchFS request/reply
#                 frames through benchfs-rdma; reference: twice ucp_am_lat's one-way latency)
#   am-bw-4MiB    streaming 4 MiB active messages, 16 in flight (reference: ucp_am_bw)
#   put-bw-4MiB   streaming 4 MiB puts, 16 in flight (reference: ucp_put_bw)
# and prints one line per case and transport:
#
#   RESULT name=<case>-<transport> benchfs=<value> reference=<value> unit=<us|MB/s> ratio=<r>
#
# For latency the ratio is ours over the reference round trip (lower is better); for bandwidth
# ours over the reference (higher is better). Environment: BENCH_LAT_ITERS (default 100000),
# BENCH_BW_ITERS (default 2000), BENCH_PORT (default 13337) for ucx_perftest's connection.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lat_iters="${BENCH_LAT_ITERS:-100000}"
bw_iters="${BENCH_BW_ITERS:-2000}"
port="${BENCH_PORT:-13337}"

if ! command -v ucx_perftest >/dev/null 2>&1; then
    echo "bench_rdma.sh: ucx_perftest is missing; run scripts/setup.sh" >&2
    exit 1
fi

cd "$root"
# shellcheck source=scripts/bench_lib.sh
. "$root/scripts/bench_lib.sh"
driver="$(bench_driver rdma_ratio)"

server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# ucx_env TRANSPORT: the UCX variables of a transport, as env arguments.
ucx_env() {
    case "$1" in
        shm) echo "UCX_TLS=posix,cma" ;;
        tcp) echo "UCX_TLS=tcp UCX_NET_DEVICES=lo" ;;
    esac
}

# perftest TRANSPORT TEST SIZE ITERS: prints the "Final:" line's overall latency (usec) for
# latency tests and overall bandwidth (MB/s) for bandwidth tests.
perftest() {
    local transport="$1" test="$2" size="$3" iters="$4" out
    # shellcheck disable=SC2046
    env $(ucx_env "$transport") ucx_perftest -p "$port" -t "$test" -s "$size" -n "$iters" \
        >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        if ss -ltn 2>/dev/null | grep -q ":$port "; then
            break
        fi
        sleep 0.05
    done
    # shellcheck disable=SC2046
    out="$(env $(ucx_env "$transport") ucx_perftest 127.0.0.1 -p "$port" -t "$test" \
        -s "$size" -n "$iters" 2>/dev/null | awk '/^Final:/ { print }')"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    case "$test" in
        *lat) echo "$out" | awk '{ printf "%.3f\n", $5 * 2 }' ;;
        *) echo "$out" | awk '{ printf "%.1f\n", $7 }' ;;
    esac
}

# ours CASE TRANSPORT ITERS: the driver's value.
ours() {
    "$driver" --bench --case "$1" --transport "$2" --iters "$3" |
        sed -n 's/^BENCHFS .* value=\([0-9.]*\) .*/\1/p'
}

report() {
    local name="$1" ours_value="$2" reference="$3" unit="$4"
    if [ -z "$ours_value" ] || [ -z "$reference" ]; then
        echo "bench_rdma.sh: $name produced no figure" >&2
        exit 1
    fi
    awk -v n="$name" -v b="$ours_value" -v r="$reference" -v u="$unit" 'BEGIN {
        printf "RESULT name=%s benchfs=%s reference=%s unit=%s ratio=%.3f\n", n, b, r, u,
            (r > 0 ? b / r : 0) }'
}

for transport in shm tcp; do
    reference="$(perftest "$transport" ucp_am_lat 8 "$lat_iters")"
    report "am-lat-8B-$transport" "$(ours am-lat "$transport" "$lat_iters")" "$reference" us
    reference="$(perftest "$transport" ucp_am_bw 4194304 "$bw_iters")"
    report "am-bw-4MiB-$transport" "$(ours am-bw "$transport" "$bw_iters")" "$reference" MB/s
    reference="$(perftest "$transport" ucp_put_bw 4194304 "$bw_iters")"
    report "put-bw-4MiB-$transport" "$(ours put-bw "$transport" "$bw_iters")" "$reference" MB/s
done
