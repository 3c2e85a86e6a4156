#!/usr/bin/env bash
# Unmodified POSIX programs on BenchFS through the LD_PRELOAD library (libbenchfs_preload.so).
#
# Starts a local cluster (scripts/run_local.sh start, in target/posix-cluster) and runs
# programs this project did not write with LD_PRELOAD set and the mount prefix
# BENCHFS_MOUNT=/benchfs-posix-test, once with UCX over TCP and once over shared memory:
#   mkdir -p; cp in and out, cmp; cat; dd with oflag=direct and iflag=direct; ls -l; find
#   with -name, -size and -type (against GNU find over the same local tree); tar in and out
#   (sizes, modes, mtimes); mv (directory, file, across file systems); rm -r; cp -a, install,
#   touch, truncate, md5sum, gzip, du, tail; a Python script (open, os.listdir, os.scandir,
#   os.stat, shutil.copytree, chdir) and a Python pool of forked workers; fio with the psync
#   engine and verify=crc32c (a corrupted block must be caught; 4 threads in one process); a
#   C program that forks and writes from the child; a shell that changes into a BenchFS
#   directory; sort -o and a shell's redirection of builtins; programs a shell or Python's
#   subprocess starts with stdin/stdout redirected into BenchFS; the errors of bad requests; a C
#   program that checks every intercepted libc call (tests/posix/libc_calls.c).
# What a program wrote is checked with benchfsctl, which does not go through the preload, and
# the prefix must not exist on the local disk afterwards: nothing passes by landing on local
# files. Ends with the line `N passed, M failed` and exits non-zero when anything failed;
# stops the cluster also on failure or Ctrl-C.
#
# Optional programs, run when given (they are built outside this repository):
#   PFIND=path/to/pfind   IO500's find (pfind) on an mdtest-hard-like tree, checked against
#                         benchfsctl find
#   IOR=path/to/ior       IOR's POSIX backend (and mdtest next to it), under mpirun
#
# Usage: scripts/test_posix.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
me="test_posix.sh"

say() {
    echo "$me: $*" >&2
}

die() {
    say "$*"
    exit 1
}

for tool in fio python3 tar find dd gcc; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
done

cargo build --release --quiet -p benchfs -p benchfs-preload
preload="$root/target/release/libbenchfs_preload.so"
ctl="$root/target/release/benchfsctl"
[ -f "$preload" ] || die "$preload was not built"

export BENCHFS_MOUNT=/benchfs-posix-test
# Times are compared as text.
export TZ=UTC
M="$BENCHFS_MOUNT"
[ -e "$M" ] && die "$M exists on the local disk; the tests need a prefix that does not"
work="$root/target/posix-work"
export BENCHFS_LOCAL_DIR="$root/target/posix-cluster"

cleanup() {
    local status=$?
    BENCHFS_LOCAL_DIR="$root/target/posix-cluster" "$root/scripts/run_local.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a program under the preload.
on() {
    LD_PRELOAD="$preload" "$@"
}

passed=0
failed=0
# check NAME FUNCTION: runs the test function in a subshell with errexit in force (so any
# failing step fails it), prints ok/FAIL, shows its output on failure.
check() {
    local name="$1" log="$work/check.log" status
    shift
    set +e
    (
        set -e
        "$@"
    ) >"$log" 2>&1
    status=$?
    set -e
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok   [$label] $name"
    else
        failed=$((failed + 1))
        echo "FAIL [$label] $name"
        tail -n 25 "$log" | sed 's/^/    /'
    fi
}

# expect_fail TEXT CMD...: the command fails and says TEXT.
expect_fail() {
    local text="$1" out
    shift
    if out="$("$@" 2>&1)"; then
        echo "succeeded but should have failed: $*"
        return 1
    fi
    grep -qF -- "$text" <<<"$out" || {
        echo "failed without '$text': $out"
        return 1
    }
}

# The size BenchFS itself reports for a BenchFS path (no preload involved).
size_of() {
    "$ctl" stat "$1" | awk '/Size:/ { print $2 }'
}

make_tree() {
    local t="$work/tree"
    mkdir -p "$t/d1/d2/d3" "$t/empty"
    head -c 100000 /dev/urandom >"$t/f1"
    head -c 4097 /dev/urandom >"$t/f12"
    : >"$t/zero"
    head -c 5242881 /dev/urandom >"$t/d1/big1"
    for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
        head -c $((i * 1000)) /dev/urandom >"$t/d1/d2/g$i"
    done
    echo leaf >"$t/d1/d2/d3/leaf1"
    touch -d '2001-02-03 04:05:06' "$t/d1/d2/g1"
    chmod 600 "$t/f12"
    chmod 750 "$t/d1/d2/g2"
}

t_mkdir() {
    on mkdir -p "$M/data/deep/er/est"
    "$ctl" stat /data/deep/er/est | grep -q directory
}

t_cp_in() {
    head -c $((64 << 20)) /dev/urandom >"$work/big"
    on cp "$work/big" "$M/data/big"
    [ "$(size_of /data/big)" = $((64 << 20)) ]
    "$ctl" get /data/big "$work/big.get"
    cmp "$work/big" "$work/big.get"
}

t_cp_out() {
    on cp "$M/data/big" "$work/big.out"
    cmp "$work/big" "$work/big.out"
    on cmp "$work/big" "$M/data/big"
}

t_cat() {
    seq 1 100000 >"$work/text"
    on cp "$work/text" "$M/data/text"
    on cat "$M/data/text" >"$work/text.cat"
    cmp "$work/text" "$work/text.cat"
    on cat "$M/data/big" | cmp - "$work/big"
}

t_dd_direct() {
    on dd if="$work/big" of="$M/data/dd" bs=1M oflag=direct status=none
    [ "$(size_of /data/dd)" = $((64 << 20)) ]
    on dd if="$M/data/dd" of="$work/dd.out" bs=4M iflag=direct status=none
    cmp "$work/big" "$work/dd.out"
    # A last partial block: dd drops O_DIRECT for it (fcntl F_SETFL).
    on dd if="$work/text" of="$M/data/dd-odd" bs=64k oflag=direct status=none
    "$ctl" get /data/dd-odd "$work/dd-odd"
    cmp "$work/text" "$work/dd-odd"
}

t_ls() {
    local out
    out="$(on ls -l "$M/data")"
    grep -Eq "^-rw.* $((64 << 20)) .* big$" <<<"$out" || {
        echo "ls -l shows no 64 MiB big: $out"
        return 1
    }
    grep -Eq "^d.* deep$" <<<"$out"
    [ "$(on ls "$M/data" | tr '\n' ' ')" = "big dd dd-odd deep text " ]
}

t_tar() {
    make_tree
    on tar -C "$work" -cf "$M/data/tree.tar" tree
    on mkdir "$M/untar"
    on tar -C "$M/untar" -xf "$M/data/tree.tar"
    [ "$(size_of /untar/tree/d1/big1)" = 5242881 ]
    on tar -C "$M/untar" -cf "$work/back.tar" tree
    mkdir "$work/back"
    tar -C "$work/back" -xf "$work/back.tar"
    diff -r "$work/tree" "$work/back/tree"
    # tar restored the modification times (utimensat) and modes (chmod) on BenchFS.
    diff <(cd "$work/tree" && find . -type f -printf '%p %s %m %TY-%Tm-%Td %TH:%TM\n' | sort) \
        <(cd "$work" && on find "$M/untar/tree" -type f -printf '%p %s %m %TY-%Tm-%Td %TH:%TM\n' |
            sed "s|^$M/untar/tree|.|" | sort)
}

t_find() {
    diff <(cd "$work" && find tree -name '*1*' -size +4k | sort) \
        <(on find "$M/untar/tree" -name '*1*' -size +4k | sed "s|^$M/untar/||" | sort)
    diff <(cd "$work" && find tree -type d | sort) \
        <(on find "$M/untar/tree" -type d | sed "s|^$M/untar/||" | sort)
    [ "$(on find "$M/untar/tree" -type f | wc -l)" = 17 ]
}

t_mv() {
    on mv "$M/untar/tree" "$M/moved"
    "$ctl" stat /moved/d1/big1 >/dev/null
    expect_fail "No such file" "$ctl" stat /untar/tree
    on mv "$M/moved/f1" "$M/moved/f1.renamed"
    cmp "$work/tree/f1" <(on cat "$M/moved/f1.renamed")
    # Across file systems: mv copies and removes (rename says EXDEV).
    cp "$work/text" "$work/to-move"
    on mv "$work/to-move" "$M/moved/from-local"
    [ ! -e "$work/to-move" ]
    "$ctl" get /moved/from-local "$work/moved-back"
    cmp "$work/text" "$work/moved-back"
}

t_rm() {
    on rm -r "$M/moved"
    expect_fail "No such file" "$ctl" stat /moved
    on rm "$M/data/dd-odd"
    expect_fail "No such file" "$ctl" stat /data/dd-odd
}

t_coreutils() {
    # cp -a keeps modes and times (ACLs fall back to chmod: xattrs are ENOTSUP).
    on cp -a "$work/tree" "$M/cpa"
    diff <(cd "$work/tree" && find . -type f -printf '%p %s %m %TY-%Tm-%Td %TH:%TM\n' | sort) \
        <(on find "$M/cpa" -type f -printf '%p %s %m %TY-%Tm-%Td %TH:%TM\n' |
            sed "s|^$M/cpa|.|" | sort)
    diff <(cd "$work/tree" && find . -type d -printf '%p %m\n' | sort) \
        <(on find "$M/cpa" -type d -printf '%p %m\n' | sed "s|^$M/cpa|.|" | sort)
    on install -m 640 "$work/text" "$M/installed"
    "$ctl" stat /installed | grep -q "(0640/"
    on touch -d '2011-12-13 14:15:16' "$M/installed"
    [ "$(on stat -c '%y' "$M/installed")" = "2011-12-13 14:15:16.000000000 +0000" ]
    on truncate -s 12345 "$M/installed"
    [ "$(size_of /installed)" = 12345 ]
    [ "$(on md5sum <"$work/big" | cut -d' ' -f1)" = "$(on md5sum "$M/data/big" | cut -d' ' -f1)" ]
    on gzip -k "$M/data/text"
    on gunzip -c "$M/data/text.gz" | cmp - "$work/text"
    [ "$(on du -s --apparent-size -b "$M/cpa/d1/d2" | cut -f1)" = \
        "$(find "$work/tree/d1/d2" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')" ]
    [ "$(on tail -c 7 "$M/data/text")" = "$(tail -c 7 "$work/text")" ]
    on rm "$M/data/text.gz"
}

t_python() {
    on python3 "$root/tests/posix/python_ops.py" "$M/python" "$work/tree" "$work"
    "$ctl" stat /python/blob.bin | grep -q "Size: $((3 * 1024 * 1024 + 17))"
}

t_fio() {
    local job=(--name=verify --filename="$M/fio/file" --ioengine=psync --rw=randwrite --bs=64k
        --size=64m --verify=crc32c --verify_fatal=1 --verify_state_save=0)
    on mkdir "$M/fio"
    local out
    out="$(on fio "${job[@]}" --do_verify=1 --output-format=terse)"
    [ "$(size_of /fio/file)" = $((64 << 20)) ]
    grep -q "verify" <<<"$out" && grep -qi "error" <<<"$out" && {
        echo "$out"
        return 1
    }
    # The verification bites: a zeroed block read back through BenchFS must be reported.
    on dd if=/dev/zero of="$M/fio/file" bs=64k count=2 seek=100 conv=notrunc status=none
    if out="$(on fio "${job[@]}" --verify_only 2>&1)"; then
        echo "fio found no error in a corrupted file: $out"
        return 1
    fi
    grep -qi "verify" <<<"$out"
}

t_fio_threads() {
    on mkdir "$M/fio-threads"
    local out
    out="$(on fio --name=threads --directory="$M/fio-threads" --thread --numjobs=4 \
        --ioengine=psync --rw=randwrite --bs=16k --size=16m --verify=crc32c --verify_fatal=1 \
        --verify_state_save=0 --group_reporting)"
    grep -q "err= 0" <<<"$out" || {
        echo "$out"
        return 1
    }
    [ "$("$ctl" ls /fio-threads | wc -l)" = 4 ]
}

t_multiprocessing() {
    on python3 - "$M/pool" <<'EOF'
import multiprocessing, os, sys
root = sys.argv[1]
def work(i):
    data = bytes([i]) * (100000 + i)
    with open(f"{root}/part{i}", "wb") as f:
        f.write(data)
    return len(data)
os.makedirs(root)
with multiprocessing.get_context("fork").Pool(4) as pool:
    sizes = pool.map(work, range(16))
for i, n in enumerate(sizes):
    with open(f"{root}/part{i}", "rb") as f:
        assert f.read() == bytes([i]) * n, i
assert len(os.listdir(root)) == 16
EOF
    [ "$(size_of /pool/part15)" = 100015 ]
}

t_fork() {
    gcc -O2 -Wall -Werror -o "$work/fork_write" "$root/tests/posix/fork_write.c"
    gcc -O2 -Wall -Werror -o "$work/write_fd3" "$root/tests/posix/write_fd3.c"
    on mkdir "$M/fork"
    on "$work/fork_write" "$M/fork" "$work/write_fd3"
    [ "$(size_of /fork/shared)" = $((2 << 20)) ]
}

t_cd() {
    on mkdir "$M/cd"
    local out
    out="$(on bash -c "cd '$M/cd' && pwd && cp '$work/text' here && mkdir sub && cd sub &&
        cp ../here there && ls && stat -c %s there")"
    [ "$out" = "$(printf '%s\n' "$M/cd" there "$(stat -c %s "$work/text")")" ] || {
        echo "unexpected: $out"
        return 1
    }
    "$ctl" get /cd/sub/there "$work/there"
    cmp "$work/text" "$work/there"
}

t_standard_streams() {
    # sort -o puts the output file on descriptor 1 and writes through stdout.
    seq 1 50000 | sort -R >"$work/shuffled"
    on sort -n -o "$M/data/sorted" "$work/shuffled"
    "$ctl" get /data/sorted "$work/sorted"
    cmp "$work/sorted" <(seq 1 50000)
    # A shell's redirection of its builtins into BenchFS, and back to the terminal after.
    local out
    out="$(on bash -c "echo first > '$M/data/builtin'; printf '%s\\n' a b >> '$M/data/builtin';
        echo after")"
    [ "$out" = after ]
    [ "$(on cat "$M/data/builtin")" = "$(printf 'first\na\nb')" ]
}

t_exec_redirect() {
    # Programs a shell starts with their standard streams redirected into BenchFS (the
    # descriptors travel through execve).
    on bash -c "cat '$work/text' '$work/text' > '$M/data/twice'; seq 1 3 >> '$M/data/twice';
        sort -n < '$M/data/twice' > '$M/data/twice-sorted'"
    "$ctl" get /data/twice "$work/twice"
    cmp "$work/twice" <(cat "$work/text" "$work/text"; seq 1 3)
    "$ctl" get /data/twice-sorted "$work/twice-sorted"
    cmp "$work/twice-sorted" <( (cat "$work/text" "$work/text" && seq 1 3) | sort -n)
    # Python's subprocess (vfork, then exec) with stdout on a BenchFS file; the parent goes on.
    on python3 - "$M/data" <<'EOF'
import subprocess, sys
root = sys.argv[1]
with open(f"{root}/from-child", "w") as f:
    subprocess.run(["seq", "1", "1000"], stdout=f, check=True)
    subprocess.run("echo via-sh", shell=True, stdout=f, check=True)
with open(f"{root}/from-child") as f:
    lines = f.read().split()
assert lines == [str(i) for i in range(1, 1001)] + ["via-sh"], lines[-3:]
EOF
}

t_errors() {
    expect_fail "No such file or directory" on cat "$M/data/missing"
    expect_fail "Directory not empty" on rmdir "$M/data"
    expect_fail "Operation not permitted" on ln -s target "$M/data/link"
    expect_fail "File exists" on mkdir "$M/data"
    expect_fail "Not a directory" on ls "$M/data/text/x"
    # Everything else passes through untouched.
    on cp /etc/hostname "$work/hostname"
    cmp /etc/hostname "$work/hostname"
}

t_libc_calls() {
    gcc -O2 -Wall -Werror -pthread -o "$work/libc_calls" "$root/tests/posix/libc_calls.c"
    on "$work/libc_calls" "$M/libc" "$work"
}

t_nothing_local() {
    [ ! -e "$M" ] || {
        echo "$M appeared on the local disk"
        return 1
    }
}

t_pfind() {
    on python3 - "$M/find" <<'EOF'
import os, sys, time
root = sys.argv[1]
os.makedirs(root + "/hard")
for i in range(600):
    with open(f"{root}/hard/file.mdtest.{i % 4}.{i}", "wb") as f:
        f.write(b"x" * (3901 if i % 3 else 10))
# pfind compares ctimes in whole seconds.
time.sleep(1.1)
open(root + "/timestamp", "w").close()
time.sleep(1.1)
for i in range(600, 900):
    with open(f"{root}/hard/file.mdtest.{i % 4}.{i}", "wb") as f:
        f.write(b"x" * (3901 if i % 3 else 10))
EOF
    local got want
    got="$(on "$PFIND" "$M/find/hard" -newer "$M/find/timestamp" -size 3901c -name '*01*' -C -q 10000 |
        tail -n 1)"
    want="$("$ctl" find /find/hard -newer /find/timestamp -size 3901c -name '*01*' | tail -n 1)"
    # benchfsctl counts the directory itself among the entries scanned; pfind does not.
    [ "${got%/*}" = "${want%/*}" ] && [ "${got##*/}" = 900 ] || {
        echo "pfind: $got, benchfsctl find: $want"
        return 1
    }
}

t_ior_posix() {
    local mpi=(mpirun --oversubscribe -np 2 -x LD_PRELOAD="$preload" -x BENCHFS_REGISTRY
        -x BENCHFS_MOUNT -x UCX_TLS)
    [ -z "${UCX_NET_DEVICES:-}" ] || mpi+=(-x UCX_NET_DEVICES)
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    on mkdir "$M/ior"
    "${mpi[@]}" "$IOR" -a POSIX -w -r -W -R -G 7 -t 1m -b 16m -F -C -O numTasksOnNode0=1 \
        -o "$M/ior/easy"
    "${mpi[@]}" "$IOR" -a POSIX -w -r -W -R -G 7 -t 47008 -b 47008 -s 200 -C \
        -O numTasksOnNode0=1 -o "$M/ior/hard"
    local out
    out="$("${mpi[@]}" "$(dirname "$IOR")/mdtest" -a POSIX -n 100 -w 3901 -e 3901 -d "$M/mdt")"
    ! grep -q ERROR <<<"$out"
}

# Every check against a fresh cluster over the transport in UCX_TLS.
suite() {
    label="$1"
    rm -rf "$work"
    mkdir -p "$work"
    eval "$("$root/scripts/run_local.sh" start)"
    check "mkdir -p" t_mkdir
    check "cp of a 64 MiB file into BenchFS" t_cp_in
    check "cp out of BenchFS, cmp" t_cp_out
    check "cat" t_cat
    check "dd with oflag=direct and iflag=direct" t_dd_direct
    check "ls -l" t_ls
    check "tar of a tree in and out (sizes, modes, mtimes)" t_tar
    check "find with -name, -size, -type" t_find
    check "mv of a directory, a file, and across file systems" t_mv
    check "rm -r" t_rm
    check "cp -a, install -m, touch -d, truncate, md5sum, gzip, du, tail" t_coreutils
    check "python: open, listdir, scandir, stat, copytree, chdir" t_python
    check "fio psync with verify=crc32c (and a corruption caught)" t_fio
    check "fio with 4 threads in one process (verify=crc32c)" t_fio_threads
    check "fork: the child writes; exec leaves it outside BenchFS" t_fork
    check "python multiprocessing: a pool of forked workers writes" t_multiprocessing
    check "shell cd into BenchFS, relative paths" t_cd
    check "sort -o and a shell's redirection of builtins (stdout replaced)" t_standard_streams
    check "programs started with stdin/stdout redirected into BenchFS (exec)" t_exec_redirect
    check "errors of bad requests, pass-through of the rest" t_errors
    check "libc calls one by one (tests/posix/libc_calls.c)" t_libc_calls
    if [ -n "${PFIND:-}" ]; then
        check "IO500 find (pfind) against benchfsctl find" t_pfind
    else
        say "PFIND not set: IO500's pfind not run"
    fi
    if [ -n "${IOR:-}" ]; then
        check "IOR's POSIX backend and mdtest under mpirun" t_ior_posix
    else
        say "IOR not set: IOR's POSIX backend not run"
    fi
    check "nothing landed on the local disk under $M" t_nothing_local
    "$root/scripts/run_local.sh" stop >/dev/null
}

label=""
export UCX_TLS=tcp UCX_NET_DEVICES=lo
suite tcp
export UCX_TLS=posix,cma
unset UCX_NET_DEVICES
suite shm

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
