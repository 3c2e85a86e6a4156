#!/usr/bin/env bash
# The quality gate of BenchFS: installs what is missing, then checks formatting, lints, docs
# and runs every test. CI runs exactly this (`.ci/run`).
#
# Usage: scripts/test.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"

step() {
    echo "==> $*"
}

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings denied)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

# Each criterion benchmark once, in test mode: they keep compiling and running, without timing.
step "benchmarks in test mode"
cargo test --workspace --benches --quiet

# The README's run command, small: a local cluster started, loaded from 4 processes with
# verification, and stopped cleanly.
step "local demo (scripts/run_local.sh, small sizes)"
BENCHFS_BLOCK=8m BENCHFS_FILES=100 "$root/scripts/run_local.sh"

# Unmodified programs (cp, cat, dd, ls, find, tar, mv, rm, Python, fio, a forking program) on
# BenchFS through the LD_PRELOAD library, against a local cluster.
step "POSIX programs through libbenchfs_preload.so (scripts/test_posix.sh)"
"$root/scripts/test_posix.sh"

# The C tests link the shared library itself (libbenchfs.so), which `cargo test` does not
# rebuild: build it first.
step "cargo build --lib (libbenchfs.so for the C tests)"
cargo build --workspace --lib --quiet

# Every decoder of hostile input fuzzed briefly (builds the cargo-fuzz targets of tests/fuzz).
step "fuzz targets, 5 s each (scripts/fuzz.sh)"
"$root/scripts/fuzz.sh" 5

step "cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# One closing line over all test binaries (unit, integration, property and doc tests).
awk '/^test result:/ { passed += $4; failed += $6 }
    END { printf "%d passed, %d failed\n", passed, failed }' "$log"
