//! [`Request`]: one non-blocking UCX operation in flight.
//!
//! Every `*_nbx` call is started with a completion callback whose user data is one strong
//! reference to the request's shared state. That state also owns whatever must outlive the
//! operation (headers, owned payloads, the memory regions and remote keys it uses), so the
//! memory UCX may still touch belongs to the operation until its callback has run, whatever
//! the caller does with the [`Request`] handle:
//!
//! - an operation that completes at once gives its reference back immediately;
//! - otherwise the callback takes it back when UCX completes the operation (successfully, with
//!   an error such as a failed endpoint, or cancelled);
//! - dropping an unfinished [`Request`] cancels the operation and frees the UCX request; the
//!   state lives on in the callback's reference until UCX reports the cancellation;
//!   [`Request::detach`] gives the handle up without cancelling.
//!
//! Requests are driven by their worker's progress: [`Request::wait`] progresses the worker
//! until completion or the deadline, after which the operation is cancelled and
//! [`Error::TimedOut`] returned.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ucx1_sys::*;

use crate::endpoint::EpInner;
use crate::error::{ptr_status, Error, PtrStatus, Result, Status};
use crate::memory::RemoteKey;
use crate::worker::WorkerInner;

/// How long a cancelled or closing operation is progressed before it is abandoned to UCX.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// What an operation must hold until it completes: memory UCX reads or writes, and the handles
/// it uses. Typed fields rather than a list of boxes: one allocation per request in all.
#[derive(Default)]
#[allow(dead_code)] // the fields are held to be dropped at completion, never read
pub(crate) struct Keep {
    /// The active message header, which UCX reads until the send completes.
    pub header: Vec<u8>,
    /// An owned payload.
    pub payload: Vec<u8>,
    /// The endpoint the operation runs on.
    pub endpoint: Option<Rc<EpInner>>,
    /// The remote key of an RMA operation.
    pub rkey: Option<RemoteKey>,
}

/// The state shared between a [`Request`] and its completion callback.
pub(crate) struct ReqState {
    /// `Some(0)` on success, `Some(code)` on failure, `None` while in flight.
    status: Cell<Option<i8>>,
    /// Bytes transferred (for receives, what arrived).
    length: Cell<usize>,
    /// What must live until the operation completes.
    keep: RefCell<Keep>,
}

impl ReqState {
    fn complete(&self, status: i8, length: usize) {
        self.status.set(Some(status));
        self.length.set(length);
        // Buffers, headers and keys are no longer used by UCX.
        drop(self.keep.take());
    }
}

/// Which completion callback an operation takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Callback {
    /// Sends, RMA, flushes, closes: `ucp_send_nbx_callback_t`.
    Send,
    /// Receives of active message data: `ucp_am_recv_data_nbx_callback_t`.
    AmRecv,
}

unsafe extern "C" fn send_done(
    _request: *mut c_void,
    status: ucs_status_t,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is the strong reference handed to UCX by `start`; it is taken back
    // exactly once, here, because UCX calls the callback once.
    let state = unsafe { Rc::from_raw(user_data as *const ReqState) };
    let length = state.length.get();
    state.complete(status as i8, length);
}

unsafe extern "C" fn am_recv_done(
    _request: *mut c_void,
    status: ucs_status_t,
    length: size_t,
    user_data: *mut c_void,
) {
    // SAFETY: as in `send_done`.
    let state = unsafe { Rc::from_raw(user_data as *const ReqState) };
    state.complete(status as i8, length as usize);
}

/// Starts an operation: `call` receives the request parameters (callback, user data and
/// `flags`, if non-zero) and makes the `*_nbx` call. `length` is what the operation transfers
/// when it completes; `keep` is what it must hold until then.
pub(crate) fn start(
    worker: &Rc<WorkerInner>,
    op: &'static str,
    callback: Callback,
    flags: u32,
    length: usize,
    keep: Keep,
    call: impl FnOnce(&ucp_request_param_t) -> ucs_status_ptr_t,
) -> Result<Request> {
    let state = Rc::new(ReqState {
        status: Cell::new(None),
        length: Cell::new(length),
        keep: RefCell::new(keep),
    });
    let user_data = Rc::into_raw(state.clone()) as *mut c_void;
    // SAFETY: ucp_request_param_t is plain data; fields outside op_attr_mask are ignored.
    let mut param: ucp_request_param_t = unsafe { std::mem::zeroed() };
    param.op_attr_mask = ucp_op_attr_t::UCP_OP_ATTR_FIELD_CALLBACK as u32
        | ucp_op_attr_t::UCP_OP_ATTR_FIELD_USER_DATA as u32;
    if flags != 0 {
        param.op_attr_mask |= ucp_op_attr_t::UCP_OP_ATTR_FIELD_FLAGS as u32;
        param.flags = flags;
    }
    match callback {
        Callback::Send => param.cb.send = Some(send_done),
        Callback::AmRecv => param.cb.recv_am = Some(am_recv_done),
    }
    param.user_data = user_data;
    let returned = call(&param);
    let handle = match ptr_status(returned) {
        PtrStatus::Request(handle) => handle,
        immediate => {
            // UCX will not call the callback: take its reference back.
            // SAFETY: the reference was made by into_raw above and UCX did not keep it.
            drop(unsafe { Rc::from_raw(user_data as *const ReqState) });
            if let PtrStatus::Failed(status) = immediate {
                drop(state.keep.take());
                return Err(Error::Ucx { op, status });
            }
            state.complete(0, length);
            ptr::null_mut()
        }
    };
    Ok(Request {
        state,
        handle,
        worker: worker.clone(),
        op,
    })
}

/// A UCX operation in flight (or finished). See the module documentation.
pub struct Request {
    state: Rc<ReqState>,
    /// The UCX request, or null when the operation completed at once.
    handle: *mut c_void,
    worker: Rc<WorkerInner>,
    op: &'static str,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("op", &self.op)
            .field("status", &self.state.status.get())
            .finish()
    }
}

impl Request {
    /// Whether the operation has completed (successfully or not).
    pub fn is_done(&self) -> bool {
        self.state.status.get().is_some()
    }

    /// The outcome once complete: the bytes transferred, or the error.
    pub fn result(&self) -> Option<Result<usize>> {
        self.state.status.get().map(|code| match code {
            0 => Ok(self.state.length.get()),
            code => Err(Error::Ucx {
                op: self.op,
                status: Status(code),
            }),
        })
    }

    /// Progresses the worker until the operation completes or `timeout` passes; on timeout
    /// the operation is cancelled and [`Error::TimedOut`] returned.
    pub fn wait(self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        while !self.is_done() {
            let now = Instant::now();
            if now >= deadline {
                self.cancel_and_settle();
                return Err(Error::TimedOut { op: self.op });
            }
            self.worker.progress_or_sleep(deadline - now)?;
        }
        self.result().expect("done")
    }

    /// Cancels the operation if it is still in flight; it then completes with an error.
    pub fn cancel(&self) {
        if !self.handle.is_null() && !self.is_done() {
            // SAFETY: the handle is a live request of this worker (freed only in Drop).
            unsafe { ucp_request_cancel(self.worker.handle(), self.handle) };
        }
    }

    /// Lets the operation run to completion on its own: the handle is given up without
    /// cancelling (UCX frees the request when it completes). For sends whose outcome the caller
    /// learns otherwise, e.g. from a reply.
    pub fn detach(mut self) {
        let handle = std::mem::replace(&mut self.handle, ptr::null_mut());
        if !handle.is_null() {
            // SAFETY: a live request of this worker, freed exactly once; UCX releases it when
            // the operation completes and still runs the callback.
            unsafe { ucp_request_free(handle) };
        }
    }

    fn cancel_and_settle(&self) {
        self.cancel();
        let until = Instant::now() + CANCEL_GRACE;
        while !self.is_done() && Instant::now() < until {
            self.worker.progress();
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.handle.is_null() {
            return;
        }
        self.cancel();
        // SAFETY: the handle came from a *_nbx call and is freed exactly once; UCX releases an
        // unfinished request when it completes, and the callback still runs (taking back its
        // reference to the state, which owns the operation's memory).
        unsafe { ucp_request_free(self.handle) };
    }
}
