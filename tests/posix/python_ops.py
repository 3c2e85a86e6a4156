"""Python's file API on BenchFS through libbenchfs_preload.so (run by scripts/test_posix.sh).

Usage: python3 python_ops.py BENCHFS_DIR LOCAL_TREE LOCAL_SCRATCH

Writes and reads text and binary files with open(), lists with os.listdir and os.scandir,
checks os.stat, copies LOCAL_TREE into BENCHFS_DIR with shutil.copytree and back out again,
works with relative paths after os.chdir, renames and removes; any mismatch raises.
"""

import filecmp
import os
import shutil
import stat
import sys


def same_trees(a, b):
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        raise AssertionError(f"{a} and {b} differ: {cmp.left_only} {cmp.right_only} "
                             f"{cmp.diff_files} {cmp.funny_files}")
    for name in cmp.common_files:
        if not filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False):
            raise AssertionError(f"{name} differs")
    for sub in cmp.common_dirs:
        same_trees(os.path.join(a, sub), os.path.join(b, sub))


def main():
    root, tree, scratch = sys.argv[1:4]
    os.makedirs(root)
    text = "".join(f"line {i}\n" for i in range(20000))
    with open(os.path.join(root, "text.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(root, "text.txt")) as f:
        assert f.read() == text
    blob = os.urandom(3 * 1024 * 1024 + 17)
    with open(os.path.join(root, "blob.bin"), "wb") as f:
        f.write(blob)
    with open(os.path.join(root, "blob.bin"), "rb") as f:
        f.seek(1024 * 1024)
        assert f.read(4096) == blob[1024 * 1024:1024 * 1024 + 4096]
        f.seek(0)
        assert f.read() == blob
    with open(os.path.join(root, "text.txt"), "a") as f:
        f.write("appended\n")
    st = os.stat(os.path.join(root, "text.txt"))
    assert st.st_size == len(text) + len("appended\n"), st.st_size
    assert stat.S_ISREG(st.st_mode) and stat.S_ISDIR(os.stat(root).st_mode)
    assert sorted(os.listdir(root)) == ["blob.bin", "text.txt"], os.listdir(root)
    kinds = {e.name: e.is_dir() for e in os.scandir(root)}
    assert kinds == {"blob.bin": False, "text.txt": False}, kinds

    shutil.copytree(tree, os.path.join(root, "tree"))
    same_trees(tree, os.path.join(root, "tree"))
    back = os.path.join(scratch, "tree-back")
    shutil.copytree(os.path.join(root, "tree"), back)
    same_trees(tree, back)
    mtime = os.stat(os.path.join(tree, "f1")).st_mtime_ns
    assert os.stat(os.path.join(root, "tree", "f1")).st_mtime_ns == mtime, "copy2 keeps mtime"

    os.chdir(root)
    assert os.getcwd() == root, os.getcwd()
    with open("relative.txt", "w") as f:
        f.write("relative\n")
    os.chdir("tree")
    assert os.path.getsize("../relative.txt") == len("relative\n")
    os.chdir("..")
    os.rename("relative.txt", "renamed.txt")
    assert not os.path.exists("relative.txt") and os.path.exists("renamed.txt")
    os.remove("renamed.txt")
    shutil.rmtree("tree")
    assert sorted(os.listdir(".")) == ["blob.bin", "text.txt"], os.listdir(".")
    print("python_ops: all checks passed")


if __name__ == "__main__":
    main()
