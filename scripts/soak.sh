#!/usr/bin/env bash
# The soak test of BenchFS: several clients run a verified mix of every operation against a
# cluster of servers on separate hosts while a fault injector kills, stops and cuts servers at
# random. At the end every file that was acknowledged as durable must read back intact.
#
# Usage:
#   scripts/soak.sh [MINUTES]        run for MINUTES (default 10)
#   scripts/soak.sh --seconds N      run for N seconds (short runs, the smoke test)
#
# Options:
#   --servers N      servers, each on its own host (default 3), 2 shards each
#   --clients N      client threads, each with its own client and directory (default 4)
#   --seed N         seed of the faults and of the clients' choices (default: random)
#   --bin-dir DIR    where benchfsd, benchfsctl and benchfs-soak are (default: build them
#                    with `cargo build --release --bins` and use target/release)
#   --base-dir DIR   directory under which the run's directory (soak.XXXXXX: registry, data,
#                    logs, state) is made; it must be on a disk-backed file system, not
#                    tmpfs (default: target/ of the repository)
#   --keep           keep the run's directory (it is removed otherwise)
#   -h, --help       this text
#
# It needs root: hosts are network namespaces. Namespace <p>sw holds bridge br0; server r runs
# in namespace <p>h<r> whose eth0 (10.98.0.<r+1>/24) is joined to the bridge by veth port
# p<r>; the clients run in the next namespace. <p> is bfsoak<pid of this script>; namespaces
# of earlier runs whose script is gone are removed first. UCX runs over TCP on eth0.
#
# Faults, one at a time, each healed before the next, a few seconds apart:
#   kill  SIGKILL a server in the middle of the clients' writes, restart it on the same data
#         directory (its metadata log replays) and wait until it serves again; at least two
#         per minute of run (20 in 10 minutes), one in the shortest runs;
#   stop  SIGSTOP a server for a few seconds, then SIGCONT;
#   cut   take a host's link down for a few seconds, then up again.
# A server that dies by itself is a crash: it is restarted and the run fails.
#
# The clients (benchfs-soak run) keep a model of what was acknowledged: a file is durable
# once close or fsync returned Ok; a failed operation leaves the paths it touched uncertain
# (not checked). During the run they check reads, stats and listings of durable files; after
# the run, with every fault healed and every server up, `benchfs-soak verify` reads every
# durable file in full and lists every directory. LOST counts durable files (or directories)
# found missing or wrong; it must be 0.
#
# Known limits of BenchFS that the clients avoid rather than count (each client works alone in
# its own directory, on names used once): the data of an unlinked or replaced file is freed
# while another handle has it open; a close after a rename or unlink of the same file fails
# with ENOENT; a truncate can be undone by another writer's close; an unlink racing a create
# of the same name can leave an inode without its directory entry.
#
# Output: progress lines, then the summary:
#   faults: kill=<n> stop=<n> cut=<n>
#   clients: ops=<n> errors=<errno:n,...> unexpected=<n> bytes_written=<n> ...
#   server memory: before r0=<KiB> ... after r0=<KiB> ...   (VmRSS; before = first start)
#   LOST=<n>
# The exit status is non-zero when LOST is not 0, a server crashed or failed to come back,
# the clients failed or hung, or a server did not stop cleanly at the end. Ctrl-C or a failure
# stops everything and removes the namespaces.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
me="soak.sh"
# shellcheck source=scripts/bench_lib.sh
source "$root/scripts/bench_lib.sh"

seconds=600
servers=3
clients=4
shards=2
seed=""
bin=""
base="$root/target"
keep=0
subnet="10.98.0"

usage() {
    sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

say() {
    echo "$me: $*" >&2 2>/dev/null || true
}

die() {
    say "$*"
    exit 1
}

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"
}

positive() {
    case "$2" in
        '' | *[!0-9]* | 0) die "$1 must be a positive integer, not '$2'" ;;
    esac
}

while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --seconds) need_value "$1" $# && seconds="$2" && shift ;;
        --servers) need_value "$1" $# && servers="$2" && shift ;;
        --clients) need_value "$1" $# && clients="$2" && shift ;;
        --seed) need_value "$1" $# && seed="$2" && shift ;;
        --bin-dir) need_value "$1" $# && bin="$2" && shift ;;
        --base-dir) need_value "$1" $# && base="$2" && shift ;;
        --keep) keep=1 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            positive "MINUTES" "$1"
            seconds=$(($1 * 60))
            ;;
    esac
    shift
done
positive --seconds "$seconds"
positive --servers "$servers"
positive --clients "$clients"
[ "$servers" -le 200 ] || die "--servers must be at most 200"
[ -z "$seed" ] || positive --seed "$seed"
seed="${seed:-$((RANDOM * 32768 + RANDOM + 1))}"
RANDOM=$seed

[ "$(id -u)" -eq 0 ] || die "needs root: servers and clients run on hosts made of network \
namespaces (ip netns); run it as root, e.g. sudo $0"
command -v ip >/dev/null || die "needs ip (iproute2; scripts/setup.sh installs it)"

# State of this run, used by the clean-up.
prefix="bfsoak$$"
namespaces=()    # made so far, deleted at the end
work=""          # the run's directory
declare -A pid   # server rank -> pid of its benchfsd
stopped=""       # pid of a server under SIGSTOP
client_pid=""    # benchfs-soak run
failures=()      # what went wrong, for the summary

fail() {
    failures+=("$*")
    say "FAILED: $*"
}

# Kills and reaps whatever this script started, deletes its namespaces, removes the run's
# directory unless kept.
cleanup() {
    local status=$? rank
    trap - EXIT INT TERM HUP
    trap '' PIPE
    set +e
    [ -n "$stopped" ] && kill -CONT "$stopped" 2>/dev/null
    [ -n "$client_pid" ] && kill -KILL "$client_pid" 2>/dev/null
    for rank in "${!pid[@]}"; do
        kill -KILL "${pid[$rank]}" 2>/dev/null
    done
    wait 2>/dev/null
    for ns in "${namespaces[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    if [ -n "$work" ] && [ -d "$work" ]; then
        if [ "$status" -ne 0 ]; then
            for log in "$work"/server-*.log; do
                [ -f "$log" ] || continue
                say "last lines of $(basename "$log"):"
                tail -n 15 "$log" >&2
            done
        fi
        if [ "$keep" -eq 1 ]; then
            say "kept $work"
        else
            rm -rf "$work"
        fi
    fi
    exit "$status"
}

trap cleanup EXIT
trap 'say interrupted; exit 130' INT
trap 'say terminated; exit 143' TERM
trap 'exit 129' HUP

# Binaries.
if [ -z "$bin" ]; then
    say "building (cargo build --release --bins)"
    (cd "$root" && cargo build --release --bins --quiet) || die "the build failed"
    bin="$root/target/release"
fi
for program in benchfsd benchfsctl benchfs-soak; do
    [ -x "$bin/$program" ] || die "$bin/$program is missing (build with cargo build --bins)"
done

mkdir -p "$base"
work="$(mktemp -d "$base/soak.XXXXXX")"
registry="$work/registry"
data="$work/data"

# Hosts: remove namespaces of dead runs, then make this run's.
for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
    case "$ns" in
        bfsoak*)
            owner="${ns#bfsoak}"
            owner="${owner%%[!0-9]*}"
            if [ -n "$owner" ] && [ ! -d "/proc/$owner" ]; then
                ip netns del "$ns" 2>/dev/null || true
            fi
            ;;
    esac
done
switch="${prefix}sw"
client_ns="${prefix}h$servers"
ip netns add "$switch"
namespaces+=("$switch")
ip -n "$switch" link add br0 type bridge
ip -n "$switch" link set br0 up
for ((i = 0; i <= servers; i++)); do
    ns="${prefix}h$i"
    ip netns add "$ns"
    namespaces+=("$ns")
    ip -n "$ns" link set lo up
    ip -n "$switch" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$switch" link set "p$i" master br0 up
    ip -n "$ns" addr add "$subnet.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
done

ucx=(env UCX_TLS=tcp UCX_NET_DEVICES=eth0)

# start_server RANK: starts server RANK on its host and data directory, in the background.
start_server() {
    local rank=$1
    ip netns exec "${prefix}h$rank" "${ucx[@]}" "$bin/benchfsd" \
        --registry-dir "$registry" --data-dir "$data" \
        --rank "$rank" --servers "$servers" --shards "$shards" --slab-size 16m \
        --no-numa --log-level info >/dev/null 2>>"$work/server-$rank.log" &
    pid[$rank]=$!
}

# wait_up: waits until every target is published (run on the clients' host).
wait_up() {
    ip netns exec "$client_ns" "$bin/benchfsctl" --registry "$registry" wait --timeout 60 \
        >/dev/null
}

# rss PID: VmRSS of PID in KiB.
rss() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

memory() {
    local rank out=""
    for ((rank = 0; rank < servers; rank++)); do
        out+=" r$rank=$(rss "${pid[$rank]}")KiB"
    done
    echo "${out# }"
}

# check_servers: a server that is gone without a kill of ours crashed; it is restarted.
check_servers() {
    local rank status
    for ((rank = 0; rank < servers; rank++)); do
        if ! proc_alive "${pid[$rank]}"; then
            status=0
            wait "${pid[$rank]}" 2>/dev/null || status=$?
            fail "server $rank (pid ${pid[$rank]}) died by itself (status $status)"
            tail -n 30 "$work/server-$rank.log" >&2
            start_server "$rank"
            wait_up || fail "server $rank did not come back after its crash"
        fi
    done
}

# pause MIN MAX: sleeps a random whole number of seconds in [MIN, MAX].
pause() {
    sleep $(($1 + RANDOM % ($2 - $1 + 1)))
}

kills=0
stops=0
cuts=0

fault_kill() {
    local rank=$1 old=${pid[$1]} status=0
    kill -KILL "$old"
    wait "$old" 2>/dev/null || status=$?
    [ "$status" -eq 137 ] || fail "server $rank exited with status $status before its kill"
    # The entries of the dead server go, so that the wait below waits for the new one.
    rm -f "$registry/targets/target-$(printf %06d "$rank")-"*.toml
    start_server "$rank"
    wait_up || fail "server $rank did not come back after its kill"
    kills=$((kills + 1))
}

fault_stop() {
    local rank=$1
    stopped=${pid[$rank]}
    kill -STOP "$stopped"
    pause 2 5
    kill -CONT "$stopped"
    stopped=""
    stops=$((stops + 1))
}

fault_cut() {
    local rank=$1
    ip -n "$switch" link set "p$rank" down
    pause 2 5
    ip -n "$switch" link set "p$rank" up
    cuts=$((cuts + 1))
}

# inject ELAPSED: one fault on a random server. The first three are one of each kind; then
# kills keep up with two per minute and the rest is random.
inject() {
    local elapsed=$1 rank=$((RANDOM % servers)) n=$((kills + stops + cuts)) kind
    case "$n" in
        0) kind="kill" ;;
        1) kind="stop" ;;
        2) kind="cut" ;;
        *)
            if [ $((kills * 30)) -lt "$elapsed" ]; then
                kind="kill"
            else
                case $((RANDOM % 8)) in
                    0 | 1) kind="kill" ;;
                    2 | 3 | 4) kind="stop" ;;
                    *) kind="cut" ;;
                esac
            fi
            ;;
    esac
    "fault_$kind" "$rank"
}

say "$servers servers x $shards shards, $clients clients, $seconds s, seed $seed, in $work"
for ((rank = 0; rank < servers; rank++)); do
    start_server "$rank"
done
wait_up || die "the cluster did not come up"
memory_before="$(memory)"

# UCX's own complaints about refused connections are what the faults are for: not shown.
ip netns exec "$client_ns" "${ucx[@]}" UCX_LOG_LEVEL=fatal "$bin/benchfs-soak" run --registry "$registry" \
    --clients "$clients" --seconds "$seconds" --seed "$seed" --state "$work/state.toml" \
    --ready-file "$work/ready" >"$work/run.out" &
client_pid=$!
while [ ! -e "$work/ready" ]; do
    proc_alive "$client_pid" || die "the clients failed to start"
    sleep 0.1
done

started=$SECONDS
while [ $((SECONDS - started)) -lt "$seconds" ] && proc_alive "$client_pid"; do
    pause 2 5
    [ $((SECONDS - started)) -lt "$seconds" ] || break
    check_servers
    inject $((SECONDS - started))
done
say "faults over: kill=$kills stop=$stops cut=$cuts"

# The clients end at their deadline, after the operations in flight (each has a deadline).
if ! wait_gone 120 "$client_pid"; then
    fail "the clients did not finish within 120 s of their deadline (hung)"
    kill -KILL "$client_pid" 2>/dev/null || true
fi
status=0
wait "$client_pid" || status=$?
client_pid=""
[ "$status" -eq 0 ] || fail "the clients failed (status $status)"
cat "$work/run.out" >&2

check_servers
wait_up || fail "the cluster is not up for the verification"
summary=""
if [ -f "$work/state.toml" ]; then
    status=0
    summary="$(ip netns exec "$client_ns" "${ucx[@]}" UCX_LOG_LEVEL=fatal "$bin/benchfs-soak" verify \
        --registry "$registry" --state "$work/state.toml")" || status=$?
    [ -n "$summary" ] || fail "the verification failed (status $status)"
fi
check_servers
memory_after="$(memory)"

# Stop the servers gracefully; each must exit 0.
for ((rank = 0; rank < servers; rank++)); do
    kill -TERM "${pid[$rank]}"
done
for ((rank = 0; rank < servers; rank++)); do
    wait_gone 60 "${pid[$rank]}" || fail "server $rank did not stop within 60 s of SIGTERM"
    status=0
    wait "${pid[$rank]}" || status=$?
    [ "$status" -eq 0 ] || fail "server $rank exited with status $status on SIGTERM"
    unset "pid[$rank]"
done

lost="$(sed -n 's/.*LOST=\([0-9]*\).*/\1/p' <<<"$summary")"
echo "faults: kill=$kills stop=$stops cut=$cuts"
echo "clients: ${summary:-none}"
echo "server memory: before $memory_before after $memory_after"
echo "LOST=${lost:-unknown}"
[ "${lost:-1}" = 0 ] || fail "LOST=${lost:-unknown}: acknowledged files are missing or wrong"
if [ "${#failures[@]}" -gt 0 ]; then
    say "${#failures[@]} failure(s):"
    for f in "${failures[@]}"; do
        say "  $f"
    done
    exit 1
fi
say "passed"
