#!/usr/bin/env bash
# add_to_ior.sh IOR_SRC_DIR
#
# Adds the BenchFS backend (aiori-BENCHFS.c) to an IOR source tree:
#   src/aiori-BENCHFS.c  the backend (copied)
#   src/aiori.h          extern ior_aiori_t benchfs_aiori;
#   src/aiori.c          &benchfs_aiori in available_aiori[] under #ifdef USE_BENCHFS_AIORI
#   configure.ac         --with-benchfs (pkg-config module "benchfs"), after the CHFS block
#   src/Makefile.am      sources and flags under "if USE_BENCHFS_AIORI"
#   src/ior.c            lets -e (fsync) through for BENCHFS (skipped if the list is not found)
#
# Running it again changes nothing. It refuses, before touching anything, when the tree does
# not look like IOR (missing files or anchors).
set -euo pipefail

prog=$(basename "$0")
here=$(cd "$(dirname "$0")" && pwd)
backend="$here/aiori-BENCHFS.c"

die() {
    echo "$prog: error: $*" >&2
    exit 1
}

info() {
    echo "$prog: $*"
}

usage() {
    echo "usage: $prog IOR_SRC_DIR" >&2
    echo "  Adds the BenchFS backend to the IOR source tree IOR_SRC_DIR." >&2
    exit 2
}

[ $# -eq 1 ] || usage
case $1 in -h | --help) usage ;; esac

ior=$1
[ -d "$ior" ] || die "'$ior' is not a directory"
ior=$(cd "$ior" && pwd)
[ -f "$backend" ] || die "backend source not found: $backend"

aiori_h=$ior/src/aiori.h
aiori_c=$ior/src/aiori.c
configure_ac=$ior/configure.ac
makefile_am=$ior/src/Makefile.am
ior_c=$ior/src/ior.c

# ---------------------------------------------------------------- layout checks
unknown() {
    die "'$ior' does not look like an IOR source tree this script knows: $*
No file was changed. Expected an IOR 4.x tree (https://github.com/hpc/ior)."
}

for f in "$aiori_h" "$aiori_c" "$configure_ac" "$makefile_am" "$ior_c"; do
    [ -f "$f" ] || unknown "missing ${f#"$ior"/}"
done

grep -q 'typedef struct ior_aiori' "$aiori_h" ||
    unknown "src/aiori.h has no 'typedef struct ior_aiori'"
grep -q 'enable_mdtest' "$aiori_h" ||
    unknown "src/aiori.h has no enable_mdtest field"
grep -Eq '\(\*(remove|delete)\)' "$aiori_h" ||
    unknown "src/aiori.h has neither a remove nor a delete callback"
grep -Eq '^extern ior_aiori_t [A-Za-z0-9_]+_aiori;' "$aiori_h" ||
    unknown "src/aiori.h has no 'extern ior_aiori_t ..._aiori;' lines"
grep -q 'available_aiori\[\]' "$aiori_c" ||
    unknown "src/aiori.c has no available_aiori[]"
awk '/available_aiori\[\]/ { s = 1 } s && /^[[:space:]]*NULL[[:space:]]*$/ { f = 1 } END { exit !f }' "$aiori_c" ||
    unknown "src/aiori.c: no NULL terminator found in available_aiori[]"
grep -q '^AM_CONDITIONAL(\[USE_CHFS_AIORI\]' "$configure_ac" ||
    unknown "configure.ac has no CHFS block (AM_CONDITIONAL([USE_CHFS_AIORI], ...))"
grep -q 'PKG_CHECK_MODULES' "$configure_ac" ||
    unknown "configure.ac does not use PKG_CHECK_MODULES"
awk '/^if USE_CHFS_AIORI/ { s = 1 } s && /^endif/ { f = 1 } END { exit !f }' "$makefile_am" ||
    unknown "src/Makefile.am has no 'if USE_CHFS_AIORI ... endif' block"
grep -q '^extraSOURCES' "$makefile_am" ||
    unknown "src/Makefile.am has no extraSOURCES"

# ---------------------------------------------------------------- helpers
changed=0

# replace FILE NEWFILE: moves NEWFILE over FILE if they differ, keeping FILE's mode.
replace() {
    if cmp -s "$1" "$2"; then
        rm -f "$2"
    else
        cat "$2" >"$1"
        rm -f "$2"
        changed=1
    fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------- src/aiori-BENCHFS.c
if cmp -s "$backend" "$ior/src/aiori-BENCHFS.c"; then
    info "src/aiori-BENCHFS.c: up to date"
else
    cp "$backend" "$ior/src/aiori-BENCHFS.c"
    changed=1
    info "src/aiori-BENCHFS.c: copied"
fi

# ---------------------------------------------------------------- src/aiori.h
if grep -q '^extern ior_aiori_t benchfs_aiori;' "$aiori_h"; then
    info "src/aiori.h: already declares benchfs_aiori"
else
    # after the last "extern ior_aiori_t ..._aiori;" line
    awk '
        NR == FNR { if ($0 ~ /^extern ior_aiori_t [A-Za-z0-9_]+_aiori;/) last = FNR; next }
        { print }
        FNR == last { print "extern ior_aiori_t benchfs_aiori;" }
    ' "$aiori_h" "$aiori_h" >"$tmp/aiori.h"
    replace "$aiori_h" "$tmp/aiori.h"
    info "src/aiori.h: declared benchfs_aiori"
fi

# ---------------------------------------------------------------- src/aiori.c
if grep -q 'USE_BENCHFS_AIORI' "$aiori_c"; then
    info "src/aiori.c: already lists benchfs_aiori"
else
    # before the NULL that ends available_aiori[]
    awk '
        /available_aiori\[\]/ { inlist = 1 }
        inlist && /^[[:space:]]*NULL[[:space:]]*$/ {
            print "#ifdef USE_BENCHFS_AIORI"
            print "        &benchfs_aiori,"
            print "#endif"
            inlist = 0
        }
        { print }
    ' "$aiori_c" >"$tmp/aiori.c"
    replace "$aiori_c" "$tmp/aiori.c"
    info "src/aiori.c: listed benchfs_aiori"
fi

# ---------------------------------------------------------------- configure.ac
if grep -q 'USE_BENCHFS_AIORI' "$configure_ac"; then
    info "configure.ac: already has --with-benchfs"
else
    cat >"$tmp/benchfs.m4" <<'EOF'

# BenchFS support (pkg-config module "benchfs"; --with-benchfs=DIR adds DIR to PKG_CONFIG_PATH)
AC_ARG_WITH([benchfs],
  [AS_HELP_STRING([--with-benchfs@<:@=PCDIR@:>@],
    [support IO with the BenchFS backend; PCDIR is a directory holding benchfs.pc @<:@default=no@:>@])],
  [], [with_benchfs=no])
AS_IF([test "x$with_benchfs" != xno], [
  AS_IF([test "x$with_benchfs" != xyes], [
    AS_IF([test -f "$with_benchfs/benchfs.pc"], [],
      [AC_MSG_ERROR([--with-benchfs=$with_benchfs: no benchfs.pc in that directory])])
    PKG_CONFIG_PATH="$with_benchfs${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    export PKG_CONFIG_PATH])
  PKG_CHECK_MODULES([BENCHFS], [benchfs],
    [AC_DEFINE([USE_BENCHFS_AIORI], [], [Build BenchFS backend AIORI])
     BENCHFS_RPATH=$($PKG_CONFIG --libs-only-L benchfs | sed 's/-L/-Wl,-rpath=/g')
     AC_SUBST(BENCHFS_RPATH)],
    [AC_MSG_ERROR([--with-benchfs: pkg-config cannot find benchfs; set PKG_CONFIG_PATH to the directory holding benchfs.pc])])
  AC_MSG_CHECKING([whether ior_aiori_t calls its remove callback delete])
  benchfs_save_CPPFLAGS=$CPPFLAGS
  CPPFLAGS="$CPPFLAGS -I$srcdir/src"
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include "aiori.h"]],
                                     [[ior_aiori_t a; a.remove = 0; (void) a;]])],
    [AC_MSG_RESULT([no])],
    [AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include "aiori.h"]],
                                        [[ior_aiori_t a; a.delete = 0; (void) a;]])],
       [AC_MSG_RESULT([yes])
        AC_DEFINE([BENCHFS_AIORI_DELETE], [1], [ior_aiori_t calls its remove callback delete])],
       [AC_MSG_RESULT([unknown])
        AC_MSG_ERROR([cannot compile src/aiori.h with a remove or a delete callback])])])
  CPPFLAGS=$benchfs_save_CPPFLAGS
])
AM_CONDITIONAL([USE_BENCHFS_AIORI], [test x$with_benchfs != xno])
EOF
    # after the AM_CONDITIONAL that ends the CHFS block
    awk -v block="$tmp/benchfs.m4" '
        { print }
        !done && /^AM_CONDITIONAL\(\[USE_CHFS_AIORI\]/ {
            while ((getline line < block) > 0) print line
            done = 1
        }
    ' "$configure_ac" >"$tmp/configure.ac"
    replace "$configure_ac" "$tmp/configure.ac"
    info "configure.ac: added --with-benchfs"
fi

# ---------------------------------------------------------------- src/Makefile.am
if grep -q 'USE_BENCHFS_AIORI' "$makefile_am"; then
    info "src/Makefile.am: already builds aiori-BENCHFS.c"
else
    cat >"$tmp/benchfs.am" <<'EOF'

if USE_BENCHFS_AIORI
extraSOURCES += aiori-BENCHFS.c
extraCPPFLAGS += @BENCHFS_CFLAGS@
extraLDFLAGS += @BENCHFS_RPATH@
extraLDADD += @BENCHFS_LIBS@
endif
EOF
    # after the endif that closes "if USE_CHFS_AIORI"
    awk -v block="$tmp/benchfs.am" '
        { print }
        /^if USE_CHFS_AIORI/ { inchfs = 1 }
        inchfs && /^endif/ {
            while ((getline line < block) > 0) print line
            inchfs = 0
        }
    ' "$makefile_am" >"$tmp/Makefile.am"
    replace "$makefile_am" "$tmp/Makefile.am"
    info "src/Makefile.am: added aiori-BENCHFS.c"
fi

# ---------------------------------------------------------------- src/ior.c (optional)
cephfs_fsync='(strcasecmp(test->api, "CEPHFS") != 0)) && test->fsync)'
if grep -q '"BENCHFS"' "$ior_c"; then
    info "src/ior.c: already allows -e for BENCHFS"
elif grep -qF "$cephfs_fsync" "$ior_c"; then
    awk -v anchor="$cephfs_fsync" '
        !done && index($0, anchor) {
            line = $0
            indent = line
            sub(/[^[:space:]].*$/, "", indent)
            sub(/\) && test->fsync\)/, "", line)
            print line
            print indent "&& (strcasecmp(test->api, \"BENCHFS\") != 0)) && test->fsync)"
            done = 1
            next
        }
        { print }
    ' "$ior_c" >"$tmp/ior.c"
    replace "$ior_c" "$tmp/ior.c"
    info "src/ior.c: allowed -e (fsync) for BENCHFS"
else
    info "warning: src/ior.c: the list of backends supporting -e was not found;" \
        "IOR will reset -e (fsync) for BENCHFS (everything else works)"
fi

# ---------------------------------------------------------------- done
if [ "$changed" -eq 1 ]; then
    info "BenchFS backend added to $ior"
else
    info "nothing to do: $ior already has the BenchFS backend"
fi
cat <<EOF

Build IOR with the BenchFS backend:
  export PKG_CONFIG_PATH=/path/to/dir-with-benchfs.pc\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}
  cd $ior
  ./bootstrap && ./configure --with-benchfs [other options] && make
(or pass the directory directly: ./configure --with-benchfs=/path/to/dir-with-benchfs.pc)
Then run, e.g.:
  mpirun -np 4 $ior/src/ior -a BENCHFS --benchfs.registry=REGISTRY_DIR -F -t 1m -b 16m -w -r
EOF
