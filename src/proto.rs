//! The wire protocol between clients and shards, carried in active messages after the
//! [`rdma::rpc`](crate::rdma::rpc) frame (magic, version, kind, request id).
//!
//! Every request header is one fixed-layout [`WireRequest`] (80 bytes) followed by
//! `path_len` bytes of path and `rkey_len` bytes of packed remote key; the message data
//! carries inline write payloads and, for [`Op::Connect`], the client's worker address. Every
//! reply header is one [`WireReply`] (80 bytes); its data carries inline read payloads or a
//! [`WireStats`]. All integers are little-endian (the structs are read in place, so the crate
//! refuses to build on big-endian targets); sizes are pinned by compile-time assertions.
//!
//! [`decode_request`] checks the total length against the declared lengths, the op code, the
//! reserved fields and the limits before anything else is used; a malformed request yields a
//! [`ProtoError`] that the shard logs and answers with `EINVAL` (or drops when it cannot
//! answer).

use bytemuck::{Pod, Zeroable};
use thiserror::Error;

#[cfg(not(target_endian = "little"))]
compile_error!("the BenchFS wire format is little-endian and read in place");

/// Active message id of requests (client to shard).
pub const AM_REQUEST: u16 = 21;
/// Active message id of replies (shard to client).
pub const AM_REPLY: u16 = 22;

/// Longest packed remote key accepted.
pub const RKEY_MAX_BYTES: usize = 4096;
/// Longest worker address accepted in a connect request.
pub const ADDRESS_MAX_BYTES: usize = 64 << 10;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Open a connection: data is the client's worker address; reply `value` is the connection
    /// id, `aux` the shard's inline threshold.
    Connect = 1,
    /// Close a connection.
    Disconnect = 2,
    /// Create a file (or open the existing one unless [`FLAG_EXCL`]); reply has the inode.
    Create = 3,
    /// Look a file up; reply has the inode.
    Lookup = 4,
    /// Remove a file's inode; reply has the removed inode (its chunks are removed separately).
    Unlink = 5,
    /// Raise a file's size to at least `offset` and set its mtime to `len` (ns); with
    /// [`FLAG_SYNC`] the metadata is made durable first.
    SetSize = 6,
    /// Write `len` bytes at `offset` of chunk `chunk_index` of `file_id`.
    Write = 7,
    /// Read `len` bytes at `offset` of chunk `chunk_index` of `file_id`; reply `aux` is the
    /// chunk's length.
    Read = 8,
    /// Make the chunks of `file_id` on this shard durable.
    Fsync = 9,
    /// Remove every chunk of `file_id` on this shard.
    RemoveChunks = 10,
    /// Counters and capacity of the shard, as a [`WireStats`] in the reply data.
    Stats = 11,
    /// Stop the server process gracefully.
    Shutdown = 12,
    /// Add the entry of `path` (kind in `mode`: 4 directory, 8 file) to its parent directory,
    /// indexed on this target; an existing entry is reported (`REPLY_EXISTED`, its kind in
    /// `value`) and left alone.
    AddEntry = 13,
    /// Remove the entry of `path` from its parent, only if of the kind in `mode` (any kind
    /// for 0); reply `value` is its kind.
    RemoveEntry = 14,
    /// Create the inode of directory `path`.
    Mkdir = 15,
    /// Remove the inode of the empty directory `path`.
    Rmdir = 16,
    /// List directory `path` after the name in the data (empty: from the start); reply data
    /// is a list of entries (see [`decode_entries`]), `REPLY_MORE` when more follow.
    Readdir = 17,
    /// Store the [`WireInode`] in the data at `path`, replacing (rename); the replaced inode
    /// comes back with `REPLY_EXISTED`.
    PutInode = 18,
    /// Remove the inode at `path` if it is still `file_id` (rename).
    DeleteInode = 19,
    /// Set the size of file `path` to `offset`; the reply has the inode before.
    Truncate = 20,
    /// Drop data of `file_id` on this target from byte `offset` of chunk `chunk_index` on:
    /// that chunk is cut to `offset` bytes, later chunks are removed.
    TruncateChunks = 21,
    /// Change the attributes of `path` (file or directory) that the flags name: the permission
    /// bits to `mode` ([`FLAG_SET_MODE`]), the atime to `offset` ([`FLAG_SET_ATIME`]) and the
    /// mtime to `len` ([`FLAG_SET_MTIME`]), both as i64 ns since the epoch; the ctime becomes
    /// the server's time. The reply has the inode after.
    SetAttr = 22,
}

/// Ops are numbered `1..=OP_COUNT`.
pub const OP_COUNT: u16 = 22;

impl Op {
    fn from_u16(v: u16) -> Option<Op> {
        use Op::*;
        Some(match v {
            1 => Connect,
            2 => Disconnect,
            3 => Create,
            4 => Lookup,
            5 => Unlink,
            6 => SetSize,
            7 => Write,
            8 => Read,
            9 => Fsync,
            10 => RemoveChunks,
            11 => Stats,
            12 => Shutdown,
            13 => AddEntry,
            14 => RemoveEntry,
            15 => Mkdir,
            16 => Rmdir,
            17 => Readdir,
            18 => PutInode,
            19 => DeleteInode,
            20 => Truncate,
            21 => TruncateChunks,
            22 => SetAttr,
            _ => return None,
        })
    }
}

/// Create: fail with `EEXIST` when the file exists.
pub const FLAG_EXCL: u16 = 1;
/// SetSize: make the metadata durable before answering.
pub const FLAG_SYNC: u16 = 2;
/// Write/Read: the payload travels inline in the message instead of by RMA.
pub const FLAG_INLINE: u16 = 4;
/// Read: the data comes back with the reply, sent from the shard's slot (by rendezvous above
/// the transport's eager size), instead of being put into a buffer named by the request.
pub const FLAG_REPLY_DATA: u16 = 8;
/// SetAttr: set the permission bits.
pub const FLAG_SET_MODE: u16 = 16;
/// SetAttr: set the atime.
pub const FLAG_SET_ATIME: u16 = 32;
/// SetAttr: set the mtime.
pub const FLAG_SET_MTIME: u16 = 64;
/// Every request flag a decoder accepts.
pub const KNOWN_FLAGS: u16 = FLAG_EXCL
    | FLAG_SYNC
    | FLAG_INLINE
    | FLAG_REPLY_DATA
    | FLAG_SET_MODE
    | FLAG_SET_ATIME
    | FLAG_SET_MTIME;

/// Reply flag: the file existed before this create.
pub const REPLY_EXISTED: u32 = 1;
/// Reply flag (readdir): more entries follow.
pub const REPLY_MORE: u32 = 2;

/// Longest name accepted in a readdir cursor.
pub const NAME_MAX_BYTES: usize = crate::path::NAME_MAX_BYTES;

/// Appends one directory entry to a readdir reply: kind, name length (u16), name.
pub fn encode_entry(out: &mut Vec<u8>, kind: u8, name: &str) {
    out.push(kind);
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Decodes the entries of a readdir reply, checking every length.
pub fn decode_entries(mut data: &[u8]) -> Result<Vec<(u8, String)>, ProtoError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 3 {
            return Err(ProtoError::Length {
                got: data.len(),
                want: 3,
            });
        }
        let len = usize::from(u16::from_le_bytes([data[1], data[2]]));
        if len == 0 || len > NAME_MAX_BYTES || data.len() < 3 + len {
            return Err(ProtoError::TooLong {
                what: "entry name",
                len,
            });
        }
        let name = std::str::from_utf8(&data[3..3 + len]).map_err(|_| ProtoError::TooLong {
            what: "non-UTF-8 entry name",
            len,
        })?;
        out.push((data[0], name.to_string()));
        data = &data[3 + len..];
    }
    Ok(out)
}

/// The fixed part of every request header.
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Eq)]
#[repr(C)]
pub struct WireRequest {
    /// The cluster secret.
    pub secret: [u8; 16],
    /// An [`Op`] code.
    pub op: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Bytes of path after this struct.
    pub path_len: u16,
    /// Bytes of packed remote key after the path.
    pub rkey_len: u16,
    /// The target index the client addresses (checked by the shard).
    pub target: u32,
    /// File mode bits for create.
    pub mode: u32,
    /// The connection id from [`Op::Connect`].
    pub conn_id: u64,
    /// File id of data operations.
    pub file_id: u64,
    /// Chunk index of data operations.
    pub chunk_index: u64,
    /// Byte offset (in the chunk for data operations; the new size for SetSize).
    pub offset: u64,
    /// Byte count (the mtime in ns for SetSize).
    pub len: u64,
    /// Client buffer address for RMA (0 when inline).
    pub addr: u64,
}

/// A file's inode as it travels and as it is stored in the metadata log.
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Eq, Default)]
#[repr(C)]
pub struct WireInode {
    /// Cluster-wide unique file id.
    pub file_id: u64,
    /// Size in bytes.
    pub size: u64,
    /// Chunk size of the file in bytes, fixed at create.
    pub chunk_size: u64,
    /// Mode bits, including the file type.
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Access time, ns since the epoch.
    pub atime_ns: i64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
}

/// The fixed reply header.
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Eq, Default)]
#[repr(C)]
pub struct WireReply {
    /// 0, or a negative errno.
    pub status: i32,
    /// `REPLY_*` bits.
    pub flags: u32,
    /// Op-specific value (bytes transferred, connection id).
    pub value: u64,
    /// Op-specific second value (chunk length, inline threshold).
    pub aux: u64,
    /// The inode for metadata operations.
    pub inode: WireInode,
}

/// Counters and capacity of one shard.
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq, Eq, Default)]
#[repr(C)]
pub struct WireStats {
    /// Server rank.
    pub rank: u32,
    /// Shard index in its server.
    pub shard: u32,
    /// Requests served.
    pub ops: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Bytes written to chunks.
    pub bytes_written: u64,
    /// Bytes read from chunks.
    pub bytes_read: u64,
    /// Bytes the CPU copied on the data path (inline payloads and unaligned edges).
    pub bytes_copied: u64,
    /// Requests waiting for a slot now.
    pub queue_depth: u64,
    /// Most requests that ever waited at once.
    pub queue_depth_max: u64,
    /// Requests refused as busy.
    pub busy_rejections: u64,
    /// Slots of the slab.
    pub slots: u64,
    /// Slots free now.
    pub free_slots: u64,
    /// Open client connections.
    pub connections: u64,
    /// Inodes stored.
    pub inodes: u64,
    /// Chunk files stored.
    pub chunk_files: u64,
    /// Size of the data file system in bytes.
    pub total_bytes: u64,
    /// Free bytes on it.
    pub free_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
}

const _: () = assert!(std::mem::size_of::<WireRequest>() == 80);
const _: () = assert!(std::mem::size_of::<WireInode>() == 56);
const _: () = assert!(std::mem::size_of::<WireReply>() == 80);
const _: () = assert!(std::mem::size_of::<WireStats>() == 8 + 16 * 8);

/// Why a request was refused before it was served.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// The header is shorter than its fixed part or disagrees with its declared lengths.
    #[error("request header of {got} bytes, expected {want}")]
    Length {
        /// Bytes received.
        got: usize,
        /// Bytes the fixed part and declared lengths add up to.
        want: usize,
    },
    /// Unknown op code.
    #[error("unknown op {0}")]
    UnknownOp(u16),
    /// Unknown flag bits.
    #[error("unknown flags {0:#x}")]
    UnknownFlags(u16),
    /// A declared length is beyond its limit.
    #[error("{what} of {len} bytes exceeds the limit")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its declared length.
        len: usize,
    },
    /// A reply status that is neither 0 nor a negative errno (the client negates it).
    #[error("reply status {0} is neither 0 nor a negative errno")]
    BadStatus(i32),
}

/// Largest errno a reply may carry (as Linux's `MAX_ERRNO`).
pub const ERRNO_MAX: i32 = 4095;

/// A decoded request: the fixed part, its op, path and packed remote key.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The fixed part.
    pub wire: WireRequest,
    /// Its op.
    pub op: Op,
    /// The path bytes (not yet normalised).
    pub path: &'a [u8],
    /// The packed remote key bytes.
    pub rkey: &'a [u8],
}

const REQUEST_BYTES: usize = std::mem::size_of::<WireRequest>();

/// Decodes a request header (after the rpc frame), checking every length.
pub fn decode_request(header: &[u8]) -> Result<Request<'_>, ProtoError> {
    if header.len() < REQUEST_BYTES {
        return Err(ProtoError::Length {
            got: header.len(),
            want: REQUEST_BYTES,
        });
    }
    let wire: WireRequest = bytemuck::pod_read_unaligned(&header[..REQUEST_BYTES]);
    let op = Op::from_u16(wire.op).ok_or(ProtoError::UnknownOp(wire.op))?;
    if wire.flags & !KNOWN_FLAGS != 0 {
        return Err(ProtoError::UnknownFlags(wire.flags));
    }
    let (path_len, rkey_len) = (usize::from(wire.path_len), usize::from(wire.rkey_len));
    if path_len > crate::path::PATH_MAX_BYTES {
        return Err(ProtoError::TooLong {
            what: "path",
            len: path_len,
        });
    }
    if rkey_len > RKEY_MAX_BYTES {
        return Err(ProtoError::TooLong {
            what: "remote key",
            len: rkey_len,
        });
    }
    let want = REQUEST_BYTES + path_len + rkey_len;
    if header.len() != want {
        return Err(ProtoError::Length {
            got: header.len(),
            want,
        });
    }
    let rest = &header[REQUEST_BYTES..];
    Ok(Request {
        wire,
        op,
        path: &rest[..path_len],
        rkey: &rest[path_len..],
    })
}

/// Encodes a request header: the fixed part with its lengths filled in, the path, the key.
pub fn encode_request(mut wire: WireRequest, path: &[u8], rkey: &[u8]) -> Vec<u8> {
    assert!(path.len() <= crate::path::PATH_MAX_BYTES && rkey.len() <= RKEY_MAX_BYTES);
    wire.path_len = path.len() as u16;
    wire.rkey_len = rkey.len() as u16;
    let mut out = Vec::with_capacity(REQUEST_BYTES + path.len() + rkey.len());
    out.extend_from_slice(bytemuck::bytes_of(&wire));
    out.extend_from_slice(path);
    out.extend_from_slice(rkey);
    out
}

/// Decodes a reply header (after the rpc frame), checking its length and its status.
pub fn decode_reply(header: &[u8]) -> Result<WireReply, ProtoError> {
    const WANT: usize = std::mem::size_of::<WireReply>();
    if header.len() != WANT {
        return Err(ProtoError::Length {
            got: header.len(),
            want: WANT,
        });
    }
    let reply: WireReply = bytemuck::pod_read_unaligned(header);
    if !(-ERRNO_MAX..=0).contains(&reply.status) {
        return Err(ProtoError::BadStatus(reply.status));
    }
    Ok(reply)
}

/// Decodes the [`WireStats`] data of a stats reply.
pub fn decode_stats(data: &[u8]) -> Result<WireStats, ProtoError> {
    const WANT: usize = std::mem::size_of::<WireStats>();
    if data.len() != WANT {
        return Err(ProtoError::Length {
            got: data.len(),
            want: WANT,
        });
    }
    Ok(bytemuck::pod_read_unaligned(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_numbered_one_to_op_count() {
        for code in 1..=OP_COUNT {
            assert_eq!(Op::from_u16(code).map(|op| op as u16), Some(code));
        }
        assert_eq!(Op::from_u16(0), None);
        assert_eq!(Op::from_u16(OP_COUNT + 1), None);
    }

    fn sample() -> WireRequest {
        WireRequest {
            secret: [7; 16],
            op: Op::Write as u16,
            flags: FLAG_INLINE,
            target: 3,
            file_id: 99,
            offset: 4096,
            len: 10,
            ..WireRequest::zeroed()
        }
    }

    #[test]
    fn requests_round_trip() {
        let bytes = encode_request(sample(), b"/a/b", b"key");
        let req = decode_request(&bytes).unwrap();
        assert_eq!(req.op, Op::Write);
        assert_eq!((req.path, req.rkey), (&b"/a/b"[..], &b"key"[..]));
        assert_eq!(req.wire.file_id, 99);
        assert_eq!(req.wire.path_len, 4);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let bytes = encode_request(sample(), b"/a/b", b"key");
        for cut in 0..bytes.len() {
            assert!(decode_request(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_request(&longer),
            Err(ProtoError::Length { .. })
        ));
        let mut bad_op = bytes.clone();
        bad_op[16] = 200;
        assert_eq!(
            decode_request(&bad_op).unwrap_err(),
            ProtoError::UnknownOp(200)
        );
        let mut bad_flags = bytes.clone();
        bad_flags[19] = 0x80;
        assert!(matches!(
            decode_request(&bad_flags),
            Err(ProtoError::UnknownFlags(_))
        ));
        let mut huge_key = bytes;
        huge_key[22..24].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            decode_request(&huge_key),
            Err(ProtoError::TooLong { .. })
        ));
    }

    #[test]
    fn replies_and_stats_check_their_length() {
        let reply = WireReply {
            status: -libc::ENOENT,
            ..Default::default()
        };
        assert_eq!(decode_reply(bytemuck::bytes_of(&reply)).unwrap(), reply);
        assert!(decode_reply(&[0; 79]).is_err());
        assert!(decode_stats(&[0; 10]).is_err());
        let stats = WireStats {
            ops: 5,
            ..Default::default()
        };
        assert_eq!(decode_stats(bytemuck::bytes_of(&stats)).unwrap(), stats);
    }
}
