//! [`Worker`]: the owner of one UCP worker (`ucp_worker_h`), the unit of progress.
//!
//! A worker belongs to the thread that created it: it is made in single-thread mode and
//! [`Worker`] is not `Send`, nor is anything that refers to it ([`crate::Endpoint`],
//! [`crate::Request`], [`crate::RemoteKey`], [`crate::Incoming`]). A shard or a client thread
//! creates its own worker from the shared [`Context`].
//!
//! # Progress and waiting
//!
//! Nothing happens on a worker unless its thread calls [`Worker::progress`]. A poll loop calls
//! it when there is work; when idle it sleeps on the worker's event fd ([`Worker::event_fd`],
//! armed with [`Worker::arm`]) together with its other event sources, or in
//! [`Worker::wait_for_event`] when the worker is its only source.
//!
//! # Active messages
//!
//! [`Worker::listen`] registers a handler for an active message id. Messages arriving during
//! progress are queued, in arrival order, and taken with [`Worker::take_incoming`]. A message's
//! data is not copied when UCX lets it persist (eager data it keeps for us, or rendezvous
//! data, which stays on the sender until the receiver says where it should land); small eager
//! data that UCX cannot keep is copied into the queue. See [`Incoming`].
//!
//! # Teardown
//!
//! Endpoints, requests, incoming messages and remote keys hold a reference to the worker's
//! inner state, so the worker is destroyed only after all of them; the worker in turn keeps the
//! context alive.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::os::fd::RawFd;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ucx1_sys::*;

use crate::context::Context;
use crate::error::{check, Error, Result, Status};
use crate::request::{start, Callback, Keep, Request};

/// The data of an arriving active message, as the receive handler left it.
pub(crate) enum RawData {
    None,
    /// Eager data copied out of UCX's buffer.
    Copied(Vec<u8>),
    /// Eager data UCX keeps until `ucp_am_data_release`.
    Held(*mut c_void, usize),
    /// Rendezvous descriptor: the data is still on the sender.
    Rendezvous(*mut c_void, usize),
}

pub(crate) struct RawIncoming {
    id: u16,
    header: Vec<u8>,
    data: RawData,
}

/// The argument of one registered receive handler.
struct HandlerArg {
    id: u16,
    queue: *const RefCell<VecDeque<RawIncoming>>,
}

/// The worker's state, shared by everything made from it.
pub(crate) struct WorkerInner {
    handle: ucp_worker_h,
    /// Arrived messages; boxed so the receive handlers can point at it.
    queue: Box<RefCell<VecDeque<RawIncoming>>>,
    /// Handler arguments, boxed so that UCX can keep pointers to them.
    #[allow(clippy::vec_box)]
    handlers: RefCell<Vec<Box<HandlerArg>>>,
    context: Arc<Context>,
    /// Whether an endpoint with peer failure detection was ever created on this worker: then
    /// "unreachable" from a later one means the peer, not the transports.
    pub(crate) peer_mode_works: std::cell::Cell<bool>,
}

impl WorkerInner {
    pub(crate) fn handle(&self) -> ucp_worker_h {
        self.handle
    }

    /// One round of progress; returns how many events were processed.
    pub(crate) fn progress(&self) -> u32 {
        // SAFETY: the worker is live and used only by this thread (WorkerInner is not Send).
        unsafe { ucp_worker_progress(self.handle) }
    }

    /// Progresses; if nothing happened, sleeps on the event fd for at most `timeout`.
    pub(crate) fn progress_or_sleep(&self, timeout: Duration) -> Result<()> {
        if self.progress() > 0 {
            return Ok(());
        }
        // SAFETY: as in `progress`.
        let armed = unsafe { ucp_worker_arm(self.handle) };
        match armed as i8 {
            0 => poll_fd(self.event_fd()?, timeout),
            code if Status(code) == Status::BUSY => Ok(()),
            code => Err(Error::Ucx {
                op: "arm worker",
                status: Status(code),
            }),
        }
    }

    fn event_fd(&self) -> Result<RawFd> {
        let mut fd: RawFd = -1;
        // SAFETY: the worker is live; fd is an out pointer.
        check("get worker event fd", unsafe {
            ucp_worker_get_efd(self.handle, &mut fd)
        })?;
        Ok(fd)
    }
}

impl Drop for WorkerInner {
    fn drop(&mut self) {
        // Release what UCX holds for queued messages before the worker goes.
        for raw in self.queue.get_mut().drain(..) {
            release_raw(self.handle, raw.data);
        }
        // SAFETY: nothing refers to the worker any more (all holders of WorkerInner are gone).
        unsafe { ucp_worker_destroy(self.handle) };
    }
}

/// Gives UCX back the data of a message that will not be received.
pub(crate) fn release_raw(worker: ucp_worker_h, data: RawData) {
    if let RawData::Held(desc, _) | RawData::Rendezvous(desc, _) = data {
        // SAFETY: the descriptor came from the receive handler of this worker and is released
        // once, here, instead of being received.
        unsafe { ucp_am_data_release(worker, desc) };
    }
}

/// Sleeps until `fd` is readable or `timeout` passes.
fn poll_fd(fd: RawFd, timeout: Duration) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: pfd is one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::Io {
                op: "poll worker event fd",
                source: e,
            });
        }
    }
    Ok(())
}

unsafe extern "C" fn on_active_message(
    arg: *mut c_void,
    header: *const c_void,
    header_length: size_t,
    data: *mut c_void,
    length: size_t,
    param: *const ucp_am_recv_param_t,
) -> ucs_status_t {
    let (header_length, length) = (header_length as usize, length as usize);
    // SAFETY: arg is a HandlerArg boxed in the worker, which outlives its handlers.
    let arg = unsafe { &*(arg as *const HandlerArg) };
    let header = if header_length == 0 {
        Vec::new()
    } else {
        // SAFETY: UCX passes header_length readable bytes at header.
        unsafe { std::slice::from_raw_parts(header as *const u8, header_length) }.to_vec()
    };
    // SAFETY: UCX passes valid receive parameters.
    let attr = unsafe { (*param).recv_attr };
    let rndv = attr & ucp_am_recv_attr_t::UCP_AM_RECV_ATTR_FLAG_RNDV as u64 != 0;
    let persistent = attr & ucp_am_recv_attr_t::UCP_AM_RECV_ATTR_FLAG_DATA as u64 != 0;
    let (data, status) = if rndv {
        (
            RawData::Rendezvous(data, length),
            ucs_status_t::UCS_INPROGRESS,
        )
    } else if length == 0 {
        (RawData::None, ucs_status_t::UCS_OK)
    } else if persistent {
        (RawData::Held(data, length), ucs_status_t::UCS_INPROGRESS)
    } else {
        // SAFETY: eager data of `length` bytes is readable during the callback.
        let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, length) }.to_vec();
        (RawData::Copied(bytes), ucs_status_t::UCS_OK)
    };
    // SAFETY: the queue is boxed in the worker; no borrow of it is held across progress.
    let queue = unsafe { &*arg.queue };
    queue.borrow_mut().push_back(RawIncoming {
        id: arg.id,
        header,
        data,
    });
    status
}

/// Owner of a UCP worker. See the module documentation.
pub struct Worker {
    inner: Rc<WorkerInner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Worker {
    /// Creates a worker of `context` for the calling thread, with wake-up on events.
    pub fn new(context: &Arc<Context>) -> Result<Worker> {
        Worker::with_thread_mode(context, false)
    }

    /// As [`Worker::new`]; with `serialized`, UCX is told that several threads may use the
    /// worker one at a time (`UCS_THREAD_MODE_SERIALIZED`), for an owner that moves it
    /// between threads behind a lock.
    pub fn with_thread_mode(context: &Arc<Context>, serialized: bool) -> Result<Worker> {
        // SAFETY: ucp_worker_params_t is plain data; fields outside field_mask are ignored.
        let mut params: ucp_worker_params_t = unsafe { std::mem::zeroed() };
        params.field_mask = (ucp_worker_params_field::UCP_WORKER_PARAM_FIELD_THREAD_MODE
            | ucp_worker_params_field::UCP_WORKER_PARAM_FIELD_EVENTS)
            .0 as u64;
        params.thread_mode = if serialized {
            ucs_thread_mode_t::UCS_THREAD_MODE_SERIALIZED
        } else {
            ucs_thread_mode_t::UCS_THREAD_MODE_SINGLE
        };
        params.events = ucp_wakeup_event_types::UCP_WAKEUP_RMA as u32
            | ucp_wakeup_event_types::UCP_WAKEUP_TX as u32
            | ucp_wakeup_event_types::UCP_WAKEUP_RX as u32;
        let mut handle: ucp_worker_h = ptr::null_mut();
        // SAFETY: the context is live (held below); params is valid; handle is an out pointer.
        check("create worker", unsafe {
            ucp_worker_create(context.handle(), &params, &mut handle)
        })?;
        Ok(Worker {
            inner: Rc::new(WorkerInner {
                handle,
                queue: Box::new(RefCell::new(VecDeque::new())),
                handlers: RefCell::new(Vec::new()),
                context: context.clone(),
                peer_mode_works: std::cell::Cell::new(false),
            }),
        })
    }

    /// The context the worker was made from.
    pub fn context(&self) -> &Arc<Context> {
        &self.inner.context
    }

    pub(crate) fn inner(&self) -> &Rc<WorkerInner> {
        &self.inner
    }

    /// The worker's address, which a peer passes to [`crate::Endpoint::connect`].
    pub fn address(&self) -> Result<Vec<u8>> {
        let mut address: *mut ucp_address_t = ptr::null_mut();
        let mut length: size_t = 0;
        // SAFETY: the worker is live; both are out pointers.
        check("get worker address", unsafe {
            ucp_worker_get_address(self.inner.handle, &mut address, &mut length)
        })?;
        // SAFETY: UCX returned `length` readable bytes at `address`.
        let bytes =
            unsafe { std::slice::from_raw_parts(address as *const u8, length as usize) }.to_vec();
        // SAFETY: the address came from ucp_worker_get_address and is released once.
        unsafe { ucp_worker_release_address(self.inner.handle, address) };
        Ok(bytes)
    }

    /// One round of progress, without blocking; returns how many events were processed.
    pub fn progress(&self) -> u32 {
        self.inner.progress()
    }

    /// The fd to sleep on when idle, after [`Worker::arm`] returned `true`.
    pub fn event_fd(&self) -> Result<RawFd> {
        self.inner.event_fd()
    }

    /// Arms the event fd. `false` means events are pending: progress before sleeping.
    pub fn arm(&self) -> Result<bool> {
        // SAFETY: the worker is live and used by this thread only.
        let status = unsafe { ucp_worker_arm(self.inner.handle) };
        match status as i8 {
            0 => Ok(true),
            code if Status(code) == Status::BUSY => Ok(false),
            code => Err(Error::Ucx {
                op: "arm worker",
                status: Status(code),
            }),
        }
    }

    /// Progresses, and if nothing happened sleeps until an event arrives or `timeout` passes.
    pub fn wait_for_event(&self, timeout: Duration) -> Result<()> {
        self.inner.progress_or_sleep(timeout)
    }

    /// Queues active messages with id `id` for [`Worker::take_incoming`].
    pub fn listen(&self, id: u16) -> Result<()> {
        let arg = Box::new(HandlerArg {
            id,
            queue: &*self.inner.queue,
        });
        // SAFETY: ucp_am_handler_param_t is plain data; fields outside field_mask are ignored.
        let mut param: ucp_am_handler_param_t = unsafe { std::mem::zeroed() };
        param.field_mask = (ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_ID
            | ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_FLAGS
            | ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_CB
            | ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_ARG)
            .0 as u64;
        param.id = u32::from(id);
        param.flags = (ucp_am_cb_flags::UCP_AM_FLAG_WHOLE_MSG
            | ucp_am_cb_flags::UCP_AM_FLAG_PERSISTENT_DATA)
            .0;
        param.cb = Some(on_active_message);
        param.arg = &*arg as *const HandlerArg as *mut c_void;
        // SAFETY: the argument is boxed and kept in the worker for its whole life.
        check("set active message handler", unsafe {
            ucp_worker_set_am_recv_handler(self.inner.handle, &param)
        })?;
        self.inner.handlers.borrow_mut().push(arg);
        Ok(())
    }

    /// Messages arrived and not taken yet.
    pub fn incoming_len(&self) -> usize {
        self.inner.queue.borrow().len()
    }

    /// The oldest arrived message not taken yet.
    pub fn take_incoming(&self) -> Option<Incoming> {
        let raw = self.inner.queue.borrow_mut().pop_front()?;
        Some(Incoming {
            id: raw.id,
            header: raw.header,
            data: raw.data,
            worker: self.inner.clone(),
        })
    }
}

/// An arrived active message: its id, its header, and its data, which may still have to be
/// received (rendezvous). Dropping it without receiving releases the data.
pub struct Incoming {
    /// The active message id.
    pub id: u16,
    /// The header the sender passed (copied; headers are small).
    pub header: Vec<u8>,
    data: RawData,
    worker: Rc<WorkerInner>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("id", &self.id)
            .field("header_len", &self.header.len())
            .field("data_len", &self.data_len())
            .field("rendezvous", &self.is_rendezvous())
            .finish()
    }
}

impl Incoming {
    /// Bytes of data the message carries.
    pub fn data_len(&self) -> usize {
        match &self.data {
            RawData::None => 0,
            RawData::Copied(v) => v.len(),
            RawData::Held(_, len) | RawData::Rendezvous(_, len) => *len,
        }
    }

    /// Whether the data is still on the sender and must be received with
    /// [`Incoming::receive_into`].
    pub fn is_rendezvous(&self) -> bool {
        matches!(self.data, RawData::Rendezvous(..))
    }

    /// The data, when it arrived with the message (eager).
    pub fn data(&self) -> Option<&[u8]> {
        match &self.data {
            RawData::None => Some(&[]),
            RawData::Copied(v) => Some(v),
            RawData::Held(ptr, len) => {
                // SAFETY: UCX keeps held data until it is released, which happens only in Drop.
                Some(unsafe { std::slice::from_raw_parts(*ptr as *const u8, *len) })
            }
            RawData::Rendezvous(..) => None,
        }
    }

    /// Receives the data into `buf`, which must hold [`Incoming::data_len`] bytes: rendezvous
    /// data is transferred by UCX straight into it (with RDMA where the transport has it);
    /// eager data is copied. The request completes when the data is there.
    ///
    /// # Safety
    ///
    /// `buf` must be valid for writes of `data_len()` bytes and not be accessed otherwise
    /// until the returned request has completed; memory registered with a
    /// [`crate::MemRegion`] lets UCX transfer without registering it again.
    pub unsafe fn receive_into(mut self, buf: *mut u8, buf_len: usize) -> Result<Request> {
        let len = self.data_len();
        if buf_len < len {
            return Err(Error::InvalidArgument(format!(
                "a {len}-byte message does not fit a {buf_len}-byte buffer"
            )));
        }
        let data = std::mem::replace(&mut self.data, RawData::None);
        let desc = match data {
            RawData::Rendezvous(desc, _) => desc,
            eager => {
                let bytes = match &eager {
                    RawData::Copied(v) => v.as_slice(),
                    // SAFETY: held data stays valid until released just below.
                    RawData::Held(ptr, len) => unsafe {
                        std::slice::from_raw_parts(*ptr as *const u8, *len)
                    },
                    _ => &[],
                };
                // SAFETY: the caller guarantees `buf` holds `len` writable bytes.
                unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
                release_raw(self.worker.handle(), eager);
                return start(
                    &self.worker,
                    "copy message data",
                    Callback::Send,
                    0,
                    len,
                    Keep::default(),
                    |_| ptr::null_mut(),
                );
            }
        };
        let worker = self.worker.clone();
        start(
            &worker,
            "receive message data",
            Callback::AmRecv,
            0,
            len,
            Keep::default(),
            |param| {
                // SAFETY: desc is this worker's rendezvous descriptor, consumed once here; the
                // caller guarantees the buffer.
                unsafe {
                    ucp_am_recv_data_nbx(worker.handle(), desc, buf.cast(), len as size_t, param)
                }
            },
        )
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let data = std::mem::replace(&mut self.data, RawData::None);
        release_raw(self.worker.handle(), data);
    }
}
