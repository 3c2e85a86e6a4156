//! Process-wide record of unmapped address ranges, fed by UCX's memory hooks (UCM).
//!
//! UCM intercepts the calls that take memory out of the address space (`munmap`, `mremap`,
//! `shmdt`, `brk`/`sbrk` shrinking the heap, `madvise` releasing pages, `mmap` with
//! `MAP_FIXED` over existing pages) and reports each as a `UCM_EVENT_VM_UNMAPPED` event
//! *before* the memory goes away. [`install`] registers one handler for the whole process;
//! the handler appends the range to a fixed ring of records that registration caches read at
//! their own pace through a [`Cursor`].
//!
//! The handler runs on whatever thread unmaps memory, inside the intercepted call, perhaps
//! while that thread holds the allocator's lock or one of ours. It therefore neither
//! allocates, nor locks, nor blocks: it claims a ticket with a compare-and-swap on the global
//! head and fills the ticket's slot under a per-slot sequence number (a seqlock with one
//! writer per slot). Tickets are claimed only for slots whose previous record is complete, so
//! two writers never share a slot. If a writer finds its slot still being filled by the
//! writer one lap earlier, it does not wait: it gives its record up and bumps a global
//! "dropped" counter.
//!
//! A reader knows it must forget everything it has cached (rather than miss an unmapping)
//! whenever a record is lost to it: the dropped counter moved, it fell more than one lap
//! behind the head, or a slot it still had to read was overwritten by a later lap.
//!
//! The handler stays installed for the life of the process (it is a plain function with no
//! argument), so this library must not be unloaded while the process runs.

use std::ffi::c_void;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use ucx1_sys::{ucm_event_t, ucm_event_type_t, ucm_set_event_handler};

use crate::error::{check, Result};

/// Number of records kept; a reader more than this many events behind starts over.
pub(crate) const RING: u64 = 4096;

/// Order of our handler among UCM's handlers of the same event; irrelevant to correctness
/// (unmap handlers all run before the memory is released).
const PRIORITY: i32 = 1000;

/// One record: an unmapped range, stamped with the ticket that wrote it.
struct Slot {
    /// `2 * ticket + 1` while the record of `ticket` is being written, `2 * ticket + 2` once it
    /// is complete; 0 before the first lap.
    seq: AtomicU64,
    start: AtomicUsize,
    len: AtomicUsize,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
        }
    }
}

static SLOTS: [Slot; RING as usize] = [const { Slot::new() }; RING as usize];
/// Number of tickets claimed so far: the ticket of the next record.
static HEAD: AtomicU64 = AtomicU64::new(0);
/// Number of records given up because their slot was still busy.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The outcome of installing the handler, decided once per process.
static INSTALLED: OnceLock<Result<()>> = OnceLock::new();

const fn busy(ticket: u64) -> u64 {
    2 * ticket + 1
}

const fn done(ticket: u64) -> u64 {
    2 * ticket + 2
}

fn slot(ticket: u64) -> &'static Slot {
    &SLOTS[(ticket % RING) as usize]
}

/// Installs the unmap handler once per process and reports whether it is active. It fails
/// when UCM is disabled (`UCX_MEM_EVENTS=no`) or cannot hook the unmapping calls.
pub(crate) fn install() -> &'static Result<()> {
    INSTALLED.get_or_init(|| {
        let events = ucm_event_type_t::UCM_EVENT_VM_UNMAPPED as i32;
        // SAFETY: the callback is a function of this library that never dereferences its
        // (null) argument and stays valid for the life of the process (see the module docs).
        check("install memory hooks", unsafe {
            ucm_set_event_handler(events, PRIORITY, Some(on_vm_unmapped), std::ptr::null_mut())
        })
    })
}

/// The UCM handler: records the range about to be unmapped. UCM calls it with the single
/// event type it was registered for, a valid value of the enum.
unsafe extern "C" fn on_vm_unmapped(
    event_type: ucm_event_type_t,
    event: *mut ucm_event_t,
    _arg: *mut c_void,
) {
    if event_type != ucm_event_type_t::UCM_EVENT_VM_UNMAPPED || event.is_null() {
        return;
    }
    // SAFETY: UCM passes a valid event for the duration of the call.
    let event = unsafe { &*event };
    // SAFETY: for UCM_EVENT_VM_UNMAPPED the `vm_unmapped` member is the initialised one.
    let range = unsafe { event.vm_unmapped };
    if range.size > 0 {
        publish(range.address as usize, range.size as usize);
    }
}

/// Appends a record without allocating, locking or waiting.
fn publish(start: usize, len: usize) {
    loop {
        let ticket = HEAD.load(Ordering::Acquire);
        let slot = slot(ticket);
        let previous = ticket.checked_sub(RING).map_or(0, done);
        if slot.seq.load(Ordering::Acquire) != previous {
            if HEAD.load(Ordering::Acquire) != ticket {
                continue; // another writer took `ticket` meanwhile: try the next one
            }
            // The writer one lap earlier is still filling this slot.
            DROPPED.fetch_add(1, Ordering::AcqRel);
            return;
        }
        if HEAD
            .compare_exchange_weak(ticket, ticket + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.seq.store(busy(ticket), Ordering::Relaxed);
            fence(Ordering::Release);
            slot.start.store(start, Ordering::Relaxed);
            slot.len.store(len, Ordering::Relaxed);
            slot.seq.store(done(ticket), Ordering::Release);
            return;
        }
    }
}

/// What a reader finds in the slot of one ticket.
enum Read {
    /// The unmapped range `start..start + len`.
    Record(usize, usize),
    /// The ticket is claimed but its record not yet complete.
    Pending,
    /// The record was overwritten by a later lap.
    Lost,
}

fn read(ticket: u64) -> Read {
    let slot = slot(ticket);
    let before = slot.seq.load(Ordering::Acquire);
    if before < done(ticket) {
        return Read::Pending;
    }
    if before > done(ticket) {
        return Read::Lost;
    }
    let start = slot.start.load(Ordering::Relaxed);
    let len = slot.len.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    if slot.seq.load(Ordering::Relaxed) == before {
        Read::Record(start, len)
    } else {
        Read::Lost
    }
}

/// One reader's position in the ring.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// The first ticket not yet read (or still pending).
    next: u64,
    /// The dropped counter when last checked.
    dropped: u64,
}

impl Cursor {
    /// A cursor that sees only events from now on.
    pub(crate) fn now() -> Cursor {
        Cursor {
            dropped: DROPPED.load(Ordering::Acquire),
            next: HEAD.load(Ordering::Acquire),
        }
    }

    /// Calls `unmapped(start, len)` for every record published since the last poll and
    /// returns true if some record was lost, in which case the caller must forget every range
    /// it knows. Records claimed but not yet complete are read again at the next poll (their
    /// memory is still mapped: the handler runs before the unmapping), and so are the ones
    /// after them, which may be reported twice.
    pub(crate) fn poll(&mut self, mut unmapped: impl FnMut(usize, usize)) -> bool {
        let mut lost = false;
        let dropped = DROPPED.load(Ordering::Acquire);
        if dropped != self.dropped {
            self.dropped = dropped;
            lost = true;
        }
        let head = HEAD.load(Ordering::Acquire);
        if head - self.next > RING {
            self.next = head - RING;
            lost = true;
        }
        let mut resume = None;
        for ticket in self.next..head {
            match read(ticket) {
                Read::Record(start, len) => unmapped(start, len),
                Read::Lost => lost = true,
                Read::Pending => {
                    resume.get_or_insert(ticket);
                }
            }
        }
        self.next = resume.unwrap_or(head);
        lost
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Serialises the tests of this module, which share the ring.
    static RING_USE: Mutex<()> = Mutex::new(());

    /// Tags test records so that they stand apart from real unmappings.
    const TAG: usize = 0x7ead << 48;

    /// Records published from several threads reach a reader intact.
    #[test]
    fn published_records_are_read_back() {
        let _serial = RING_USE.lock().unwrap();
        let mut cursor = Cursor::now();
        let threads: Vec<_> = (0..4usize)
            .map(|t| {
                std::thread::spawn(move || (0..100).for_each(|i| publish(TAG | t << 8 | i, t)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let mut seen = Vec::new();
        let lost = cursor.poll(|start, len| {
            if start & TAG == TAG {
                seen.push((start, len));
            }
        });
        assert!(!lost);
        seen.sort_unstable();
        let expected: Vec<_> = (0..4usize)
            .flat_map(|t| (0..100).map(move |i| (TAG | t << 8 | i, t)))
            .collect();
        assert_eq!(seen, expected);
    }

    /// A reader more than one lap behind is told it lost records, then catches up.
    #[test]
    fn falling_a_lap_behind_is_reported() {
        let _serial = RING_USE.lock().unwrap();
        let mut cursor = Cursor::now();
        (0..RING as usize + 1).for_each(|i| publish(TAG | i, 1));
        assert!(cursor.poll(|_, _| {}));
        publish(TAG, 2);
        let mut seen = Vec::new();
        assert!(!cursor.poll(|start, len| seen.push((start, len))));
        assert!(seen.contains(&(TAG, 2)));
    }
}
