//! Registered memory: [`MemRegion`] (a `ucp_mem_h` over caller-owned memory) and
//! [`RemoteKey`] (a `ucp_rkey_h` through which an endpoint reaches a peer's region).
//!
//! A region registers memory the caller owns (a storage slab, a user's I/O buffer) without
//! copying or reallocating it; the caller promises the memory outlives the region. Its remote
//! key is packed into bytes, sent to the peer, and unpacked there on the endpoint that will use
//! it. Requests that use a remote key hold a reference to it, and a key holds its endpoint, so
//! neither can be destroyed under an operation in flight.

use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;

use ucx1_sys::*;

use crate::context::Context;
use crate::endpoint::EpInner;
use crate::error::{check, Error, Result};

/// Owner of one registration of caller-owned memory.
pub struct MemRegion {
    handle: ucp_mem_h,
    address: *mut u8,
    len: usize,
    context: Arc<Context>,
}

impl std::fmt::Debug for MemRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemRegion")
            .field("address", &self.address)
            .field("len", &self.len)
            .finish()
    }
}

impl MemRegion {
    /// Registers `len` bytes at `address` with `context`.
    ///
    /// # Safety
    ///
    /// The memory must be mapped now and stay mapped while any request reads or writes it
    /// (locally, or remotely through its key). Unmapping it while the region is registered
    /// is allowed when no transfer uses it: dropping the region afterwards only releases the
    /// registration and touches no memory (the registration cache relies on this).
    pub unsafe fn register(
        context: &Arc<Context>,
        address: *mut u8,
        len: usize,
    ) -> Result<MemRegion> {
        if address.is_null() || len == 0 {
            return Err(Error::InvalidArgument(
                "cannot register an empty region".into(),
            ));
        }
        // SAFETY: ucp_mem_map_params_t is plain data; fields outside field_mask are ignored.
        let mut params: ucp_mem_map_params_t = unsafe { std::mem::zeroed() };
        params.field_mask = (ucp_mem_map_params_field::UCP_MEM_MAP_PARAM_FIELD_ADDRESS
            | ucp_mem_map_params_field::UCP_MEM_MAP_PARAM_FIELD_LENGTH)
            .0 as u64;
        params.address = address.cast();
        params.length = len as size_t;
        let mut handle: ucp_mem_h = ptr::null_mut();
        // SAFETY: the context is live; the caller guarantees the memory; handle is out.
        check("register memory", unsafe {
            ucp_mem_map(context.handle(), &params, &mut handle)
        })?;
        Ok(MemRegion {
            handle,
            address,
            len,
            context: context.clone(),
        })
    }

    /// Start of the registered memory, the base of remote addresses into it.
    pub fn address(&self) -> *mut u8 {
        self.address
    }

    /// Length of the registered memory.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never: registration refuses empty regions).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The remote key of the region as bytes, for a peer's [`crate::Endpoint::unpack_rkey`].
    pub fn pack_rkey(&self) -> Result<Vec<u8>> {
        let mut buffer: *mut c_void = ptr::null_mut();
        let mut size: size_t = 0;
        // SAFETY: context and memory handle are live; both are out pointers.
        check("pack remote key", unsafe {
            ucp_rkey_pack(self.context.handle(), self.handle, &mut buffer, &mut size)
        })?;
        // SAFETY: UCX returned `size` readable bytes at `buffer`.
        let bytes =
            unsafe { std::slice::from_raw_parts(buffer as *const u8, size as usize) }.to_vec();
        // SAFETY: the buffer came from ucp_rkey_pack and is released once.
        unsafe { ucp_rkey_buffer_release(buffer) };
        Ok(bytes)
    }
}

impl Drop for MemRegion {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by this context and is unmapped once; the caller's
        // contract says no request uses it any more.
        unsafe { ucp_mem_unmap(self.context.handle(), self.handle) };
    }
}

struct RkeyInner {
    handle: ucp_rkey_h,
    _endpoint: Rc<EpInner>,
}

impl Drop for RkeyInner {
    fn drop(&mut self) {
        // SAFETY: the key was unpacked on a live endpoint (held) and is destroyed once; requests
        // using it hold a reference, so none is in flight.
        unsafe { ucp_rkey_destroy(self.handle) };
    }
}

/// A peer's remote key, unpacked on the endpoint that uses it. Cloning shares it.
#[derive(Clone)]
pub struct RemoteKey {
    inner: Rc<RkeyInner>,
}

impl std::fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKey").finish_non_exhaustive()
    }
}

impl RemoteKey {
    /// Unpacks `packed`, which must be bytes a peer's [`MemRegion::pack_rkey`] produced: UCX
    /// does not validate their structure.
    pub(crate) fn unpack(endpoint: Rc<EpInner>, packed: &[u8]) -> Result<RemoteKey> {
        if packed.is_empty() {
            return Err(Error::InvalidArgument("empty packed remote key".into()));
        }
        let mut handle: ucp_rkey_h = ptr::null_mut();
        // SAFETY: the endpoint is live; `packed` is readable for its length (UCX trusts its
        // structure, so it must come from a peer's ucp_rkey_pack, carried verbatim); handle is
        // an out pointer.
        check("unpack remote key", unsafe {
            ucp_ep_rkey_unpack(endpoint.handle(), packed.as_ptr().cast(), &mut handle)
        })?;
        Ok(RemoteKey {
            inner: Rc::new(RkeyInner {
                handle,
                _endpoint: endpoint,
            }),
        })
    }

    pub(crate) fn handle(&self) -> ucp_rkey_h {
        self.inner.handle
    }
}
