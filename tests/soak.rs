//! `scripts/soak.sh` for 24 seconds: servers on separate hosts (network namespaces), the
//! clients' verified mix of operations, one fault of each kind (kill and restart, stop, cut),
//! then the full verification. It must print its summary lines and `LOST=0`, and pass.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script's run (24 s) plus start, verification and stop stay well within this.
const RUN_DEADLINE: Duration = Duration::from_secs(150);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_short_soak_loses_nothing() {
    if !is_root() {
        eprintln!("skipped: the soak test makes network namespaces, which needs root");
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_benchfs-soak"))
        .parent()
        .expect("the binaries' directory");
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let logs = tempfile::tempdir_in(base).expect("a directory for the output");
    let (out, err) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/soak.sh"))
        .args(["--seconds", "24", "--servers", "3", "--clients", "3"])
        .arg("--bin-dir")
        .arg(bin)
        .arg("--base-dir")
        .arg(base)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("scripts/soak.sh starts");
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGTERM lets the script stop its servers and delete its namespaces.
            // SAFETY: kill has no memory preconditions; the pid is our live child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let text = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("the soak did not end in time:\n{text}"));
    assert!(status.success(), "the soak failed ({status}):\n{text}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{text}"))
            .to_string()
    };
    let faults = line("faults: ");
    for kind in ["kill", "stop", "cut"] {
        assert!(
            !faults.contains(&format!("{kind}=0")),
            "no {kind} fault in 24 s: {faults}"
        );
    }
    let clients = line("clients: ");
    assert!(clients.contains(" LOST=0"), "{text}");
    assert!(clients.contains("ops="), "{text}");
    assert!(
        !clients.contains("ops=0 "),
        "the clients did nothing:\n{text}"
    );
    let memory = line("server memory: before ");
    assert!(memory.contains(" after "), "{memory}");
    assert_eq!(line("LOST="), "LOST=0", "{text}");
}
