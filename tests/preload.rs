//! The LD_PRELOAD library (`libbenchfs_preload.so`) seen from the servers: programs under it
//! connect on first use, publish what they wrote and disconnect at exit (also when they exit
//! with files open, by `exit` or `_exit`), fork children connect on their own and leave nothing behind; over TCP on
//! loopback, shared memory, and between hosts (network namespaces). The programs themselves
//! (cp, tar, find, Python, fio, ...) are exercised by `scripts/test_posix.sh`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use benchfs::client::Client;
use common::{settled, Cluster, Options, Transport};

const MOUNT: &str = "/benchfs-preload-test";

/// The release build of the preload library (built once per test run).
fn library() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "-p", "benchfs-preload"])
            .current_dir(root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building benchfs-preload failed");
        let lib = root.join("target/release/libbenchfs_preload.so");
        assert!(lib.exists(), "{} missing after the build", lib.display());
        lib
    })
}

/// `program` under the preload, as a client of `cluster`.
fn under_preload(cluster: &Cluster, program: &str) -> Command {
    let mut cmd = cluster.client_command(program);
    cmd.env("LD_PRELOAD", library()).env("BENCHFS_MOUNT", MOUNT);
    cmd
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start the program");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn size(client: &mut Client, path: &str) -> u64 {
    client
        .stat(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .size
}

fn compile(source: &str, exe: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(exe)
        .arg(root.join(source)));
}

fn programs_connect_publish_and_disconnect(transport: Transport) {
    let cluster = Cluster::start(Options::new(transport));
    let mut client = cluster.client();
    let local = common::disk_tempdir();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    std::fs::write(local.path().join("in"), &data).unwrap();

    // A program that never touches BenchFS does not connect.
    run(under_preload(&cluster, "ls").arg(local.path()));
    settled(&mut client, 1, Duration::from_secs(5)).unwrap();

    run(under_preload(&cluster, "cp")
        .arg(local.path().join("in"))
        .arg(format!("{MOUNT}/copied")));
    assert_eq!(size(&mut client, "/copied"), data.len() as u64);
    settled(&mut client, 1, Duration::from_secs(10))
        .unwrap_or_else(|busy| panic!("cp left connections behind:\n{busy}"));

    // Exit with a file still open: the exit handler publishes its size, then disconnects.
    run(under_preload(&cluster, "python3").args([
        "-c",
        &format!(
            "import os\nfd = os.open('{MOUNT}/unclosed', os.O_CREAT | os.O_WRONLY, 0o644)\n\
             os.write(fd, b'x' * 123457)\n"
        ),
    ]));
    assert_eq!(size(&mut client, "/unclosed"), 123457);
    // The same with `_exit`, which skips exit handlers (shells and forked workers end so).
    run(under_preload(&cluster, "python3").args([
        "-c",
        &format!(
            "import os\nfd = os.open('{MOUNT}/unclosed-exit', os.O_CREAT | os.O_WRONLY, 0o644)\n\
             os.write(fd, b'y' * 4321)\nos._exit(0)\n"
        ),
    ]));
    assert_eq!(size(&mut client, "/unclosed-exit"), 4321);
    settled(&mut client, 1, Duration::from_secs(10))
        .unwrap_or_else(|busy| panic!("an exit with an open file left:\n{busy}"));

    // A parent and its forked child, each with its own connection; and an exec'd program
    // that cannot use the BenchFS descriptor it inherited.
    let fork_write = local.path().join("fork_write");
    let write_fd3 = local.path().join("write_fd3");
    compile("tests/posix/fork_write.c", &fork_write);
    compile("tests/posix/write_fd3.c", &write_fd3);
    client.mkdir("/fork", 0o755).unwrap();
    let out = run(under_preload(&cluster, fork_write.to_str().unwrap())
        .arg(format!("{MOUNT}/fork"))
        .arg(&write_fd3));
    assert!(out.contains("read back"), "{out}");
    assert_eq!(size(&mut client, "/fork/shared"), 2 << 20);
    assert_eq!(size(&mut client, "/fork/child"), 4096);
    settled(&mut client, 1, Duration::from_secs(10))
        .unwrap_or_else(|busy| panic!("the forked child left:\n{busy}"));

    // What cp wrote is what was read: BenchFS holds it, nothing went to the local disk.
    let mut back = vec![0u8; data.len()];
    let file = client
        .open("/copied", benchfs::client::OpenFlags::READ, 0)
        .unwrap();
    assert_eq!(client.read_at(&file, &mut back, 0).unwrap(), data.len());
    assert!(back == data, "the copy differs");
    assert!(
        !Path::new(MOUNT).exists(),
        "{MOUNT} appeared on the local disk"
    );
}

#[test]
fn programs_connect_publish_and_disconnect_over_tcp() {
    programs_connect_publish_and_disconnect(Transport::Tcp);
}

#[test]
fn programs_connect_publish_and_disconnect_over_shared_memory() {
    programs_connect_publish_and_disconnect(Transport::Shm);
}

#[test]
fn programs_connect_publish_and_disconnect_between_hosts() {
    programs_connect_publish_and_disconnect(Transport::Hosts);
}
