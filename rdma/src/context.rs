//! [`Context`]: the owner of one UCP context (`ucp_context_h`).
//!
//! The context reads UCX's configuration from the environment as every UCX program does
//! (`UCX_TLS`, `UCX_NET_DEVICES`, ...): nothing here chooses a transport. It is created with
//! the features BenchFS uses: active messages, RMA and wake-up on events.
//!
//! A context is shared (`Arc`) by the workers and memory regions made from it, which keep it
//! alive: it is cleaned up only after the last of them is gone. It is `Send` and `Sync`: each
//! thread creates its own worker from the shared context.

use std::ffi::CString;
use std::ptr;
use std::sync::Arc;

use ucx1_sys::*;

use crate::error::{check, Error, Result};

/// Owner of a UCP context.
#[derive(Debug)]
pub struct Context {
    handle: ucp_context_h,
    peer_failure_possible: bool,
}

// SAFETY: a UCP context may be used from several threads to create workers and map memory;
// BenchFS never shares a worker between threads (each `Worker` is `!Send`), so no call on the
// context races with worker-local state.
unsafe impl Send for Context {}
// SAFETY: as above; the context's own calls (worker creation, memory mapping) are thread-safe.
unsafe impl Sync for Context {}

impl Context {
    /// Creates a context configured from the environment.
    pub fn new() -> Result<Arc<Context>> {
        Context::with_settings(&[])
    }

    /// Creates a context configured from the environment, then overridden by `settings`:
    /// UCX variable names without the `UCX_` prefix and their values, e.g. `("TLS", "tcp")`.
    /// Lets a program (or a test) pick transports without touching its environment.
    pub fn with_settings(settings: &[(&str, &str)]) -> Result<Arc<Context>> {
        let mut config: *mut ucp_config_t = ptr::null_mut();
        // SAFETY: null prefix and file name mean "UCX_" and no file; config is an out pointer.
        check("read UCX configuration", unsafe {
            ucp_config_read(ptr::null(), ptr::null(), &mut config)
        })?;
        if let Err(e) = apply_settings(config, settings) {
            // SAFETY: config came from ucp_config_read and is released exactly once.
            unsafe { ucp_config_release(config) };
            return Err(e);
        }
        // SAFETY: ucp_params_t is plain data; every field not named in field_mask is ignored.
        let mut params: ucp_params_t = unsafe { std::mem::zeroed() };
        params.field_mask = (ucp_params_field::UCP_PARAM_FIELD_FEATURES
            | ucp_params_field::UCP_PARAM_FIELD_MT_WORKERS_SHARED)
            .0 as u64;
        params.features = (ucp_feature::UCP_FEATURE_AM
            | ucp_feature::UCP_FEATURE_RMA
            | ucp_feature::UCP_FEATURE_WAKEUP)
            .0 as u64;
        params.mt_workers_shared = 0;
        let mut handle: ucp_context_h = ptr::null_mut();
        // SAFETY: params and config are valid for the call; handle is an out pointer.
        let status =
            unsafe { ucp_init_version(UCP_API_MAJOR, UCP_API_MINOR, &params, config, &mut handle) };
        // SAFETY: config came from ucp_config_read and is released exactly once.
        unsafe { ucp_config_release(config) };
        check("initialise UCX", status)?;
        let tls = settings
            .iter()
            .rev()
            .find(|(name, _)| *name == "TLS")
            .map(|(_, value)| value.to_string())
            .or_else(|| std::env::var("UCX_TLS").ok());
        Ok(Arc::new(Context {
            handle,
            peer_failure_possible: tls.as_deref().is_none_or(can_detect_peer_failure),
        }))
    }

    /// Whether the transports allowed to this context include one that can detect a dead
    /// peer. `false` only for a transport list of shared-memory (and self/GPU copy)
    /// transports alone: UCX then refuses endpoints with peer failure handling, logging an
    /// error line for each, so [`crate::Endpoint::connect`] does not ask.
    pub fn peer_failure_possible(&self) -> bool {
        self.peer_failure_possible
    }

    /// The raw handle, for the crate's own calls.
    pub(crate) fn handle(&self) -> ucp_context_h {
        self.handle
    }
}

/// UCX settings that keep endpoint creation from blocking on an unreachable peer: UCX
/// connects TCP sockets inside `ucp_ep_create`, by default with a blocking `connect()` that a
/// peer whose link is down holds for the kernel's SYN retries (over two minutes); with
/// non-blocking connects the failure arrives later, as an endpoint error or a request
/// deadline. Empty when the user set `UCX_TCP_CONN_NB`, which then applies as given, or when
/// the transports (`TLS` in `settings`, else `UCX_TLS`) exclude TCP (UCX would warn about an
/// unused setting).
/// (`UCX_TCP_SYN_CNT` would bound the blocking connect instead, but UCX 1.12 and 1.13 fail to
/// create workers when it is set.)
pub fn nonblocking_connect_settings(settings: &[(String, String)]) -> Vec<(String, String)> {
    let tls = settings
        .iter()
        .rev()
        .find(|(name, _)| name == "TLS")
        .map(|(_, value)| value.clone())
        .or_else(|| std::env::var("UCX_TLS").ok());
    let tcp_possible = tls.as_deref().is_none_or(|tls| {
        let tls = tls.trim();
        match tls.strip_prefix('^') {
            Some(excluded) => !excluded.split(',').any(|t| t.trim() == "tcp"),
            None => {
                tls.is_empty()
                    || tls
                        .split(',')
                        .any(|t| t.trim() == "all" || t.trim().starts_with("tcp"))
            }
        }
    });
    if !tcp_possible || std::env::var_os("UCX_TCP_CONN_NB").is_some() {
        return Vec::new();
    }
    vec![("CONN_NB".to_string(), "y".to_string())]
}

/// Whether a `UCX_TLS` value names a transport with peer failure detection: a network
/// transport (TCP, InfiniBand RC/DC/UD and their aliases), `all`, or an exclusion list
/// (`^...`), which leaves the network transports in.
fn can_detect_peer_failure(tls: &str) -> bool {
    const NETWORK: [&str; 6] = ["all", "tcp", "ib", "rc", "dc", "ud"];
    let tls = tls.trim();
    tls.is_empty()
        || tls.starts_with('^')
        || tls.split(',').any(|entry| {
            let name = entry.trim().split(':').next().unwrap_or("");
            NETWORK.iter().any(|n| name.starts_with(n))
        })
}

fn apply_settings(config: *mut ucp_config_t, settings: &[(&str, &str)]) -> Result<()> {
    for (name, value) in settings {
        let (Ok(c_name), Ok(c_value)) = (CString::new(*name), CString::new(*value)) else {
            return Err(Error::InvalidArgument(format!(
                "UCX setting {name}={value} has a NUL"
            )));
        };
        // SAFETY: config is live; both strings are NUL-terminated for the call.
        check("set UCX configuration", unsafe {
            ucp_config_modify(config, c_name.as_ptr(), c_value.as_ptr())
        })?;
    }
    Ok(())
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: workers and memory regions hold an Arc of the context, so none is left.
        unsafe { ucp_cleanup(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::{can_detect_peer_failure, nonblocking_connect_settings};

    #[test]
    fn nonblocking_connects_only_where_tcp_may_be_used() {
        let with = |tls: &str| nonblocking_connect_settings(&[("TLS".into(), tls.into())]);
        for tls in ["tcp", "posix,tcp", "all", "^rc", ""] {
            assert_eq!(
                with(tls),
                [("CONN_NB".to_string(), "y".to_string())],
                "{tls}"
            );
        }
        for tls in ["posix,cma", "rc_x,sm", "^tcp"] {
            assert!(with(tls).is_empty(), "{tls}");
        }
    }

    #[test]
    fn shared_memory_alone_cannot_detect_a_dead_peer() {
        for tls in ["posix,cma", "sm", "shm,self", "sysv", "posix,cma,cuda_copy"] {
            assert!(!can_detect_peer_failure(tls), "{tls}");
        }
        for tls in [
            "tcp",
            "posix,cma,tcp",
            "rc_x,sm",
            "dc_mlx5",
            "ud_v",
            "ib",
            "all",
            "^tcp",
            "",
        ] {
            assert!(can_detect_peer_failure(tls), "{tls}");
        }
    }
}
