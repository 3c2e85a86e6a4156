//! BenchFS storage engine: the parts of a storage node that touch the disk.
//!
//! - [`Ring`] owns one io_uring and drives it by completions, for a poll loop.
//! - [`Slab`] is one page-aligned region of fixed-size slots, registered with the ring as fixed
//!   buffers and, by the transport, as an RDMA memory region: network data lands in a slot and
//!   goes to disk from it without a copy.
//! - [`ChunkStore`] keeps file data in O_DIRECT chunk files keyed by (file id, chunk index),
//!   with read-modify-write for unaligned ranges that keeps concurrent neighbouring writers
//!   intact.
//! - [`MetaLog`] is the checksummed, append-only, compacting key-value log in which a shard
//!   keeps its metadata.
//! - [`checks`] refuses environments that cannot work (tmpfs data directories, a locked-memory
//!   limit below the slab, io_uring disabled) with the fix in the message.
//!
//! Every type here is driven by one thread; none is `Sync`.

pub mod checks;
pub mod chunk;
pub mod error;
pub mod metalog;
pub mod ring;
pub mod slab;

pub use chunk::layout::ChunkKey;
pub use chunk::{ChunkStore, ChunkStoreConfig, Completion, Counters, Outcome, Usage};
pub use error::{Error, Result};
pub use metalog::MetaLog;
pub use ring::Ring;
pub use slab::{Slab, Slot};

/// Unit of O_DIRECT I/O: offsets and lengths of every disk transfer are multiples of it. 4 KiB
/// is the logical block size of NVMe and SSD devices formatted for 4K and a multiple of 512, so
/// it suits every device BenchFS targets.
pub const BLOCK_SIZE: usize = 4096;
