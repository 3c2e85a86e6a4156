#!/usr/bin/env bash
# Runs IOR against a BenchFS cluster that it starts for the run and stops afterwards: one
# benchfsd per node, IOR with the BENCHFS backend, IOR's log and JSON summary kept.
#
# Usage:
#   scripts/run_ior_simple.sh [OPTIONS] [-- IOR-ARGUMENTS...]
#
# Where it runs:
#   - In a Slurm allocation (SLURM_JOB_ID set): `srun --ntasks-per-node=1` starts one
#     benchfsd on each node of the allocation, and IOR runs with `srun -n PROCS`.
#   - With a hostfile: `mpirun --map-by ppr:1:node --hostfile FILE` starts one benchfsd on
#     each host, and IOR runs with `mpirun -np PROCS --hostfile FILE`.
#   - Otherwise on this machine: `mpirun -np 1` starts one benchfsd, and IOR runs with
#     `mpirun -np PROCS` (with --oversubscribe when PROCS exceeds the cores).
#   benchfsd learns its rank and the server count from the launcher's environment. The
#   script waits for every server with `benchfsctl wait` (a deadline, no fixed sleep), makes
#   the directory /ior in BenchFS, and runs
#     IOR -a BENCHFS --benchfs.registry=REGISTRY \
#         -O summaryFormat=JSON -O summaryFile=OUT/ior-summary.json IOR-ARGUMENTS
#   with its output in OUT/ior.log. Without IOR-ARGUMENTS: a verified write and read, file
#   per process, 16 MiB per process in 1 MiB transfers, read back by another rank:
#     -w -r -W -R -C -G SEED --dataPacketType=offset -t 1m -b 16m -F -o /ior/testfile
#   (and -O numTasksOnNode0=1 on one machine, so that -C moves reads to another rank).
#   Arguments after `--` replace these defaults entirely.
#
#   Afterwards the servers are stopped with `benchfsctl shutdown`, then SIGTERM and SIGKILL
#   to the launcher after a grace period; also when something fails or on Ctrl-C. The exit
#   status is IOR's; when IOR succeeded but the servers did not stop cleanly, it is 1.
#
# Options (each also set by the environment variable in brackets; options win):
#   --ior PATH            [IOR] the IOR binary, built with the BenchFS backend
#                         (default: `ior` on PATH). Without one the script says how to
#                         build it (ior_integration/add_to_ior.sh) and exits with status 1
#                         before starting anything.
#   -n, --procs N         [BENCHFS_PROCS] IOR processes (default 2)
#   --hostfile FILE       [BENCHFS_HOSTFILE] hosts for mpirun; one server per host
#   --launcher NAME       [BENCHFS_LAUNCHER] auto (default: srun when SLURM_JOB_ID is set,
#                         else mpirun), srun or mpirun
#   --out-dir DIR         [BENCHFS_OUT_DIR] where ior.log, ior-summary.json and
#                         servers.log go (default: a new target/ior-run.DATE.XXXX in the
#                         repository). Created if missing.
#   --registry-dir DIR    [BENCHFS_REGISTRY_DIR] registry of the cluster; on several nodes it
#                         must be on a file system they all share (default: OUT/registry).
#                         It must not hold another cluster's entries.
#   --data-dir DIR        [BENCHFS_DATA_DIR] the servers' data, best on node-local disk (not
#                         tmpfs). Default: OUT/data on one machine, ${TMPDIR:-/tmp}/
#                         benchfs-data.USER.JOB on every node of a multi-node run. A default
#                         data directory is removed after the run; a given one is kept.
#   --bin-dir DIR         [BENCHFS_BIN_DIR] where benchfsd and benchfsctl are (default:
#                         target/release of this repository when built, else PATH). On
#                         several nodes it must be reachable from all of them.
#   --wait-timeout SECS   [BENCHFS_WAIT_TIMEOUT] deadline for the servers to come up
#                         (default 120)
#   --keep                [BENCHFS_KEEP=1] keep the registry and the default data directory
#   -h, --help            this text
#
# Environment passed on to the servers and to IOR (with mpirun's -x; srun passes all):
#   UCX_TLS, UCX_NET_DEVICES and every other UCX_ variable: the transports. On one machine
#   without UCX_TLS the run uses TCP on loopback (UCX_TLS=tcp UCX_NET_DEVICES=lo); on
#   several nodes UCX picks (InfiniBand when present), or set e.g. UCX_TLS=rc,sm
#   UCX_NET_DEVICES=mlx5_0:1.
#   BENCHFS_ variables other than this script's own (which it removes from its environment)
#   reach benchfsd and the client library: e.g. BENCHFS_SHARDS, BENCHFS_SLAB_BYTES,
#   BENCHFS_CHUNK_SIZE_BYTES (see `benchfsd --print-defaults`). benchfsd refuses unknown ones.
#   As root, mpirun gets OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1.
#
# Examples:
#   scripts/run_ior_simple.sh                                  # this machine, 2 processes
#   IOR=~/ior/src/ior scripts/run_ior_simple.sh -n 4 -- -w -r -W -R -t 47008 -b 47008 \
#       -s 1000 -o /ior/hard
#   salloc -N 4 scripts/run_ior_simple.sh -n 64 --data-dir /local/$USER/benchfs
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
me="run_ior_simple.sh"
# shellcheck source=scripts/bench_lib.sh
source "$root/scripts/bench_lib.sh"

stop_grace=30

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

# The knobs, from the environment first; then removed from it, since benchfsd refuses
# BENCHFS_ variables it does not know.
procs="${BENCHFS_PROCS:-2}"
hostfile="${BENCHFS_HOSTFILE:-}"
launcher="${BENCHFS_LAUNCHER:-auto}"
out="${BENCHFS_OUT_DIR:-}"
registry="${BENCHFS_REGISTRY_DIR:-}"
data="${BENCHFS_DATA_DIR:-}"
bin="${BENCHFS_BIN_DIR:-}"
wait_timeout="${BENCHFS_WAIT_TIMEOUT:-120}"
keep="${BENCHFS_KEEP:-0}"
unset BENCHFS_PROCS BENCHFS_HOSTFILE BENCHFS_LAUNCHER BENCHFS_OUT_DIR BENCHFS_REGISTRY_DIR \
    BENCHFS_DATA_DIR BENCHFS_BIN_DIR BENCHFS_WAIT_TIMEOUT BENCHFS_KEEP
ior_args=()
user_ior_args=0

# need_value OPTION COUNT: fails unless the option has a value.
need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            -h | --help)
                usage
                exit 0
                ;;
            --ior) need_value "$1" $# && IOR="$2" && shift ;;
            --ior=*) IOR="${1#*=}" ;;
            -n | --procs) need_value "$1" $# && procs="$2" && shift ;;
            --procs=*) procs="${1#*=}" ;;
            --hostfile) need_value "$1" $# && hostfile="$2" && shift ;;
            --hostfile=*) hostfile="${1#*=}" ;;
            --launcher) need_value "$1" $# && launcher="$2" && shift ;;
            --launcher=*) launcher="${1#*=}" ;;
            --out-dir) need_value "$1" $# && out="$2" && shift ;;
            --out-dir=*) out="${1#*=}" ;;
            --registry-dir) need_value "$1" $# && registry="$2" && shift ;;
            --registry-dir=*) registry="${1#*=}" ;;
            --data-dir) need_value "$1" $# && data="$2" && shift ;;
            --data-dir=*) data="${1#*=}" ;;
            --bin-dir) need_value "$1" $# && bin="$2" && shift ;;
            --bin-dir=*) bin="${1#*=}" ;;
            --wait-timeout) need_value "$1" $# && wait_timeout="$2" && shift ;;
            --wait-timeout=*) wait_timeout="${1#*=}" ;;
            --keep) keep=1 ;;
            --)
                shift
                ior_args=("$@")
                user_ior_args=1
                return 0
                ;;
            *) die "unknown option '$1' (IOR's arguments go after --; see --help)" ;;
        esac
        shift
    done
}

check_knobs() {
    case "$procs" in
        '' | *[!0-9]* | 0) die "the number of IOR processes must be a positive integer, not '$procs'" ;;
    esac
    case "$wait_timeout" in
        '' | *[!0-9]* | 0) die "the wait timeout must be a positive number of seconds, not '$wait_timeout'" ;;
    esac
    if [ "$launcher" = auto ]; then
        if [ -n "${SLURM_JOB_ID:-}" ]; then
            launcher=srun
        else
            launcher=mpirun
        fi
    fi
    case "$launcher" in
        srun | mpirun) ;;
        *) die "unknown launcher '$launcher' (auto, srun or mpirun)" ;;
    esac
    command -v "$launcher" >/dev/null ||
        die "$launcher is not on PATH (install Open MPI, e.g. openmpi-bin, or choose --launcher)"
    if [ -n "$hostfile" ]; then
        [ "$launcher" = mpirun ] || die "--hostfile is for mpirun; srun uses the Slurm allocation"
        [ -r "$hostfile" ] || die "hostfile $hostfile cannot be read"
        hostfile="$(cd "$(dirname "$hostfile")" && pwd)/$(basename "$hostfile")"
    fi
}

# find_tools: the IOR binary (or the steps to get one) and benchfsd/benchfsctl.
find_tools() {
    if ! ior="$(ior_path)" || [ -z "$ior" ]; then
        say "no IOR found; nothing was started"
        ior_howto "$root" >&2
        exit 1
    fi
    if [ -z "$bin" ]; then
        if [ -x "$root/target/release/benchfsd" ]; then
            bin="$root/target/release"
        elif command -v benchfsd >/dev/null; then
            bin="$(dirname "$(command -v benchfsd)")"
        else
            die "benchfsd not found: build it (cargo build --release) or set --bin-dir"
        fi
    fi
    bin="$(cd "$bin" 2>/dev/null && pwd)" || die "bin dir does not exist"
    local tool
    for tool in benchfsd benchfsctl; do
        [ -x "$bin/$tool" ] || die "$bin/$tool is missing; build it or set --bin-dir"
    done
}

# State of this run, for the clean-up.
servers_pid=""      # the launcher running the servers
waiter_pid=""       # a background `benchfsctl wait`
created_registry=0  # whether the script made the registry directory
created_data=0      # whether the data directory is the script's default

# nodes: the number of servers (one per node).
nodes() {
    if [ -n "$hostfile" ]; then
        awk '!/^[[:space:]]*(#|$)/ { print $1 }' "$hostfile" | sort -u | wc -l
    elif [ -n "${SLURM_JOB_ID:-}" ]; then
        echo "${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
    else
        echo 1
    fi
}

# setup_dirs: the output, registry and data directories, and the transports.
setup_dirs() {
    if [ -z "$out" ]; then
        mkdir -p "$root/target"
        out="$(mktemp -d "$root/target/ior-run.$(date +%Y%m%d-%H%M%S).XXXX")"
    fi
    mkdir -p "$out" || die "cannot make the output directory $out"
    out="$(cd "$out" && pwd)"
    if [ -z "$registry" ]; then
        registry="$out/registry"
    fi
    if [ -d "$registry" ] && [ -n "$(ls -A "$registry")" ]; then
        die "registry $registry is not empty (another cluster's, or left over); remove it or choose another"
    fi
    [ -d "$registry" ] || created_registry=1
    mkdir -p "$registry" || die "cannot make the registry directory $registry"
    registry="$(cd "$registry" && pwd)"
    if [ -z "$data" ]; then
        created_data=1
        if [ "$multi_node" -eq 0 ]; then
            data="$out/data"
        else
            data="${TMPDIR:-/tmp}/benchfs-data.$(id -un).${SLURM_JOB_ID:-$$}"
        fi
    fi
    if [ "$multi_node" -eq 0 ] && [ -z "${UCX_TLS:-}" ]; then
        export UCX_TLS=tcp
        export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"
    fi
}

# Launcher arguments shared by the servers and IOR.
launch_common() {
    local name
    if [ "$launcher" = srun ]; then
        launch=(srun --export=ALL)
        return 0
    fi
    launch=(mpirun)
    if [ -n "$hostfile" ]; then
        launch+=(--hostfile "$hostfile")
    fi
    # Every UCX_ and BENCHFS_ variable, for the ranks on other nodes.
    while IFS= read -r name; do
        launch+=(-x "$name")
    done < <(compgen -e | grep -E '^(UCX_|BENCHFS_)' || true)
}

# per_node_launch: the command that starts one process per node.
per_node_launch() {
    launch_common
    if [ "$launcher" = srun ]; then
        launch+=(--nodes="$server_count" --ntasks-per-node=1 --ntasks="$server_count"
            --overlap --cpu-bind=none --kill-on-bad-exit=1 --label)
    elif [ "$multi_node" -eq 1 ]; then
        launch+=(--map-by ppr:1:node --bind-to none --tag-output)
    else
        launch+=(-np 1 --bind-to none)
    fi
}

start_servers() {
    local -a launch
    per_node_launch
    say "starting $server_count server(s) with $launcher; registry $registry, data $data" \
        "(UCX_TLS=${UCX_TLS:-default}${UCX_NET_DEVICES:+ UCX_NET_DEVICES=$UCX_NET_DEVICES})"
    # setsid: a Ctrl-C reaches this script, which stops the servers in order.
    setsid "${launch[@]}" "$bin/benchfsd" --registry-dir "$registry" --data-dir "$data" \
        </dev/null >"$out/servers.log" 2>&1 &
    servers_pid=$!
}

# wait_servers: waits until every server is up; fails early when the launcher exits.
wait_servers() {
    "$bin/benchfsctl" --registry "$registry" --servers "$server_count" wait \
        --timeout "$wait_timeout" >"$out/wait.out" 2>&1 &
    waiter_pid=$!
    while proc_alive "$waiter_pid"; do
        if ! proc_alive "$servers_pid"; then
            kill "$waiter_pid" 2>/dev/null || true
            wait "$waiter_pid" 2>/dev/null || true
            waiter_pid=""
            servers_pid_exited
            rm -f "$out/wait.out"
            die "the servers exited during start-up; see $out/servers.log"
        fi
        sleep 0.1
    done
    if ! wait "$waiter_pid"; then
        waiter_pid=""
        cat "$out/wait.out" >&2
        rm -f "$out/wait.out"
        die "the servers did not come up within ${wait_timeout} s; see $out/servers.log"
    fi
    waiter_pid=""
    say "$(cat "$out/wait.out")"
    rm -f "$out/wait.out"
}

# servers_pid_exited: the launcher of the servers has gone; nothing left to stop.
servers_pid_exited() {
    wait "$servers_pid" 2>/dev/null || true
    servers_pid=""
}

# default_ior_args: the verified write and read described in the header.
default_ior_args() {
    local seed=$(((RANDOM << 15 | RANDOM) + 1))
    ior_args=(-w -r -W -R -C -G "$seed" --dataPacketType=offset -t 1m -b 16m -F
        -o /ior/testfile)
    if [ "$multi_node" -eq 0 ]; then
        ior_args+=(-O numTasksOnNode0=1)
    fi
}

# run_ior: runs IOR to the end; sets ior_status.
run_ior() {
    local -a launch cmd
    launch_common
    if [ "$launcher" = srun ]; then
        launch+=(--ntasks="$procs")
    else
        launch+=(-np "$procs")
        if [ "$multi_node" -eq 0 ] && [ "$procs" -gt "$(nproc)" ]; then
            launch+=(--oversubscribe)
        fi
    fi
    "$bin/benchfsctl" --registry "$registry" mkdir -p /ior >&2 ||
        die "cannot make /ior in BenchFS"
    cmd=("${launch[@]}" "$ior" -a BENCHFS "--benchfs.registry=$registry"
        -O summaryFormat=JSON -O "summaryFile=$out/ior-summary.json" "${ior_args[@]}")
    say "running: ${cmd[*]}"
    printf '%q ' "${cmd[@]}" >"$out/ior.command"
    echo >>"$out/ior.command"
    set +e
    "${cmd[@]}" </dev/null 2>&1 | tee "$out/ior.log"
    ior_status=${PIPESTATUS[0]}
    set -e
}

# stop_servers: graceful shutdown, then signals to the launcher; returns non-zero when the
# servers had to be signalled or failed.
stop_servers() {
    local failed=0 code=0
    [ -n "$servers_pid" ] || return 0
    if ! proc_alive "$servers_pid"; then
        say "the servers had already exited"
        failed=1
    elif "$bin/benchfsctl" --registry "$registry" shutdown --timeout "$stop_grace" >&2 &&
        wait_gone "$stop_grace" "$servers_pid"; then
        :
    else
        say "graceful shutdown failed; sending SIGTERM to the servers"
        failed=1
        kill -TERM "$servers_pid" 2>/dev/null || true
        if ! wait_gone "$stop_grace" "$servers_pid"; then
            say "servers still running after ${stop_grace} s; killing them"
            kill -KILL "$servers_pid" 2>/dev/null || true
            wait_gone 5 "$servers_pid" || true
        fi
    fi
    wait "$servers_pid" 2>/dev/null || code=$?
    servers_pid=""
    if [ "$code" -ne 0 ]; then
        say "the servers' launcher exited with status $code; see $out/servers.log"
        failed=1
    fi
    kill_local_leftovers || failed=1
    return "$failed"
}

# kill_local_leftovers: benchfsd processes of this run on this machine that outlived their
# launcher (found by their registry argument) are killed; fails when there were any.
kill_local_leftovers() {
    local dir pid found=0
    for dir in /proc/[0-9]*; do
        pid="${dir#/proc/}"
        [ "$(cat "$dir/comm" 2>/dev/null)" = benchfsd ] || continue
        if tr '\0' '\n' <"$dir/cmdline" 2>/dev/null | grep -qxF -- "$registry"; then
            say "benchfsd $pid outlived its launcher; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            found=1
        fi
    done
    [ "$found" -eq 0 ]
}

# remove_data: removes a default data directory, on every node of a multi-node run.
remove_data() {
    local -a launch
    [ "$created_data" -eq 1 ] && [ "$keep" != 1 ] || return 0
    if [ "$multi_node" -eq 0 ]; then
        rm -rf "$data"
        return 0
    fi
    per_node_launch
    "${launch[@]}" rm -rf "$data" </dev/null >/dev/null 2>&1 ||
        say "could not remove $data on every node"
}

cleanup() {
    local status=$?
    # Nothing here may abort the clean-up, not even a closed stdout or stderr.
    trap - EXIT INT TERM HUP
    trap '' PIPE
    set +e
    if [ -n "$waiter_pid" ]; then
        kill "$waiter_pid" 2>/dev/null
        wait "$waiter_pid" 2>/dev/null
    fi
    if [ -n "$servers_pid" ]; then
        say "stopping the servers"
        if ! stop_servers && [ "$status" -eq 0 ]; then
            say "the servers did not stop cleanly"
            status=1
        fi
    fi
    if [ "$status" -ne 0 ] && [ -f "$out/servers.log" ]; then
        say "last lines of $out/servers.log:"
        tail -n 20 "$out/servers.log" >&2
    fi
    remove_data
    if [ "$created_registry" -eq 1 ] && [ "$keep" != 1 ]; then
        rm -rf "$registry"
    fi
    exit "$status"
}

interrupted() {
    trap '' PIPE
    say "interrupted"
    exit "$1"
}

main() {
    parse_args "$@"
    check_knobs
    find_tools
    server_count="$(nodes)"
    multi_node=0
    if [ -n "$hostfile" ] || [ -n "${SLURM_JOB_ID:-}" ]; then
        multi_node=1
    fi
    if [ "$launcher" = mpirun ] && [ "$(id -u)" -eq 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT="${OMPI_ALLOW_RUN_AS_ROOT:-1}"
        export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}"
    fi
    if [ "$user_ior_args" -eq 0 ]; then
        default_ior_args
    fi
    trap cleanup EXIT
    trap 'interrupted 130' INT
    trap 'interrupted 143' TERM
    trap 'interrupted 129' HUP
    setup_dirs
    start_servers
    wait_servers
    run_ior
    if [ "$ior_status" -ne 0 ]; then
        say "IOR failed with status $ior_status; its output is in $out/ior.log"
        exit "$ior_status"
    fi
    if [ -s "$out/ior-summary.json" ]; then
        echo "== IOR summary ($out/ior-summary.json)"
        ior_summary_header
        ior_summary "$out/ior-summary.json" ior
    fi
    say "IOR done; log $out/ior.log, summary $out/ior-summary.json"
}

main "$@"
