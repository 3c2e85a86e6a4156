//! Several "hosts" on one machine: network namespaces joined by veth pairs to a bridge, each
//! with its own address, so that servers and clients talk TCP over real interfaces (no
//! loopback, no shared memory) and a host's link can be cut.
//!
//! Layout for `n` hosts (`n - 1` servers and one client host, or as the caller wishes):
//! namespace `<prefix>sw` holds bridge `br0`; namespace `<prefix>h<i>` holds `eth0` with
//! address 10.99.0.<i+1>/24, whose peer `p<i>` is a port of the bridge. Namespace names carry
//! the test process's pid, so namespaces left by a killed test run are recognised and removed
//! by the next one. [`Hosts`] deletes its namespaces on drop, also when a test fails.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Every namespace made here starts with this.
const FAMILY: &str = "bfst";

/// Namespaces for a set of hosts. See the module documentation.
pub struct Hosts {
    prefix: String,
    count: u32,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs (iproute2; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes namespaces of this family whose test process is gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(FAMILY) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

impl Hosts {
    /// Makes `count` connected hosts (at most 200).
    pub fn new(count: u32) -> Hosts {
        assert!((1..=200).contains(&count));
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let prefix = format!(
            "{FAMILY}{}x{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let hosts = Hosts { prefix, count };
        let switch = hosts.switch();
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 0..count {
            let ns = hosts.host(i);
            let port = format!("p{i}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            let address = format!("{}/24", hosts.address(i));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        hosts
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// The namespace of host `i`.
    pub fn host(&self, i: u32) -> String {
        assert!(i < self.count, "host {i} of {}", self.count);
        format!("{}h{i}", self.prefix)
    }

    /// The address of host `i`.
    pub fn address(&self, i: u32) -> String {
        format!("10.99.0.{}", i + 1)
    }

    /// `program` to be run on host `i`.
    pub fn command(&self, i: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host(i)]).arg(program);
        cmd
    }

    /// Takes host `i`'s link down (its processes keep running, unreachable).
    pub fn cut(&self, i: u32) {
        ip(&[
            "-n",
            &self.switch(),
            "link",
            "set",
            &format!("p{i}"),
            "down",
        ]);
    }

    /// Brings host `i`'s link back.
    pub fn restore(&self, i: u32) {
        ip(&["-n", &self.switch(), "link", "set", &format!("p{i}"), "up"]);
    }

    /// Moves the calling thread into host `i`'s network namespace: sockets it opens from now
    /// on (a client's UCX worker) are on that host. Other threads are not affected.
    pub fn enter(&self, i: u32) {
        let file =
            std::fs::File::open(format!("/run/netns/{}", self.host(i))).expect("namespace file");
        // SAFETY: setns takes a valid namespace fd (held open by `file`) and changes only the
        // calling thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.count {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.host(i)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch()])
            .output();
    }
}
