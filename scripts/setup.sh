#!/usr/bin/env bash
# Installs what a Debian 12 machine needs to build, test and benchmark BenchFS.
#
# Idempotent: when every package is present it prints nothing and exits 0. It needs root (or
# passwordless sudo) and apt-get only when something is missing.
set -euo pipefail

# Debian packages, grouped by what needs them.
packages=(
    # ucx1-sys builds a vendored UCX with autotools and generates bindings with bindgen.
    autoconf automake libtool make gcc g++ pkg-config libclang-dev
    # UCX at run time (libucp.so.0) and ucx_perftest/ucx_info for benchmarks and checks.
    libucx-dev libucx0 ucx-utils
    # hwloc for NUMA-aware placement.
    libhwloc-dev hwloc
    # MPI launchers for benchfsd and IOR, fio as the storage reference, iproute2 for netns tests.
    openmpi-bin libopenmpi-dev fio iproute2
    # e2fsprogs: the disk-full test formats a small loop-mounted file system.
    e2fsprogs
    # Programs test_posix.sh runs under the LD_PRELOAD library (fio and gcc are above).
    python3 tar gzip findutils coreutils
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup.sh: missing packages: ${missing[*]}" >&2
        echo "setup.sh: this machine has no apt-get; install the equivalents with its package manager" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "setup.sh: missing packages: ${missing[*]}" >&2
            echo "setup.sh: not root and no passwordless sudo; run: sudo apt-get install ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "setup.sh: cargo is in \$HOME/.cargo/bin but not on PATH; add it to PATH" >&2
    else
        echo "setup.sh: no Rust toolchain; install one with rustup (stable)" >&2
    fi
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$component" >/dev/null
        else
            echo "setup.sh: cargo $component is missing and there is no rustup to add it" >&2
            exit 1
        fi
    fi
done
