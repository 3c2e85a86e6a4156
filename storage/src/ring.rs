//! [`Ring`]: the owner of one io_uring instance.
//!
//! The ring is driven from a poll loop: callers queue submission entries with [`Ring::push`],
//! hand them to the kernel in batches with [`Ring::submit`] (one `io_uring_enter` for many
//! entries), and later collect completions with [`Ring::reap`]. Nothing here blocks unless the
//! caller asks to wait ([`Ring::submit_and_wait`]).
//!
//! # Thread and completion model
//!
//! Where the kernel allows (Linux 6.1 and newer), the ring is set up for a single issuer with
//! deferred task running (`IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
//! IORING_SETUP_TASKRUN_FLAG`), as fio does: the kernel does not interrupt the owner thread for
//! each finished request but queues the completion work, and runs it in batches when the thread
//! next enters the kernel to look for completions. Hence:
//!
//! - a ring belongs to the thread that created it ([`Ring`] is not `Send`); a shard creates its
//!   ring on its own pinned thread;
//! - completions become visible to [`Ring::reap`] only after [`Ring::submit`] or
//!   [`Ring::submit_and_wait`] entered the kernel; [`Ring::submit`] does so whenever completion
//!   work is pending, even with nothing to submit;
//! - an idle loop may sleep on the eventfd of [`Ring::register_eventfd`]: the kernel signals it
//!   when completion work is queued, and the loop then calls [`Ring::submit`] and reaps.
//!
//! Older kernels refuse these flags with EINVAL and get a plain ring, on which the same calls
//! work unchanged.
//!
//! # Invariants
//!
//! - at most [`Ring::capacity`] operations are in flight (pushed and not reaped), so the
//!   completion queue can never overflow and no completion is lost;
//! - the opcodes the engine uses were probed at construction; a kernel that lacks one is refused
//!   with [`Error::OpcodeUnsupported`] instead of failing on the first request.
//!
//! # Teardown
//!
//! Dropping the ring closes its fd. The kernel keeps registered buffers pinned until
//! every request that uses them has finished, but the owner of the ring ([`crate::ChunkStore`])
//! still waits for all in-flight operations before it drops the ring, so no request outlives the
//! file descriptors it names.

use std::io;

#[cfg(test)]
use io_uring::types;
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

use crate::error::{Error, Result};

/// One completion: the `user_data` given at push time and the kernel's result (bytes
/// transferred, 0, or a negated errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The value the submitter attached to the request.
    pub user_data: u64,
    /// The result as `io_uring` reports it: `>= 0` on success, `-errno` on failure.
    pub result: i32,
}

/// The opcodes BenchFS needs from the kernel, with the names used in error messages.
const REQUIRED_OPCODES: [(u8, &str); 4] = [
    (opcode::ReadFixed::CODE, "IORING_OP_READ_FIXED"),
    (opcode::WriteFixed::CODE, "IORING_OP_WRITE_FIXED"),
    (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
    (opcode::Nop::CODE, "IORING_OP_NOP"),
];

/// Owner of one io_uring: submission queue, completion queue and registrations.
pub struct Ring {
    uring: IoUring,
    in_flight: usize,
    capacity: usize,
    queued: usize,
    /// A single-issuer ring may only be entered by the thread that created it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("sq_entries", &self.uring.params().sq_entries())
            .field("cq_entries", &self.uring.params().cq_entries())
            .field("in_flight", &self.in_flight)
            .field("queued", &self.queued)
            .finish()
    }
}

impl Ring {
    /// Creates a ring with `sq_entries` submission entries (rounded up to a power of two by the
    /// kernel) and a completion queue twice as large, then probes the opcodes BenchFS uses.
    pub fn new(sq_entries: u32) -> Result<Ring> {
        if sq_entries == 0 {
            return Err(Error::InvalidArgument(
                "a ring needs at least one entry".into(),
            ));
        }
        let uring = build_uring(sq_entries)?;
        let mut probe = Probe::new();
        uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| Error::IoUringUnavailable {
                reason: format!(
                    "IORING_REGISTER_PROBE failed ({e}); BenchFS needs Linux 5.6 or newer"
                ),
            })?;
        for (code, name) in REQUIRED_OPCODES {
            if !probe.is_supported(code) {
                return Err(Error::OpcodeUnsupported { opcode: name });
            }
        }
        let capacity = uring.params().cq_entries() as usize;
        Ok(Ring {
            uring,
            in_flight: 0,
            capacity,
            queued: 0,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Operations that may be in flight at once (the completion queue's size).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Operations pushed and not reaped yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether another operation may be pushed now.
    pub fn has_room(&self) -> bool {
        self.in_flight < self.capacity
    }

    /// Queues one submission entry. It reaches the kernel at the next [`Ring::submit`] (or
    /// earlier, when the submission queue is full and has to be flushed to make room).
    ///
    /// Fails with [`Error::QueueFull`] when [`Ring::capacity`] operations are in flight.
    ///
    /// # Safety
    ///
    /// Every buffer and file descriptor `entry` refers to must stay valid, and buffers must not
    /// be accessed by the caller, until the completion carrying the entry's `user_data` has been
    /// returned by [`Ring::reap`].
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<()> {
        if !self.has_room() {
            return Err(Error::QueueFull {
                in_flight: self.in_flight,
            });
        }
        // SAFETY: the caller guarantees the entry's resources outlive its completion.
        if unsafe { self.uring.submission().push(entry) }.is_err() {
            // The submission queue is full: hand it to the kernel and try once more.
            self.submit()?;
            // SAFETY: as above.
            unsafe { self.uring.submission().push(entry) }.map_err(|_| Error::QueueFull {
                in_flight: self.in_flight,
            })?;
        }
        self.in_flight += 1;
        self.queued += 1;
        Ok(())
    }

    /// Hands every queued entry to the kernel with one system call, which also runs pending
    /// completion work; returns how many entries it took. Makes no system call when nothing is
    /// queued and no completion work is pending.
    pub fn submit(&mut self) -> Result<usize> {
        if self.queued == 0 && !self.uring.submission().taskrun() {
            return Ok(0);
        }
        self.enter(0)
    }

    /// Submits queued entries and blocks until at least `want` completions are ready to reap.
    /// `want` is clamped to the number of operations in flight, so this never waits forever.
    pub fn submit_and_wait(&mut self, want: usize) -> Result<usize> {
        self.enter(want.min(self.in_flight))
    }

    fn enter(&mut self, want: usize) -> Result<usize> {
        loop {
            let result = if want == 0 {
                self.uring.submit()
            } else {
                self.uring.submit_and_wait(want)
            };
            match result {
                Ok(n) => {
                    self.queued = self.queued.saturating_sub(n);
                    return Ok(n);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY: the completion queue must be drained before more can be submitted;
                // the caller's next reap does that. The entries stay queued.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(0),
                Err(e) => return Err(Error::io("io_uring_enter", None, e)),
            }
        }
    }

    /// Calls `f` for every completion that is ready, without blocking; returns how many.
    pub fn reap(&mut self, mut f: impl FnMut(Completion)) -> usize {
        let mut count = 0;
        let mut cq = self.uring.completion();
        cq.sync();
        for cqe in &mut cq {
            count += 1;
            f(completion_of(&cqe));
        }
        drop(cq);
        self.in_flight -= count;
        count
    }

    /// Registers `bufs` as the ring's fixed buffers; `buf_index` in fixed reads and writes
    /// refers to a position in this slice.
    ///
    /// # Safety
    ///
    /// The memory described by every iovec must stay mapped and valid until the buffers are
    /// unregistered or the ring is dropped.
    pub unsafe fn register_buffers(&mut self, bufs: &[libc::iovec]) -> Result<()> {
        // SAFETY: the caller guarantees the buffers outlive the registration.
        unsafe { self.uring.submitter().register_buffers(bufs) }.map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
                " (the locked-memory limit is too low: raise ulimit -l)"
            } else {
                ""
            };
            Error::io(
                "register fixed buffers",
                None,
                io::Error::new(e.kind(), format!("{e}{hint}")),
            )
        })
    }

    /// Makes the kernel signal `eventfd` when a completion is on its way, so a poll loop can
    /// sleep in `poll(2)`/`epoll` on it together with other event sources. After a wake-up the
    /// loop calls [`Ring::submit`] (which runs deferred completion work) and then
    /// [`Ring::reap`].
    pub fn register_eventfd(&mut self, eventfd: std::os::fd::RawFd) -> Result<()> {
        self.uring
            .submitter()
            .register_eventfd(eventfd)
            .map_err(|e| Error::io("register eventfd with io_uring", None, e))
    }
}

fn completion_of(cqe: &cqueue::Entry) -> Completion {
    Completion {
        user_data: cqe.user_data(),
        result: cqe.result(),
    }
}

/// Sets up the io_uring with deferred task running where the kernel has it (see the module
/// documentation), and without on kernels that refuse the flags.
fn build_uring(sq_entries: u32) -> Result<IoUring> {
    let build = |deferred: bool| {
        let mut builder = IoUring::builder();
        builder
            .setup_cqsize(sq_entries.saturating_mul(2))
            .setup_clamp();
        if deferred {
            builder
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag();
        }
        builder.build(sq_entries)
    };
    match build(true) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => build(false).map_err(setup_error),
        result => result.map_err(setup_error),
    }
}

/// Turns a failed `io_uring_setup` into an error that names the cause and its fix.
fn setup_error(e: io::Error) -> Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let reason = match e.raw_os_error() {
        Some(libc::ENOSYS) => format!(
            "io_uring_setup returned ENOSYS: the kernel lacks io_uring or a seccomp filter \
             blocks it (container runtimes: allow io_uring_setup/io_uring_enter/\
             io_uring_register) ({e})"
        ),
        Some(libc::EPERM) if disabled > 0 => format!(
            "kernel.io_uring_disabled is {disabled}; set it to 0 (sysctl -w \
             kernel.io_uring_disabled=0) or, with 1, add this user to the group in \
             kernel.io_uring_group ({e})"
        ),
        Some(libc::EPERM) => format!(
            "io_uring_setup was refused (EPERM): a seccomp filter or security module blocks \
             io_uring ({e})"
        ),
        Some(libc::ENOMEM) => format!(
            "io_uring_setup returned ENOMEM: the locked-memory limit is too low for the ring; \
             raise ulimit -l ({e})"
        ),
        _ => format!("io_uring_setup failed: {e}"),
    };
    Error::IoUringUnavailable { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nops_complete_with_their_user_data() {
        let mut ring = Ring::new(8).expect("ring");
        assert_eq!(ring.capacity(), 16);
        let mut seen = Vec::new();
        for i in 0..40u64 {
            if !ring.has_room() {
                ring.submit_and_wait(1).expect("wait");
                ring.reap(|c| seen.push(c.user_data));
            }
            let nop = opcode::Nop::new().build().user_data(i);
            // SAFETY: a NOP refers to no memory or file.
            unsafe { ring.push(&nop) }.expect("push");
        }
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1).expect("wait");
            ring.reap(|c| {
                assert_eq!(c.result, 0);
                seen.push(c.user_data);
            });
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn push_refuses_beyond_capacity() {
        let mut ring = Ring::new(2).expect("ring");
        let cap = ring.capacity();
        for i in 0..cap as u64 {
            let nop = opcode::Nop::new().build().user_data(i);
            // SAFETY: a NOP refers to no memory or file.
            unsafe { ring.push(&nop) }.expect("push");
        }
        let nop = opcode::Nop::new().build();
        // SAFETY: a NOP refers to no memory or file.
        let err = unsafe { ring.push(&nop) }.expect_err("full");
        assert!(matches!(err, Error::QueueFull { .. }), "{err}");
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1).expect("wait");
            ring.reap(|_| {});
        }
    }

    /// The idle path of a poll loop: real asynchronous I/O (an O_DIRECT read into a registered
    /// buffer), the thread asleep in poll(2) on the ring's eventfd, woken by the kernel, then
    /// collecting the completion.
    #[test]
    fn eventfd_wakes_a_sleeping_owner_for_its_completions() {
        use std::io::Write;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::fs::OpenOptionsExt;

        let exe = std::env::current_exe().expect("test binary path");
        let dir = tempfile::tempdir_in(exe.parent().expect("binary dir")).expect("test dir");
        let path = dir.path().join("data");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&[0xab; 4096]))
            .expect("write test file");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .expect("open O_DIRECT");
        let mut slab = crate::Slab::new(4096, 1).expect("slab");
        let mut ring = Ring::new(8).expect("ring");
        // SAFETY: the slab outlives the ring (declared before it, dropped after it).
        unsafe { ring.register_buffers(&slab.iovecs()) }.expect("register");
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(raw >= 0, "eventfd: {}", io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(raw) };
        ring.register_eventfd(efd.as_raw_fd())
            .expect("register eventfd");
        let slot = slab.acquire().expect("slot");
        let buf = slab.data_addr(slot.index());
        let read = opcode::ReadFixed::new(types::Fd(file.as_raw_fd()), buf, 4096, 0)
            .offset(0)
            .build()
            .user_data(7);
        // SAFETY: the file and the registered slot stay alive until the completion is reaped
        // below.
        unsafe { ring.push(&read) }.expect("push");
        ring.submit().expect("submit");
        let mut seen = Vec::new();
        for _ in 0..100 {
            let mut pfd = libc::pollfd {
                fd: efd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
            assert_eq!(ready, 1, "the eventfd was not signalled within 10 s");
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a u64 from a non-blocking eventfd.
            unsafe { libc::read(efd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            ring.submit().expect("run completion work");
            ring.reap(|c| seen.push(c));
            if !seen.is_empty() {
                break;
            }
        }
        assert_eq!(
            seen,
            vec![Completion {
                user_data: 7,
                result: 4096
            }]
        );
        assert!(slab.data(&slot).iter().all(|&b| b == 0xab));
        drop(ring);
        slab.release(slot);
    }
}
