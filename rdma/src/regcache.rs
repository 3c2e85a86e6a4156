//! [`RegCache`]: a registration cache for a client's own buffers.
//!
//! A client exposes the caller's buffers for zero-copy RMA: it registers them, packs their
//! remote keys, and the storage node reads (`get`) or writes (`put`) them directly. Mapping
//! memory with UCX costs far more than a small transfer, and applications reuse the same
//! buffers I/O after I/O, so the cache keeps registrations and hands them out again.
//!
//! # What is cached
//!
//! A lookup of `addr..addr + len` is a *hit* when one cached registration covers the range. A
//! miss registers the whole pages around the range, merged with any cached registration they
//! overlap (the merged ones leave the cache), so cached registrations never overlap. Each
//! registration packs its remote key once. The cache keeps at most `max_bytes` of
//! registrations, evicting the least recently used ones; a registration still handed out (a
//! live [`CachedRegion`]) is never evicted, so the cache may exceed the bound by what is in
//! use. A handle keeps its registration alive even after the cache lets go of it.
//!
//! # Unmapped memory
//!
//! A registration outlives the mapping it was made for when the program frees the buffer.
//! If a new mapping then appears at the same address, a cached registration would still
//! describe the old memory: on InfiniBand it pins the old physical pages, and transfers
//! through it would silently miss the new buffer. The cache therefore forgets every
//! registration that overlaps memory leaving the address space, as reported by UCX's memory
//! hooks (see the `memhooks` module): at every lookup, it first applies the unmappings
//! reported since the previous one. When records were lost (more unmappings than the record
//! ring holds between two lookups), it forgets everything.
//!
//! Limits: the hooks see only unmappings made through the C library calls UCM intercepts;
//! memory released by raw system calls (or by a statically linked runtime) goes unnoticed. A
//! buffer must not be looked up while another thread is unmapping it.
//!
//! When the hooks cannot be installed (UCX built or run with memory events off, e.g.
//! `UCX_MEM_EVENTS=no`), the cache does not cache: every lookup registers the range anew and
//! the registration is released when its handle is dropped. [`RegCache::hooks_active`] tells
//! which mode is in force.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::memhooks::{self, Cursor};
use crate::memory::MemRegion;

/// One registration and its packed remote key.
struct Registration {
    region: MemRegion,
    rkey: Box<[u8]>,
    serial: u64,
}

/// A registered region covering a looked-up range, with its packed remote key. Cloning shares
/// it; the registration is released when the cache and every handle have let go of it.
#[derive(Clone)]
pub struct CachedRegion {
    inner: Rc<Registration>,
}

impl std::fmt::Debug for CachedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedRegion")
            .field("serial", &self.inner.serial)
            .field("region", &self.inner.region)
            .finish()
    }
}

impl CachedRegion {
    /// The registration, whose pages cover the looked-up range.
    pub fn region(&self) -> &MemRegion {
        &self.inner.region
    }

    /// Start of the registered pages.
    pub fn address(&self) -> *mut u8 {
        self.inner.region.address()
    }

    /// Length of the registered pages.
    pub fn len(&self) -> usize {
        self.inner.region.len()
    }

    /// Whether the region is empty (never).
    pub fn is_empty(&self) -> bool {
        self.inner.region.is_empty()
    }

    /// The packed remote key, for a peer's [`crate::Endpoint::unpack_rkey`]. Remote addresses
    /// are the local addresses of the looked-up memory.
    pub fn rkey(&self) -> &[u8] {
        &self.inner.rkey
    }

    /// A number that identifies the registration within its cache: two handles with the same
    /// serial share one registration.
    pub fn serial(&self) -> u64 {
        self.inner.serial
    }

    /// Whether the registration covers `addr..addr + len`.
    pub fn covers(&self, addr: *const u8, len: usize) -> bool {
        let start = self.address() as usize;
        let (addr, end) = (addr as usize, (addr as usize).saturating_add(len));
        start <= addr && end <= start + self.len()
    }
}

/// A cached registration.
struct Entry {
    registration: Rc<Registration>,
    end: usize,
    /// Position in the least-recently-used order.
    tick: u64,
}

/// The cached registrations, disjoint, by start address, with their use order.
#[derive(Default)]
struct Index {
    entries: BTreeMap<usize, Entry>,
    /// Tick of last use to start address, oldest first.
    lru: BTreeMap<u64, usize>,
    clock: u64,
    bytes: usize,
}

impl Index {
    /// The start of the entry covering `addr..end`, if any.
    fn covering(&self, addr: usize, end: usize) -> Option<usize> {
        let (&start, entry) = self.entries.range(..=addr).next_back()?;
        (entry.end >= end).then_some(start)
    }

    /// Marks the entry at `start` most recently used and hands it out.
    fn touch(&mut self, start: usize) -> Option<CachedRegion> {
        let entry = self.entries.get_mut(&start)?;
        self.lru.remove(&entry.tick);
        self.clock += 1;
        entry.tick = self.clock;
        self.lru.insert(self.clock, start);
        Some(CachedRegion {
            inner: entry.registration.clone(),
        })
    }

    /// Starts of the entries overlapping `start..end`, in descending order.
    fn overlapping(&self, start: usize, end: usize) -> Vec<usize> {
        self.entries
            .range(..end)
            .rev()
            .take_while(|(_, entry)| entry.end > start)
            .map(|(&s, _)| s)
            .collect()
    }

    /// `start..end` widened to include every entry it overlaps.
    fn union(&self, start: usize, end: usize) -> (usize, usize) {
        let overlapping = self.overlapping(start, end);
        let first = overlapping.last().map_or(start, |&s| s.min(start));
        let last = overlapping
            .first()
            .map_or(end, |s| self.entries[s].end.max(end));
        (first, last)
    }

    fn insert(&mut self, registration: Rc<Registration>) -> CachedRegion {
        let start = registration.region.address() as usize;
        let len = registration.region.len();
        self.clock += 1;
        self.lru.insert(self.clock, start);
        self.bytes += len;
        let entry = Entry {
            registration: registration.clone(),
            end: start + len,
            tick: self.clock,
        };
        self.entries.insert(start, entry);
        CachedRegion {
            inner: registration,
        }
    }

    fn remove(&mut self, start: usize) {
        if let Some(entry) = self.entries.remove(&start) {
            self.lru.remove(&entry.tick);
            self.bytes -= entry.end - start;
        }
    }

    /// Removes the entries overlapping `start..end` and returns how many there were.
    fn remove_overlapping(&mut self, start: usize, end: usize) -> u64 {
        let overlapping = self.overlapping(start, end);
        overlapping.iter().for_each(|&s| self.remove(s));
        overlapping.len() as u64
    }

    /// Removes every entry and returns how many there were.
    fn clear(&mut self) -> u64 {
        let count = self.entries.len() as u64;
        self.entries.clear();
        self.lru.clear();
        self.bytes = 0;
        count
    }

    /// Removes least recently used entries not handed out until at most `max_bytes` remain
    /// (or only entries in use), and returns how many were removed.
    fn evict(&mut self, max_bytes: usize) -> u64 {
        let mut excess = self.bytes.saturating_sub(max_bytes);
        let mut victims = Vec::new();
        for start in self.lru.values() {
            if excess == 0 {
                break;
            }
            let entry = &self.entries[start];
            if Rc::strong_count(&entry.registration) == 1 {
                excess = excess.saturating_sub(entry.end - start);
                victims.push(*start);
            }
        }
        victims.iter().for_each(|&s| self.remove(s));
        victims.len() as u64
    }
}

/// Counters of a [`RegCache`].
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    registrations: u64,
    hits: u64,
    invalidations: u64,
    evictions: u64,
}

/// A cache of memory registrations for one thread's buffers; see the [module
/// docs](crate::regcache). Not `Send`: each client thread keeps its own.
pub struct RegCache {
    context: Arc<Context>,
    max_bytes: usize,
    page: usize,
    /// Unmapping records still to apply; `None` when the hooks are off (nothing is cached).
    cursor: Option<Cursor>,
    index: Index,
    counters: Counters,
}

impl std::fmt::Debug for RegCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegCache")
            .field("max_bytes", &self.max_bytes)
            .field("hooks_active", &self.hooks_active())
            .field("entries", &self.index.entries.len())
            .field("registered_bytes", &self.index.bytes)
            .field("counters", &self.counters)
            .finish()
    }
}

impl RegCache {
    /// A cache registering memory with `context`, keeping at most `max_bytes` of registrations
    /// that are not in use. Installs the process's memory hooks on first use; if that fails,
    /// the cache registers per lookup (see [`RegCache::hooks_active`]).
    pub fn new(context: &Arc<Context>, max_bytes: usize) -> RegCache {
        let cursor = memhooks::install().is_ok().then(Cursor::now);
        RegCache {
            context: context.clone(),
            max_bytes,
            page: page_size(),
            cursor,
            index: Index::default(),
            counters: Counters::default(),
        }
    }

    /// Whether unmapping events reach the cache. When false nothing is cached: every lookup
    /// registers anew, and its registration lives only as long as the returned handle.
    pub fn hooks_active(&self) -> bool {
        self.cursor.is_some()
    }

    /// A registration covering `addr..addr + len`, cached or new.
    ///
    /// This is safe to call whatever `addr` points to: registering memory neither reads nor
    /// writes it, and UCX reports an error for memory it cannot register. What needs care is
    /// the transfers that use the registration. Local ones ([`crate::Endpoint::put`],
    /// [`crate::Endpoint::get`]) are `unsafe` and carry their own contract. For remote ones,
    /// whoever hands the address and [`CachedRegion::rkey`] to a peer must ensure that the
    /// memory stays mapped, and is not accessed in conflict with the peer, until the peer's
    /// transfer has completed: the cache cannot know when that is.
    pub fn lookup(&mut self, addr: *const u8, len: usize) -> Result<CachedRegion> {
        let (start, end) = self.pages(addr, len)?;
        if !self.hooks_active() {
            let registration = self.register(start, end)?;
            return Ok(CachedRegion {
                inner: Rc::new(registration),
            });
        }
        self.apply_unmappings();
        let addr = addr as usize;
        let cached = self.index.covering(addr, addr + len);
        if let Some(found) = cached.and_then(|start| self.index.touch(start)) {
            self.counters.hits += 1;
            return Ok(found);
        }
        self.insert(start, end)
    }

    /// Forgets every cached registration overlapping `addr..addr + len`, for memory about to
    /// be unmapped in a way the hooks do not see. Handles already given out keep theirs.
    pub fn invalidate(&mut self, addr: *const u8, len: usize) {
        let start = addr as usize;
        let removed = self
            .index
            .remove_overlapping(start, start.saturating_add(len));
        self.counters.invalidations += removed;
    }

    /// Forgets every cached registration (handles given out keep theirs).
    pub fn clear(&mut self) {
        self.counters.invalidations += self.index.clear();
    }

    /// Number of registrations made (cached or not).
    pub fn registrations(&self) -> u64 {
        self.counters.registrations
    }

    /// Number of lookups served by a cached registration.
    pub fn hits(&self) -> u64 {
        self.counters.hits
    }

    /// Number of cached registrations forgotten because their memory was (or may have been)
    /// unmapped, or on request ([`RegCache::invalidate`], [`RegCache::clear`]).
    pub fn invalidations(&self) -> u64 {
        self.counters.invalidations
    }

    /// Number of cached registrations evicted to respect the size bound.
    pub fn evictions(&self) -> u64 {
        self.counters.evictions
    }

    /// Bytes of registrations the cache holds (not counting registrations it has let go of
    /// that handles still keep alive).
    pub fn registered_bytes(&self) -> usize {
        self.index.bytes
    }

    /// Number of registrations the cache holds.
    pub fn len(&self) -> usize {
        self.index.entries.len()
    }

    /// Whether the cache holds no registration.
    pub fn is_empty(&self) -> bool {
        self.index.entries.is_empty()
    }

    /// The whole pages around `addr..addr + len`.
    fn pages(&self, addr: *const u8, len: usize) -> Result<(usize, usize)> {
        let invalid = |what: &str| Error::InvalidArgument(format!("cannot register {what}"));
        if addr.is_null() || len == 0 {
            return Err(invalid("an empty range"));
        }
        let mask = self.page - 1;
        let end = (addr as usize)
            .checked_add(len)
            .and_then(|end| end.checked_add(mask))
            .ok_or_else(|| invalid("a range past the end of the address space"))?;
        Ok((addr as usize & !mask, end & !mask))
    }

    /// Drops the registrations of memory unmapped since the last lookup.
    fn apply_unmappings(&mut self) {
        let Some(cursor) = self.cursor.as_mut() else {
            return;
        };
        let index = &mut self.index;
        let mut removed = 0;
        let lost = cursor.poll(|start, len| {
            removed += index.remove_overlapping(start, start.saturating_add(len));
        });
        if lost {
            removed += index.clear();
        }
        self.counters.invalidations += removed;
    }

    /// Registers `start..end` merged with the entries it overlaps, caches it, and evicts.
    fn insert(&mut self, start: usize, end: usize) -> Result<CachedRegion> {
        let (first, last) = self.index.union(start, end);
        let registration = match self.register(first, last) {
            Ok(registration) => registration,
            // Some merged memory may be on its way out: register only what was asked for.
            Err(_) if (first, last) != (start, end) => self.register(start, end)?,
            Err(e) => return Err(e),
        };
        let covered = registration.region.address() as usize;
        let covered = (covered, covered + registration.region.len());
        self.index.remove_overlapping(covered.0, covered.1);
        let handle = self.index.insert(Rc::new(registration));
        self.counters.evictions += self.index.evict(self.max_bytes);
        Ok(handle)
    }

    fn register(&mut self, start: usize, end: usize) -> Result<Registration> {
        // Transfers through the region are the handle holders' to guard (see `lookup`); the
        // cache drops registrations of memory reported unmapped.
        // SAFETY: registering, or deregistering a range unmapped since, accesses no memory.
        let region = unsafe { MemRegion::register(&self.context, start as *mut u8, end - start) }?;
        let rkey = region.pack_rkey()?.into_boxed_slice();
        self.counters.registrations += 1;
        Ok(Registration {
            region,
            rkey,
            serial: self.counters.registrations,
        })
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    match usize::try_from(size) {
        Ok(size) if size.is_power_of_two() => size,
        _ => 4096,
    }
}
