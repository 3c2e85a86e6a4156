//! `benchfsctl`'s file commands against a running cluster: parallel `put` and `get` of a
//! large file checked byte for byte, the exact output of `ls`, `stat`, `df` and `find` on
//! small trees made through the client library, the namespace commands, and the status and
//! message of failures.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use benchfs::client::{Client, OpenFlags};
use common::{disk_tempdir, Cluster, Options, Transport};

/// What a run of `benchfsctl` left: exit code, standard output, standard error.
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

fn ctl(cluster: &Cluster, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_benchfsctl"))
        .arg("--registry")
        .arg(cluster.registry())
        .args(args)
        .envs(Transport::Tcp.env())
        .env("TZ", "UTC")
        .output()
        .expect("run benchfsctl");
    Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `benchfsctl` and fails the test unless it succeeded; its standard output.
fn ctl_ok(cluster: &Cluster, args: &[&str]) -> String {
    let run = ctl(cluster, args);
    assert_eq!(
        run.code,
        Some(0),
        "benchfsctl {args:?}:\n{}{}",
        run.out,
        run.err
    );
    run.out
}

/// Runs `benchfsctl`, expects exit status 1 and `message` on standard error.
fn ctl_fails(cluster: &Cluster, args: &[&str], message: &str) {
    let run = ctl(cluster, args);
    assert_eq!(
        run.code,
        Some(1),
        "benchfsctl {args:?}:\n{}{}",
        run.out,
        run.err
    );
    assert!(
        run.err.contains(message),
        "benchfsctl {args:?} should say {message:?}:\n{}",
        run.err
    );
}

fn write_file(client: &mut Client, path: &str, data: &[u8]) {
    let mut file = client.create(path, 0o644).expect("create");
    client.write_at(&mut file, data, 0).expect("write");
    client.close(file).expect("close");
}

/// Pseudo-random bytes (xorshift), different for each seed.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for word in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
}

/// Writes a local file of `size` pseudo-random bytes.
fn local_file(path: &Path, size: usize, seed: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    let mut block = vec![0u8; 8 << 20];
    let mut left = size;
    let mut round = 0;
    while left > 0 {
        let n = left.min(block.len());
        fill(&mut block[..n], seed + round);
        file.write_all(&block[..n]).unwrap();
        left -= n;
        round += 1;
    }
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba);
        if n != read_full(&mut fb, &mut bb) || ba[..n] != bb[..n] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Checks the line `put|get FROM -> TO: N bytes in S s (M MiB/s)`.
fn check_summary(out: &str, op: &str, from: &str, to: &str, bytes: u64) -> f64 {
    let prefix = format!("{op} {from} -> {to}: {bytes} bytes in ");
    let line = out.lines().last().unwrap_or("");
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{line:?} should start with {prefix:?}"));
    let (seconds, rate) = rest.split_once(" s (").expect("seconds");
    assert!(rate.ends_with(" MiB/s)"), "{line}");
    seconds.parse().expect("seconds")
}

#[test]
fn put_and_get_move_a_large_file_intact() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut client = cluster.client();
    let dir = disk_tempdir();
    let (source, back) = (dir.path().join("source"), dir.path().join("back"));
    let size: u64 = 300 << 20;
    local_file(&source, size as usize, 7);
    client.mkdir("/in", 0o755).unwrap();
    let from = source.to_str().unwrap();
    let run = ctl(&cluster, &["put", from, "/in/big"]);
    assert_eq!(run.code, Some(0), "{}", run.err);
    assert_eq!(
        run.err, "",
        "no progress line when standard error is not a terminal"
    );
    let put_s = check_summary(&run.out, "put", from, "/in/big", size);
    assert_eq!(client.stat("/in/big").unwrap().size, size);
    // The data is in place, not only readable back by the same tool.
    let file = client.open("/in/big", OpenFlags::READ, 0).unwrap();
    let local = std::fs::read(&source).unwrap();
    for offset in [0, (64 << 20) - 4096, 200 << 20, size - 777] {
        let mut buf = vec![0u8; 1 << 20];
        let n = client.read_at(&file, &mut buf, offset).unwrap();
        let end = offset as usize + n;
        assert!(buf[..n] == local[offset as usize..end], "at {offset}");
    }
    client.close(file).unwrap();
    drop(local);
    let to = back.to_str().unwrap();
    let out = ctl_ok(&cluster, &["get", "/in/big", to]);
    let get_s = check_summary(&out, "get", "/in/big", to, size);
    eprintln!("300 MiB: put {put_s:.2} s, get {get_s:.2} s");
    assert_eq!(std::fs::metadata(&back).unwrap().len(), size);
    assert!(same_content(&source, &back), "get returned other bytes");
    if let Ok(status) = Command::new("cmp").arg(&source).arg(&back).status() {
        assert!(status.success(), "cmp finds a difference");
    }
    small_copies(&cluster, &mut client, dir.path());
}

/// Odd sizes, other thread counts, replacing a longer file, copies into directories, and the
/// failures of copies.
fn small_copies(cluster: &Cluster, client: &mut Client, dir: &Path) {
    let (small, back) = (dir.join("small"), dir.join("small.back"));
    let size = (5 << 20) + 7;
    local_file(&small, size, 11);
    let from = small.to_str().unwrap();
    // /in/big is longer: put replaces its content, it does not write over its start.
    let args = ["put", "--threads", "3", "--chunk-mib", "1", from, "/in/big"];
    ctl_ok(cluster, &args);
    assert_eq!(client.stat("/in/big").unwrap().size, size as u64);
    ctl_ok(cluster, &["put", "--threads", "1", from, "/in"]);
    assert_eq!(client.stat("/in/small").unwrap().size, size as u64);
    let to = back.to_str().unwrap();
    ctl_ok(
        cluster,
        &["get", "--threads", "2", "--chunk-mib", "2", "/in/big", to],
    );
    assert!(same_content(&small, &back));
    std::fs::create_dir(dir.join("sub")).unwrap();
    ctl_ok(
        cluster,
        &["get", "/in/small", dir.join("sub").to_str().unwrap()],
    );
    assert!(same_content(&small, &dir.join("sub/small")));
    let empty = dir.join("empty");
    std::fs::File::create(&empty).unwrap();
    ctl_ok(cluster, &["put", empty.to_str().unwrap(), "/in/empty"]);
    ctl_ok(cluster, &["get", "/in/empty", to]);
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 0);

    ctl_fails(
        cluster,
        &["get", "/in/missing", to],
        "benchfsctl: get /in/missing: No such file or directory",
    );
    ctl_fails(
        cluster,
        &["put", from, "/nodir/x"],
        "benchfsctl: put /nodir/x: No such file or directory",
    );
    let missing = dir.join("missing");
    let message = format!(
        "benchfsctl: put {}: No such file or directory",
        missing.display()
    );
    ctl_fails(
        cluster,
        &["put", missing.to_str().unwrap(), "/in/x"],
        &message,
    );
}

/// Days since 1970-01-01 as (year, month, day) in the proleptic Gregorian calendar.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `ns` in UTC as `YYYY-MM-DD HH:MM` and as `YYYY-MM-DD HH:MM:SS.nnnnnnnnn +0000`.
fn utc(ns: i64) -> (String, String) {
    let secs = ns.div_euclid(1_000_000_000);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let minutes = format!("{y:04}-{mo:02}-{d:02} {:02}:{:02}", s / 3600, s % 3600 / 60);
    let full = format!(
        "{minutes}:{:02}.{:09} +0000",
        s % 60,
        ns.rem_euclid(1_000_000_000)
    );
    (minutes, full)
}

#[test]
fn listing_and_namespace_commands() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut client = cluster.client();
    client.mkdir("/t", 0o755).unwrap();
    write_file(&mut client, "/t/a.txt", b"hello");
    client.mkdir("/t/b", 0o755).unwrap();
    write_file(&mut client, "/t/b/c.dat", &[1; 3901]);
    client.mkdir("/t/b/d", 0o755).unwrap();
    write_file(&mut client, "/t/z.01", &[2; 3901]);

    assert_eq!(ctl_ok(&cluster, &["ls", "/t"]), "a.txt\nb\nz.01\n");
    assert_eq!(ctl_ok(&cluster, &["ls"]), "t\n");
    assert_eq!(ctl_ok(&cluster, &["ls", "/t/a.txt"]), "/t/a.txt\n");
    assert_eq!(
        ctl_ok(&cluster, &["ls", "/t/b", "/t/z.01"]),
        "/t/z.01\n\n/t/b:\nc.dat\nd\n"
    );
    assert_eq!(
        ctl_ok(&cluster, &["ls", "-R", "/t"]),
        "/t:\na.txt\nb\nz.01\n\n/t/b:\nc.dat\nd\n\n/t/b/d:\n"
    );
    let b = client.stat("/t/b").unwrap();
    let mut time = |path: &str| utc(client.stat(path).unwrap().mtime_ns).0;
    assert_eq!(
        (b.nlink, b.size),
        (3, 0),
        "a directory with two subdirectories"
    );
    let expected = format!(
        "-rw-r--r-- 1    5 {} a.txt\ndrwxr-xr-x 3    0 {} b\n-rw-r--r-- 1 3901 {} z.01\n",
        time("/t/a.txt"),
        time("/t/b"),
        time("/t/z.01")
    );
    assert_eq!(ctl_ok(&cluster, &["ls", "-l", "/t"]), expected);
    let long = ctl_ok(&cluster, &["ls", "-lR", "/t/b"]);
    let expected = format!(
        "/t/b:\n-rw-r--r-- 1 3901 {} c.dat\ndrwxr-xr-x 2    0 {} d\n\n/t/b/d:\n",
        time("/t/b/c.dat"),
        time("/t/b/d")
    );
    assert_eq!(long, expected);
    let run = ctl(&cluster, &["ls", "/nope", "/t/b/d"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.err, "benchfsctl: ls /nope: No such file or directory\n");
    assert_eq!(run.out, "/t/b/d:\n", "the other operands are still listed");

    stat_command(&cluster, &mut client);
    df_command(&cluster, &mut client);
    mkdir_and_rm(&cluster, &mut client);
    mv_command(&cluster, &mut client);
}

fn stat_command(cluster: &Cluster, client: &mut Client) {
    let s = client.stat("/t/z.01").unwrap();
    let out = ctl_ok(cluster, &["stat", "/t/z.01", "/t/b"]);
    let expected = format!(
        "  File: /t/z.01\n  Size: 3901            Blocks: 8          IO Block: {:<8} \
         regular file\n Inode: {:<15} Links: 1\nAccess: (0644/-rw-r--r--)\nAccess: {}\n\
         Modify: {}\nChange: {}\n",
        s.blksize,
        s.ino,
        utc(s.atime_ns).1,
        utc(s.mtime_ns).1,
        utc(s.ctime_ns).1
    );
    assert!(out.starts_with(&expected), "{out}\n---\n{expected}");
    let dir = &out[expected.len()..];
    assert!(dir.starts_with("  File: /t/b\n  Size: 0 "), "{dir}");
    assert!(
        dir.contains(" directory\n") && dir.contains("Links: 3\n"),
        "{dir}"
    );
    assert!(dir.contains("Access: (0755/drwxr-xr-x)\n"), "{dir}");
    ctl_fails(
        cluster,
        &["stat", "/t/none"],
        "benchfsctl: stat /t/none: No such file",
    );
}

fn df_command(cluster: &Cluster, client: &mut Client) {
    let fs = client.statfs().unwrap();
    let out = ctl_ok(cluster, &["df"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header = lines[0].split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(header, "Filesystem Size Used Avail Use% Files Targets");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    let used = fs.total_bytes - fs.free_bytes;
    assert_eq!(row[0], "benchfs");
    assert_eq!(row[1].parse::<u64>().unwrap(), fs.total_bytes);
    // Used and available space move with other users of the disk; the rest is exact.
    let close = |text: &str, want: u64| text.parse::<u64>().unwrap().abs_diff(want) < 8 << 30;
    assert!(
        close(row[2], used) && close(row[3], fs.available_bytes),
        "{out}"
    );
    assert!(row[4].ends_with('%'), "{out}");
    assert_eq!(
        (row[5], row[6]),
        (fs.files.to_string().as_str(), "4"),
        "{out}"
    );
    let human = ctl_ok(cluster, &["df", "-h"]);
    let row: Vec<&str> = human.lines().nth(1).unwrap().split_whitespace().collect();
    let units = |t: &str| t.ends_with(['K', 'M', 'G', 'T', 'P']) && t.len() <= 5;
    assert!(units(row[1]) && units(row[3]), "{human}");
    assert_eq!(row[6], "4");
}

fn mkdir_and_rm(cluster: &Cluster, client: &mut Client) {
    let is_dir =
        |c: &mut Client, p: &str| c.stat(p).map(|s| s.mode & libc::S_IFMT == libc::S_IFDIR);
    ctl_ok(cluster, &["mkdir", "-p", "/m/n/o", "/m/p"]);
    for dir in ["/m", "/m/n", "/m/n/o", "/m/p"] {
        assert!(is_dir(client, dir).unwrap(), "{dir}");
    }
    ctl_ok(cluster, &["mkdir", "-p", "/m/n"]);
    ctl_fails(
        cluster,
        &["mkdir", "/m"],
        "benchfsctl: mkdir /m: File exists",
    );
    ctl_fails(
        cluster,
        &["mkdir", "/q/r"],
        "benchfsctl: mkdir /q/r: No such file or directory",
    );
    ctl_ok(cluster, &["mkdir", "/m/s"]);
    assert!(is_dir(client, "/m/s").unwrap());

    write_file(client, "/m/n/o/f", b"data");
    ctl_fails(cluster, &["rm", "/m"], "benchfsctl: rm /m: Is a directory");
    assert!(
        is_dir(client, "/m").unwrap(),
        "rm without -r leaves a directory"
    );
    ctl_fails(
        cluster,
        &["rm", "/m/none", "/m/n/o/f"],
        "rm /m/none: No such file",
    );
    assert_eq!(client.stat("/m/n/o/f").unwrap_err().errno(), libc::ENOENT);
    ctl_ok(cluster, &["rm", "-f", "/m/none"]);
    write_file(client, "/m/n/o/g", b"data");
    ctl_ok(cluster, &["rm", "-r", "/m"]);
    for gone in ["/m", "/m/n", "/m/n/o/g", "/m/p"] {
        assert_eq!(
            client.stat(gone).unwrap_err().errno(),
            libc::ENOENT,
            "{gone}"
        );
    }
    assert!(client.readdir("/").unwrap().iter().all(|e| e.name != "m"));
    ctl_fails(cluster, &["rm", "-r", "/"], "benchfsctl: rm /: refusing");
}

fn mv_command(cluster: &Cluster, client: &mut Client) {
    ctl_ok(cluster, &["mv", "/t/a.txt", "/t/b"]);
    assert_eq!(client.stat("/t/b/a.txt").unwrap().size, 5);
    ctl_ok(cluster, &["mv", "/t/b/a.txt", "/t/renamed"]);
    let file = client.open("/t/renamed", OpenFlags::READ, 0).unwrap();
    let mut buf = [0u8; 5];
    assert_eq!(client.read_at(&file, &mut buf, 0).unwrap(), 5);
    assert_eq!(&buf, b"hello");
    ctl_ok(cluster, &["mv", "/t/b", "/t/bb"]);
    assert_eq!(
        ctl_ok(cluster, &["ls", "-R", "/t/bb"]),
        "/t/bb:\nc.dat\nd\n\n/t/bb/d:\n"
    );
    ctl_fails(
        cluster,
        &["mv", "/t/none", "/t/x"],
        "benchfsctl: mv /t/none: No such file",
    );
    ctl_fails(
        cluster,
        &["mv", "/t/renamed", "/t/z.01", "/t/x"],
        "mv /t/x: Not a directory",
    );
}

/// The tree of the find test and when its parts were made: a local timestamp file after
/// `/f/old`, then `/f/stamp`, then everything under `/f/new` (`/f` itself changes as its
/// entries do).
fn find_tree(client: &mut Client, local_stamp: &Path) {
    client.mkdir_all("/f/old", 0o755).unwrap();
    write_file(client, "/f/old/x01", &[0; 3901]);
    write_file(client, "/f/old/x02", &[0; 10]);
    write_file(client, "/f/old/y01", b"");
    // The kernel stamps local files with a clock that may lag a few milliseconds.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::File::create(local_stamp).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    write_file(client, "/f/stamp", b"");
    std::thread::sleep(Duration::from_millis(20));
    client.mkdir("/f/new", 0o755).unwrap();
    write_file(client, "/f/new/a01", &[0; 3901]);
    write_file(client, "/f/new/b01", &[0; 3902]);
    write_file(client, "/f/new/c02", &[0; 3901]);
    client.mkdir("/f/new/sub", 0o755).unwrap();
    write_file(client, "/f/new/sub/d01", &[0; 3901]);
}

#[test]
fn find_prints_matches_and_counts() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut client = cluster.client();
    let dir = disk_tempdir();
    let local_stamp = dir.path().join("timestampfile");
    find_tree(&mut client, &local_stamp);
    let find = |args: &[&str]| ctl_ok(&cluster, &[&["find", "/f"][..], args].concat());
    let all = "/f\n/f/new\n/f/new/a01\n/f/new/b01\n/f/new/c02\n/f/new/sub\n/f/new/sub/d01\n\
               /f/old\n/f/old/x01\n/f/old/x02\n/f/old/y01\n/f/stamp\nMATCHED 12/12\n";
    assert_eq!(find(&[]), all);
    assert_eq!(
        find(&["-name", "*01*"]),
        "/f/new/a01\n/f/new/b01\n/f/new/sub/d01\n/f/old/x01\n/f/old/y01\nMATCHED 5/12\n"
    );
    assert_eq!(
        find(&["-name", "?0[2-9]"]),
        "/f/new/c02\n/f/old/x02\nMATCHED 2/12\n"
    );
    assert_eq!(
        find(&["-size", "3901c"]),
        "/f/new/a01\n/f/new/c02\n/f/new/sub/d01\n/f/old/x01\nMATCHED 4/12\n"
    );
    assert_eq!(find(&["-size", "+3901c"]), "/f/new/b01\nMATCHED 1/12\n");
    assert_eq!(
        find(&["-size", "-5k", "-size", "+1c"]),
        "/f/new/a01\n/f/new/b01\n/f/new/c02\n/f/new/sub/d01\n/f/old/x01\n/f/old/x02\n\
         MATCHED 6/12\n"
    );
    assert_eq!(
        find(&["-type", "f", "-size", "-1k"]),
        "/f/old/y01\n/f/stamp\nMATCHED 2/12\n"
    );
    assert_eq!(
        find(&["-type", "d"]),
        "/f\n/f/new\n/f/new/sub\n/f/old\nMATCHED 4/12\n"
    );
    let newer = "/f\n/f/new\n/f/new/a01\n/f/new/b01\n/f/new/c02\n/f/new/sub\n/f/new/sub/d01\n\
                 MATCHED 7/12\n";
    assert_eq!(find(&["-newer", "/f/stamp"]), newer);
    let stamp = local_stamp.to_str().unwrap();
    let local_newer = newer.replace("MATCHED 7/12", "/f/stamp\nMATCHED 8/12");
    assert_eq!(
        find(&["-newer", stamp]),
        local_newer,
        "a local reference file"
    );
    // IO500's external find call.
    let io500 = ["-newer", stamp, "-size", "3901c", "-name", "*01*"];
    assert_eq!(find(&io500), "/f/new/a01\n/f/new/sub/d01\nMATCHED 2/12\n");
    assert_eq!(
        ctl_ok(
            &cluster,
            &["find", "/f/new/sub", "/f/old/x01", "-type", "f"]
        ),
        "/f/new/sub/d01\n/f/old/x01\nMATCHED 2/3\n"
    );
    ctl_fails(
        &cluster,
        &["find", "/f", "-newer", "/f/none"],
        "find /f/none: No such file",
    );
    ctl_fails(
        &cluster,
        &["find", "/f", "-size", "12x"],
        "find -size: invalid argument",
    );
    ctl_fails(
        &cluster,
        &["find", "/f", "-print"],
        "find -print: unknown test",
    );
    let run = ctl(&cluster, &["find", "/f/none", "/f/old", "-name", "x*"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.err,
        "benchfsctl: find /f/none: No such file or directory\n"
    );
    assert_eq!(run.out, "/f/old/x01\n/f/old/x02\nMATCHED 2/4\n");
}

/// IO500's find over an mdtest-hard tree gives the counts of a POSIX `find` over the same
/// tree built on the local file system.
#[test]
fn find_counts_equal_posix_find_over_an_mdtest_hard_tree() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut client = cluster.client();
    let local = disk_tempdir();
    let stamp = local.path().join("timestampfile");
    std::fs::File::create(&stamp).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let tree = "mdt_hard/test-dir.0-0/mdtest_tree.0";
    client.mkdir_all(&format!("/io500/{tree}"), 0o755).unwrap();
    std::fs::create_dir_all(local.path().join("io500").join(tree)).unwrap();
    let record = [7u8; 3901];
    for rank in 0..4 {
        for i in 0..150 {
            let name = format!("{tree}/file.mdtest.{rank}.{i}");
            write_file(&mut client, &format!("/io500/{name}"), &record);
            std::fs::write(local.path().join("io500").join(&name), record).unwrap();
        }
    }
    let stamp = stamp.to_str().unwrap();
    for tests in [
        &["-newer", stamp, "-size", "3901c", "-name", "*01*"][..],
        &["-name", "*1*"][..],
        &["-type", "d"][..],
    ] {
        let posix = Command::new("find")
            .arg(local.path().join("io500"))
            .args(tests)
            .output()
            .expect("find runs");
        let hits = String::from_utf8_lossy(&posix.stdout).lines().count();
        let total = 4 * 150 + 4; // the files and /io500 with its three directories
        let ours = ctl_ok(&cluster, &[&["find", "/io500"][..], tests].concat());
        assert!(hits > 0, "the test {tests:?} matches something");
        assert!(
            ours.ends_with(&format!("MATCHED {hits}/{total}\n")),
            "{tests:?}: POSIX find has {hits} of {total}; benchfsctl says {}",
            ours.lines().last().unwrap_or("")
        );
    }
}
