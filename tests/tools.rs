//! The command-line tools as users run them: `benchfsd` refusing bad configuration and
//! unusable directories with a message that says why, `benchfsd` launched by `mpirun`, and
//! `benchfsctl wait`, `status` and `shutdown`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{disk_tempdir, Cluster, Options, Transport};

fn benchfsd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_benchfsd"))
}

fn benchfsctl(registry: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_benchfsctl"));
    cmd.arg("--registry").arg(registry);
    cmd.envs(Transport::Tcp.env());
    cmd
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unknown_configuration_keys_are_named() {
    let dir = disk_tempdir();
    let file = dir.path().join("benchfs.toml");
    std::fs::write(
        &file,
        "registry_dir = \"/r\"\ndata_dir = \"/d\"\nchunk_sise_bytes = 4096\n",
    )
    .unwrap();
    let (ok, text) = run(benchfsd().arg("--config").arg(&file).arg("--print-config"));
    assert!(!ok);
    assert!(text.contains("chunk_sise_bytes"), "{text}");
    let (ok, text) = run(benchfsd()
        .args(["--registry-dir", "/r", "--data-dir", "/d", "--print-config"])
        .env("BENCHFS_CHUNK_SIZE", "1m"));
    assert!(!ok);
    assert!(
        text.contains("BENCHFS_CHUNK_SIZE_BYTES"),
        "the hint names the key: {text}"
    );
}

#[test]
fn flags_win_over_environment_and_file() {
    let dir = disk_tempdir();
    let file = dir.path().join("benchfs.toml");
    std::fs::write(
        &file,
        "registry_dir = \"/r\"\ndata_dir = \"/d\"\nchunk_size_bytes = \"1m\"\nqueue_depth = 7\n",
    )
    .unwrap();
    let (ok, text) = run(benchfsd()
        .arg("--config")
        .arg(&file)
        .args(["--queue-depth", "9", "--print-config"])
        .env("BENCHFS_QUEUE_DEPTH", "8")
        .env("BENCHFS_SLAB_BYTES", "8m"));
    assert!(ok, "{text}");
    assert!(text.contains("queue_depth = 9"), "{text}");
    assert!(text.contains("chunk_size_bytes = \"1MiB\""), "{text}");
    assert!(text.contains("slab_bytes = \"8MiB\""), "{text}");
}

#[test]
fn a_data_directory_on_tmpfs_is_refused_with_the_fix() {
    let registry = disk_tempdir();
    let data = tempfile::tempdir_in("/dev/shm").expect("/dev/shm exists");
    let (ok, text) = run(benchfsd()
        .arg("--registry-dir")
        .arg(registry.path())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--no-numa")
        .envs(Transport::Tcp.env()));
    assert!(!ok);
    assert!(
        text.contains("tmpfs") && text.contains("disk-backed"),
        "{text}"
    );
}

#[test]
fn benchfsctl_wait_status_and_shutdown() {
    let empty = disk_tempdir();
    let registry = empty.path().join("registry");
    benchfs::registry::Registry::open(&registry).unwrap();
    let (ok, text) = run(benchfsctl(&registry).args(["--servers", "2", "wait", "--timeout", "1"]));
    assert!(!ok, "nothing runs: {text}");
    assert!(text.contains("0 of 2 servers up"), "{text}");

    let mut cluster = Cluster::start(Options::new(Transport::Tcp));
    let (ok, text) = run(benchfsctl(&cluster.registry()).args(["wait", "--timeout", "10"]));
    assert!(ok && text.contains("2 servers, 4 targets"), "{text}");
    let (ok, text) = run(benchfsctl(&cluster.registry()).arg("status"));
    assert!(ok, "{text}");
    assert_eq!(
        text.lines().count(),
        5,
        "a header and one line per target: {text}"
    );
    let (ok, text) = run(benchfsctl(&cluster.registry()).arg("shutdown"));
    assert!(ok && text.contains("cluster stopped"), "{text}");
    assert_eq!(cluster.wait_exit(), vec![Some(0), Some(0)]);
}

#[test]
fn mpirun_launches_servers_that_learn_their_rank() {
    let Ok(mpirun) = which("mpirun") else {
        panic!("mpirun is missing: install openmpi-bin (scripts/setup.sh does)");
    };
    let root = disk_tempdir();
    let registry = root.path().join("registry");
    let mut child = Command::new(mpirun)
        .args(["--oversubscribe", "-np", "2"])
        .arg(env!("CARGO_BIN_EXE_benchfsd"))
        .arg("--registry-dir")
        .arg(&registry)
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .args(["--shards", "1", "--no-numa", "--slab-size", "8m"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .envs(Transport::Tcp.env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun starts");
    let waited = run(benchfsctl(&registry).args(["wait", "--timeout", "60"]));
    let stopped = run(benchfsctl(&registry).arg("shutdown"));
    let status = wait_child(&mut child, Duration::from_secs(30));
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        waited.0 && waited.1.contains("2 servers, 2 targets"),
        "{waited:?}\n{log}"
    );
    assert!(stopped.0, "{stopped:?}\n{log}");
    assert_eq!(status, Some(0), "{log}");
    assert!(
        log.contains("server 0 of 2") && log.contains("server 1 of 2"),
        "{log}"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

fn wait_child(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
