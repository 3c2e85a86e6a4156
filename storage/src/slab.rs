//! [`Slab`]: one page-aligned memory region cut into fixed-size slots.
//!
//! The slab is the landing zone of the data path. Each slot has a *data area* of `slot_size`
//! bytes (network transfers land there and fixed reads and writes use it) followed by an *edge
//! area* of two blocks that the chunk store uses to read the partial blocks around an unaligned
//! write. Data area plus edge area of a slot are registered with the ring as one fixed buffer
//! whose index is the slot's index, so a fixed read or write names the slot directly.
//!
//! Ownership: a [`Slot`] is a token for one slot, handed out by [`Slab::acquire`] and given back
//! with [`Slab::release`]. It is neither `Clone` nor `Copy`, so exactly one party (the caller, or
//! an operation in flight in the kernel) can use a slot at a time.
//!
//! NUMA: [`Slab::new`] touches every page from the calling thread, so under the kernel's
//! first-touch policy the memory lands on that thread's NUMA node. Create the slab on the thread
//! (already pinned) that will own it.

use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{Advice, MmapMut, MmapOptions};

use crate::error::{Error, Result};
use crate::BLOCK_SIZE;

/// Largest number of slots: io_uring accepts at most 16384 fixed buffers per ring.
pub const MAX_SLOTS: usize = 16_384;

/// Bytes of edge area behind each slot's data area: one block for the head, one for the tail.
const EDGE_BYTES: usize = 2 * BLOCK_SIZE;

static NEXT_SLAB_ID: AtomicU32 = AtomicU32::new(1);

/// A token for one slot of one slab. Only [`Slab::acquire`] makes them.
#[derive(Debug, PartialEq, Eq)]
pub struct Slot {
    index: u32,
    slab_id: u32,
}

impl Slot {
    /// The slot's position in its slab, which is also its fixed-buffer index in the ring.
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

/// One page-aligned region of `slot_count` slots.
pub struct Slab {
    map: MmapMut,
    slot_size: usize,
    stride: usize,
    slot_count: usize,
    free: Vec<u32>,
    id: u32,
}

impl std::fmt::Debug for Slab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slab")
            .field("slot_size", &self.slot_size)
            .field("slot_count", &self.slot_count)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Slab {
    /// Maps and first-touches a slab of `slot_count` slots with `slot_size` bytes of data area
    /// each. `slot_size` must be a non-zero multiple of [`BLOCK_SIZE`].
    pub fn new(slot_size: usize, slot_count: usize) -> Result<Slab> {
        if slot_size == 0 || slot_size % BLOCK_SIZE != 0 || slot_size > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "slot size {slot_size} must be a non-zero multiple of {BLOCK_SIZE} below 4 GiB"
            )));
        }
        if slot_count == 0 || slot_count > MAX_SLOTS {
            return Err(Error::InvalidArgument(format!(
                "slot count {slot_count} must be between 1 and {MAX_SLOTS}"
            )));
        }
        let stride = slot_size + EDGE_BYTES;
        let len = stride
            .checked_mul(slot_count)
            .ok_or_else(|| Error::InvalidArgument("slab size overflows".into()))?;
        let mut map = MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(|e| Error::io("map slab memory", None, e))?;
        // Transparent huge pages cut TLB misses and NIC translation entries; it is only advice.
        let _ = map.advise(Advice::HugePage);
        first_touch(&mut map);
        Ok(Slab {
            map,
            slot_size,
            stride,
            slot_count,
            free: (0..slot_count as u32).rev().collect(),
            id: NEXT_SLAB_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Bytes of data area per slot.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Slots not handed out.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Takes a free slot, or `None` when all are in use.
    pub fn acquire(&mut self) -> Option<Slot> {
        let index = self.free.pop()?;
        Some(Slot {
            index,
            slab_id: self.id,
        })
    }

    /// Gives a slot back.
    pub fn release(&mut self, slot: Slot) {
        self.check(&slot);
        debug_assert!(!self.free.contains(&slot.index), "slot released twice");
        self.free.push(slot.index);
    }

    /// The data area of `slot`.
    pub fn data(&self, slot: &Slot) -> &[u8] {
        self.check(slot);
        let start = slot.index() * self.stride;
        &self.map[start..start + self.slot_size]
    }

    /// The data area of `slot`, writable.
    pub fn data_mut(&mut self, slot: &mut Slot) -> &mut [u8] {
        self.check(slot);
        let start = slot.index() * self.stride;
        &mut self.map[start..start + self.slot_size]
    }

    /// Data area and edge area of `slot`, writable, as one slice (`slot_size + 2 * BLOCK_SIZE`
    /// bytes; the edge area starts at `slot_size`).
    pub(crate) fn whole_mut(&mut self, slot: &Slot) -> &mut [u8] {
        self.check(slot);
        let start = slot.index() * self.stride;
        &mut self.map[start..start + self.stride]
    }

    /// Address of the data area of the slot with `index`, for registering the slab with a
    /// transport and for fixed I/O. Valid while the slab lives.
    pub fn data_addr(&self, index: usize) -> *mut u8 {
        assert!(index < self.slot_count, "slot index {index} out of range");
        // The pointer is only computed here; whoever dereferences it must own the slot.
        self.map.as_ptr().wrapping_add(index * self.stride) as *mut u8
    }

    /// Start and length of the whole region, for registering it with a transport in one piece.
    pub fn region(&self) -> (*mut u8, usize) {
        (self.map.as_ptr() as *mut u8, self.map.len())
    }

    /// One iovec per slot (data plus edge area), in slot order, for
    /// [`crate::Ring::register_buffers`].
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.slot_count)
            .map(|i| libc::iovec {
                iov_base: self.data_addr(i).cast(),
                iov_len: self.stride,
            })
            .collect()
    }

    fn check(&self, slot: &Slot) {
        assert_eq!(slot.slab_id, self.id, "slot belongs to another slab");
    }
}

/// Writes one byte per page so each page is faulted in by the calling thread.
fn first_touch(map: &mut MmapMut) {
    let page = page_size();
    for offset in (0..map.len()).step_by(page) {
        map[offset] = 0;
    }
    // The writes above are plain stores to memory the compiler cannot see read back; keep them.
    std::hint::black_box(&map[..]);
}

/// The system's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_page_aligned_and_disjoint() {
        let mut slab = Slab::new(64 * 1024, 4).expect("slab");
        let mut slots: Vec<Slot> = (0..4).map(|_| slab.acquire().expect("slot")).collect();
        assert!(slab.acquire().is_none());
        for (n, slot) in slots.iter_mut().enumerate() {
            assert_eq!(slab.data_addr(slot.index()) as usize % page_size(), 0);
            slab.data_mut(slot).fill(n as u8 + 1);
        }
        for (n, slot) in slots.iter().enumerate() {
            assert!(slab.data(slot).iter().all(|&b| b == n as u8 + 1));
        }
        let iovecs = slab.iovecs();
        assert_eq!(iovecs.len(), 4);
        assert_eq!(iovecs[0].iov_len, 64 * 1024 + EDGE_BYTES);
        for slot in slots {
            slab.release(slot);
        }
        assert_eq!(slab.free_slots(), 4);
    }

    #[test]
    fn bad_geometry_is_refused() {
        assert!(Slab::new(1000, 1).is_err());
        assert!(Slab::new(4096, 0).is_err());
        assert!(Slab::new(4096, MAX_SLOTS + 1).is_err());
    }

    #[test]
    #[should_panic(expected = "another slab")]
    fn slot_of_another_slab_is_refused() {
        let mut a = Slab::new(4096, 1).expect("slab");
        let b = Slab::new(4096, 1).expect("slab");
        let slot = a.acquire().expect("slot");
        let _ = b.data(&slot);
    }
}
