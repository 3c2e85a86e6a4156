# shellcheck shell=bash
# Shared by the scripts (benchmarks, local cluster, IOR runner); source it, do not run it.

# bench_driver NAME: builds the benchmark target NAME (benches/NAME.rs) in the bench profile
# and prints the path of its binary, so that the scripts time the binary itself rather than
# cargo. Build errors are shown; exits the script on failure.
bench_driver() {
    local name="$1" path
    if ! cargo bench --bench "$name" --no-run >/dev/null 2>&1; then
        cargo bench --bench "$name" --no-run >&2
        exit 1
    fi
    path="$(cargo bench --bench "$name" --no-run --message-format=json 2>/dev/null |
        sed -n "s/.*\"executable\":\"\([^\"]*${name}[^\"]*\)\".*/\1/p" | tail -n 1)"
    if [ -z "$path" ] || [ ! -x "$path" ]; then
        echo "$(basename "$0"): cannot find the $name benchmark binary" >&2
        exit 1
    fi
    echo "$path"
}

# proc_alive PID: whether PID exists and has not exited (an exited child not yet reaped is a
# zombie).
proc_alive() {
    local state
    state="$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# wait_gone SECONDS PID...: waits until none of the PIDs is running; fails on timeout.
wait_gone() {
    local limit=$(($1 * 10)) i pid left
    shift
    for ((i = 0; i <= limit; i++)); do
        left=0
        for pid in "$@"; do
            if proc_alive "$pid"; then
                left=1
            fi
        done
        [ "$left" -eq 0 ] && return 0
        sleep 0.1
    done
    return 1
}

# ior_path: prints the IOR binary to use, from the environment variable IOR or else `ior` on
# PATH; fails (printing nothing) when there is none. An IOR that is set but not executable
# is an error with a message.
ior_path() {
    if [ -n "${IOR:-}" ]; then
        if [ -f "$IOR" ] && [ -x "$IOR" ]; then
            echo "$IOR"
            return 0
        fi
        local found
        if [[ "$IOR" != */* ]] && found="$(command -v -- "$IOR")"; then
            echo "$found"
            return 0
        fi
        echo "$(basename "$0"): IOR=$IOR is not an executable file" >&2
        return 1
    fi
    command -v ior 2>/dev/null
}

# ior_howto ROOT: the steps that build an IOR with the BenchFS backend, for a repository
# checked out at ROOT.
ior_howto() {
    cat <<HOWTO
An IOR with the BenchFS backend is needed: set IOR=/path/to/ior or put ior on PATH.
To build one (autoconf, automake, libtool, pkg-config and an MPI compiler are needed):
  (cd $1 && cargo build --release --lib)   # libbenchfs.so and benchfs.pc in target/release
  git clone https://github.com/hpc/ior.git
  $1/ior_integration/add_to_ior.sh ior
  cd ior && ./bootstrap
  PKG_CONFIG_PATH=$1/target/release ./configure --with-benchfs   # add --without-cuda --without-gpuDirect if configure asks
  make -j
  export IOR=\$PWD/src/ior
See $1/ior_integration/README.md.
HOWTO
}

# ior_summary_header: the header of the lines that ior_summary prints.
ior_summary_header() {
    printf '%-10s %-6s %6s %14s %14s %12s %12s\n' test access tasks 'max(MiB/s)' \
        'mean(MiB/s)' 'mean(ops/s)' 'mean(s)'
}

# ior_summary FILE LABEL: one line per operation of an IOR JSON summary
# (-O summaryFormat=JSON -O summaryFile=FILE), labelled LABEL.
ior_summary() {
    awk -v label="$2" '
        function value(line) {
            sub(/^[^:]*:[ \t]*/, "", line)
            gsub(/[",[:space:]]/, "", line)
            return line
        }
        /"summary":[ \t]*\[/ { in_summary = 1; next }
        !in_summary { next }
        /"operation":/ { op = value($0) }
        /"numTasks":/ { tasks = value($0) }
        /"bwMaxMIB":/ { max = value($0) }
        /"bwMeanMIB":/ { mean = value($0) }
        /"OPsMean":/ { ops = value($0) }
        /"MeanTime":/ { time = value($0) }
        /^[ \t]*}/ && op != "" {
            printf "%-10s %-6s %6s %14s %14s %12s %12s\n", label, op, tasks, max, mean, ops, time
            op = ""
        }
    ' "$1"
}
