//! `scripts/run_ior_simple.sh` as users run it on one machine, with real servers started by
//! `mpirun` and stand-ins for IOR: it refuses to start anything without an IOR and says how
//! to build one, it stops the servers when IOR fails and exits non-zero, and it hands IOR
//! the BENCHFS backend, the registry and the JSON summary options while the servers are up,
//! without its own settings in IOR's environment.

mod common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{disk_tempdir, Transport};

/// Every run starts servers on the two shared cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A run of the script ends well within this, or the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// What one run of the script left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_benchfsd"))
        .parent()
        .expect("benchfsd has a directory")
        .to_path_buf()
}

/// PATH without any directory that holds an `ior`, so that only `IOR` can name one.
fn path_without_ior() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("ior").exists())
        .collect();
    std::env::join_paths(dirs).expect("PATH joins")
}

/// Runs the script with `args`, its output directory `out`, the cargo-built servers and the
/// environment `env` (on top of a clean one: no BENCHFS_ variables of the caller, no IOR).
fn run_script(out: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let logs = disk_tempdir();
    let stdout_path = logs.path().join("stdout");
    let stderr_path = logs.path().join("stderr");
    let mut cmd =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run_ior_simple.sh"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BENCHFS_") || name == "IOR" {
            cmd.env_remove(&name);
        }
    }
    cmd.env("PATH", path_without_ior())
        .env("BENCHFS_BIN_DIR", bin_dir())
        .env("BENCHFS_OUT_DIR", out)
        .env("BENCHFS_WAIT_TIMEOUT", "60")
        .envs(Transport::Tcp.env())
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap());
    let mut child = cmd.spawn().expect("the script starts");
    let deadline = Instant::now() + RUN_DEADLINE;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the script ran longer than {RUN_DEADLINE:?}:\n{}",
                fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code,
        stdout: fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

/// Pids of running `benchfsd` processes whose command line names `path` (or a path inside it).
fn servers_under(path: &Path) -> Vec<u32> {
    let wanted = path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'));
        if comm.trim() != "benchfsd" || zombie {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&wanted) {
            found.push(pid);
        }
    }
    found
}

/// Checks that the run stopped its servers gracefully and left no registry entries.
fn assert_stopped_cleanly(out: &Path, run: &Run) {
    assert!(
        run.stderr.contains("cluster stopped"),
        "benchfsctl shutdown stopped the servers: {}",
        run.text()
    );
    assert_eq!(servers_under(out), Vec::<u32>::new(), "{}", run.text());
    let registry = out.join("registry");
    let left: Vec<_> = fs::read_dir(&registry)
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "registry entries left: {left:?}");
    let log = fs::read_to_string(out.join("servers.log")).unwrap_or_default();
    assert!(
        log.contains("shutdown requested") && log.contains("stopped"),
        "the server shut down on request:\n{log}"
    );
    assert!(
        !out.join("data").exists(),
        "the default data directory is removed"
    );
}

#[test]
fn without_ior_it_says_how_to_build_one_and_starts_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = disk_tempdir();
    let out = root.path().join("out");
    let run = run_script(&out, &[], &[]);
    assert_ne!(run.code, Some(0), "{}", run.text());
    assert!(
        run.stderr.contains("ior_integration/add_to_ior.sh")
            && run.stderr.contains("--with-benchfs")
            && run.stderr.contains("IOR="),
        "the steps to get an IOR: {}",
        run.text()
    );
    assert!(!out.exists(), "nothing was made or started: {}", run.text());
    assert_eq!(servers_under(root.path()), Vec::<u32>::new());

    let run = run_script(&out, &[("IOR", "/nonexistent/ior")], &[]);
    assert_ne!(run.code, Some(0), "{}", run.text());
    assert!(run.stderr.contains("/nonexistent/ior"), "{}", run.text());
    assert!(!out.exists(), "{}", run.text());
}

#[test]
fn a_failing_ior_fails_the_run_and_the_servers_are_stopped() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = disk_tempdir();
    let out = root.path().join("out");
    let run = run_script(&out, &[("IOR", "/bin/false")], &[]);
    assert_ne!(run.code, Some(0), "{}", run.text());
    assert!(
        run.stderr.contains("cluster up: 1 servers, 1 targets"),
        "the servers were up before IOR ran: {}",
        run.text()
    );
    assert!(run.stderr.contains("IOR failed"), "{}", run.text());
    assert_stopped_cleanly(&out, &run);
}

/// A stand-in for IOR: records its arguments, environment and the cluster's status per rank
/// in `record`, and writes a summary like IOR 4.1's JSON (an excerpt) to the summary file.
fn fake_ior(dir: &Path, record: &Path) -> PathBuf {
    let script = dir.join("fake-ior");
    let body = format!(
        r#"#!/bin/sh
set -e
rank="${{OMPI_COMM_WORLD_RANK:-none}}"
for arg in "$@"; do printf '%s\n' "$arg"; done >"{record}/args.$rank"
env >"{record}/env.$rank"
for arg in "$@"; do
    case "$arg" in
        --benchfs.registry=*) registry="${{arg#*=}}" ;;
        summaryFile=*) summary="${{arg#*=}}" ;;
    esac
done
"{benchfsctl}" --registry "$registry" status >"{record}/status.$rank" 2>&1
if [ "$rank" = 0 ]; then
    cat >"$summary" <<'JSON'
{{
"summary": [
    {{
    "operation": "write",
    "API": "BENCHFS",
    "numTasks": 2,
    "bwMaxMIB": 714.3991,
    "bwMinMIB": 714.3991,
    "bwMeanMIB": 700.5000,
    "OPsMean": 714.3991,
    "MeanTime": 0.0448,
    "xsizeMiB": 32.0000
  }}
]
}}
JSON
fi
"#,
        record = record.display(),
        benchfsctl = env!("CARGO_BIN_EXE_benchfsctl"),
    );
    fs::write(&script, body).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether `args` holds `first` directly followed by `second`.
fn has_pair(args: &[String], first: &str, second: &str) -> bool {
    args.windows(2).any(|w| w[0] == first && w[1] == second)
}

fn env_of(path: &Path) -> HashMap<String, String> {
    lines(path)
        .into_iter()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[test]
fn ior_runs_against_the_live_cluster_with_backend_registry_and_json_summary() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = disk_tempdir();
    let out = root.path().join("out");
    let record = root.path().join("record");
    fs::create_dir(&record).unwrap();
    let ior = fake_ior(root.path(), &record);
    let ior = ior.to_str().unwrap();
    let run = run_script(&out, &[("IOR", ior), ("BENCHFS_PROCS", "2")], &[]);
    assert_eq!(run.code, Some(0), "{}", run.text());

    for rank in 0..2 {
        let args = lines(&record.join(format!("args.{rank}")));
        assert!(has_pair(&args, "-a", "BENCHFS"), "{args:?}");
        let registry = format!("--benchfs.registry={}", out.join("registry").display());
        assert!(args.contains(&registry), "{args:?}");
        assert!(has_pair(&args, "-O", "summaryFormat=JSON"), "{args:?}");
        let summary = format!("summaryFile={}", out.join("ior-summary.json").display());
        assert!(has_pair(&args, "-O", &summary), "{args:?}");
        for default in ["-w", "-r", "-W", "-R", "-C", "-F", "-G"] {
            assert!(args.iter().any(|a| a == default), "{default}: {args:?}");
        }

        // The servers were up while IOR ran: the status has a header and one target.
        let status = lines(&record.join(format!("status.{rank}")));
        assert_eq!(status.len(), 2, "{status:?}");
        assert!(status[0].starts_with("target"), "{status:?}");

        let env = env_of(&record.join(format!("env.{rank}")));
        assert_eq!(env.get("UCX_TLS").map(String::as_str), Some("tcp"));
        for knob in ["BENCHFS_PROCS", "BENCHFS_OUT_DIR", "BENCHFS_BIN_DIR"] {
            assert!(!env.contains_key(knob), "{knob} reached IOR");
        }
    }
    assert!(
        !record.join("args.2").exists(),
        "two IOR processes, not more"
    );
    assert!(
        run.stdout.lines().any(|l| {
            let words: Vec<_> = l.split_whitespace().collect();
            words.starts_with(&["ior", "write", "2", "714.3991", "700.5000"])
        }),
        "the summary is printed: {}",
        run.text()
    );
    assert_stopped_cleanly(&out, &run);
}

#[test]
fn ior_arguments_and_process_count_replace_the_defaults() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = disk_tempdir();
    let out = root.path().join("out");
    let record = root.path().join("record");
    fs::create_dir(&record).unwrap();
    let ior = fake_ior(root.path(), &record);
    let ior = ior.to_str().unwrap();
    let run = run_script(
        &out,
        &[],
        &[
            "--ior",
            ior,
            "-n",
            "3",
            "--",
            "-w",
            "-t",
            "4k",
            "-o",
            "/ior/mine",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.text());
    for rank in 0..3 {
        let args = lines(&record.join(format!("args.{rank}")));
        assert!(has_pair(&args, "-a", "BENCHFS"), "{args:?}");
        assert!(has_pair(&args, "-o", "/ior/mine"), "{args:?}");
        assert!(has_pair(&args, "-t", "4k"), "{args:?}");
        for default in ["-r", "-W", "-F", "-G", "/ior/testfile"] {
            assert!(!args.iter().any(|a| a == default), "{default}: {args:?}");
        }
    }
    assert!(!record.join("args.3").exists());
    assert_stopped_cleanly(&out, &run);
}
