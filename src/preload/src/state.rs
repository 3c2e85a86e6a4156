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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Whether `fd` is a BenchFS descriptor (no lock taken).
pub fn is_ours(fd: c_int) -> bool {
    (0..FD_LIMIT).contains(&fd)
        && OURS[(fd / 64) as usize].load(Ordering::Acquire) & (1 << (fd % 64)) != 0
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
    static FORK_HANDLERS: Once = Once::new();
    FORK_HANDLERS.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions living as long as the process.
        let rc =
            unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
        if rc != 0 {
            diag::say("pthread_atfork failed: a fork during a BenchFS call may hang the child");
        }
    });
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

extern "C" fn at_exit() {
    // Buffered stdio data of BenchFS streams goes out first (through this library).
    // SAFETY: fflush(NULL) flushes every open stream; the lock is not held here.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    let mut state = lock();
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

    /// The description of BenchFS descriptor `fd`.
    pub fn desc(&mut self, fd: c_int) -> Result<&mut Desc> {
        let index = *self.fds.get(&fd).ok_or(Errno(libc::EBADF))?;
        self.descs[index].as_mut().ok_or(Errno(libc::EBADF))
    }

    /// The client and the description of `fd` together.
    pub fn client_and_desc(&mut self, fd: c_int) -> Result<(&mut Client, &mut Desc)> {
        let index = *self.fds.get(&fd).ok_or(Errno(libc::EBADF))?;
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
        let index = *self.fds.get(&fd).ok_or(Errno(libc::EBADF))?;
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

    /// BenchFS descriptors in `first..=last`.
    pub fn fds_in(&self, first: c_int, last: c_int) -> Vec<c_int> {
        let mut fds: Vec<c_int> = self
            .fds
            .keys()
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

/// At load: a program started in a BenchFS directory (by a shell that changed into it under
/// this library) finds it in `PWD`, the only trace of it that survives `exec`.
#[used]
#[link_section = ".init_array"]
static INHERIT_CWD: extern "C" fn() = inherit_cwd;

extern "C" fn inherit_cwd() {
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
