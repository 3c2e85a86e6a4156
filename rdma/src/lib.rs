//! BenchFS transport: a small, safe layer over UCX (`ucx1-sys`) for the storage node and the
//! client.
//!
//! - [`Context`] (shared, `Send + Sync`) owns the UCP context, configured from the environment
//!   (`UCX_TLS`, `UCX_NET_DEVICES`, ...); nothing here picks a transport.
//! - [`Worker`] (one per thread, not `Send`) owns a UCP worker: progress, event-fd wake-up,
//!   its address, and the queue of arriving active messages ([`Incoming`]).
//! - [`Endpoint`] owns a connection to a peer worker, with peer error handling: a dead peer
//!   fails the endpoint and every request pending on it.
//! - [`MemRegion`] registers caller-owned memory (a storage slab, a user's buffer);
//!   [`RemoteKey`] reaches a peer's region for [`Endpoint::put`] and [`Endpoint::get`].
//! - [`RegCache`] keeps a client thread's registrations of its callers' buffers, with their
//!   packed remote keys, and drops those whose memory is unmapped (UCX memory hooks).
//! - [`Request`] is one operation in flight; it owns what UCX may still touch until UCX reports
//!   completion, and is cancelled when dropped unfinished.
//! - [`rpc`] frames requests and replies with a 64-bit request id, matches replies by id and
//!   enforces a deadline per request.
//!
//! Teardown order, enforced by reference counting: requests, remote keys and incoming
//! messages before their endpoint and worker; endpoints before their worker; workers and
//! memory regions before the context.

pub mod context;
pub mod endpoint;
pub mod error;
mod memhooks;
pub mod memory;
pub mod regcache;
pub mod request;
pub mod rpc;
pub mod worker;

pub use context::Context;
pub use endpoint::Endpoint;
pub use error::{Error, Result, Status};
pub use memory::{MemRegion, RemoteKey};
pub use regcache::{CachedRegion, RegCache};
pub use request::Request;
pub use worker::{Incoming, Worker};
