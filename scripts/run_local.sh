#!/usr/bin/env bash
# Runs BenchFS on this machine: a local cluster of storage servers and a workload through the
# client from several processes, every byte read back and checked.
#
# Usage:
#   scripts/run_local.sh [run]   the demo: install what is missing (scripts/setup.sh), build,
#                                start a cluster, run the workload, print the results and the
#                                servers' counters, stop the cluster and remove its directory
#   scripts/run_local.sh start   start the same cluster and leave it running; stdout carries
#                                only lines for a shell to evaluate, so that
#                                  eval "$(scripts/run_local.sh start)"
#                                points benchfsctl, benchfs-load and the client library at it
#   scripts/run_local.sh stop    stop the cluster that `start` left running
#   scripts/run_local.sh --help  this text
#
# The workload (benchfs-load, BENCHFS_PROCS processes, each phase ending when every process
# is done): file per process write and read; one shared file, each process writing its own
# segment, read back after opening it again with create; IOR's hard pattern (one shared file
# of interleaved 47008-byte records); then create, stat and unlink of empty files in one
# directory. Reads are done by another process than the writer and verify every byte.
#
# Then, when an IOR with the BenchFS backend is available (the environment variable IOR, or
# `ior` on PATH) and mpirun is installed, a short IOR run against the same cluster
# (`-a BENCHFS`, BENCHFS_PROCS processes, 16 MiB each in 1 MiB transfers, written and read
# back by another process with verification): file per process, then one shared file. Its
# summary lines follow the workload's table. Without IOR this is skipped with one line that
# says how to get it.
#
# Environment:
#   BENCHFS_SERVERS    servers (default 2)
#   BENCHFS_SHARDS     shards per server (default 2); servers run with --no-numa and a
#                      64 MiB slab per shard
#   BENCHFS_PROCS      client processes (default 4), also IOR's
#   BENCHFS_BLOCK      bytes written and read per process and pattern (default 64m)
#   BENCHFS_FILES      empty files per process for the metadata phases (default 1000)
#   BENCHFS_LOCAL_DIR  directory for the registry, the data and the server logs; it must be
#                      on a disk-backed file system (not tmpfs). Default: a fresh directory
#                      target/local-cluster.XXXXXX for `run`, target/local-cluster for
#                      `start` and `stop`. Only what the script puts there (registry/, data/,
#                      server-*.log, cluster.pids, cluster.ucx, load-*.out, ior-*) is
#                      removed, and left-overs of an earlier run are removed first.
#   BENCHFS_KEEP=1     keep that directory (data, registry, logs) after `run` or `stop`
#   IOR                the IOR binary for the IOR run (default: `ior` on PATH)
#   UCX_TLS, UCX_NET_DEVICES
#                      transports; unless UCX_TLS is set the cluster uses TCP on loopback
#                      (UCX_TLS=tcp UCX_NET_DEVICES=lo). UCX_TLS=posix,cma uses shared memory.
#
# Server logs go to server-<rank>.log in the directory; when something fails, the end of each
# is printed. Ctrl-C or a failure stops the servers (SIGTERM, then SIGKILL after 15 s) and
# removes the directory. The exit status is non-zero when anything failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/release"
me="run_local.sh"
# shellcheck source=scripts/bench_lib.sh
source "$root/scripts/bench_lib.sh"

servers="${BENCHFS_SERVERS:-2}"
shards="${BENCHFS_SHARDS:-2}"
procs="${BENCHFS_PROCS:-4}"
block="${BENCHFS_BLOCK:-64m}"
files="${BENCHFS_FILES:-1000}"
keep="${BENCHFS_KEEP:-0}"
stop_grace=15

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

for knob in servers shards procs files; do
    case "${!knob}" in
        '' | *[!0-9]* | 0) die "BENCHFS_${knob^^} must be a positive integer, not '${!knob}'" ;;
    esac
done

# Transports: TCP on loopback unless the caller chose.
if [ -z "${UCX_TLS:-}" ]; then
    export UCX_TLS=tcp
    export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"
fi

# The daemon refuses BENCHFS_ variables it does not know, so this script's own knobs are
# removed from its environment.
daemon_env=(env -u BENCHFS_PROCS -u BENCHFS_BLOCK -u BENCHFS_FILES -u BENCHFS_KEEP
    -u BENCHFS_LOCAL_DIR)

# State of this invocation, used by the clean-up.
work=""            # the cluster's directory
created_work=0     # whether this script created it
server_pids=()     # servers still to be stopped
waiter_pid=""      # a background `benchfsctl wait`
ior_bin=""         # the IOR of the IOR run, if any
ior_skip=""        # why there is no IOR run
show_logs=1        # print the end of the server logs when failing

build() {
    local log
    log="$(mktemp)"
    if ! (cd "$root" && cargo build --release --bins --quiet) >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "the build failed"
    fi
    rm -f "$log"
}

# is_server PID: whether PID is a running benchfsd process (for pids read from a state file,
# which may have been reused since).
is_server() {
    proc_alive "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = benchfsd ]
}

# kill_servers PID...: SIGTERM, a grace period, then SIGKILL for whatever is left. The PIDs
# are this script's own servers or checked ones (is_server).
kill_servers() {
    local pid
    [ $# -gt 0 ] || return 0
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    if ! wait_gone "$stop_grace" "$@"; then
        say "servers still running after ${stop_grace} s; killing them"
        for pid in "$@"; do
            if proc_alive "$pid"; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
        wait_gone 5 "$@" || say "could not kill every server"
    fi
}

log_tails() {
    local log
    for log in "$work"/server-*.log; do
        [ -f "$log" ] || continue
        say "last lines of $log:"
        tail -n 20 "$log" >&2 2>/dev/null
    done
}

# remove_work: removes what this script put into the cluster's directory, and the directory
# itself when it is then empty.
remove_work() {
    [ -n "$work" ] && [ -d "$work" ] || return 0
    rm -rf "$work/registry" "$work/data" "$work/cluster.pids" "$work/cluster.ucx" \
        "$work"/server-*.log "$work/wait.out" "$work"/load-*.out "$work"/ior-*
    rmdir "$work" 2>/dev/null || true
}

cleanup() {
    local status=$?
    # Nothing here may abort the clean-up, not even a closed stdout or stderr.
    trap - EXIT INT TERM HUP
    trap '' PIPE
    set +e
    if [ -n "$waiter_pid" ]; then
        kill "$waiter_pid" 2>/dev/null || true
    fi
    if [ "${#server_pids[@]}" -gt 0 ]; then
        say "stopping the servers"
        kill_servers "${server_pids[@]}"
    fi
    if [ "$status" -ne 0 ] && [ "$show_logs" -eq 1 ] && [ -n "$work" ]; then
        log_tails
    fi
    if [ "$created_work" -eq 1 ]; then
        if [ "$keep" = 1 ]; then
            say "kept $work"
        else
            remove_work
        fi
    fi
    exit "$status"
}

interrupted() {
    trap '' PIPE
    show_logs=0
    say "interrupted"
    exit "$1"
}

arm_cleanup() {
    trap cleanup EXIT
    trap 'interrupted 130' INT
    trap 'interrupted 143' TERM
    trap 'interrupted 129' HUP
    trap 'interrupted 141' PIPE
}

# live_pids DIR: the pids of DIR's state file that are still running servers.
live_pids() {
    local pid
    [ -f "$1/cluster.pids" ] || return 0
    while read -r pid; do
        case "$pid" in '' | *[!0-9]*) continue ;; esac
        if is_server "$pid"; then
            echo "$pid"
        fi
    done <"$1/cluster.pids"
}

# prepare_work DIR: makes DIR the cluster's directory, refusing one with a running cluster.
prepare_work() {
    work="$1"
    if [ -n "$(live_pids "$work")" ]; then
        work=""
        die "a cluster is already running in $1; stop it with: BENCHFS_LOCAL_DIR=$1 scripts/run_local.sh stop"
    fi
    mkdir -p "$work"
    created_work=1
    remove_work
    mkdir -p "$work/registry" "$work/data"
}

# start_servers DETACH: starts the servers in the background, each under setsid (so a
# Ctrl-C reaches the script, which stops them in order); DETACH=1 also makes them immune to
# the terminal going away.
start_servers() {
    local detach="$1" rank pid
    local -a launch=("${daemon_env[@]}")
    if [ "$detach" -eq 1 ]; then
        launch+=(nohup)
    fi
    say "starting $servers servers x $shards shards in $work (UCX_TLS=$UCX_TLS${UCX_NET_DEVICES:+ UCX_NET_DEVICES=$UCX_NET_DEVICES})"
    for ((rank = 0; rank < servers; rank++)); do
        setsid "${launch[@]}" "$bin/benchfsd" \
            --registry-dir "$work/registry" --data-dir "$work/data" \
            --rank "$rank" --servers "$servers" --shards "$shards" --no-numa \
            --slab-size 64m --chunk-size 4m \
            </dev/null >"$work/server-$rank.log" 2>&1 3>&- &
        pid=$!
        server_pids+=("$pid")
        echo "$pid" >>"$work/cluster.pids"
    done
}

# wait_cluster: waits until every target is up, failing early when a server exits.
wait_cluster() {
    local pid rank
    "$bin/benchfsctl" --registry "$work/registry" --servers "$servers" wait --timeout 60 \
        >"$work/wait.out" 2>&1 3>&- &
    waiter_pid=$!
    while proc_alive "$waiter_pid"; do
        rank=0
        for pid in "${server_pids[@]}"; do
            if ! proc_alive "$pid"; then
                kill "$waiter_pid" 2>/dev/null || true
                wait "$waiter_pid" 2>/dev/null || true
                waiter_pid=""
                die "server $rank exited during start-up"
            fi
            rank=$((rank + 1))
        done
        sleep 0.1
    done
    if ! wait "$waiter_pid"; then
        waiter_pid=""
        cat "$work/wait.out" >&2
        die "the cluster did not come up"
    fi
    waiter_pid=""
    say "$(cat "$work/wait.out")"
    rm -f "$work/wait.out"
}

# stop_cluster: graceful stop through the servers' own shutdown request; fails when a server
# does not go or exits with an error.
stop_cluster() {
    local pid rank=0 status failed=0
    "$bin/benchfsctl" --registry "$work/registry" shutdown --timeout 30 >&2
    if ! wait_gone "$stop_grace" "${server_pids[@]}"; then
        die "servers still running ${stop_grace} s after the shutdown"
    fi
    for pid in "${server_pids[@]}"; do
        status=0
        wait "$pid" || status=$?
        if [ "$status" -ne 0 ]; then
            say "server $rank exited with status $status"
            failed=1
        fi
        rank=$((rank + 1))
    done
    server_pids=()
    rm -f "$work/cluster.pids"
    [ "$failed" -eq 0 ] || die "a server failed"
}

# load NAME ARGS...: one benchfs-load run; its table goes to load-NAME.out.
load() {
    local name="$1"
    shift
    say "workload: $name"
    if ! "$bin/benchfs-load" --registry "$work/registry" --procs "$procs" "$@" \
        >"$work/load-$name.out"; then
        cat "$work/load-$name.out" >&2
        die "the $name workload failed"
    fi
}

# find_ior: sets ior_bin to the IOR for the IOR run, or leaves it empty and says why in
# ior_skip. An IOR variable that names no executable is an error.
find_ior() {
    ior_bin=""
    if [ -n "${IOR:-}" ]; then
        ior_bin="$(ior_path)" || die "set IOR to the IOR binary, or unset it to skip the IOR run"
    elif ! ior_bin="$(ior_path)"; then
        ior_bin=""
        ior_skip="no IOR found; set IOR=/path/to/ior, or build one with ior_integration/add_to_ior.sh (steps in ior_integration/README.md)"
    fi
    if [ -n "$ior_bin" ] && ! command -v mpirun >/dev/null; then
        ior_bin=""
        ior_skip="mpirun is missing (install openmpi-bin)"
    fi
}

# ior_run NAME ARGS...: one short IOR run against the cluster, a verified write and read,
# each process reading what another wrote; its log goes to ior-NAME.log, its JSON summary to
# ior-NAME.json.
ior_run() {
    local name="$1" seed=$(((RANDOM << 15 | RANDOM) + 1))
    shift
    local -a launch=(mpirun -np "$procs" --bind-to none)
    if [ "$procs" -gt "$(nproc)" ]; then
        launch+=(--oversubscribe)
    fi
    if [ "$(id -u)" -eq 0 ]; then
        launch=(env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "${launch[@]}")
    fi
    say "IOR: $name"
    if ! "${launch[@]}" "$ior_bin" -a BENCHFS "--benchfs.registry=$work/registry" \
        -O summaryFormat=JSON -O "summaryFile=$work/ior-$name.json" \
        -w -r -W -R -C -G "$seed" --dataPacketType=offset -O numTasksOnNode0=1 \
        -t 1m -b 16m "$@" </dev/null >"$work/ior-$name.log" 2>&1; then
        cat "$work/ior-$name.log" >&2
        die "IOR ($name) failed"
    fi
}

cmd_run() {
    find_ior
    "$root/scripts/setup.sh"
    build
    arm_cleanup
    if [ -n "${BENCHFS_LOCAL_DIR:-}" ]; then
        prepare_work "$BENCHFS_LOCAL_DIR"
    else
        mkdir -p "$root/target"
        work="$(mktemp -d "$root/target/local-cluster.XXXXXX")"
        created_work=1
        mkdir -p "$work/registry" "$work/data"
    fi
    start_servers 0
    wait_cluster

    load fpp --pattern fpp --dir /fpp --transfer 4m --block "$block" --phases write,read
    load shared --pattern shared --dir /shared --transfer 4m --block "$block" --recreate \
        --phases write,read
    load hard --pattern hard --dir /hard --transfer 47008 --block "$block" --phases write,read
    load meta --pattern shared --dir /meta --files "$files" --phases create,stat,unlink
    if [ -n "$ior_bin" ]; then
        "$bin/benchfsctl" --registry "$work/registry" mkdir -p /ior >&2
        ior_run fpp -F -o /ior/fpp
        ior_run shared -o /ior/shared
    fi

    echo "== BenchFS local cluster: $servers servers x $shards shards, $procs processes," \
        "$block per process and pattern, $files files per process, UCX_TLS=$UCX_TLS"
    # One table: the header of the first run, then the rows of every run.
    awk 'FNR == 1 && NR != 1 { next } { print }' \
        "$work/load-fpp.out" "$work/load-shared.out" "$work/load-hard.out" "$work/load-meta.out"
    echo
    if [ -n "$ior_bin" ]; then
        echo "== IOR ($ior_bin -a BENCHFS, $procs processes, 16 MiB each, verified write and read)"
        ior_summary_header
        ior_summary "$work/ior-fpp.json" fpp
        ior_summary "$work/ior-shared.json" shared
    else
        echo "== IOR skipped: $ior_skip"
    fi
    echo
    echo "== Targets"
    "$bin/benchfsctl" --registry "$work/registry" status
    echo
    stop_cluster
    say "done"
}

# export_line NAME VALUE: a line a shell can evaluate, quoted only where needed.
export_line() {
    case "$2" in
        *[!A-Za-z0-9_,./:=+-]* | '') printf 'export %s=%q\n' "$1" "$2" ;;
        *) printf 'export %s=%s\n' "$1" "$2" ;;
    esac
}

cmd_start() {
    # Progress goes to stderr; stdout is kept for the lines to evaluate.
    exec 3>&1 1>&2
    "$root/scripts/setup.sh"
    build
    arm_cleanup
    prepare_work "${BENCHFS_LOCAL_DIR:-$root/target/local-cluster}"
    work="$(cd "$work" && pwd)"
    start_servers 1
    wait_cluster
    # The transports, for `stop` from a shell that did not evaluate the lines below.
    printf '%s\n%s\n' "$UCX_TLS" "${UCX_NET_DEVICES:-}" >"$work/cluster.ucx"
    # Running: leave the servers and the directory alone from here on.
    server_pids=()
    created_work=0
    trap - EXIT INT TERM HUP PIPE
    {
        export_line BENCHFS_REGISTRY "$work/registry"
        export_line BENCHFS_LOCAL_DIR "$work"
        export_line UCX_TLS "$UCX_TLS"
        if [ -n "${UCX_NET_DEVICES:-}" ]; then
            export_line UCX_NET_DEVICES "$UCX_NET_DEVICES"
        fi
    } >&3
    say "cluster running; logs in $work; stop it with scripts/run_local.sh stop"
}

cmd_stop() {
    local dir="${BENCHFS_LOCAL_DIR:-$root/target/local-cluster}" pids
    if [ ! -f "$dir/cluster.pids" ]; then
        say "no local cluster in $dir; nothing to stop"
        return 0
    fi
    work="$dir"
    if [ -f "$dir/cluster.ucx" ]; then
        local tls="" devices=""
        { read -r tls && read -r devices; } <"$dir/cluster.ucx" || true
        if [ -n "$tls" ]; then
            export UCX_TLS="$tls"
            if [ -n "$devices" ]; then
                export UCX_NET_DEVICES="$devices"
            else
                unset UCX_NET_DEVICES
            fi
        fi
    fi
    mapfile -t pids < <(live_pids "$dir")
    if [ "${#pids[@]}" -eq 0 ]; then
        say "the cluster in $dir is not running; removing its state"
    else
        if [ ! -x "$bin/benchfsctl" ] ||
            ! "$bin/benchfsctl" --registry "$dir/registry" shutdown --timeout 30 >/dev/null ||
            ! wait_gone "$stop_grace" "${pids[@]}"; then
            say "the graceful shutdown failed; signalling the servers"
            kill_servers "${pids[@]}"
        fi
    fi
    if [ "$keep" = 1 ]; then
        rm -f "$dir/cluster.pids"
        say "kept $dir"
    else
        remove_work
    fi
    say "cluster stopped"
}

case "${1:-run}" in
    run) cmd_run ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    -h | --help | help) usage ;;
    *)
        say "unknown command '$1' (run, start, stop or --help)"
        exit 2
        ;;
esac
