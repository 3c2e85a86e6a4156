#!/usr/bin/env bash
# Installs BenchFS under a prefix: the client library with its SONAME links, the C header,
# the pkg-config file, the LD_PRELOAD library (lib/libbenchfs_preload.so), and the benchfsd,
# benchfsctl and benchfs-load programs.
#
# Usage: scripts/install.sh PREFIX
#
# Builds the release profile first (quietly unless it fails). Afterwards
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs benchfs
# gives everything a C program needs to compile and link (the library directory is also put
# in the program's rpath).
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $(basename "$0") PREFIX" >&2
    exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1"
prefix="$(cd "$1" && pwd)"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd "$root" && cargo build --release --lib --bins --quiet &&
    cargo build --release --quiet -p benchfs-preload) >"$log" 2>&1; then
    cat "$log" >&2
    echo "install.sh: the build failed" >&2
    exit 1
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"
major="${version%%.*}"
build="$root/target/release"

install -d "$prefix/lib/pkgconfig" "$prefix/include" "$prefix/bin"
install -m 0755 "$build/libbenchfs.so" "$prefix/lib/libbenchfs.so.$version"
ln -sfn "libbenchfs.so.$version" "$prefix/lib/libbenchfs.so.$major"
ln -sfn "libbenchfs.so.$major" "$prefix/lib/libbenchfs.so"
install -m 0644 "$root/include/benchfs_c_api.h" "$prefix/include/benchfs_c_api.h"
install -m 0755 "$build/libbenchfs_preload.so" "$prefix/lib/libbenchfs_preload.so"
for program in benchfsd benchfsctl benchfs-load; do
    install -m 0755 "$build/$program" "$prefix/bin/$program"
done
cat >"$prefix/lib/pkgconfig/benchfs.pc" <<PC
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: benchfs
Description: BenchFS client library
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lbenchfs
PC
echo "installed BenchFS $version in $prefix"
echo "  PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs benchfs"
