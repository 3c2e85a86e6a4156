//! The namespace on a cluster of 4 servers (1 shard each, UCX over TCP on loopback): a tree
//! made by 4 processes at once, listed, renamed and removed; the errno of every error case;
//! the request cost of each operation, independent of the number of servers; nlink and
//! times; truncate; a server killed in the middle of a tree; rename replacing a file under
//! readers; files whose name changes while they are open; one name changed by two clients
//! at once.
//!
//! The tree's processes are this test binary again, running the ignored test `tree_child`
//! with its role in the environment.

mod common;
#[path = "common/tree.rs"]
mod tree;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benchfs::client::{Client, ClientConfig, EntryKind, OpenFlags, Stat};
use common::{Cluster, Options, Transport};
use tree::{assert_tree, errno_of, pattern, read_file, walk, write_file};

const MIB: u64 = 1 << 20;

fn four_servers() -> Cluster {
    Cluster::start(Options {
        servers: 4,
        shards: 1,
        ..Options::new(Transport::Tcp)
    })
}

fn names(client: &mut Client, dir: &str) -> Vec<String> {
    let entries = client.readdir(dir).unwrap();
    entries.into_iter().map(|e| e.name).collect()
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => panic!("{path} is not absolute"),
    }
}

fn touch(client: &mut Client, path: &str) {
    let file = client
        .create(path, 0o644)
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
    client.close(file).unwrap();
}

// ---------------------------------------------------------------------------------------
// The tree, made by 4 processes.
// ---------------------------------------------------------------------------------------

const ROLE: &str = "NS_TEST_ROLE";
const REGISTRY: &str = "NS_TEST_REGISTRY";
const RANK: &str = "NS_TEST_RANK";
const ROOT: &str = "NS_TEST_ROOT";
const PROCS: usize = 4;
const FANOUT: usize = 10;
const FILES_PER_DIR: usize = 100;
const DATA_EVERY: usize = 10;
const CHILD_TIMEOUT: Duration = Duration::from_secs(180);

/// The directories of the tree, parents first, relative to its root: three levels of 10
/// (`/dI`, `/dI/dJ`, `/dI/dJ/dK`: 10 + 100 + 1,000 directories).
fn tree_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = (0..FANOUT).map(|i| format!("/d{i}")).collect();
    for level in 1..3 {
        let above: Vec<String> = dirs.iter().filter(|d| depth(d) == level).cloned().collect();
        for dir in above {
            dirs.extend((0..FANOUT).map(|i| format!("{dir}/d{i}")));
        }
    }
    dirs
}

fn depth(rel: &str) -> usize {
    rel.matches('/').count()
}

/// The files of the tree, relative to its root: 100 in each of the 100 deepest directories
/// under `/d0` (10,000 files; the other 900 deepest directories stay empty). The whole tree
/// is kept at 11,110 names so that renaming it (which moves every inode) stays quick.
fn tree_files() -> Vec<String> {
    let leaves = tree_dirs()
        .into_iter()
        .filter(|d| depth(d) == 3 && d.starts_with("/d0/"));
    leaves
        .flat_map(|dir| (0..FILES_PER_DIR).map(move |f| format!("{dir}/f{f:03}")))
        .collect()
}

/// The data of file number `index` of the tree: every 10th names its own path.
fn tree_data(index: usize, rel: &str) -> Option<Vec<u8>> {
    (index % DATA_EVERY == 0).then(|| format!("{rel}\n").repeat(3).into_bytes())
}

fn expected_tree(root: &str) -> BTreeMap<String, EntryKind> {
    let dirs = tree_dirs().into_iter().map(|d| (d, EntryKind::Directory));
    let files = tree_files().into_iter().map(|f| (f, EntryKind::File));
    dirs.chain(files)
        .map(|(rel, kind)| (format!("{root}{rel}"), kind))
        .collect()
}

/// Entry point of the tree's processes (see the module documentation).
#[test]
#[ignore = "runs only as a child process of the tree test"]
fn tree_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let rank: usize = std::env::var(RANK).unwrap().parse().unwrap();
    let root = std::env::var(ROOT).unwrap();
    let mut client = child_client();
    match role.as_str() {
        "create" => create_share(&mut client, &root, rank),
        "remove" => remove_share(&mut client, &root, rank),
        other => panic!("unknown role {other}"),
    }
}

fn child_client() -> Client {
    let mut config = ClientConfig::new(std::env::var(REGISTRY).unwrap());
    config.ucx_settings = ["TLS", "NET_DEVICES"]
        .iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(format!("UCX_{k}")).ok()?)))
        .collect();
    config.connect_timeout = Duration::from_secs(30);
    Client::connect(config).expect("client connects")
}

/// Makes every `PROCS`th directory and file from `rank` on; directories by `mkdir -p`, so
/// the processes race on the ancestors they share.
fn create_share(client: &mut Client, root: &str, rank: usize) {
    for rel in tree_dirs().iter().skip(rank).step_by(PROCS) {
        let dir = format!("{root}{rel}");
        client
            .mkdir_all(&dir, 0o755)
            .unwrap_or_else(|e| panic!("mkdir -p {dir}: {e}"));
    }
    let mut parents = HashSet::new();
    for (i, rel) in tree_files().iter().enumerate().skip(rank).step_by(PROCS) {
        let path = format!("{root}{rel}");
        if parents.insert(parent(&path).to_string()) {
            client
                .mkdir_all(parent(&path), 0o755)
                .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent(&path)));
        }
        match tree_data(i, rel) {
            Some(data) => {
                write_file(client, &path, &data).unwrap_or_else(|e| panic!("{path}: {e}"));
            }
            None => touch(client, &path),
        }
    }
}

fn remove_share(client: &mut Client, root: &str, rank: usize) {
    for rel in tree_files().iter().skip(rank).step_by(PROCS) {
        let path = format!("{root}{rel}");
        client
            .unlink(&path)
            .unwrap_or_else(|e| panic!("unlink {path}: {e}"));
    }
}

fn spawn_child(cluster: &Cluster, role: &str, rank: usize, root: &str) -> (Child, PathBuf) {
    let log = cluster.root.path().join(format!("{role}-{rank}.out"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["tree_child", "--exact", "--ignored", "--nocapture"])
        .env(ROLE, role)
        .env(RANK, rank.to_string())
        .env(ROOT, root)
        .env(REGISTRY, cluster.registry())
        .envs(cluster.options.transport.env())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn a tree process");
    (child, log)
}

/// Whether `child` exited successfully before `timeout` (it is killed otherwise).
fn exited_ok(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `role` in `PROCS` processes at once and fails with the output of those that failed.
fn run_processes(cluster: &Cluster, role: &str, root: &str) {
    let spawned: Vec<_> = (0..PROCS)
        .map(|rank| spawn_child(cluster, role, rank, root))
        .collect();
    let failed: Vec<String> = spawned
        .into_iter()
        .enumerate()
        .filter_map(|(rank, (mut child, log))| {
            let ok = exited_ok(&mut child, CHILD_TIMEOUT);
            let output = std::fs::read_to_string(log).unwrap_or_default();
            (!ok).then(|| format!("process {rank} ({role}):\n{output}"))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

fn assert_tree_data(client: &mut Client, root: &str) {
    for (i, rel) in tree_files().iter().enumerate() {
        let path = format!("{root}{rel}");
        let want = tree_data(i, rel).unwrap_or_default();
        let got = read_file(client, &path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        assert!(
            got == want,
            "{path}: {} bytes, not the {} written",
            got.len(),
            want.len()
        );
    }
}

fn stored_chunk_files(client: &mut Client) -> u64 {
    client
        .target_stats()
        .unwrap()
        .iter()
        .map(|s| s.chunk_files)
        .sum()
}

#[test]
fn a_tree_made_by_four_processes_is_listed_renamed_and_removed_exactly() {
    let cluster = four_servers();
    let started = Instant::now();
    run_processes(&cluster, "create", "/tree");
    let mut client = cluster.client();
    assert_tree(&mut client, "/tree", &expected_tree("/tree"));
    assert_eq!(names(&mut client, "/"), ["tree"]);
    assert_tree_data(&mut client, "/tree");
    let sample = "/d0/d3/d7/f042";
    let ino = client.stat(&format!("/tree{sample}")).unwrap().ino;

    client.rename("/tree", "/moved").unwrap();
    assert_tree(&mut client, "/moved", &expected_tree("/moved"));
    assert_eq!(names(&mut client, "/"), ["moved"]);
    assert_eq!(errno_of(client.stat("/tree")), libc::ENOENT);
    assert_eq!(errno_of(client.readdir("/tree")), libc::ENOENT);
    assert_eq!(
        errno_of(client.stat(&format!("/tree{sample}"))),
        libc::ENOENT
    );
    assert_eq!(client.stat(&format!("/moved{sample}")).unwrap().ino, ino);
    assert_tree_data(&mut client, "/moved");

    run_processes(&cluster, "remove", "/moved");
    let dirs_only: BTreeMap<_, _> = expected_tree("/moved")
        .into_iter()
        .filter(|(_, kind)| *kind == EntryKind::Directory)
        .collect();
    assert_tree(&mut client, "/moved", &dirs_only);
    for rel in tree_dirs().iter().rev() {
        client.rmdir(&format!("/moved{rel}")).unwrap();
    }
    client.rmdir("/moved").unwrap();
    assert!(names(&mut client, "/").is_empty());
    assert_eq!(errno_of(client.stat("/moved")), libc::ENOENT);
    assert_eq!(
        client.statfs().unwrap().files,
        1,
        "only the root inode is left"
    );
    assert_eq!(stored_chunk_files(&mut client), 0, "no chunk file is left");
    eprintln!("tree of 11,110 names: {:?}", started.elapsed());
}

#[test]
fn concurrent_mkdir_p_of_the_same_paths_all_succeed() {
    let cluster = four_servers();
    let start = Barrier::new(PROCS);
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PROCS)
            .map(|t| {
                let (cluster, start) = (&cluster, &start);
                s.spawn(move || mkdir_p_race(cluster, start, t))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failures, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut client = cluster.client();
    for i in 0..100 {
        let want: Vec<String> = (0..PROCS).map(|t| format!("t{t}")).collect();
        assert_eq!(names(&mut client, &format!("/race/{i}/a/b")), want);
    }
}

/// Every thread makes the same 100 paths with `mkdir -p` at the same moment, then a file in
/// each: each step must succeed (an `EEXIST` answer means the directory is there to use).
fn mkdir_p_race(cluster: &Cluster, start: &Barrier, thread: usize) -> Vec<String> {
    let mut client = cluster.client();
    let mut failures = Vec::new();
    for i in 0..100 {
        start.wait();
        let dir = format!("/race/{i}/a/b");
        if let Err(e) = client.mkdir_all(&dir, 0o755) {
            failures.push(format!("mkdir -p {dir}: {e}"));
        }
        let file = format!("{dir}/t{thread}");
        match client.create(&file, 0o644) {
            Ok(f) => client.close(f).unwrap(),
            Err(e) => failures.push(format!("create {file}: {e}")),
        }
    }
    failures
}

// ---------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------

/// `/e` holds a file `f`, an empty directory `empty` and a directory `sub` holding a file.
fn error_fixture(client: &mut Client) -> BTreeMap<String, EntryKind> {
    client.mkdir_all("/e/sub", 0o755).unwrap();
    client.mkdir("/e/empty", 0o755).unwrap();
    touch(client, "/e/f");
    touch(client, "/e/sub/x");
    walk(client, "/e").unwrap()
}

fn directory_errors(c: &mut Client) {
    assert_eq!(errno_of(c.rmdir("/e")), libc::ENOTEMPTY);
    assert_eq!(errno_of(c.rmdir("/e/f")), libc::ENOTDIR);
    assert_eq!(errno_of(c.rmdir("/e/nope")), libc::ENOENT);
    assert_eq!(errno_of(c.readdir("/e/f")), libc::ENOTDIR);
    assert_eq!(errno_of(c.readdir("/e/nope")), libc::ENOENT);
    assert_eq!(errno_of(c.mkdir("/e", 0o755)), libc::EEXIST);
    assert_eq!(errno_of(c.mkdir("/e/f", 0o755)), libc::EEXIST);
    assert_eq!(errno_of(c.mkdir("/", 0o755)), libc::EEXIST);
    assert_eq!(errno_of(c.mkdir("/nope/d", 0o755)), libc::ENOENT);
    assert_eq!(errno_of(c.mkdir("/e/f/d", 0o755)), libc::ENOTDIR);
    assert_eq!(errno_of(c.mkdir_all("/e/f/d", 0o755)), libc::ENOTDIR);
    assert_ne!(c.rmdir("/").map_err(|e| e.errno()), Ok(()), "rmdir /");
}

fn file_errors(c: &mut Client) {
    assert_eq!(errno_of(c.create("/nope/f", 0o644)), libc::ENOENT);
    assert_eq!(errno_of(c.create("/e/f/x", 0o644)), libc::ENOTDIR);
    assert_eq!(errno_of(c.create("/e/sub", 0o644)), libc::EISDIR);
    assert_eq!(errno_of(c.unlink("/e/sub")), libc::EISDIR);
    assert_eq!(errno_of(c.unlink("/e/nope")), libc::ENOENT);
    assert_eq!(errno_of(c.open("/e/sub", OpenFlags::READ, 0)), libc::EISDIR);
    assert_eq!(
        errno_of(c.open("/e/nope", OpenFlags::READ, 0)),
        libc::ENOENT
    );
    assert_eq!(errno_of(c.stat("/e/nope")), libc::ENOENT);
    assert_eq!(errno_of(c.truncate("/e/sub", 0)), libc::EISDIR);
    assert_eq!(errno_of(c.truncate("/e/nope", 0)), libc::ENOENT);
    assert_eq!(errno_of(c.access("/e/nope", libc::F_OK)), libc::ENOENT);
    assert_eq!(errno_of(c.access("/e/f", libc::X_OK)), libc::EACCES);
    c.access("/e/f", libc::R_OK | libc::W_OK).unwrap();
    c.access("/e/sub", libc::F_OK).unwrap();
}

fn rename_errors(c: &mut Client) {
    assert_eq!(errno_of(c.rename("/e", "/e/sub/in")), libc::EINVAL);
    assert_eq!(errno_of(c.rename("/e", "/e/empty")), libc::EINVAL);
    assert_eq!(errno_of(c.rename("/e/f", "/e/sub")), libc::EISDIR);
    assert_eq!(errno_of(c.rename("/e/f", "/e/empty")), libc::EISDIR);
    assert_eq!(errno_of(c.rename("/e/empty", "/e/sub")), libc::ENOTEMPTY);
    assert_eq!(errno_of(c.rename("/e/empty", "/e/f")), libc::ENOTDIR);
    assert_eq!(errno_of(c.rename("/e/nope", "/e/x")), libc::ENOENT);
    assert_eq!(errno_of(c.rename("/e/f", "/nope/f")), libc::ENOENT);
    assert_eq!(errno_of(c.rename("/e/sub", "/nope/sub")), libc::ENOENT);
    assert_eq!(errno_of(c.rename("/e/f", "/e/f/x")), libc::ENOTDIR);
    assert_eq!(errno_of(c.rename("/e/empty", "/e/f/x")), libc::ENOTDIR);
}

fn path_errors(c: &mut Client) {
    assert_eq!(errno_of(c.stat("e/f")), libc::EINVAL);
    assert_eq!(errno_of(c.mkdir("e/d", 0o755)), libc::EINVAL);
    assert_eq!(errno_of(c.create("e/g", 0o644)), libc::EINVAL);
    assert_eq!(errno_of(c.stat("/e/sub/../f")), libc::EINVAL);
    assert_eq!(errno_of(c.readdir("/e/..")), libc::EINVAL);
    assert_eq!(errno_of(c.rename("/e/f", "/e/../g")), libc::EINVAL);
}

#[test]
fn every_error_case_returns_its_errno_and_changes_nothing() {
    let cluster = four_servers();
    let mut client = cluster.client();
    let before = error_fixture(&mut client);
    let nlink = client.stat("/e").unwrap().nlink;
    directory_errors(&mut client);
    file_errors(&mut client);
    rename_errors(&mut client);
    path_errors(&mut client);
    assert_tree(&mut client, "/e", &before);
    assert_eq!(names(&mut client, "/"), ["e"]);
    assert_eq!(client.stat("/e").unwrap().nlink, nlink);
    assert_eq!(
        client.statfs().unwrap().files,
        6,
        "root, /e and its four names"
    );
}

#[test]
fn a_path_through_a_file_is_not_a_directory() {
    let cluster = four_servers();
    let mut client = cluster.client();
    touch(&mut client, "/f");
    // POSIX (and Linux): a component of the path prefix names a file -> ENOTDIR.
    assert_eq!(errno_of(client.stat("/f/x")), libc::ENOTDIR, "stat");
    assert_eq!(
        errno_of(client.open("/f/x", OpenFlags::READ, 0)),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(client.mkdir("/f/x/y", 0o755)),
        libc::ENOTDIR,
        "mkdir"
    );
    assert_eq!(errno_of(client.create("/f/x/y", 0o644)), libc::ENOTDIR);
}

#[test]
fn create_of_the_root_is_a_directory_error() {
    let cluster = four_servers();
    let mut client = cluster.client();
    // open("/", O_CREAT | O_RDWR) fails with EISDIR, as for any other directory.
    assert_eq!(errno_of(client.create("/", 0o644)), libc::EISDIR);
}

// ---------------------------------------------------------------------------------------
// Requests per operation.
// ---------------------------------------------------------------------------------------

/// Bytes of names a readdir page carries at most (the server's page), each entry counting
/// its name and 3 bytes.
const READDIR_PAGE_BYTES: u64 = 32 << 10;
const WIDE_ENTRIES: u64 = 1000;
const WIDE_NAME_BYTES: u64 = 100;

fn cost(client: &mut Client, op: impl FnOnce(&mut Client)) -> u64 {
    let before = client.requests_sent();
    op(client);
    client.requests_sent() - before
}

fn wide_name(i: u64) -> String {
    format!("{i:0width$}", width = WIDE_NAME_BYTES as usize)
}

/// The requests each operation costs on a cluster of `servers` servers.
fn request_costs(servers: u32) -> Vec<(&'static str, u64)> {
    let mut options = Options::new(Transport::Tcp);
    (options.servers, options.shards) = (servers, 1);
    let cluster = Cluster::start(options);
    let mut c = cluster.client();
    let mut costs = vec![("mkdir", cost(&mut c, |c| c.mkdir("/c", 0o755).unwrap()))];
    let creates: HashSet<u64> = (0..50)
        .map(|i| cost(&mut c, |c| touch(c, &format!("/c/f{i:02}"))))
        .collect();
    assert_eq!(creates.len(), 1, "every create costs the same: {creates:?}");
    costs.push(("create (each of 50)", creates.into_iter().next().unwrap()));
    costs.push((
        "readdir of 50",
        cost(&mut c, |c| assert_eq!(c.readdir("/c").unwrap().len(), 50)),
    ));
    costs.push((
        "stat",
        cost(&mut c, |c| assert_eq!(c.stat("/c/f00").unwrap().size, 0)),
    ));
    costs.push((
        "rename of a file",
        cost(&mut c, |c| c.rename("/c/f00", "/c/g").unwrap()),
    ));
    costs.push((
        "unlink of an empty file",
        cost(&mut c, |c| c.unlink("/c/g").unwrap()),
    ));
    c.mkdir("/w", 0o755).unwrap();
    for i in 0..WIDE_ENTRIES {
        touch(&mut c, &format!("/w/{}", wide_name(i)));
    }
    let listed = |c: &mut Client| assert_eq!(c.readdir("/w").unwrap().len() as u64, WIDE_ENTRIES);
    costs.push(("readdir of 1000", cost(&mut c, listed)));
    costs.push((
        "first page",
        cost(&mut c, |c| drop(c.readdir_page("/w", "").unwrap())),
    ));
    c.mkdir("/c/empty", 0o755).unwrap();
    costs.push(("rmdir", cost(&mut c, |c| c.rmdir("/c/empty").unwrap())));
    costs
}

#[test]
fn namespace_operations_cost_the_same_requests_on_one_server_and_on_four() {
    let four = request_costs(4);
    let one = request_costs(1);
    assert_eq!(four, one, "no operation may cost requests per server");
    let of = |name: &str| four.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(of("mkdir"), 2, "{four:?}");
    assert_eq!(of("create (each of 50)"), 2, "{four:?}");
    assert_eq!(of("readdir of 50"), 1, "{four:?}");
    assert_eq!(of("stat"), 1, "{four:?}");
    assert_eq!(of("first page"), 1, "{four:?}");
    let per_page = READDIR_PAGE_BYTES / (WIDE_NAME_BYTES + 3);
    assert_eq!(
        of("readdir of 1000"),
        WIDE_ENTRIES.div_ceil(per_page),
        "{four:?}"
    );
}

// ---------------------------------------------------------------------------------------
// nlink and times.
// ---------------------------------------------------------------------------------------

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn assert_recent(stat: &Stat, since: i64) {
    let until = now_ns() + 2_000_000_000;
    let since = since - 2_000_000_000;
    for (name, t) in [
        ("atime", stat.atime_ns),
        ("mtime", stat.mtime_ns),
        ("ctime", stat.ctime_ns),
    ] {
        assert!(
            (since..until).contains(&t),
            "{name} {t} is not the wall-clock time {since}"
        );
    }
}

#[test]
fn directory_nlink_counts_subdirectories() {
    let cluster = four_servers();
    let mut c = cluster.client();
    assert_eq!(c.stat("/").unwrap().nlink, 2);
    c.mkdir("/n", 0o755).unwrap();
    assert_eq!(
        (c.stat("/n").unwrap().nlink, c.stat("/").unwrap().nlink),
        (2, 3)
    );
    for i in 0..5 {
        c.mkdir(&format!("/n/s{i}"), 0o755).unwrap();
    }
    touch(&mut c, "/n/file");
    assert_eq!(
        c.stat("/n").unwrap().nlink,
        7,
        "5 subdirectories; files do not count"
    );
    c.rmdir("/n/s0").unwrap();
    c.rmdir("/n/s1").unwrap();
    assert_eq!(c.stat("/n").unwrap().nlink, 5);
    c.rename("/n/s2", "/n/s9").unwrap();
    assert_eq!(
        c.stat("/n").unwrap().nlink,
        5,
        "a rename within the directory"
    );
    c.rename("/n/s3", "/moved").unwrap();
    assert_eq!(
        (c.stat("/n").unwrap().nlink, c.stat("/").unwrap().nlink),
        (4, 4)
    );
    c.mkdir_all("/moved/a/b", 0o755).unwrap();
    c.rename("/moved", "/n/back").unwrap();
    let nlinks =
        ["/", "/n", "/n/back", "/n/back/a", "/n/back/a/b"].map(|p| c.stat(p).unwrap().nlink);
    assert_eq!(
        nlinks,
        [3, 5, 3, 3, 2],
        "after moving a directory with its subtree"
    );
    assert_eq!(c.stat("/n/file").unwrap().nlink, 1);
}

#[test]
fn a_new_file_and_its_directory_have_wall_clock_times() {
    let cluster = four_servers();
    let mut c = cluster.client();
    let start = now_ns();
    c.mkdir("/t", 0o755).unwrap();
    let dir = c.stat("/t").unwrap();
    assert_recent(&dir, start);
    touch(&mut c, "/t/f");
    assert_recent(&c.stat("/t/f").unwrap(), start);
    let dir_after = c.stat("/t").unwrap();
    assert!(dir_after.mtime_ns > dir.mtime_ns, "a new entry moves mtime");
    assert!(dir_after.ctime_ns > dir.ctime_ns, "a new entry moves ctime");
    c.unlink("/t/f").unwrap();
    let dir_last = c.stat("/t").unwrap();
    assert!(
        dir_last.mtime_ns > dir_after.mtime_ns,
        "a removed entry moves mtime"
    );
    assert_recent(&dir_last, start);
}

#[test]
fn write_truncate_and_rename_move_the_times_posix_says() {
    let cluster = four_servers();
    let mut c = cluster.client();
    let start = now_ns();
    let mut file = c.create("/f", 0o644).unwrap();
    let created = c.stat("/f").unwrap();
    c.write_at(&mut file, &pattern(1, 4096), 0).unwrap();
    c.close(file).unwrap();
    let written = c.stat("/f").unwrap();
    assert!(
        written.mtime_ns > created.mtime_ns,
        "write + close moves mtime"
    );
    assert!(
        written.ctime_ns > created.ctime_ns,
        "write + close moves ctime"
    );

    c.truncate("/f", 100).unwrap();
    let truncated = c.stat("/f").unwrap();
    assert!(
        truncated.mtime_ns > written.mtime_ns,
        "truncate moves mtime"
    );
    assert!(
        truncated.ctime_ns > written.ctime_ns,
        "truncate moves ctime"
    );

    c.rename("/f", "/g").unwrap();
    let renamed = c.stat("/g").unwrap();
    assert!(renamed.ctime_ns > truncated.ctime_ns, "rename moves ctime");
    assert_eq!(renamed.mtime_ns, truncated.mtime_ns, "rename keeps mtime");
    assert_eq!((renamed.ino, renamed.size), (truncated.ino, 100));
    assert_recent(&renamed, start);
}

// ---------------------------------------------------------------------------------------
// Truncate.
// ---------------------------------------------------------------------------------------

fn read_range(c: &mut Client, path: &str, offset: u64, len: usize) -> Vec<u8> {
    let file = c.open(path, OpenFlags::READ, 0).unwrap();
    let mut buf = vec![0xeeu8; len];
    let n = c.read_at(&file, &mut buf, offset).unwrap();
    buf.truncate(n);
    buf
}

/// Cuts the 10 MiB file `/big` (chunks 0, 1, 2) to `cut` bytes, inside chunk 1.
fn shrink(c: &mut Client, cluster: &Cluster, data: &[u8], cut: u64) {
    let ino = c.stat("/big").unwrap().ino;
    c.truncate("/big", cut).unwrap();
    assert_eq!(c.stat("/big").unwrap().size, cut);
    assert!(read_range(c, "/big", 0, (12 * MIB) as usize) == data[..cut as usize]);
    let tail = read_range(c, "/big", cut - 23, 1000);
    assert_eq!(tail.len(), 23, "short read at the end");
    assert!(read_range(c, "/big", cut, 1000).is_empty());
    assert!(read_range(c, "/big", 8 * MIB, 1000).is_empty());
    assert_eq!(
        cluster.chunk_files_of(ino).len(),
        2,
        "the third chunk is gone"
    );
}

/// Grows `/big` (cut to `cut` bytes) to 12 MiB: what lay beyond the cut must not come back.
fn grow(c: &mut Client, data: &[u8], cut: u64) {
    c.truncate("/big", 12 * MIB).unwrap();
    assert_eq!(c.stat("/big").unwrap().size, 12 * MIB);
    let grown = read_range(c, "/big", 0, (12 * MIB) as usize);
    assert_eq!(grown.len() as u64, 12 * MIB);
    assert!(
        grown[..cut as usize] == data[..cut as usize],
        "kept bytes intact"
    );
    let stale = grown[cut as usize..].iter().position(|&b| b != 0);
    let stale = stale.map(|p| p as u64 + cut);
    assert_eq!(stale, None, "the grown region reads as zeros");
}

#[test]
fn truncate_cuts_and_grows_with_zeros_and_frees_chunks() {
    let cluster = four_servers();
    let mut c = cluster.client();
    let data = pattern(7, (10 * MIB) as usize);
    let ino = write_file(&mut c, "/big", &data).unwrap();
    assert_eq!(c.stat("/big").unwrap().ino, ino);
    assert_eq!(
        cluster.chunk_files_of(ino).len(),
        3,
        "4 MiB chunks on 3 targets"
    );
    let cut = 5 * MIB + 123;
    shrink(&mut c, &cluster, &data, cut);
    grow(&mut c, &data, cut);

    c.truncate("/big", 0).unwrap();
    assert_eq!(c.stat("/big").unwrap().size, 0);
    assert!(read_range(&mut c, "/big", 0, 4096).is_empty());
    let left = cluster.chunk_files_of(ino);
    assert_eq!(left, Vec::<PathBuf>::new(), "truncate to 0 frees chunks");
    c.unlink("/big").unwrap();
    let left = cluster.chunk_files_of(ino);
    assert_eq!(left, Vec::<PathBuf>::new(), "unlink frees chunks");
}

#[test]
fn writing_after_a_truncate_to_zero_shows_no_old_data() {
    let cluster = four_servers();
    let mut c = cluster.client();
    write_file(&mut c, "/f", &pattern(3, (6 * MIB) as usize)).unwrap();
    c.truncate("/f", 0).unwrap();
    let mut file = c.open("/f", OpenFlags::READ_WRITE, 0).unwrap();
    c.write_at(&mut file, b"new", 5 * MIB).unwrap();
    c.close(file).unwrap();
    let back = read_file(&mut c, "/f").unwrap();
    assert_eq!(back.len() as u64, 5 * MIB + 3);
    let stale = back[..(5 * MIB) as usize].iter().position(|&b| b != 0);
    assert_eq!(stale, None, "the hole before the new data reads as zeros");
    assert_eq!(&back[(5 * MIB) as usize..], b"new");
}

// ---------------------------------------------------------------------------------------
// A server killed and restarted in the middle of a tree.
// ---------------------------------------------------------------------------------------

/// Part `part` of the restart tree: `/r/pP/dI/fJ` for I, J < 10, every 5th file with data.
fn make_part(c: &mut Client, part: usize) -> BTreeMap<String, EntryKind> {
    let mut made = BTreeMap::new();
    let top = format!("/r/p{part}");
    c.mkdir_all(&top, 0o755).unwrap();
    made.insert(top.clone(), EntryKind::Directory);
    for i in 0..10 {
        let dir = format!("{top}/d{i}");
        c.mkdir(&dir, 0o755).unwrap();
        made.insert(dir.clone(), EntryKind::Directory);
        for j in 0..10 {
            let path = format!("{dir}/f{j}");
            match restart_data(&path) {
                Some(data) => drop(write_file(c, &path, &data).unwrap()),
                None => touch(c, &path),
            }
            made.insert(path, EntryKind::File);
        }
    }
    made
}

/// The data of a file of the restart tree (the same under another top directory).
fn restart_data(path: &str) -> Option<Vec<u8>> {
    let j: usize = path.rsplit("/f").next()?.parse().ok()?;
    let tail = &path[path.rfind("/d")?..];
    (j % 5 == 0).then(|| tail.repeat(1000).into_bytes())
}

fn assert_restart_tree(c: &mut Client, expected: &BTreeMap<String, EntryKind>) {
    assert_tree(c, "/r", expected);
    for path in expected.keys() {
        if let Some(data) = restart_data(path) {
            assert!(read_file(c, path).unwrap() == data, "{path} damaged");
        }
    }
}

#[test]
fn a_server_killed_in_the_middle_of_a_tree_keeps_everything_made_before() {
    let mut cluster = four_servers();
    let mut expected = BTreeMap::new();
    {
        let mut c = cluster.client();
        for part in 0..3 {
            expected.append(&mut make_part(&mut c, part));
        }
    }
    cluster.kill(1);
    cluster.restart(1);
    let mut c = cluster.client();
    assert_restart_tree(&mut c, &expected);
    for part in 3..6 {
        expected.append(&mut make_part(&mut c, part));
    }
    c.rename("/r/p0", "/r/p9").unwrap();
    let moved: Vec<_> = expected
        .keys()
        .filter(|p| p.starts_with("/r/p0"))
        .cloned()
        .collect();
    for path in moved {
        let kind = expected.remove(&path).unwrap();
        expected.insert(path.replacen("/r/p0", "/r/p9", 1), kind);
    }
    assert_restart_tree(&mut c, &expected);
}

// ---------------------------------------------------------------------------------------
// Rename replacing a file, under readers.
// ---------------------------------------------------------------------------------------

const VERSION_BYTES: usize = 8192;
const RENAMES: u64 = 200;

/// Version `v` of the file: its number, then data of its own.
fn version(v: u64) -> Vec<u8> {
    let mut data = v.to_le_bytes().to_vec();
    data.extend(pattern(1000 + v, VERSION_BYTES - 8));
    data
}

/// Creates `/x/a` with each version and renames it onto `/x/b`.
fn replace_loop(cluster: &Cluster, done: &AtomicBool) {
    let mut c = cluster.client();
    for v in 1..=RENAMES {
        write_file(&mut c, "/x/a", &version(v)).unwrap();
        c.rename("/x/a", "/x/b").unwrap();
    }
    done.store(true, Ordering::Release);
}

/// Reads `/x/b` until `done`; returns the reads made and the failures seen.
fn read_loop(cluster: &Cluster, done: &AtomicBool) -> (u64, Vec<String>) {
    let mut c = cluster.client();
    let (mut reads, mut failures) = (0, Vec::new());
    while !done.load(Ordering::Acquire) {
        reads += 1;
        match c.stat("/x/b") {
            Ok(st) if st.size == VERSION_BYTES as u64 => {}
            Ok(st) => failures.push(format!("stat: size {}", st.size)),
            Err(e) => failures.push(format!("stat: {e}")),
        }
        match read_file(&mut c, "/x/b") {
            Ok(data) if is_a_version(&data) => {}
            // A reader that opened the replaced file may read zeros: the data of a replaced
            // (or unlinked) file is freed at once, even while open (a documented limitation).
            Ok(data) if data.len() == VERSION_BYTES && data.iter().all(|&b| b == 0) => {}
            Ok(data) => failures.push(format!("read: {}", describe(&data))),
            Err(e) => failures.push(format!("read: {e}")),
        }
    }
    (reads, failures)
}

fn describe(data: &[u8]) -> String {
    let zeros = data.iter().filter(|&&b| b == 0).count();
    format!("{} bytes of no version ({zeros} of them zeros)", data.len())
}

fn is_a_version(data: &[u8]) -> bool {
    data.len() == VERSION_BYTES
        && data == version(u64::from_le_bytes(data[..8].try_into().unwrap()))
}

#[test]
fn rename_onto_a_file_replaces_it_atomically_for_readers() {
    let cluster = four_servers();
    let mut c = cluster.client();
    c.mkdir("/x", 0o755).unwrap();
    write_file(&mut c, "/x/b", &version(0)).unwrap();
    let done = AtomicBool::new(false);
    let (reads, failures) = std::thread::scope(|s| {
        let reader = s.spawn(|| read_loop(&cluster, &done));
        replace_loop(&cluster, &done);
        reader.join().unwrap()
    });
    assert!(reads > 10, "the reader ran alongside ({reads} reads)");
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(read_file(&mut c, "/x/b").unwrap() == version(RENAMES));
    assert_eq!(names(&mut c, "/x"), ["b"]);
    assert_eq!(
        c.statfs().unwrap().files,
        3,
        "root, /x and /x/b: replaced inodes are gone"
    );
    assert_eq!(
        stored_chunk_files(&mut c),
        1,
        "replaced files' chunks are freed"
    );
}

// ---------------------------------------------------------------------------------------
// Files open while their name changes.
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// One name removed and created at once.
// ---------------------------------------------------------------------------------------

const ROUNDS: usize = 200;

/// Each round one thread makes `/m/N` a directory while the other creates it as a file.
fn mkdir_create_rounds(cluster: &Cluster, turn: &Barrier, as_dir: bool) -> Vec<bool> {
    let mut c = cluster.client();
    (0..ROUNDS)
        .map(|round| {
            let path = format!("/m/{round}");
            turn.wait();
            if as_dir {
                c.mkdir(&path, 0o755).is_ok()
            } else {
                c.create(&path, 0o644).and_then(|f| c.close(f)).is_ok()
            }
        })
        .collect()
}

/// What `path` is, by its parent's listing and by its own inode.
fn kinds_of(c: &mut Client, path: &str) -> (Option<EntryKind>, Option<bool>) {
    let listed = c.readdir(parent(path)).unwrap();
    let name = &path[path.rfind('/').unwrap() + 1..];
    let entry = listed.into_iter().find(|e| e.name == name).map(|e| e.kind);
    let is_dir = c
        .stat(path)
        .ok()
        .map(|st| st.mode & libc::S_IFMT == libc::S_IFDIR);
    (entry, is_dir)
}

#[test]
fn mkdir_and_create_of_one_name_at_once_make_exactly_one_of_them() {
    let cluster = four_servers();
    let mut c = cluster.client();
    c.mkdir("/m", 0o755).unwrap();
    let turn = Barrier::new(2);
    let (dirs, files) = std::thread::scope(|s| {
        let files = s.spawn(|| mkdir_create_rounds(&cluster, &turn, false));
        let dirs = mkdir_create_rounds(&cluster, &turn, true);
        (dirs, files.join().unwrap())
    });
    let mut broken = Vec::new();
    for round in 0..ROUNDS {
        let path = format!("/m/{round}");
        let made = (dirs[round], files[round]);
        let kinds = kinds_of(&mut c, &path);
        let agree = match made {
            (true, false) => kinds == (Some(EntryKind::Directory), Some(true)),
            (false, true) => kinds == (Some(EntryKind::File), Some(false)),
            _ => false,
        };
        if !agree {
            broken.push(format!(
                "{path}: mkdir ok {}, create ok {}, {kinds:?}",
                made.0, made.1
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "{} of {ROUNDS} rounds: (listed kind, inode is a directory) {:?}",
        broken.len(),
        &broken[..broken.len().min(3)]
    );
}
