//! Messages to standard error, written with the raw `write` system call: this library's own
//! `write` may be standing in front of descriptor 2 (a program can put a BenchFS file there),
//! and its lock may be held by the caller.

use std::sync::atomic::{AtomicBool, Ordering};

use once_cell::sync::Lazy;

/// `BENCHFS_PRELOAD_DEBUG=1`: every failed BenchFS call is reported, not only the unexpected.
pub static DEBUG: Lazy<bool> =
    Lazy::new(|| std::env::var("BENCHFS_PRELOAD_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0"));

/// Writes `benchfs preload: {text}` and a newline to standard error.
pub fn say(text: &str) {
    let line = format!("benchfs preload: {text}\n");
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writes from a live buffer of `rest.len()` bytes; no memory is handed over.
        let n = unsafe { libc::syscall(libc::SYS_write, 2, rest.as_ptr(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// Says `text` once per process (the first call of each `flag`).
pub fn say_once(flag: &AtomicBool, text: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        say(text);
    }
}

/// Says `text` and stops the process: the library cannot work in it.
pub fn fatal(text: &str) -> ! {
    say(text);
    std::process::abort()
}
