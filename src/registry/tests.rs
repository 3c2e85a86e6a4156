//! Tests of the registry: publishing and scanning entries, the secret and its races between
//! threads and processes, permission checks, completeness of clusters, and waiting.

use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

const CHILD_ENV: &str = "REGISTRY_TEST_SECRET_CHILD";

fn entry(rank: u32, shard: u32, shards_of_rank: u32, servers: u32) -> TargetEntry {
    TargetEntry {
        rank,
        shard,
        shards_of_rank,
        servers,
        host: format!("node{rank:02}"),
        pid: 1000 + rank,
        address: vec![0, 0xab, rank as u8, shard as u8, 0xff],
        started_unix_ms: 1_700_000_000_000 + u64::from(rank),
    }
}

fn cluster_entries(servers: u32, shards: u32) -> Vec<TargetEntry> {
    (0..servers)
        .flat_map(|rank| (0..shards).map(move |shard| entry(rank, shard, shards, servers)))
        .collect()
}

fn new_registry() -> (tempfile::TempDir, Registry) {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::open(&tmp.path().join("registry")).unwrap();
    (tmp, registry)
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|item| item.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn open_creates_private_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/registry");
    let registry = Registry::open(&dir).unwrap();
    assert_eq!(registry.dir(), dir);
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("targets")), 0o700);
    Registry::open(&dir).unwrap();
    Registry::open_existing(&dir).unwrap();
}

#[test]
fn publish_list_round_trip() {
    let (_tmp, registry) = new_registry();
    let mut entries = cluster_entries(12, 2);
    entries.reverse();
    for entry in &entries {
        registry.publish(entry).unwrap();
    }
    entries.reverse();
    assert_eq!(registry.list().unwrap(), entries);
    let path = registry.targets.join("target-000011-001.toml");
    assert_eq!(mode_of(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("address = \"00ab0b01ff\""), "{text}");
    assert!(text.contains("host = \"node11\""), "{text}");
}

#[test]
fn publish_replaces_and_leaves_no_temp_files() {
    let (_tmp, registry) = new_registry();
    let mut first = entry(0, 0, 1, 1);
    registry.publish(&first).unwrap();
    first.address = vec![7; 300];
    registry.publish(&first).unwrap();
    assert_eq!(names_in(&registry.targets), ["target-000000-000.toml"]);
    assert_eq!(registry.list().unwrap(), [first]);
}

#[test]
fn list_ignores_leftover_temp_files() {
    let (_tmp, registry) = new_registry();
    registry.publish(&entry(0, 0, 2, 1)).unwrap();
    let leftover = registry.targets.join(".target-000000-001.toml.tmp-99999");
    fs::write(&leftover, "rank = 0\nshard = 1\nhalf a fi").unwrap();
    assert_eq!(registry.list().unwrap(), [entry(0, 0, 2, 1)]);
    assert!(registry.scan().unwrap().problems.is_empty());
}

#[test]
fn publish_refuses_inconsistent_entry() {
    let (_tmp, registry) = new_registry();
    let err = registry.publish(&entry(2, 0, 1, 2)).unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidEntry { rank: 2, .. }),
        "{err}"
    );
    let err = registry.publish(&entry(0, 3, 3, 1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("shard 3 not below shards_of_rank 3"),
        "{err}"
    );
}

#[test]
fn malformed_entries_are_reported_by_name() {
    let (_tmp, registry) = new_registry();
    registry.publish(&entry(0, 0, 2, 1)).unwrap();
    let garbage = registry.targets.join("target-000000-001.toml");
    fs::write(&garbage, "this is = = not toml").unwrap();
    let scan = registry.scan().unwrap();
    assert_eq!(scan.entries, [entry(0, 0, 2, 1)]);
    assert_eq!(scan.problems.len(), 1);
    assert_eq!(scan.problems[0].path, garbage);
    let err = registry.list().unwrap_err();
    assert!(matches!(err, RegistryError::MalformedEntry { ref path, .. } if *path == garbage));
    assert!(err.to_string().contains("target-000000-001.toml"), "{err}");
}

#[test]
fn entry_contents_must_match_name() {
    let (_tmp, registry) = new_registry();
    registry.publish(&entry(0, 0, 2, 1)).unwrap();
    let source = registry.targets.join("target-000000-000.toml");
    fs::copy(&source, registry.targets.join("target-000000-001.toml")).unwrap();
    fs::write(registry.targets.join("target-1-0.toml"), "").unwrap();
    let bad_hex = fs::read_to_string(&source).unwrap().replace("00ab", "zz");
    fs::write(registry.targets.join("target-000000-002.toml"), bad_hex).unwrap();
    let problems = registry.scan().unwrap().problems;
    let reasons: Vec<&str> = problems.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(problems.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("does not match its name"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("not hexadecimal"), "{reasons:?}");
    assert!(reasons[2].contains("unexpected file name"), "{reasons:?}");
}

#[test]
fn secret_is_created_once_and_private() {
    let (_tmp, registry) = new_registry();
    let secret = registry.secret().unwrap();
    assert_eq!(registry.secret().unwrap(), secret);
    assert_eq!(registry.read_secret().unwrap(), secret);
    let path = registry.dir().join("secret");
    assert_eq!(mode_of(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim_end().len(), 32);
    assert!(text.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(names_in(registry.dir()), ["secret", "targets"]);
}

#[test]
fn secret_is_shared_by_racing_threads() {
    let (_tmp, registry) = new_registry();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (barrier, dir) = (Arc::clone(&barrier), registry.dir().to_path_buf());
            thread::spawn(move || {
                barrier.wait();
                Registry::open(&dir).unwrap().secret().unwrap()
            })
        })
        .collect();
    let secrets: Vec<Secret> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(secrets.iter().all(|s| *s == secrets[0]));
    assert_eq!(registry.read_secret().unwrap(), secrets[0]);
    assert_eq!(mode_of(&registry.dir().join("secret")), 0o600);
    assert_eq!(names_in(registry.dir()), ["secret", "targets"]);
}

fn secret_child(dir: &Path) {
    let go = dir.parent().unwrap().join("go");
    let give_up = Instant::now() + Duration::from_secs(30);
    while !go.exists() && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(1));
    }
    let secret = Registry::open(dir).unwrap().secret().unwrap();
    println!("secret-hex={}", encode_hex(secret.as_bytes()));
}

#[test]
fn secret_is_shared_by_racing_processes() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return secret_child(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry");
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, m)| m);
    let test = format!("{module}::secret_is_shared_by_racing_processes");
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", &test, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &dir)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    fs::write(tmp.path().join("go"), "").unwrap();
    let mut secrets = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let stdout = String::from_utf8(output.stdout).unwrap();
        let printed = stdout
            .split("secret-hex=")
            .nth(1)
            .and_then(|rest| rest.get(..32));
        secrets.push(printed.expect("child printed no secret").to_owned());
    }
    let secret = Registry::open_existing(&dir)
        .unwrap()
        .read_secret()
        .unwrap();
    assert!(
        secrets.iter().all(|s| *s == encode_hex(secret.as_bytes())),
        "{secrets:?}"
    );
    assert_eq!(names_in(&dir), ["secret", "targets"]);
}

#[test]
fn secret_with_wide_mode_is_refused() {
    let (_tmp, registry) = new_registry();
    registry.secret().unwrap();
    let path = registry.dir().join("secret");
    for mode in [0o644, 0o640, 0o700] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = registry.read_secret().unwrap_err();
        assert!(
            matches!(err, RegistryError::SecretPermissions { .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        assert!(registry.secret().is_err());
    }
}

#[test]
fn malformed_secret_is_refused() {
    let (_tmp, registry) = new_registry();
    let path = registry.dir().join("secret");
    let bad = [
        "",
        "0123",
        "zz0123456789abcdef0123456789abcd",
        &"ab".repeat(17),
    ];
    for text in bad {
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = registry.read_secret().unwrap_err();
        assert!(
            matches!(err, RegistryError::MalformedSecret { .. }),
            "{text:?}: {err}"
        );
        assert!(registry.secret().is_err());
    }
    fs::write(&path, "00112233445566778899AABBCCDDEEFF").unwrap();
    assert_eq!(registry.read_secret().unwrap().as_bytes()[15], 0xff);
}

#[test]
fn missing_secret_is_reported_to_clients() {
    let (_tmp, registry) = new_registry();
    let err = registry.read_secret().unwrap_err();
    assert!(err.to_string().contains("start the servers first"), "{err}");
}

#[test]
fn secret_debug_hides_bytes_and_eq_compares() {
    let secret = Secret::from_bytes([0x5a; SECRET_LEN]);
    assert_eq!(format!("{secret:?}"), "Secret(<hidden>)");
    assert_eq!(secret, Secret::from_bytes([0x5a; SECRET_LEN]));
    let mut other = [0x5a; SECRET_LEN];
    other[15] = 0x5b;
    assert_ne!(secret, Secret::from_bytes(other));
    assert_ne!(Secret::generate().unwrap(), Secret::generate().unwrap());
}

#[test]
fn writable_registry_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry");
    Registry::open(&dir).unwrap();
    for mode in [0o777, 0o770, 0o702] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        for err in [
            Registry::open(&dir).unwrap_err(),
            Registry::open_existing(&dir).unwrap_err(),
        ] {
            assert!(
                matches!(err, RegistryError::InsecureDirectory { .. }),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!("chmod 700 {}", dir.display())),
                "{message}"
            );
        }
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let targets = dir.join("targets");
    fs::set_permissions(&targets, fs::Permissions::from_mode(0o777)).unwrap();
    let err = Registry::open_existing(&dir).unwrap_err();
    assert!(err
        .to_string()
        .contains(&format!("chmod 700 {}", targets.display())));
}

#[test]
fn registry_must_be_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    fs::write(&file, "").unwrap();
    let err = Registry::open_existing(&file).unwrap_err();
    assert!(matches!(err, RegistryError::NotADirectory { .. }), "{err}");
}

#[test]
fn missing_registry_is_reported_to_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nowhere");
    let err = Registry::open_existing(&dir).unwrap_err();
    let expected = format!(
        "no registry at {}: start the servers first or check --registry",
        dir.display()
    );
    assert_eq!(err.to_string(), expected);
    assert!(!dir.exists());
}

fn incomplete(completeness: &Completeness) -> &Incomplete {
    match completeness {
        Completeness::Incomplete(incomplete) => incomplete,
        other => panic!("expected an incomplete cluster, got {other:?}"),
    }
}

fn inconsistency(completeness: Completeness) -> Inconsistency {
    match completeness {
        Completeness::Inconsistent(detail) => detail,
        other => panic!("expected an inconsistent cluster, got {other:?}"),
    }
}

#[test]
fn complete_cluster() {
    let mut entries = cluster_entries(3, 2);
    entries.push(entry(3, 0, 1, 4));
    for e in &mut entries {
        e.servers = 4;
    }
    entries.swap(0, 5);
    for expected in [None, Some(4)] {
        let Completeness::Complete(cluster) = Cluster::from_entries(entries.clone(), expected)
        else {
            panic!("not complete");
        };
        assert_eq!(cluster.servers(), 4);
        assert_eq!(cluster.entries().len(), 7);
        assert_eq!(cluster.target(3, 0).unwrap().shards_of_rank, 1);
        assert!(cluster.target(3, 1).is_none());
        let order: Vec<_> = cluster
            .entries()
            .iter()
            .map(|e| (e.rank, e.shard))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }
}

#[test]
fn missing_ranks_and_shards() {
    let mut entries = cluster_entries(6, 2);
    entries.retain(|e| e.rank != 2 && e.rank != 4 && e.rank != 5);
    let completeness = Cluster::from_entries(entries.clone(), None);
    let detail = incomplete(&completeness);
    assert_eq!(detail.ranks_up, 3);
    assert_eq!(
        detail.missing,
        [Missing::Ranks(2..=2), Missing::Ranks(4..=5)]
    );
    assert_eq!(
        completeness.to_string(),
        "3 of 6 servers up; missing rank 2, ranks 4-5"
    );
    entries.retain(|e| (e.rank, e.shard) != (1, 0));
    entries.push(entry(2, 1, 4, 6));
    let completeness = Cluster::from_entries(entries, Some(6));
    assert_eq!(
        completeness.to_string(),
        "2 of 6 servers up; missing rank 1 shard 0, rank 2 shards 0,2-3, ranks 4-5"
    );
}

#[test]
fn empty_cluster() {
    let unknown = Cluster::from_entries(Vec::new(), None);
    assert_eq!(unknown.to_string(), "no targets published yet");
    let known = Cluster::from_entries(Vec::new(), Some(4));
    assert_eq!(known.to_string(), "0 of 4 servers up; missing ranks 0-3");
    let zero = inconsistency(Cluster::from_entries(Vec::new(), Some(0)));
    assert_eq!(zero, Inconsistency::NoServersExpected);
}

#[test]
fn inconsistent_server_counts() {
    let mut entries = cluster_entries(2, 1);
    entries.push(entry(3, 0, 1, 4));
    let completeness = Cluster::from_entries(entries, None);
    let message = completeness.to_string();
    assert!(
        message.contains("disagree on the number of servers (2 vs 4)"),
        "{message}"
    );
    assert!(message.contains("stale entries"), "{message}");
    assert_eq!(
        inconsistency(completeness),
        Inconsistency::ServerCounts(vec![2, 4])
    );
}

#[test]
fn expected_count_mismatch() {
    let detail = inconsistency(Cluster::from_entries(cluster_entries(2, 1), Some(3)));
    assert_eq!(
        detail,
        Inconsistency::ExpectedMismatch {
            expected: 3,
            published: 2
        }
    );
    assert_eq!(
        detail.to_string(),
        "expected 3 servers, but the entries say 2"
    );
}

#[test]
fn inconsistent_layouts() {
    let mut duplicate = cluster_entries(1, 2);
    duplicate.push(entry(0, 1, 2, 1));
    let detail = inconsistency(Cluster::from_entries(duplicate, None));
    assert_eq!(detail, Inconsistency::Duplicate { rank: 0, shard: 1 });
    let shard_counts = vec![entry(0, 0, 2, 1), entry(0, 1, 3, 1)];
    let detail = inconsistency(Cluster::from_entries(shard_counts, None));
    assert!(matches!(detail, Inconsistency::ShardCounts { rank: 0, .. }));
    let out_of_range = vec![entry(0, 0, 1, 1), entry(1, 0, 1, 1)];
    let detail = inconsistency(Cluster::from_entries(out_of_range, None));
    assert!(matches!(detail, Inconsistency::OutOfRange { rank: 1, .. }));
}

#[test]
fn wait_returns_once_entries_appear() {
    let (_tmp, registry) = new_registry();
    let publisher = registry.clone();
    let writer = thread::spawn(move || {
        for e in cluster_entries(3, 2) {
            thread::sleep(Duration::from_millis(15));
            publisher.publish(&e).unwrap();
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = registry
        .wait_with(Some(3), deadline, |status| seen.push(status.to_string()))
        .unwrap();
    writer.join().unwrap();
    assert_eq!(entries, cluster_entries(3, 2));
    assert_eq!(seen[0], "0 of 3 servers up; missing ranks 0-2");
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
}

#[test]
fn wait_reports_what_is_missing_at_deadline() {
    let (_tmp, registry) = new_registry();
    for e in cluster_entries(4, 2) {
        if e.rank != 2 {
            registry.publish(&e).unwrap();
        }
    }
    registry.publish(&entry(2, 1, 3, 4)).unwrap();
    let started = Instant::now();
    let err = registry
        .wait(None, started + Duration::from_millis(80))
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(80));
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&registry.dir().display().to_string()),
        "{message}"
    );
    assert!(
        message.ends_with("3 of 4 servers up; missing rank 2 shards 0,2"),
        "{message}"
    );
}

#[test]
fn wait_reports_unusable_entries() {
    let (_tmp, registry) = new_registry();
    registry.publish(&entry(0, 0, 1, 2)).unwrap();
    fs::write(registry.targets.join("target-000001-000.toml"), "rank = ").unwrap();
    let err = registry.wait(None, Instant::now()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("missing rank 1; unusable entries: "),
        "{message}"
    );
    assert!(
        message.contains("target-000001-000.toml: invalid entry"),
        "{message}"
    );
}

#[test]
fn wait_reports_stale_registry() {
    let (_tmp, registry) = new_registry();
    registry.publish(&entry(0, 0, 1, 2)).unwrap();
    registry.publish(&entry(1, 0, 1, 3)).unwrap();
    let err = registry.wait(Some(2), Instant::now()).unwrap_err();
    assert!(matches!(err, RegistryError::Inconsistent { .. }), "{err}");
    let message = err.to_string();
    let targets = registry.dir().join("targets");
    assert!(
        message.contains(&format!("rm -f {}/", targets.display())),
        "{message}"
    );
}

#[test]
fn unpublish_removes_entries() {
    let (_tmp, registry) = new_registry();
    for e in cluster_entries(3, 2) {
        registry.publish(&e).unwrap();
    }
    let leftover = registry.targets.join(".target-000001-000.toml.tmp-4242");
    fs::write(&leftover, "partial").unwrap();
    assert_eq!(registry.unpublish_rank(1).unwrap(), 2);
    assert!(!leftover.exists());
    assert_eq!(registry.unpublish_rank(1).unwrap(), 0);
    registry.unpublish(2, 0).unwrap();
    registry.unpublish(2, 0).unwrap();
    let left: Vec<_> = registry
        .list()
        .unwrap()
        .iter()
        .map(|e| (e.rank, e.shard))
        .collect();
    assert_eq!(left, [(0, 0), (0, 1), (2, 1)]);
}

#[test]
fn entry_names_are_canonical() {
    assert_eq!(entry_file_name(12, 3), "target-000012-003.toml");
    assert_eq!(parse_entry_name("target-000012-003.toml"), Some((12, 3)));
    for bad in [
        "target-12-3.toml",
        "target-000012-003.tom",
        "target-+00012-003.toml",
    ] {
        assert_eq!(parse_entry_name(bad), None, "{bad}");
    }
    assert_eq!(
        decode_hex(&encode_hex(&[0, 1, 254, 255])),
        Some(vec![0, 1, 254, 255])
    );
    assert_eq!(decode_hex("+1"), None);
    assert!(now_unix_ms() / 1000 > 1_600_000_000);
}
