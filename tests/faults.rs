//! Faults a cluster must survive: a server killed in the middle of writes and restarted on its
//! data, a host whose link is cut and comes back, a server that stops answering (SIGSTOP) and
//! resumes. Clients get errors within their deadlines, never hangs; the other servers keep
//! serving; what was acknowledged as durable stays intact.

mod common;

use std::time::{Duration, Instant};

use benchfs::client::{Client, OpenFlags};
use benchfs::placement;
use common::{settled, Cluster, Options, Transport};

/// Bytes of file `seed`, different for every file and offset.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_all(client: &mut Client, path: &str) -> Result<Vec<u8>, benchfs::client::Error> {
    let file = client.open(path, OpenFlags::READ, 0)?;
    let mut buf = vec![0u8; file.size() as usize];
    let n = client.read_at(&file, &mut buf, 0)?;
    buf.truncate(n);
    client.close(file)?;
    Ok(buf)
}

fn write_all(client: &mut Client, path: &str, data: &[u8]) -> Result<(), benchfs::client::Error> {
    let mut file = client.create(path, 0o644)?;
    client.write_at(&mut file, data, 0)?;
    client.close(file)
}

/// The rank of the server holding `target`.
fn rank_of(cluster: &Cluster, target: usize) -> u32 {
    let reg = benchfs::registry::Registry::open_existing(&cluster.registry()).unwrap();
    reg.list().unwrap()[target].rank
}

/// Whether reading `path` (inode and first chunk) needs server `rank`.
fn needs(cluster: &Cluster, client: &Client, path: &str, id: u64, rank: u32) -> bool {
    let n = client.target_count();
    rank_of(cluster, placement::inode_target(path, n)) == rank
        || rank_of(cluster, placement::chunk_target(id, 0, n)) == rank
}

/// Every client of these tests has deadlines of a few seconds (the first client of a process
/// also bounds its TCP connects by its deadline).
const DEADLINE: Duration = Duration::from_secs(3);

fn connect(cluster: &Cluster) -> Client {
    if let Some(hosts) = &cluster.hosts {
        hosts.enter(cluster.client_host());
    }
    let mut config = cluster.client_config();
    config.request_timeout = DEADLINE;
    Client::connect(config).unwrap()
}

/// Writes 16 small files and returns (path, file id, seed).
fn spread_files(client: &mut Client, dir: &str) -> Vec<(String, u64, u64)> {
    client.mkdir(dir, 0o755).unwrap();
    (0..16u64)
        .map(|i| {
            let path = format!("{dir}/{i}");
            write_all(client, &path, &content(i, 8192)).unwrap();
            let id = client.stat(&path).unwrap().ino;
            (path, id, i)
        })
        .collect()
}

/// Reads every file while server `rank` is unreachable: those that need it fail with EIO or
/// ETIMEDOUT within the deadline (plus slack), the others read back intact.
fn check_unreachable(
    cluster: &Cluster,
    client: &mut Client,
    files: &[(String, u64, u64)],
    rank: u32,
    deadline: Duration,
) {
    let (mut failed, mut served) = (0, 0);
    for (path, id, seed) in files {
        let started = Instant::now();
        let result = read_all(client, path);
        let took = started.elapsed();
        if needs(cluster, client, path, *id, rank) {
            let err = result.expect_err("a file on the unreachable server cannot be read");
            assert!(
                matches!(err.errno(), libc::EIO | libc::ETIMEDOUT),
                "{path}: {err}"
            );
            assert!(
                took < deadline * 2 + Duration::from_secs(2),
                "took {took:?}"
            );
            failed += 1;
        } else {
            let data = result.unwrap_or_else(|e| panic!("{path} on a live server: {e}"));
            assert!(data == content(*seed, 8192), "{path} damaged");
            served += 1;
        }
    }
    assert!(
        failed > 0 && served > 0,
        "both kinds: {failed} failed, {served} served"
    );
}

/// Reads every file, retrying for a while: the server came back.
fn check_all_served(client: &mut Client, files: &[(String, u64, u64)]) {
    let until = Instant::now() + Duration::from_secs(30);
    for (path, _, seed) in files {
        loop {
            match read_all(client, path) {
                Ok(data) => {
                    assert!(data == content(*seed, 8192), "{path} damaged");
                    break;
                }
                Err(e) if Instant::now() < until => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{path} after the server came back: {e}"),
            }
        }
    }
}

#[test]
fn a_cut_link_fails_that_hosts_operations_and_spares_the_others() {
    let cluster = Cluster::start(Options::new(Transport::Hosts));
    let files = spread_files(&mut connect(&cluster), "/cut");
    // A fresh client: it has yet to connect to the host that is cut.
    let mut client = connect(&cluster);
    let hosts = cluster.hosts.as_ref().unwrap();
    hosts.cut(1);
    check_unreachable(&cluster, &mut client, &files, 1, DEADLINE);
    hosts.restore(1);
    check_all_served(&mut client, &files);
    // New files on every target, the reconnected one included.
    for i in 0..20u64 {
        let path = format!("/cut/new{i}");
        write_all(&mut client, &path, &content(100 + i, 8192)).unwrap();
        assert!(read_all(&mut client, &path).unwrap() == content(100 + i, 8192));
    }
}

#[test]
fn a_stopped_server_times_out_its_operations_and_serves_after_it_resumes() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let files = spread_files(&mut connect(&cluster), "/stopped");
    let mut client = connect(&cluster);
    let pid = cluster.pid(1) as i32;
    // SAFETY: kill has no memory preconditions; the pid is the cluster's live child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let resume = Resume(pid);
    check_unreachable(&cluster, &mut client, &files, 1, DEADLINE);
    drop(resume);
    check_all_served(&mut client, &files);
}

/// Sends SIGCONT on drop, so a failing test does not leave a stopped server behind.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Writes files until the server dies under it (SIGKILL from another thread after
/// `kill_after`), and returns every file acknowledged as durable (closed or fsynced).
fn write_until_killed(
    client: &mut Client,
    dir: &str,
    pid: i32,
    kill_after: Duration,
) -> Vec<(String, u64, usize)> {
    let killer = std::thread::spawn(move || {
        std::thread::sleep(kill_after);
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut durable = Vec::new();
    let mut failures = 0;
    let started = Instant::now();
    for i in 0u64.. {
        let path = format!("{dir}/{i}");
        let seed = i + dir.len() as u64 * 1000;
        let len = [4096, 47008, 1 << 20, (3 << 20) + 17][i as usize % 4];
        let data = content(seed, len);
        let acknowledged = (|| -> Result<bool, benchfs::client::Error> {
            let mut file = client.create(&path, 0o644)?;
            client.write_at(&mut file, &data, 0)?;
            if i % 3 == 0 {
                // Durable after fsync, even if the close below fails.
                client.fsync(&mut file)?;
                durable.push((path.clone(), seed, len));
                client.close(file)?;
                return Ok(false);
            }
            client.close(file)?;
            Ok(true)
        })();
        match acknowledged {
            Ok(true) => durable.push((path, seed, len)),
            Ok(false) => {}
            Err(_) => failures += 1,
        }
        if failures >= 3 || started.elapsed() > kill_after + Duration::from_secs(20) {
            break;
        }
    }
    killer.join().unwrap();
    assert!(failures > 0, "the kill interrupted the writes");
    durable
}

#[test]
fn a_server_killed_during_writes_keeps_every_acknowledged_file() {
    let mut cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut all = Vec::new();
    for round in 0..3 {
        let mut client = connect(&cluster);
        let dir = format!("/kill{round}");
        client.mkdir(&dir, 0o755).unwrap();
        let pid = cluster.pid(1) as i32;
        let durable = write_until_killed(&mut client, &dir, pid, Duration::from_millis(400));
        assert!(!durable.is_empty(), "files were written before the kill");
        all.extend(durable);
        drop(client);
        cluster.restart(1);
        let mut client = connect(&cluster);
        for (path, seed, len) in &all {
            let data = read_all(&mut client, path)
                .unwrap_or_else(|e| panic!("round {round}: {path} acknowledged, now: {e}"));
            assert!(
                data.len() == *len && data == content(*seed, *len),
                "round {round}: {path} acknowledged with {len} bytes, read {} bytes back \
                 that differ",
                data.len()
            );
        }
    }
}

fn killed_clients_are_forgotten(transport: Transport) {
    use std::os::unix::process::CommandExt;
    let cluster = Cluster::start(Options::new(transport));
    let mut load = cluster
        .command_on(None, env!("CARGO_BIN_EXE_benchfs-load"))
        .arg("--registry")
        .arg(cluster.registry())
        .args(["--procs", "4", "--pattern", "shared", "--transfer", "4m"])
        .args(["--block", "256m", "--dir", "/killed"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut client = connect(&cluster);
    // Kill the load (all its processes) while it has transfers in flight on every target.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = client.target_stats().unwrap();
        if stats
            .iter()
            .all(|s| s.connections > 1 && s.bytes_written > 0)
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "the load never reached every target"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill has no memory preconditions; the group is the load's.
    unsafe { libc::kill(-(load.id() as i32), libc::SIGKILL) };
    let _ = load.wait();
    settled(&mut client, 1, Duration::from_secs(20)).unwrap_or_else(|busy| {
        let tail = |rank| {
            let log = cluster.log(rank);
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        panic!(
            "the servers still hold the killed clients':\n{busy}\nserver 0:\n{}\nserver 1:\n{}",
            tail(0),
            tail(1)
        )
    });
    // And they serve as before.
    write_all(&mut client, "/after", &content(7, 1 << 20)).unwrap();
    assert!(read_all(&mut client, "/after").unwrap() == content(7, 1 << 20));
}

#[test]
fn servers_forget_killed_clients_over_tcp() {
    killed_clients_are_forgotten(Transport::Tcp);
}

#[test]
fn servers_forget_killed_clients_between_hosts() {
    killed_clients_are_forgotten(Transport::Hosts);
}

/// A small ext4 file system on a loop device, unmounted on drop.
struct SmallDisk {
    mountpoint: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mib: u32) -> SmallDisk {
        let dir = common::disk_tempdir();
        let image = dir.path().join("disk.img");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().expect("runs (e2fsprogs and mount are needed)");
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(std::process::Command::new("truncate")
            .arg(format!("--size={mib}M"))
            .arg(&image));
        run(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image));
        run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mountpoint));
        SmallDisk {
            mountpoint,
            _dir: dir,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mountpoint)
            .output();
    }
}

#[test]
fn a_full_disk_fails_writes_with_enospc_and_keeps_what_was_written() {
    let disk = SmallDisk::new(96);
    let mut options = Options::new(Transport::Tcp);
    options.servers = 1;
    options.shards = 1;
    options.data_dir = Some(disk.mountpoint.join("data"));
    let cluster = Cluster::start(options);
    let mut client = connect(&cluster);
    let mut written = Vec::new();
    let mut refused = None;
    for i in 0..40u64 {
        let path = format!("/fill{i}");
        let data = content(i, (8 << 20) + 4097);
        match write_all(&mut client, &path, &data) {
            Ok(()) => written.push((path, data)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("a 96 MiB disk fills up");
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    assert!(written.len() >= 4, "only {} files fit", written.len());
    // Everything closed before is intact, and the server still serves reads.
    for (path, data) in &written {
        assert!(
            read_all(&mut client, path).unwrap() == *data,
            "{path} damaged"
        );
    }
    // Freeing space makes writes work again.
    for (path, _) in written.drain(..2) {
        client.unlink(&path).unwrap();
    }
    write_all(&mut client, "/after", &content(99, 4 << 20)).unwrap();
    assert!(read_all(&mut client, "/after").unwrap() == content(99, 4 << 20));
    drop(client);
    drop(cluster);
}

/// A read that failed (its server stopped in the middle of sending the data) must not write
/// into the caller's buffer afterwards, when the server resumes.
#[test]
fn a_failed_read_never_writes_into_the_buffer_later() {
    let mut options = Options::new(Transport::Tcp);
    options.servers = 1;
    options.shards = 1;
    let cluster = Cluster::start(options);
    let mut client = connect(&cluster);
    let len = 64 << 20;
    write_all(&mut client, "/big", &content(5, len)).unwrap();
    write_all(&mut client, "/small", &content(6, 4096)).unwrap();
    let pid = cluster.pid(0) as i32;
    let mut buf = vec![0u8; len];
    let mut failed_reads = 0;
    for attempt in 0..40u64 {
        let file = client.open("/big", OpenFlags::READ, 0).unwrap();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(500 + attempt * 700));
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        });
        let result = client.read_at(&file, &mut buf, 0);
        stopper.join().unwrap();
        let resume = Resume(pid);
        if result.is_ok() {
            drop(resume);
            let _ = client.close(file);
            continue;
        }
        failed_reads += 1;
        buf.fill(0xaa);
        drop(resume);
        // Let the resumed server finish whatever it was sending, and the client progress.
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let _ = read_all(&mut client, "/small");
        }
        let changed = buf.iter().position(|&b| b != 0xaa);
        assert_eq!(
            changed, None,
            "attempt {attempt}: the failed read wrote later"
        );
        let _ = client.close(file);
        if failed_reads >= 3 {
            break;
        }
    }
    assert!(failed_reads > 0, "no read was caught in the middle");
}
