#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders of hostile input (wire messages, rpc frames, readdir
# pages and cursors, metadata log replay, paths): builds every cargo-fuzz target of
# tests/fuzz and runs each for SECONDS (default 10).
#
# Usage: scripts/fuzz.sh [SECONDS]
#
# Installs what is missing: a nightly toolchain (for AddressSanitizer) and cargo-fuzz. Without
# nightly it falls back to the stable toolchain without a sanitizer. Targets run with debug
# assertions (integer overflow panics), a 5 s limit per input (hangs) and a 512 MiB limit per
# allocation (lengths taken from the input unchecked). Each run works on a copy of the seed
# corpus in tests/fuzz/corpus, so the repository's corpus does not grow; a crashing input is
# saved in tests/fuzz/artifacts/<target>/ (ignored by git). Ends with
# `fuzz: N targets, M crashes` and exits non-zero when any target crashed.
set -euo pipefail

seconds="${1:-10}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]   (a positive number of seconds per target)" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
fuzz_dir=tests/fuzz

if ! command -v rustup >/dev/null; then
    echo "fuzz: rustup is needed to pick the toolchain (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "==> installing the nightly toolchain (for AddressSanitizer)"
    rustup toolchain install nightly --profile minimal || true
fi
if rustup toolchain list | grep -q '^nightly'; then
    toolchain=nightly
    sanitizer=address
else
    echo "fuzz: no nightly toolchain; fuzzing on stable without a sanitizer" >&2
    toolchain=stable
    sanitizer=none
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

flags=(--fuzz-dir "$fuzz_dir" --release --debug-assertions --sanitizer "$sanitizer")
echo "==> building the fuzz targets ($toolchain, sanitizer $sanitizer)"
cargo "+$toolchain" fuzz build "${flags[@]}"

work="$(mktemp -d "${TMPDIR:-/tmp}/benchfs-fuzz.XXXXXX")"
# The metalog_replay target keeps its log files in a directory of tests/fuzz/target per process.
trap 'rm -rf "$work" "$fuzz_dir"/target/metalog_replay*' EXIT

targets=($(cargo "+$toolchain" fuzz list --fuzz-dir "$fuzz_dir"))
crashes=0
for target in "${targets[@]}"; do
    corpus="$work/$target"
    mkdir -p "$corpus"
    if [[ -d "$fuzz_dir/corpus/$target" ]]; then
        cp -R "$fuzz_dir/corpus/$target/." "$corpus/"
    fi
    echo "==> $target for ${seconds}s"
    if ! cargo "+$toolchain" fuzz run "${flags[@]}" "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=5 -malloc_limit_mb=512 -print_final_stats=1 \
        >"$work/$target.log" 2>&1; then
        crashes=$((crashes + 1))
        echo "fuzz: $target crashed; input saved under $fuzz_dir/artifacts/$target/:" >&2
        tail -n 40 "$work/$target.log" >&2
    else
        grep -E '^stat::number_of_executed_units' "$work/$target.log" || true
    fi
done

echo "fuzz: ${#targets[@]} targets, $crashes crashes"
[[ $crashes -eq 0 ]]
