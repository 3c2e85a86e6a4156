//! Requests and replies over active messages, matched by a 64-bit request id.
//!
//! Every request and reply starts its active-message header with a fixed, versioned frame:
//!
//! ```text
//! offset  size  field
//!      0     4  magic, the bytes "BFSR" (little-endian u32 0x5253_4642)
//!      4     2  version, 1
//!      6     1  kind: 1 request, 2 reply
//!      7     1  reserved, 0
//!      8     8  request id (little-endian)
//!     16     …  the caller's header
//! ```
//!
//! [`Frame::decode`] checks length, magic, version and kind before anything else is read; a
//! malformed message is reported as an error for the caller to log and drop.
//!
//! [`Calls`] is the client side: it numbers requests, keeps a deadline per request, matches
//! replies by id (in whatever order they come), drops replies nobody waits for (late replies
//! after a timeout), and fails requests whose deadline passed or whose endpoint failed. The
//! server side decodes the request's frame and answers with [`reply`] on an endpoint to the
//! caller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::request::Request;
use crate::worker::Incoming;

/// First four bytes of every frame.
pub const MAGIC: u32 = 0x5253_4642;
/// The frame version this build speaks.
pub const VERSION: u16 = 1;
/// Bytes of the frame before the caller's header.
pub const FRAME_BYTES: usize = 16;

/// Whether a frame carries a request or a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request.
    Request = 1,
    /// A reply to the request with the same id.
    Reply = 2,
}

/// The decoded frame of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Request or reply.
    pub kind: Kind,
    /// The id the caller chose for the request.
    pub request_id: u64,
}

impl Frame {
    /// The header bytes of a message: this frame followed by `header`.
    pub fn encode(&self, header: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_BYTES + header.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.kind as u8);
        out.push(0);
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(header);
        out
    }

    /// Splits a message header into its frame and the caller's header.
    pub fn decode(bytes: &[u8]) -> Result<(Frame, &[u8])> {
        let bad = |why: &str| Err(Error::InvalidArgument(format!("malformed message: {why}")));
        if bytes.len() < FRAME_BYTES {
            return bad("header shorter than the frame");
        }
        let (frame, rest) = bytes.split_at(FRAME_BYTES);
        if u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) != MAGIC {
            return bad("wrong magic");
        }
        if u16::from_le_bytes([frame[4], frame[5]]) != VERSION {
            return bad("unsupported version");
        }
        let kind = match frame[6] {
            1 => Kind::Request,
            2 => Kind::Reply,
            _ => return bad("unknown kind"),
        };
        if frame[7] != 0 {
            return bad("reserved byte set");
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&frame[8..16]);
        let request_id = u64::from_le_bytes(id);
        Ok((Frame { kind, request_id }, rest))
    }
}

const _: () = assert!(FRAME_BYTES == 4 + 2 + 1 + 1 + 8);

/// Sends the reply to request `request_id` as active message `am_id` on `ep`.
pub fn reply(
    ep: &Endpoint,
    am_id: u16,
    request_id: u64,
    header: &[u8],
    payload: Vec<u8>,
) -> Result<Request> {
    let frame = Frame {
        kind: Kind::Reply,
        request_id,
    };
    ep.am_send_owned(am_id, frame.encode(header), payload)
}

/// A reply matched to its request.
#[derive(Debug)]
pub struct Reply {
    /// The id of the request it answers.
    pub request_id: u64,
    /// The reply's header without its frame.
    pub header: Vec<u8>,
    /// The message, for its data.
    pub message: Incoming,
}

struct Pending {
    deadline: Instant,
    endpoint: Endpoint,
}

/// The client side of request/reply: see the module documentation.
#[derive(Default)]
pub struct Calls {
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Calls {
    /// No request in flight.
    pub fn new() -> Calls {
        Calls::default()
    }

    /// Requests waiting for their reply.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends a request as active message `am_id` on `ep` and returns its id; the reply must
    /// arrive within `timeout`.
    pub fn call(
        &mut self,
        ep: &Endpoint,
        am_id: u16,
        header: &[u8],
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<u64> {
        self.next_id += 1;
        let request_id = self.next_id;
        let frame = Frame {
            kind: Kind::Request,
            request_id,
        };
        // The send runs on by itself; its outcome shows in the reply or in the endpoint.
        ep.am_send_owned(am_id, frame.encode(header), payload)?
            .detach();
        self.pending.insert(
            request_id,
            Pending {
                deadline: Instant::now() + timeout,
                endpoint: ep.clone(),
            },
        );
        Ok(request_id)
    }

    /// Like [`Calls::call`], with the data sent from caller memory without a copy (by
    /// rendezvous above the transport's eager size, with RDMA where the transport has it).
    /// Returns the request id and the send: keep the send until the reply arrived, and drop it
    /// (which cancels it if still running) before the memory is used otherwise.
    ///
    /// # Safety
    ///
    /// `data..data + len` must stay valid and unchanged until the returned send is complete or
    /// dropped.
    pub unsafe fn call_raw(
        &mut self,
        ep: &Endpoint,
        am_id: u16,
        header: &[u8],
        data: *const u8,
        len: usize,
        timeout: Duration,
    ) -> Result<(u64, Request)> {
        self.next_id += 1;
        let request_id = self.next_id;
        let frame = Frame {
            kind: Kind::Request,
            request_id,
        };
        // SAFETY: forwarded from the caller.
        let send = unsafe { ep.am_send_raw(am_id, &frame.encode(header), data, len) }?;
        self.pending.insert(
            request_id,
            Pending {
                deadline: Instant::now() + timeout,
                endpoint: ep.clone(),
            },
        );
        Ok((request_id, send))
    }

    /// Matches an arrived message to its request. `None` for a reply nobody waits for any more
    /// (it is dropped); an error for a message that is not a well-formed reply.
    pub fn on_message(&mut self, message: Incoming) -> Option<Result<Reply>> {
        let (frame, header) = match Frame::decode(&message.header) {
            Ok(decoded) => decoded,
            Err(e) => return Some(Err(e)),
        };
        if frame.kind != Kind::Reply {
            let why = "a request arrived where replies are expected";
            return Some(Err(Error::InvalidArgument(why.into())));
        }
        self.pending.remove(&frame.request_id)?;
        let header = header.to_vec();
        Some(Ok(Reply {
            request_id: frame.request_id,
            header,
            message,
        }))
    }

    /// Removes and returns the requests that can no longer succeed: deadline passed
    /// ([`Error::TimedOut`]) or endpoint failed ([`Error::EndpointFailed`]).
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, Error)> {
        let mut dead = Vec::new();
        self.pending.retain(|&id, pending| {
            let error = match pending.endpoint.failed() {
                Some(e) => e,
                None if now >= pending.deadline => Error::TimedOut { op: "request" },
                None => return true,
            };
            dead.push((id, error));
            false
        });
        dead
    }

    /// The earliest deadline of the requests in flight, to bound a sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let frame = Frame {
            kind: Kind::Reply,
            request_id: 0x0102_0304_0506_0708,
        };
        let bytes = frame.encode(b"user");
        assert_eq!(bytes.len(), FRAME_BYTES + 4);
        assert_eq!(&bytes[..4], b"BFSR");
        assert_eq!(Frame::decode(&bytes).unwrap(), (frame, &b"user"[..]));
        for cut in 0..FRAME_BYTES {
            assert!(Frame::decode(&bytes[..cut]).is_err(), "a {cut}-byte header");
        }
        for (at, value) in [(0, b'X'), (4, 2), (6, 3), (7, 1)] {
            let mut bad = bytes.clone();
            bad[at] = value;
            assert!(Frame::decode(&bad).is_err(), "byte {at} = {value}");
        }
    }
}
