//! The calling thread's state: its connection to the cluster and its tables of open files
//! and directory listings, and the opaque handles C holds for them.
//!
//! A handle is a number drawn from one process-wide counter and handed to C disguised as a
//! pointer; it is never dereferenced, only looked up in the calling thread's table. Numbers
//! are never reused, so a closed handle, a handle of another thread and a made-up pointer all
//! miss the table and give `EBADF`. The state belongs to one `benchfs_init` epoch: a thread
//! whose state is from an earlier epoch drops it (handles and connection) on its next call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::errors::{Fail, FfiResult};
use crate::client::Client;

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// Open objects of one kind, by handle number.
#[derive(Debug)]
pub struct Table<T> {
    entries: HashMap<u64, T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            entries: HashMap::new(),
        }
    }
}

impl<T> Table<T> {
    /// Stores `value` under a new handle number.
    pub fn insert(&mut self, value: T) -> u64 {
        let id = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        self.entries.insert(id, value);
        id
    }

    /// The object of `id`.
    pub fn get_mut(&mut self, id: u64) -> FfiResult<&mut T> {
        self.entries.get_mut(&id).ok_or_else(bad_handle)
    }

    /// Takes the object of `id` out of the table.
    pub fn remove(&mut self, id: u64) -> FfiResult<T> {
        self.entries.remove(&id).ok_or_else(bad_handle)
    }

    /// Every object, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.values_mut()
    }

    /// Takes every object out.
    pub fn drain(&mut self) -> Vec<T> {
        self.entries.drain().map(|(_, v)| v).collect()
    }
}

fn bad_handle() -> Fail {
    Fail::new(
        libc::EBADF,
        "handle is closed, unknown, or belongs to another thread",
    )
}

/// The C form of handle number `id`.
pub fn to_ptr<H>(id: u64) -> *mut H {
    id as usize as *mut H
}

/// The handle number of C handle `ptr` (NULL is refused with `EINVAL`).
pub fn from_ptr<H>(ptr: *const H) -> FfiResult<u64> {
    super::args::non_null(ptr, "handle")?;
    Ok(ptr as usize as u64)
}

/// One thread's state.
#[derive(Debug, Default)]
pub struct Local {
    epoch: u64,
    /// The thread's connection, made on its first call of the epoch that needs one.
    pub client: Option<Client>,
    /// Open files.
    pub files: Table<crate::client::File>,
    /// Open directory listings.
    pub dirs: Table<super::dirs::Listing>,
}

impl Local {
    /// The thread's client, connected now if needed.
    pub fn client(&mut self) -> FfiResult<&mut Client> {
        if self.client.is_none() {
            let config = super::init::client_config()?;
            self.client = Some(Client::connect(config)?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| Fail::new(libc::EIO, "no connection"))
    }

    /// Closes every open file (publishing sizes) and drops listings and connection; returns
    /// the first failure.
    pub fn shut(&mut self) -> FfiResult<()> {
        let mut result = Ok(());
        let files = self.files.drain();
        self.dirs.drain();
        if let Some(client) = self.client.as_mut() {
            for file in files {
                if let Err(e) = client.close(file) {
                    result = result.and(Err(Fail::from(e)));
                }
            }
        }
        self.client = None;
        result
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Runs `f` on the calling thread's state of the current epoch (`EINVAL` before
/// `benchfs_init`).
pub fn with_local<T>(f: impl FnOnce(&mut Local) -> FfiResult<T>) -> FfiResult<T> {
    let epoch = super::init::current_epoch()?;
    with_any_local(|local| {
        if local.epoch != epoch {
            *local = Local {
                epoch,
                ..Local::default()
            };
        }
        f(local)
    })
}

/// Runs `f` on the calling thread's state, whatever its epoch.
pub fn with_any_local<T>(f: impl FnOnce(&mut Local) -> FfiResult<T>) -> FfiResult<T> {
    LOCAL
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut local) => f(&mut local),
            Err(_) => Err(Fail::new(libc::EIO, "re-entered on the same thread")),
        })
        .unwrap_or_else(|_| Err(Fail::new(libc::EIO, "thread is exiting")))
}
