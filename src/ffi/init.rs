//! `benchfs_init` and `benchfs_finalize`: the process-wide session (reference count,
//! registry, options, client settings) and the optional embedded storage server.
//!
//! The first init opens the session and connects the calling thread (so a wrong registry
//! fails there); nested inits with the same registry and options only count references. The
//! last finalize closes the calling thread's handles, disconnects it, ends the epoch (other
//! threads drop their state on their next call) and stops the embedded server.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::errors::{guard, Fail, FfiResult};
use super::handles::{with_any_local, with_local};
use super::options::InitOptions;
use crate::client::ClientConfig;
use crate::config::ServerConfig;
use crate::server::Control;

struct Embedded {
    control: Arc<Control>,
    thread: JoinHandle<Result<(), String>>,
}

struct Session {
    refs: u32,
    epoch: u64,
    registry: PathBuf,
    options: InitOptions,
    config: ClientConfig,
    server: Option<Embedded>,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);
/// Serialises whole init and finalize calls (the session lock is not held while connecting).
static INIT_ORDER: Mutex<()> = Mutex::new(());
static EPOCH: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_initialized() -> Fail {
    Fail::invalid("benchfs_init has not been called")
}

/// The epoch of the open session.
pub fn current_epoch() -> FfiResult<u64> {
    lock(&SESSION)
        .as_ref()
        .map(|s| s.epoch)
        .ok_or_else(not_initialized)
}

/// The client settings of the open session.
pub fn client_config() -> FfiResult<ClientConfig> {
    lock(&SESSION)
        .as_ref()
        .map(|s| s.config.clone())
        .ok_or_else(not_initialized)
}

/// The registry directory: `registry`, or `BENCHFS_REGISTRY`.
///
/// # Safety
/// `registry` is NULL or a NUL-terminated string.
unsafe fn registry_arg(registry: *const c_char) -> FfiResult<PathBuf> {
    let text = if registry.is_null() {
        std::env::var("BENCHFS_REGISTRY")
            .map_err(|_| Fail::invalid("no registry given and BENCHFS_REGISTRY is not set"))?
    } else {
        // SAFETY: non-null, and the caller promises a NUL-terminated string.
        let raw = unsafe { std::ffi::CStr::from_ptr(registry) };
        raw.to_str()
            .map_err(|_| Fail::invalid("registry is not UTF-8"))?
            .to_string()
    };
    if text.is_empty() {
        return Err(Fail::invalid("registry is empty"));
    }
    Ok(PathBuf::from(text))
}

/// The options at `options` (NULL: none).
///
/// # Safety
/// `options` is NULL or a NUL-terminated string.
unsafe fn options_arg(options: *const c_char) -> FfiResult<InitOptions> {
    if options.is_null() {
        return Ok(InitOptions::default());
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string.
    let raw = unsafe { std::ffi::CStr::from_ptr(options) };
    InitOptions::parse(
        raw.to_str()
            .map_err(|_| Fail::invalid("options are not UTF-8"))?,
    )
}

fn start_server(registry: &std::path::Path, options: &InitOptions) -> FfiResult<Embedded> {
    let data_dir = options.data_dir.clone().unwrap_or_default();
    let mut config = ServerConfig::new(registry, data_dir);
    config.numa = false;
    config.rank = options.rank;
    config.servers = options.servers;
    config.shards = options.shards;
    if let Some(bytes) = options.slab_bytes {
        config.slab_bytes = bytes;
    }
    config
        .check()
        .map_err(|e| Fail::invalid(format!("embedded server: {e}")))?;
    crate::server::process::identity(&config).map_err(Fail::invalid)?;
    let control =
        Arc::new(Control::new().map_err(|e| Fail::new(libc::EIO, format!("server control: {e}")))?);
    let stop = control.clone();
    let thread = std::thread::Builder::new()
        .name("benchfs-server".to_string())
        .spawn(move || crate::server::process::run_server(&config, stop))
        .map_err(|e| Fail::new(libc::EIO, format!("server thread: {e}")))?;
    Ok(Embedded { control, thread })
}

fn stop_server(server: Embedded) -> FfiResult<()> {
    server.control.request_stop();
    match server.thread.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Fail::new(libc::EIO, format!("embedded server: {e}"))),
        Err(_) => Err(Fail::new(libc::EIO, "embedded server panicked")),
    }
}

/// Waits until the embedded server made the registry (clients need it to exist), or fails
/// with the server's error if it stopped.
fn await_registry(server: Embedded, config: &ClientConfig) -> FfiResult<Embedded> {
    let deadline = std::time::Instant::now() + config.connect_timeout;
    while !config.registry_dir.exists() && std::time::Instant::now() < deadline {
        if server.thread.is_finished() {
            stop_server(server)?;
            return Err(Fail::new(libc::EIO, "embedded server stopped at start"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(server)
}

fn open_session(registry: PathBuf, options: InitOptions) -> FfiResult<()> {
    let config = options.client_config(&registry)?;
    let server = match options.server {
        true => Some(await_registry(start_server(&registry, &options)?, &config)?),
        false => None,
    };
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    *lock(&SESSION) = Some(Session {
        refs: 1,
        epoch,
        registry,
        options,
        config,
        server,
    });
    let connected = with_local(|local| local.client().map(|_| ()));
    if let Err(fail) = connected {
        let _ = close_session();
        return Err(fail);
    }
    Ok(())
}

fn close_session() -> FfiResult<()> {
    let closed = with_local(|local| local.shut());
    let session = lock(&SESSION).take();
    let _ = with_any_local(|local| {
        *local = Default::default();
        Ok(())
    });
    let stopped = match session.and_then(|s| s.server) {
        Some(server) => stop_server(server),
        None => Ok(()),
    };
    closed.and(stopped)
}

/// Connects to the cluster at `registry` (NULL: `BENCHFS_REGISTRY`) with `options`; nested
/// calls only count references.
///
/// # Safety
/// `registry` and `options` are each NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn benchfs_init(registry: *const c_char, options: *const c_char) -> i32 {
    guard("benchfs_init", || {
        // SAFETY: the caller's promise about `registry` is passed on.
        let registry = unsafe { registry_arg(registry) }?;
        // SAFETY: the same for `options`.
        let options = unsafe { options_arg(options) }?;
        let _order = lock(&INIT_ORDER);
        {
            let mut session = lock(&SESSION);
            if let Some(s) = session.as_mut() {
                if s.registry != registry || s.options != options {
                    return Err(Fail::invalid(
                        "already initialised with another registry or other options",
                    ));
                }
                s.refs += 1;
                return Ok(0);
            }
        }
        open_session(registry, options)?;
        Ok(0)
    })
}

/// Drops one reference; the last one closes the calling thread's handles, disconnects and
/// stops an embedded server.
///
/// # Safety
/// Always safe to call; `unsafe` only for symmetry with the rest of the interface.
#[no_mangle]
pub unsafe extern "C" fn benchfs_finalize() -> i32 {
    guard("benchfs_finalize", || {
        let _order = lock(&INIT_ORDER);
        {
            let mut session = lock(&SESSION);
            let s = session.as_mut().ok_or_else(not_initialized)?;
            if s.refs > 1 {
                s.refs -= 1;
                return Ok(0);
            }
        }
        close_session()?;
        Ok(0)
    })
}
