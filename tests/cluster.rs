//! The storage node and the client together: a cluster of 2 `benchfsd` processes with 2 shards
//! each, over UCX TCP on loopback, over shared memory, and over TCP between hosts made of
//! network namespaces, driven by client processes (`benchfs-load`) and by an in-process
//! client.

mod common;

use std::time::{Duration, Instant};

use benchfs::client::{Client, DataPath, OpenFlags};
use benchfs::placement;
use common::{Cluster, Options, Transport};

const MIB: usize = 1 << 20;

fn patterns(transport: Transport) {
    let cluster = Cluster::start(Options::new(transport));
    for transfer in ["4m", "1m"] {
        let dir = format!("/fpp-{transfer}");
        cluster.load_ok(&[
            "--procs",
            "4",
            "--pattern",
            "fpp",
            "--transfer",
            transfer,
            "--block",
            "16m",
            "--dir",
            &dir,
        ]);
        let dir = format!("/shared-{transfer}");
        // Every rank creates the one shared file at once; the read phase creates it again from
        // every rank (as IOR does) and then verifies all of it: nothing was truncated.
        cluster.load_ok(&[
            "--procs",
            "4",
            "--pattern",
            "shared",
            "--transfer",
            transfer,
            "--block",
            "16m",
            "--dir",
            &dir,
            "--recreate",
        ]);
    }
}

#[test]
fn file_per_process_and_shared_file_over_tcp() {
    patterns(Transport::Tcp);
}

#[test]
fn file_per_process_and_shared_file_over_shared_memory() {
    patterns(Transport::Shm);
}

#[test]
fn file_per_process_and_shared_file_between_hosts() {
    patterns(Transport::Hosts);
}

fn ior_hard(transport: Transport) {
    let cluster = Cluster::start(Options::new(transport));
    // 4 ranks x 200 interleaved 47008-byte records: every record straddles blocks, many
    // straddle chunks; readers (the next rank) check the size they see and every byte.
    let out = cluster.load_ok(&[
        "--procs",
        "4",
        "--pattern",
        "hard",
        "--transfer",
        "47008",
        "--block",
        "9401600",
        "--dir",
        "/hard",
    ]);
    assert!(out.contains("read "), "{out}");
    let mut client = cluster.client();
    assert_eq!(client.stat("/hard/hard").unwrap().size, 4 * 200 * 47008);
}

#[test]
fn ior_hard_interleaved_records_over_tcp() {
    ior_hard(Transport::Tcp);
}

#[test]
fn ior_hard_interleaved_records_over_shared_memory() {
    ior_hard(Transport::Shm);
}

#[test]
fn ior_hard_interleaved_records_between_hosts() {
    ior_hard(Transport::Hosts);
}

fn pattern_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn aligned_io_copies_nothing(transport: Transport, data_path: DataPath) {
    let cluster = Cluster::start(Options::new(transport));
    let mut config = cluster.client_config();
    config.data_path = data_path;
    let mut client = Client::connect(config).unwrap();
    client.mkdir("/zero", 0o755).unwrap();
    let mut file = client.create("/zero/copy", 0o644).unwrap();
    let data = pattern_bytes(7, 4 * MIB);
    for i in 0..8u64 {
        client
            .write_at(&mut file, &data, i * 4 * MIB as u64)
            .unwrap();
    }
    client.close(file).unwrap();
    let file = client.open("/zero/copy", OpenFlags::READ, 0).unwrap();
    let mut back = vec![0u8; 4 * MIB];
    for i in 0..8u64 {
        assert_eq!(
            client
                .read_at(&file, &mut back, i * 4 * MIB as u64)
                .unwrap(),
            4 * MIB
        );
        assert!(back == data, "chunk {i} read back wrong");
    }
    let stats = client.target_stats().unwrap();
    let written: u64 = stats.iter().map(|s| s.bytes_written).sum();
    let read: u64 = stats.iter().map(|s| s.bytes_read).sum();
    assert_eq!((written, read), (32 * MIB as u64, 32 * MIB as u64));
    for s in &stats {
        assert!(s.bytes_written > 0, "every target took part: {stats:?}");
        assert_eq!(
            s.bytes_copied, 0,
            "target {}.{} copied bytes",
            s.rank, s.shard
        );
    }
    let registrations = client.regcache().registrations();
    match data_path {
        // Two buffers (data, back), each registered once however often it is used.
        DataPath::Rma => assert_eq!(registrations, 2),
        // UCX registers what it sends and receives by rendezvous itself.
        DataPath::Message => assert_eq!(registrations, 0),
    }
}

#[test]
fn aligned_io_copies_nothing_with_messages_over_tcp() {
    aligned_io_copies_nothing(Transport::Tcp, DataPath::Message);
}

#[test]
fn aligned_io_copies_nothing_with_messages_over_shared_memory() {
    aligned_io_copies_nothing(Transport::Shm, DataPath::Message);
}

#[test]
fn aligned_io_copies_nothing_with_rma_and_registers_each_buffer_once() {
    aligned_io_copies_nothing(Transport::Tcp, DataPath::Rma);
    aligned_io_copies_nothing(Transport::Shm, DataPath::Rma);
}

#[test]
fn patterns_over_the_rma_data_path() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let rma = [("BENCHFS_DATA_PATH", "rma")];
    for (pattern, transfer, block) in [
        ("fpp", "4m", "16m"),
        ("shared", "1m", "8m"),
        ("hard", "47008", "4701600"),
    ] {
        let dir = format!("/rma-{pattern}");
        let args = [
            "--procs",
            "4",
            "--pattern",
            pattern,
            "--transfer",
            transfer,
            "--block",
            block,
            "--dir",
            &dir,
        ];
        cluster.load_ok_env(&args, &rma);
    }
}

#[test]
fn unlink_frees_chunks_on_every_target_and_connects_lazily() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut client = cluster.client();
    assert_eq!(
        client.connected_targets(),
        0,
        "no connection before the first request"
    );
    client.stat("/").unwrap();
    assert_eq!(client.connected_targets(), 1, "one request, one connection");
    let mut file = client.create("/big", 0o600).unwrap();
    let data = pattern_bytes(1, 4 * MIB);
    for i in 0..8u64 {
        client
            .write_at(&mut file, &data, i * 4 * MIB as u64)
            .unwrap();
    }
    let id = file.file_id();
    client.close(file).unwrap();
    let on_disk = cluster.chunk_files_of(id);
    assert_eq!(on_disk.len(), 8, "{on_disk:?}");
    let servers: std::collections::BTreeSet<_> = on_disk
        .iter()
        .map(|p| p.to_string_lossy().split("/server-").nth(1).unwrap()[..1].to_string())
        .collect();
    assert_eq!(servers.len(), 2, "chunks on both servers: {on_disk:?}");
    let before = client.statfs().unwrap();
    // The file and the root directory (stored once its entries changed).
    assert_eq!((before.targets, before.files), (4, 2), "{before:?}");
    assert!(
        before.total_bytes > 0 && before.available_bytes <= before.total_bytes,
        "{before:?}"
    );
    client.unlink("/big").unwrap();
    assert_eq!(cluster.chunk_files_of(id), Vec::<std::path::PathBuf>::new());
    assert_eq!(client.statfs().unwrap().files, 1);
    let err = client.stat("/big").unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert_eq!(client.unlink("/big").unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn concurrent_creates_of_one_path_all_succeed_without_truncating() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut client = cluster.client();
    let mut file = client.create("/same", 0o644).unwrap();
    client
        .write_at(&mut file, &pattern_bytes(3, MIB), 0)
        .unwrap();
    client.close(file).unwrap();
    let ids: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut c = cluster.client();
                    let f = c.create("/same", 0o644).unwrap();
                    let id = f.file_id();
                    c.close(f).unwrap();
                    id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one file for all: {ids:?}"
    );
    let file = client.open("/same", OpenFlags::READ, 0).unwrap();
    assert_eq!(file.size(), MIB as u64);
    let mut back = vec![0u8; MIB];
    client.read_at(&file, &mut back, 0).unwrap();
    assert!(back == pattern_bytes(3, MIB));
    let excl = benchfs::client::OpenFlags {
        create: true,
        exclusive: true,
        ..OpenFlags::READ_WRITE
    };
    assert_eq!(
        client.open("/same", excl, 0o644).unwrap_err().errno(),
        libc::EEXIST
    );
}

fn write_file(client: &mut Client, path: &str, seed: u8, len: usize) -> u64 {
    let mut file = client.create(path, 0o644).unwrap();
    client
        .write_at(&mut file, &pattern_bytes(seed, len), 0)
        .unwrap();
    let id = file.file_id();
    client.close(file).unwrap();
    id
}

fn read_file(client: &mut Client, path: &str) -> Result<Vec<u8>, benchfs::client::Error> {
    let file = client.open(path, OpenFlags::READ, 0)?;
    let mut buf = vec![0u8; file.size() as usize];
    let n = client.read_at(&file, &mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn a_server_killed_and_restarted_serves_every_closed_file() {
    let mut cluster = Cluster::start(Options::new(Transport::Tcp));
    cluster.load_ok(&[
        "--procs",
        "4",
        "--phases",
        "write",
        "--block",
        "8m",
        "--transfer",
        "1m",
        "--dir",
        "/before",
    ]);
    let mut client = cluster.client();
    let sizes = [1usize, 4095, 4096, 47008, 3 * MIB + 5, 9 * MIB];
    client.mkdir("/small", 0o755).unwrap();
    for (i, &len) in sizes.iter().enumerate() {
        write_file(&mut client, &format!("/small/{i}"), i as u8, len);
    }
    drop(client);
    cluster.kill(1);
    cluster.restart(1);
    assert!(cluster.log(1).contains("serving"), "{}", cluster.log(1));
    cluster.load_ok(&[
        "--procs",
        "4",
        "--phases",
        "read",
        "--block",
        "8m",
        "--transfer",
        "1m",
        "--dir",
        "/before",
    ]);
    let mut client = cluster.client();
    for (i, &len) in sizes.iter().enumerate() {
        let back = read_file(&mut client, &format!("/small/{i}")).unwrap();
        assert!(
            back == pattern_bytes(i as u8, len),
            "file {i} of {len} bytes damaged"
        );
    }
}

fn dead_server(transport: Transport, timeout: Duration) {
    let mut cluster = Cluster::start(Options::new(transport));
    let mut client = cluster.client();
    let n = client.target_count();
    let mut files = Vec::new();
    client.mkdir("/spread", 0o755).unwrap();
    for i in 0..40 {
        let path = format!("/spread/{i}");
        let id = write_file(&mut client, &path, i as u8, 8192);
        files.push((path, id));
    }
    drop(client);
    cluster.kill(1);
    let mut config = cluster.client_config();
    config.request_timeout = timeout;
    // The registry still lists the dead server's shards (it could not unpublish).
    let mut client = Client::connect(config).unwrap();
    let on_dead = |t: usize| client_targets_rank(&cluster, t) == 1;
    let (mut ok, mut failed) = (0, 0);
    for (path, id) in &files {
        let inode_t = placement::inode_target(path, n);
        let chunk_t = placement::chunk_target(*id, 0, n);
        let started = Instant::now();
        let result = read_file(&mut client, path);
        let took = started.elapsed();
        if on_dead(inode_t) || on_dead(chunk_t) {
            let err = result.expect_err("a file on the dead server cannot be read");
            assert!(matches!(err.errno(), libc::EIO | libc::ETIMEDOUT), "{err}");
            assert!(
                err.to_string().contains("server 1"),
                "the error names the server: {err}"
            );
            assert!(took < timeout * 2 + Duration::from_secs(2), "took {took:?}");
            failed += 1;
        } else {
            let data = result.expect("files on the live server keep working");
            assert!(
                data == pattern_bytes(data_seed(path), 8192),
                "{path} damaged"
            );
            ok += 1;
        }
    }
    assert!(
        ok > 0 && failed > 0,
        "both kinds of files exist: {ok} ok, {failed} failed"
    );
}

fn data_seed(path: &str) -> u8 {
    path.rsplit('/').next().unwrap().parse::<u8>().unwrap()
}

fn client_targets_rank(cluster: &Cluster, target: usize) -> u32 {
    let reg = benchfs::registry::Registry::open_existing(&cluster.registry()).unwrap();
    reg.list().unwrap()[target].rank
}

#[test]
fn a_dead_server_fails_its_operations_and_the_other_keeps_serving_over_tcp() {
    dead_server(Transport::Tcp, Duration::from_secs(5));
}

#[test]
fn a_dead_server_fails_its_operations_and_the_other_keeps_serving_between_hosts() {
    dead_server(Transport::Hosts, Duration::from_secs(5));
}

#[test]
fn a_dead_server_fails_its_operations_and_the_other_keeps_serving_over_shared_memory() {
    // Shared memory cannot detect a dead peer: its operations end at their deadline.
    dead_server(Transport::Shm, Duration::from_secs(2));
}

#[test]
fn full_shards_answer_busy_and_clients_retry() {
    let mut options = Options::new(Transport::Tcp);
    // One 4 MiB slot per shard and a queue of one: most requests of 8 writers are refused
    // as busy at first and must be retried.
    options.slab = "4m";
    options.extra = vec!["--queue-depth".into(), "1".into()];
    let cluster = Cluster::start(options);
    cluster.load_ok(&[
        "--procs",
        "8",
        "--pattern",
        "shared",
        "--block",
        "8m",
        "--transfer",
        "1m",
        "--dir",
        "/busy",
    ]);
    let mut client = cluster.client();
    let stats = client.target_stats().unwrap();
    let busy: u64 = stats.iter().map(|s| s.busy_rejections).sum();
    assert!(busy > 0, "the queue bound was never reached: {stats:?}");
    assert!(stats.iter().all(|s| s.queue_depth_max <= 1), "{stats:?}");
}

#[test]
fn requests_without_the_cluster_secret_are_dropped() {
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    // A copy of the registry with another secret: a client of "another job".
    let fake = common::disk_tempdir();
    let other = benchfs::registry::Registry::open(fake.path()).unwrap();
    assert_ne!(other.secret().unwrap(), cluster_secret(&cluster));
    for entry in std::fs::read_dir(cluster.registry().join("targets")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            fake.path().join("targets").join(entry.file_name()),
        )
        .unwrap();
    }
    let mut config = cluster.client_config();
    config.registry_dir = fake.path().to_path_buf();
    config.request_timeout = Duration::from_secs(1);
    let mut intruder = Client::connect(config).unwrap();
    let err = intruder.create("/intrusion", 0o644).unwrap_err();
    assert_eq!(err.errno(), libc::ETIMEDOUT, "{err}");
    let logs = cluster.log(0) + &cluster.log(1);
    assert!(logs.contains("wrong cluster secret"), "{logs}");
    let mut client = cluster.client();
    assert_eq!(client.stat("/intrusion").unwrap_err().errno(), libc::ENOENT);
}

fn cluster_secret(cluster: &Cluster) -> benchfs::registry::Secret {
    let reg = benchfs::registry::Registry::open_existing(&cluster.registry()).unwrap();
    reg.read_secret().unwrap()
}

#[test]
fn shutdown_request_and_sigterm_stop_servers_cleanly() {
    let mut cluster = Cluster::start(Options::new(Transport::Tcp));
    let mut client = cluster.client();
    write_file(&mut client, "/kept", 9, 100_000);
    client.shutdown_servers().unwrap();
    drop(client);
    assert_eq!(cluster.wait_exit(), vec![Some(0), Some(0)]);
    let reg = benchfs::registry::Registry::open_existing(&cluster.registry()).unwrap();
    assert!(
        reg.list().unwrap().is_empty(),
        "servers removed their entries"
    );
    for rank in 0..2 {
        let log = cluster.log(rank);
        assert!(log.contains("stopped"), "{log}");
    }
    // Started again on the same directories, then stopped by SIGTERM.
    cluster.restart(0);
    cluster.restart(1);
    let mut client = cluster.client();
    assert_eq!(
        read_file(&mut client, "/kept").unwrap(),
        pattern_bytes(9, 100_000)
    );
    drop(client);
    assert_eq!(cluster.terminate(), vec![Some(0), Some(0)]);
}
