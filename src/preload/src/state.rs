//! The process's BenchFS state: its client, its open descriptions, its current directory.
//!
//! One lock guards all of it. A BenchFS descriptor is a real descriptor reserved from the
//! kernel (an `O_PATH` descriptor of `/dev/null`, so its number never collides with the
//! program's own files and a program that inherits it through `exec` gets `EBADF`, never a
//! write to somewhere else) mapped to an open description here. Descriptors made by `dup`
//! share the description (offset, flags) like the kernel's. A bitmap of the descriptors in
//! use lets every call on other descriptors pass without taking the lock.
//!
//! Fork: the lock is taken before `fork` and released after it in both processes, so the
//! child never inherits it held. The child cannot use the parent's UCX state; its first
//! BenchFS call connects a client of its own (the parent's is left untouched), and its
//! inherited descriptors go on working through it.
//!
//! Exit: the first connect registers an `atexit` handler that flushes stdio, closes every
//! open BenchFS file (publishing the sizes written) and disconnects.

use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use benchfs::client::{Client, ClientConfig, File};

use crate::diag;
use crate::dirs::DirStream;

/// A positive errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub c_int);

/// Results of this library.
pub type Result<T> = std::result::Result<T, Errno>;

impl From<benchfs::client::Error> for Errno {
    fn from(e: benchfs::client::Error) -> Errno {
        let errno = e.errno();
        let routine = matches!(
            errno,
            libc::ENOENT
                | libc::EEXIST
                | libc::ENOTDIR
                | libc::EISDIR
                | libc::ENOTEMPTY
                | libc::EACCES
                | libc::EBADF
                | libc::EXDEV
        );
        if *diag::DEBUG || !routine {
            diag::say(&e.to_string());
        }
        Errno(errno)
    }
}

/// What an open description refers to.
#[derive(Debug)]
pub enum What {
    /// A regular file.
    File(File),
    /// A directory (BenchFS path).
    Dir(String),
}

/// An open description: shared by the descriptors `dup` made of one `open`.
#[derive(Debug)]
pub struct Desc {
    /// Descriptors pointing here.
    pub refs: u32,
    /// `O_ACCMODE` and status flags (`O_APPEND`, `O_NONBLOCK`, `O_DIRECT`, ...).
    pub flags: c_int,
    /// The file offset.
    pub offset: u64,
    /// The file or directory.
    pub what: What,
}

impl Desc {
    /// What it stands for, as it travels through `exec`.
    pub fn inherited(&self) -> crate::exec::Inherited {
        crate::exec::Inherited {
            dir: matches!(self.what, What::Dir(_)),
            flags: self.flags,
            offset: self.offset,
            path: self.path().to_string(),
        }
    }

    /// The BenchFS path it was opened by.
    pub fn path(&self) -> &str {
        match &self.what {
            What::File(f) => f.path(),
            What::Dir(p) => p,
        }
    }
}

/// Largest descriptor number this library hands out (`EMFILE` beyond).
pub const FD_LIMIT: c_int = 1 << 16;
static OURS: [AtomicU64; (FD_LIMIT / 64) as usize] = [const { AtomicU64::new(0) }; 1024];
/// A BenchFS current directory is set (relative paths may be BenchFS paths).
pub static CWD_INSIDE: AtomicBool = AtomicBool::new(false);
/// Some BenchFS directory stream is open.
pub static DIRS_OPEN: AtomicBool = AtomicBool::new(false);

/// Whether `fd` is a BenchFS descriptor (no lock taken). Never in a child that shares the
/// memory of its parent ([`borrowed_memory`]).
pub fn is_ours(fd: c_int) -> bool {
    (0..FD_LIMIT).contains(&fd)
        && OURS[(fd / 64) as usize].load(Ordering::Acquire) & (1 << (fd % 64)) != 0
        && !borrowed_memory()
}

/// The process this library's memory belongs to (set at load and in a forked child).
static OWNER_PID: AtomicU32 = AtomicU32::new(0);

/// Whether this is a child made by `vfork` (or a `clone` sharing memory, as `posix_spawn`
/// does) of a process using this library: it runs on its parent's memory until it calls
/// `exec`, so it must not change this library's state (or glibc's standard streams), and
/// every call passes to libc. (`fork` children have their own copy: the fork handler makes
/// them owners.)
pub fn borrowed_memory() -> bool {
    let owner = OWNER_PID.load(Ordering::Relaxed);
    owner != 0 && owner != std::process::id()
}

/// Registers the fork handlers (once) and makes this process the owner of the state.
pub fn register_fork_handlers() {
    static FORK_HANDLERS: Once = Once::new();
    FORK_HANDLERS.call_once(|| {
        OWNER_PID.store(std::process::id(), Ordering::Relaxed);
        // SAFETY: the three handlers are `extern "C"` functions living as long as the process.
        let rc = unsafe {
            libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork_child))
        };
        if rc != 0 {
            diag::say("pthread_atfork failed: a fork during a BenchFS call may hang the child");
        }
    });
}

fn mark(fd: c_int, ours: bool) {
    let bit = 1u64 << (fd % 64);
    let word = &OURS[(fd / 64) as usize];
    if ours {
        word.fetch_or(bit, Ordering::Release);
    } else {
        word.fetch_and(!bit, Ordering::Release);
    }
}

/// The process's client, moved between threads behind the lock.
#[derive(Debug)]
struct Shared(Client);

// SAFETY: a `Client` is `!Send` because of the `Rc`s inside it, all of which point to objects
// of that same client; it is only ever touched with the state lock held (which orders every
// use after the previous one), and its UCX worker is created for serialised use from several
// threads (`ClientConfig::serialized`).
unsafe impl Send for Shared {}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub struct State {
    client: Option<Shared>,
    client_pid: u32,
    fds: HashMap<c_int, usize>,
    descs: Vec<Option<Desc>>,
    /// The BenchFS current directory, when the program changed into one.
    pub cwd: Option<String>,
    /// Open directory streams by their `DIR *` address.
    pub dirs: HashMap<usize, Box<DirStream>>,
    /// Descriptors inherited through `exec`, not reopened yet.
    pending: HashMap<c_int, crate::exec::Inherited>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// The locked state.
#[derive(Debug)]
pub struct Guard(MutexGuard<'static, Option<State>>);

impl std::ops::Deref for Guard {
    type Target = State;
    fn deref(&self) -> &State {
        self.0.as_ref().expect("state is set while locked")
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut State {
        self.0.as_mut().expect("state is set while locked")
    }
}

/// Takes the lock (registering the fork handlers on first use).
pub fn lock() -> Guard {
    register_fork_handlers();
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(State::default);
    Guard(guard)
}

thread_local! {
    static HELD_FOR_FORK: std::cell::RefCell<Option<(Guard, crate::stdio::StreamsGuard)>> =
        const { std::cell::RefCell::new(None) };
}

extern "C" fn before_fork() {
    // The same order as everywhere: the state, then the stream registry.
    let guard = lock();
    let streams = crate::stdio::lock_streams();
    HELD_FOR_FORK.with(|held| *held.borrow_mut() = Some((guard, streams)));
}

extern "C" fn after_fork() {
    HELD_FOR_FORK.with(|held| drop(held.borrow_mut().take()));
}

extern "C" fn after_fork_child() {
    OWNER_PID.store(std::process::id(), Ordering::Relaxed);
    after_fork();
}

extern "C" fn at_exit() {
    // Buffered stdio data of BenchFS streams goes out first (through this library).
    // SAFETY: fflush(NULL) flushes every open stream; the lock is not held here.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    close_all(lock());
}

/// For `_exit`: closes every open file (publishing what was written) unless the lock is
/// taken (`_exit` may come from a signal handler that interrupted a BenchFS call) or this is a
/// child on its parent's memory.
pub fn close_all_now() {
    if borrowed_memory() {
        return;
    }
    let guard = match STATE.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    if guard.is_some() {
        close_all(Guard(guard));
    }
}

/// Closes every open file of this process's client (publishing the sizes written) and
/// disconnects.
fn close_all(mut state: Guard) {
    if state.client.is_none() || state.client_pid != std::process::id() {
        return;
    }
    let files: Vec<usize> = (0..state.descs.len()).collect();
    for index in files {
        if let Some(Desc {
            what: What::File(file),
            ..
        }) = state.descs[index].take()
        {
            if let Some(Shared(client)) = state.client.as_mut() {
                if let Err(e) = client.close(file) {
                    diag::say(&format!("at exit: {e}"));
                }
            }
        }
    }
    state.client = None;
}

impl State {
    /// The client of this process, connected on first use.
    pub fn client(&mut self) -> Result<&mut Client> {
        let pid = std::process::id();
        if self.client.is_some() && self.client_pid != pid {
            // A forked child: the parent's UCX state is not usable here, and must not be torn
            // down from here either (it belongs to the parent's connections).
            std::mem::forget(self.client.take());
        }
        if self.client.is_none() {
            let client = connect()?;
            static AT_EXIT: Once = Once::new();
            AT_EXIT.call_once(|| {
                // SAFETY: registers a handler that lives as long as the process.
                if unsafe { libc::atexit(at_exit) } != 0 {
                    diag::say("atexit failed: open files are not closed at exit");
                }
            });
            self.client = Some(Shared(client));
            self.client_pid = pid;
        }
        Ok(&mut self.client.as_mut().expect("connected above").0)
    }

    /// Records descriptor `fd`, inherited through `exec`, to be reopened on first use.
    pub fn inherit(&mut self, fd: c_int, inherited: crate::exec::Inherited) {
        self.pending.insert(fd, inherited);
        mark(fd, true);
    }

    /// The index of the description of `fd`, reopening an inherited descriptor first.
    fn index(&mut self, fd: c_int) -> Result<usize> {
        if let Some(&index) = self.fds.get(&fd) {
            return Ok(index);
        }
        let inherited = self.pending.remove(&fd).ok_or(Errno(libc::EBADF))?;
        let what = match self
            .client()
            .and_then(|client| crate::exec::reopen(client, &inherited))
        {
            Ok(what) => what,
            Err(e) => {
                diag::say(&format!(
                    "descriptor {fd} inherited for {}: cannot reopen it",
                    inherited.path
                ));
                mark(fd, false);
                return Err(e);
            }
        };
        // Offsets are not shared between processes: a write-only descriptor goes on at the
        // end of what earlier writers through it (other children of the same parent) left,
        // which is what sequential writers of a shell's `{ a; b; } > f` expect.
        let offset = match &what {
            What::File(f) if inherited.flags & libc::O_ACCMODE == libc::O_WRONLY => {
                inherited.offset.max(f.size())
            }
            _ => inherited.offset,
        };
        self.insert(
            fd,
            Desc {
                refs: 1,
                flags: inherited.flags,
                offset,
                what,
            },
        );
        Ok(self.fds[&fd])
    }

    /// The description of BenchFS descriptor `fd`.
    pub fn desc(&mut self, fd: c_int) -> Result<&mut Desc> {
        let index = self.index(fd)?;
        self.descs[index].as_mut().ok_or(Errno(libc::EBADF))
    }

    /// The client and the description of `fd` together.
    pub fn client_and_desc(&mut self, fd: c_int) -> Result<(&mut Client, &mut Desc)> {
        let index = self.index(fd)?;
        self.client()?;
        let client = &mut self.client.as_mut().expect("connected above").0;
        let desc = self.descs[index].as_mut().ok_or(Errno(libc::EBADF))?;
        Ok((client, desc))
    }

    /// Records a new description for the reserved descriptor `fd`.
    pub fn insert(&mut self, fd: c_int, desc: Desc) {
        let desc = Desc { refs: 1, ..desc };
        let index = match self.descs.iter().position(Option::is_none) {
            Some(i) => {
                self.descs[i] = Some(desc);
                i
            }
            None => {
                self.descs.push(Some(desc));
                self.descs.len() - 1
            }
        };
        self.fds.insert(fd, index);
        mark(fd, true);
    }

    /// Makes descriptor `to` share the description of `fd` (after a kernel dup).
    pub fn share(&mut self, fd: c_int, to: c_int) -> Result<()> {
        let index = self.index(fd)?;
        if let Some(desc) = self.descs[index].as_mut() {
            desc.refs += 1;
        }
        self.fds.insert(to, index);
        mark(to, true);
        Ok(())
    }

    /// Forgets descriptor `fd`; returns its description when it was the last one pointing
    /// there (the caller closes the file).
    pub fn forget(&mut self, fd: c_int) -> Option<Desc> {
        if self.pending.remove(&fd).is_some() {
            mark(fd, false);
            return None;
        }
        let index = self.fds.remove(&fd)?;
        mark(fd, false);
        let desc = self.descs[index].as_mut()?;
        desc.refs -= 1;
        if desc.refs == 0 {
            self.descs[index].take()
        } else {
            None
        }
    }

    /// Forgets `fd` and closes its file when it was the last descriptor of it.
    pub fn release(&mut self, fd: c_int) -> Result<()> {
        match self.forget(fd) {
            Some(Desc {
                what: What::File(file),
                ..
            }) => {
                self.client()?.close(file)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Calls `f` on every open file.
    pub fn each_file(&mut self, mut f: impl FnMut(&mut File)) {
        for desc in self.descs.iter_mut().flatten() {
            if let What::File(file) = &mut desc.what {
                f(file);
            }
        }
    }

    /// Open BenchFS descriptors (not counting inherited ones not reopened yet).
    pub fn open_fds(&self) -> Vec<c_int> {
        let mut fds: Vec<c_int> = self.fds.keys().copied().collect();
        fds.sort_unstable();
        fds
    }

    /// What the open descriptions stand for, read without reopening or syncing anything.
    pub fn snapshot(&self) -> Vec<(c_int, crate::exec::Inherited)> {
        let mut out = self.inherited();
        for (&fd, &index) in &self.fds {
            if let Some(desc) = &self.descs[index] {
                out.push((fd, desc.inherited()));
            }
        }
        out
    }

    /// Descriptors inherited through `exec` and not reopened yet.
    pub fn inherited(&self) -> Vec<(c_int, crate::exec::Inherited)> {
        self.pending
            .iter()
            .map(|(&fd, i)| (fd, i.clone()))
            .collect()
    }

    /// BenchFS descriptors in `first..=last`.
    pub fn fds_in(&self, first: c_int, last: c_int) -> Vec<c_int> {
        let mut fds: Vec<c_int> = self
            .fds
            .keys()
            .chain(self.pending.keys())
            .copied()
            .filter(|fd| (first..=last).contains(fd))
            .collect();
        fds.sort_unstable();
        fds
    }
}

fn connect() -> Result<Client> {
    static SAID: AtomicBool = AtomicBool::new(false);
    let Ok(registry) = std::env::var("BENCHFS_REGISTRY") else {
        diag::say_once(
            &SAID,
            "BENCHFS_REGISTRY is not set: calls on BenchFS paths fail with EIO \
             (set it to the registry directory of a running cluster)",
        );
        return Err(Errno(libc::EIO));
    };
    let mut config = ClientConfig::from_env(&registry).map_err(|e| {
        diag::say_once(&SAID, &e.to_string());
        Errno(libc::EINVAL)
    })?;
    config.serialized = true;
    Client::connect(config).map_err(|e| {
        diag::say(&format!("cannot connect to the cluster of {registry}: {e}"));
        Errno(libc::EIO)
    })
}

/// At load: what a program inherits through `exec` from one that ran under this library: its
/// BenchFS descriptors ([`crate::exec`]) and its BenchFS current directory.
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

extern "C" fn at_load() {
    let _ = std::panic::catch_unwind(|| {
        register_fork_handlers();
        crate::exec::inherit_descriptors();
        inherit_cwd();
    });
}

/// A program started in a BenchFS directory (by a shell that changed into it under this
/// library) finds it in `PWD`, the only trace of it that survives `exec`.
fn inherit_cwd() {
    let Ok(pwd) = std::env::var("PWD") else {
        return;
    };
    if !pwd.starts_with('/') {
        return;
    }
    if let Some(dir) = crate::paths::inside(&crate::paths::normalize(&pwd)) {
        lock().cwd = Some(dir);
        CWD_INSIDE.store(true, Ordering::Release);
    }
}
