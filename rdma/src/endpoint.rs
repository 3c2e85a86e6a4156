//! [`Endpoint`]: the owner of one UCP endpoint (`ucp_ep_h`), a connection to a peer worker.
//!
//! Endpoints are created from the peer's worker address with peer error handling: when the
//! peer dies or the link breaks, UCX calls the endpoint's error handler, which marks it
//! failed, and completes every request pending on it with an error. Sends on a failed endpoint
//! fail at once with [`Error::EndpointFailed`]. Transports that cannot detect a dead peer
//! (shared memory alone) get an endpoint without detection; see [`Endpoint::connect`].
//!
//! Teardown: dropping the last handle closes the endpoint (flushing it when healthy, forcibly
//! when failed) and progresses the worker until the close completes or a grace period passes;
//! [`Endpoint::abort`] closes it forcibly at once (every later operation fails as on a failed
//! endpoint, before touching the dead handle).
//! Remote keys unpacked on an endpoint and requests started on it keep it alive.

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;
use std::time::Instant;

use ucx1_sys::*;

use crate::error::{check, Error, Result, Status};
use crate::memory::RemoteKey;
use crate::request::{start, Callback, Keep, Request, CANCEL_GRACE};
use crate::worker::{Worker, WorkerInner};

/// The direction of an RMA operation.
#[derive(Clone, Copy)]
enum Rma {
    Put,
    Get,
}

/// What the error handler records.
struct EpShared {
    failed: Cell<Option<i8>>,
}

unsafe extern "C" fn on_endpoint_error(arg: *mut c_void, _ep: ucp_ep_h, status: ucs_status_t) {
    // SAFETY: arg is the EpShared reference owned by the endpoint, which is released only after
    // the endpoint is closed (no callback can follow).
    let shared = unsafe { &*(arg as *const EpShared) };
    shared.failed.set(Some(status as i8));
}

pub(crate) struct EpInner {
    handle: ucp_ep_h,
    shared: *const EpShared,
    worker: Rc<WorkerInner>,
    detects_failure: bool,
    /// Whether the endpoint was closed ([`Endpoint::abort`]); the handle is then dead.
    closed: Cell<bool>,
    /// Whether the close completed, so the error handler can no longer run.
    settled: Cell<bool>,
}

impl EpInner {
    pub(crate) fn handle(&self) -> ucp_ep_h {
        self.handle
    }

    fn failure(&self) -> Option<Status> {
        // SAFETY: shared lives as long as self (released in Drop).
        unsafe { &*self.shared }.failed.get().map(Status)
    }
}

impl EpInner {
    /// Closes the endpoint (forcibly if `force`) and progresses the worker until the close
    /// completes or a grace period passes. Once only: the handle is dead afterwards.
    fn close(&self, force: bool) {
        if self.closed.replace(true) {
            return;
        }
        let flags = if force {
            ucp_ep_close_flags_t::UCP_EP_CLOSE_FLAG_FORCE.0
        } else {
            0
        };
        let handle = self.handle;
        let closing = start(
            &self.worker,
            "close endpoint",
            Callback::Send,
            flags,
            0,
            Keep::default(),
            |param| {
                // SAFETY: the endpoint is live and closed exactly once (`closed` was false).
                unsafe { ucp_ep_close_nbx(handle, param) }
            },
        );
        let mut settled = true;
        if let Ok(request) = closing {
            let until = Instant::now() + CANCEL_GRACE;
            while !request.is_done() && Instant::now() < until {
                self.worker.progress();
            }
            settled = request.is_done();
            request.detach();
        }
        self.settled.set(settled);
    }
}

impl Drop for EpInner {
    fn drop(&mut self) {
        self.close(self.failure().is_some());
        if self.settled.get() {
            // SAFETY: the endpoint is closed; its error handler cannot run any more.
            drop(unsafe { Rc::from_raw(self.shared) });
        }
        // Otherwise the error handler's state is left to UCX rather than freed under it.
    }
}

/// A connection to a peer worker. Cloning shares the connection.
#[derive(Clone)]
pub struct Endpoint {
    inner: Rc<EpInner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("failed", &self.inner.failure())
            .finish()
    }
}

impl Endpoint {
    /// Connects `worker` to the worker whose address is `address` (see
    /// [`Worker::address`]).
    ///
    /// The endpoint asks for peer failure detection. UCX grants it only over transports that
    /// can detect a dead peer (TCP, InfiniBand); with shared memory alone it refuses such an
    /// endpoint as unreachable (and logs an error line), and the endpoint is then created
    /// without failure detection. When the context's transports are known to be shared memory
    /// alone ([`crate::Context::peer_failure_possible`]) it is not asked at all, and once such an
    /// endpoint was granted on this worker, "unreachable" is the peer's state and returned as
    /// an error (no second connect attempt). Without failure
    /// detection ([`Endpoint::detects_failure`] is `false`) a dead peer is noticed by request
    /// deadlines instead.
    pub fn connect(worker: &Worker, address: &[u8]) -> Result<Endpoint> {
        if address.is_empty() {
            return Err(Error::InvalidArgument("empty worker address".into()));
        }
        if !worker.context().peer_failure_possible() {
            return Endpoint::create(worker, address, false);
        }
        let works = &worker.inner().peer_mode_works;
        match Endpoint::create(worker, address, true) {
            Err(Error::Ucx { status, .. })
                if status.errno() == libc::EHOSTUNREACH && !works.get() =>
            {
                Endpoint::create(worker, address, false)
            }
            Ok(ep) => {
                works.set(true);
                Ok(ep)
            }
            result => result,
        }
    }

    fn create(worker: &Worker, address: &[u8], detect_failure: bool) -> Result<Endpoint> {
        let shared = Rc::into_raw(Rc::new(EpShared {
            failed: Cell::new(None),
        }));
        // SAFETY: ucp_ep_params_t is plain data; fields outside field_mask are ignored.
        let mut params: ucp_ep_params_t = unsafe { std::mem::zeroed() };
        params.field_mask = (ucp_ep_params_field::UCP_EP_PARAM_FIELD_REMOTE_ADDRESS
            | ucp_ep_params_field::UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE
            | ucp_ep_params_field::UCP_EP_PARAM_FIELD_ERR_HANDLER)
            .0 as u64;
        params.address = address.as_ptr().cast();
        params.err_mode = if detect_failure {
            ucp_err_handling_mode_t::UCP_ERR_HANDLING_MODE_PEER
        } else {
            ucp_err_handling_mode_t::UCP_ERR_HANDLING_MODE_NONE
        };
        params.err_handler = ucp_err_handler {
            cb: Some(on_endpoint_error),
            arg: shared as *mut c_void,
        };
        let mut handle: ucp_ep_h = ptr::null_mut();
        let inner = worker.inner().clone();
        // SAFETY: the worker is live; the address bytes are valid for the call (UCX copies
        // what it needs); handle is an out pointer.
        let status = unsafe { ucp_ep_create(inner.handle(), &params, &mut handle) };
        if let Err(e) = check("create endpoint", status) {
            // SAFETY: UCX did not keep the handler argument.
            drop(unsafe { Rc::from_raw(shared) });
            return Err(e);
        }
        Ok(Endpoint {
            inner: Rc::new(EpInner {
                handle,
                shared,
                worker: inner,
                detects_failure: detect_failure,
                closed: Cell::new(false),
                settled: Cell::new(false),
            }),
        })
    }

    /// Whether UCX reports the peer's death on this endpoint (see [`Endpoint::connect`]).
    pub fn detects_failure(&self) -> bool {
        self.inner.detects_failure
    }

    /// Closes the connection now, forcibly, whatever other handles to it exist: operations in
    /// flight on it end with an error and no data arrives through it any more (UCX discards
    /// its transport connections). For a transfer that could not be cancelled and must not
    /// touch its memory later. The endpoint counts as failed from then on.
    pub fn abort(&self) {
        // SAFETY: shared lives as long as the endpoint (released in Drop).
        let shared = unsafe { &*self.inner.shared };
        if shared.failed.get().is_none() {
            shared
                .failed
                .set(Some(ucs_status_t::UCS_ERR_CANCELED as i8));
        }
        self.inner.close(true);
    }

    /// The failure the error handler reported, if the endpoint failed.
    pub fn failed(&self) -> Option<Error> {
        self.inner
            .failure()
            .map(|status| Error::EndpointFailed { status })
    }

    fn check_alive(&self) -> Result<()> {
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends active message `id` with `header` and an owned `payload`; UCX picks eager or
    /// rendezvous by size. Both are kept alive by the request until it completes.
    pub fn am_send(&self, id: u16, header: &[u8], payload: Vec<u8>) -> Result<Request> {
        self.am_send_owned(id, header.to_vec(), payload)
    }

    /// Like [`Endpoint::am_send`], taking the header by value (no copy).
    pub fn am_send_owned(&self, id: u16, header: Vec<u8>, payload: Vec<u8>) -> Result<Request> {
        let (ptr, len) = (payload.as_ptr(), payload.len());
        let keep = Keep {
            header,
            payload,
            ..Keep::default()
        };
        // SAFETY: the payload is owned by the request (in `keep`) until it completes; moving
        // the Vec does not move its heap buffer.
        unsafe { self.am_send_with(id, ptr, len, keep) }
    }

    /// Sends active message `id` with `header` and `len` bytes at `data`, without copying them
    /// (rendezvous transfers read them directly, with RDMA where the transport has it).
    ///
    /// # Safety
    ///
    /// `data..data + len` must stay valid and unchanged until the returned request completes
    /// (or, when detached, until the peer has acknowledged the message otherwise).
    pub unsafe fn am_send_raw(
        &self,
        id: u16,
        header: &[u8],
        data: *const u8,
        len: usize,
    ) -> Result<Request> {
        let keep = Keep {
            header: header.to_vec(),
            ..Keep::default()
        };
        // SAFETY: forwarded from the caller.
        unsafe { self.am_send_with(id, data, len, keep) }
    }

    /// # Safety
    ///
    /// `data..data + len` stays valid until the request completes (owned by `keep` or by the
    /// caller's promise).
    unsafe fn am_send_with(
        &self,
        id: u16,
        data: *const u8,
        len: usize,
        mut keep: Keep,
    ) -> Result<Request> {
        self.check_alive()?;
        // UCX reads the header until the send completes: the request owns it (its heap buffer
        // does not move when the Vec is moved into the request state).
        let (header_ptr, header_len) = (keep.header.as_ptr(), keep.header.len());
        keep.endpoint = Some(self.inner.clone());
        let ep = self.inner.handle();
        start(
            &self.inner.worker,
            "send active message",
            Callback::Send,
            0,
            len,
            keep,
            |param| {
                // SAFETY: header and data stay valid until completion (kept by the request, or by
                // the caller's promise); the endpoint is live.
                unsafe {
                    ucp_am_send_nbx(
                        ep,
                        u32::from(id),
                        header_ptr.cast(),
                        header_len as size_t,
                        data.cast(),
                        len as size_t,
                        param,
                    )
                }
            },
        )
    }

    /// Writes `len` bytes at `local` to `remote_addr` in the peer's memory under `rkey`.
    ///
    /// # Safety
    ///
    /// `local..local + len` must stay valid and unchanged until the request completes.
    pub unsafe fn put(
        &self,
        local: *const u8,
        len: usize,
        remote_addr: u64,
        rkey: &RemoteKey,
    ) -> Result<Request> {
        // SAFETY: forwarded from the caller.
        unsafe { self.rma(Rma::Put, local.cast_mut(), len, remote_addr, rkey) }
    }

    /// Reads `len` bytes at `remote_addr` in the peer's memory under `rkey` into `local`.
    ///
    /// # Safety
    ///
    /// `local..local + len` must be valid for writes and not be accessed otherwise until the
    /// request completes.
    pub unsafe fn get(
        &self,
        local: *mut u8,
        len: usize,
        remote_addr: u64,
        rkey: &RemoteKey,
    ) -> Result<Request> {
        // SAFETY: forwarded from the caller.
        unsafe { self.rma(Rma::Get, local, len, remote_addr, rkey) }
    }

    /// # Safety
    ///
    /// As for [`Endpoint::put`] and [`Endpoint::get`].
    unsafe fn rma(
        &self,
        op: Rma,
        local: *mut u8,
        len: usize,
        remote_addr: u64,
        rkey: &RemoteKey,
    ) -> Result<Request> {
        self.check_alive()?;
        let (ep, key) = (self.inner.handle(), rkey.handle());
        let keep = Keep {
            endpoint: Some(self.inner.clone()),
            rkey: Some(rkey.clone()),
            ..Keep::default()
        };
        let name = match op {
            Rma::Put => "put",
            Rma::Get => "get",
        };
        start(
            &self.inner.worker,
            name,
            Callback::Send,
            0,
            len,
            keep,
            |param| {
                let len = len as size_t;
                match op {
                    // SAFETY: the caller guarantees the local buffer; rkey and endpoint
                    // are kept alive by the request.
                    Rma::Put => unsafe {
                        ucp_put_nbx(ep, local.cast(), len, remote_addr, key, param)
                    },
                    // SAFETY: as above.
                    Rma::Get => unsafe {
                        ucp_get_nbx(ep, local.cast(), len, remote_addr, key, param)
                    },
                }
            },
        )
    }

    /// Completes when every operation started on the endpoint before it is complete at the
    /// peer (puts visible in its memory).
    pub fn flush(&self) -> Result<Request> {
        self.check_alive()?;
        let ep = self.inner.handle();
        let keep = Keep {
            endpoint: Some(self.inner.clone()),
            ..Keep::default()
        };
        start(
            &self.inner.worker,
            "flush endpoint",
            Callback::Send,
            0,
            0,
            keep,
            |param| {
                // SAFETY: the endpoint is live (kept by the request).
                unsafe { ucp_ep_flush_nbx(ep, param) }
            },
        )
    }

    /// Unpacks a remote key the peer packed with [`crate::MemRegion::pack_rkey`].
    pub fn unpack_rkey(&self, packed: &[u8]) -> Result<RemoteKey> {
        self.check_alive()?;
        RemoteKey::unpack(self.inner.clone(), packed)
    }
}
