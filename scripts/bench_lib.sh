# Shared by the benchmark scripts; source it, do not run it.

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
        sed -n "s/.*\"executable\":\"\([^\"]*$name[^\"]*\)\".*/\1/p" | tail -n 1)"
    if [ -z "$path" ] || [ ! -x "$path" ]; then
        echo "$(basename "$0"): cannot find the $name benchmark binary" >&2
        exit 1
    fi
    echo "$path"
}
