//! The registration cache: hits, the LRU bound, the fallback without memory hooks, and above
//! all invalidation when memory is unmapped and a new mapping takes its address. Transfers go
//! through a peer worker in another thread that reads the client's memory with `get` through
//! the cached remote key, over TCP (loopback) and shared memory.
//!
//! TCP and cross-memory attach reach the client's memory by virtual address, so on these
//! transports a stale registration would still read the new pages: the transfers check that
//! the fresh registration and its key work, and the counters check that the stale one was
//! dropped (on InfiniBand a stale registration would read the old pages).

mod common;

use std::process::Command;
use std::ptr;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use benchfs_rdma::{Endpoint, RegCache, Worker};
use common::*;

const TIMEOUT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;
/// Large enough that glibc's malloc always serves it with its own mapping.
const BIG: usize = 64 * MIB;
const PAGE: usize = 4096;

/// Serialises the tests of this file, which watch addresses being unmapped and reused: other
/// tests mapping memory meanwhile could take a freed address first.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where and what the peer reads: remote address, length, packed key.
type ReadRequest = (u64, usize, Vec<u8>);

/// A worker in another thread that reads the client's memory on request.
struct Peer {
    requests: mpsc::Sender<Option<ReadRequest>>,
    replies: mpsc::Receiver<Result<Vec<u8>, String>>,
    thread: JoinHandle<()>,
}

impl Peer {
    fn start(settings: &'static [(&str, &str)], client: Vec<u8>) -> Peer {
        let (requests, request_rx) = mpsc::channel::<Option<ReadRequest>>();
        let (reply_tx, replies) = mpsc::channel();
        let thread = thread::spawn(move || {
            let ctx = context(settings);
            let worker = Worker::new(&ctx).unwrap();
            let ep = Endpoint::connect(&worker, &client).unwrap();
            while let Ok(Some((addr, len, rkey))) = request_rx.recv() {
                reply_tx.send(peer_read(&ep, addr, len, &rkey)).unwrap();
            }
        });
        Peer {
            requests,
            replies,
            thread,
        }
    }

    /// What the peer reads at `addr..addr + len` through `rkey`, progressing the client's
    /// worker meanwhile (TCP emulates the read with messages the client answers).
    fn read(&self, worker: &Worker, addr: *const u8, len: usize, rkey: &[u8]) -> Vec<u8> {
        self.requests
            .send(Some((addr as u64, len, rkey.to_vec())))
            .unwrap();
        let mut reply = None;
        progress_until(worker, TIMEOUT, || {
            if let Ok(r) = self.replies.try_recv() {
                reply = Some(r);
            }
            reply.is_some()
        });
        reply.unwrap().expect("peer read")
    }

    fn finish(self, worker: &Worker) {
        self.requests.send(None).unwrap();
        progress_until(worker, TIMEOUT, || self.thread.is_finished());
        self.thread.join().expect("peer thread");
    }
}

fn peer_read(ep: &Endpoint, addr: u64, len: usize, rkey: &[u8]) -> Result<Vec<u8>, String> {
    let key = ep.unpack_rkey(rkey).map_err(|e| e.to_string())?;
    let mut landing = vec![0u8; len];
    // SAFETY: `landing` is valid for `len` bytes and untouched until the wait returns.
    let get = unsafe { ep.get(landing.as_mut_ptr(), len, addr, &key) };
    get.and_then(|r| r.wait(TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(landing)
}

/// A client: context, worker, cache, and a peer connected to the worker.
struct Client {
    worker: Worker,
    cache: RegCache,
    peer: Peer,
}

impl Client {
    fn new(settings: &'static [(&str, &str)], max_bytes: usize) -> Client {
        let ctx = context(settings);
        let worker = Worker::new(&ctx).unwrap();
        let cache = RegCache::new(&ctx, max_bytes);
        assert!(
            cache.hooks_active(),
            "UCX memory hooks could not be installed"
        );
        let peer = Peer::start(settings, worker.address().unwrap());
        Client {
            worker,
            cache,
            peer,
        }
    }

    /// Looks `bytes` up in the cache and has the peer read them through the cached key.
    fn read_through_cache(&mut self, bytes: &[u8]) -> Vec<u8> {
        let region = self.cache.lookup(bytes.as_ptr(), bytes.len()).unwrap();
        assert!(region.covers(bytes.as_ptr(), bytes.len()));
        let rkey = region.rkey().to_vec();
        self.peer
            .read(&self.worker, bytes.as_ptr(), bytes.len(), &rkey)
    }

    fn finish(self) {
        drop(self.cache);
        self.peer.finish(&self.worker);
    }
}

/// An anonymous private mapping of `len` bytes, at `at` exactly when given.
fn map(at: Option<*mut u8>, len: usize) -> *mut u8 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert_eq!(page, PAGE as libc::c_long, "the tests assume 4 KiB pages");
    let (hint, fixed) = at.map_or((ptr::null_mut(), 0), |a| (a, libc::MAP_FIXED_NOREPLACE));
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: an anonymous mapping; MAP_FIXED_NOREPLACE never replaces an existing one.
    let p = unsafe { libc::mmap(hint.cast(), len, prot, flags, -1, 0) };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

/// Unmaps what [`map`] mapped.
///
/// # Safety
///
/// No reference into the mapping may be used afterwards.
unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: forwarded from the caller; `p..p + len` is a mapping of ours.
    let rc = unsafe { libc::munmap(p.cast(), len) };
    assert_eq!(rc, 0, "munmap: {}", std::io::Error::last_os_error());
}

/// The bytes of a mapping of ours.
///
/// # Safety
///
/// `p..p + len` must be mapped and not otherwise referenced while the slice lives.
unsafe fn bytes<'a>(p: *mut u8, len: usize) -> &'a mut [u8] {
    // SAFETY: forwarded from the caller.
    unsafe { std::slice::from_raw_parts_mut(p, len) }
}

#[test]
fn repeated_lookups_of_a_buffer_and_its_parts_register_once() {
    let _serial = serial();
    let ctx = context(TRANSPORTS[0].1);
    let mut cache = RegCache::new(&ctx, 64 * MIB);
    assert!(
        cache.hooks_active(),
        "UCX memory hooks could not be installed"
    );
    let buffer = vec![7u8; MIB];
    let whole = cache.lookup(buffer.as_ptr(), MIB).unwrap();
    assert!(whole.covers(buffer.as_ptr(), MIB));
    assert_eq!(
        whole.address() as usize % 4096,
        0,
        "registrations cover whole pages"
    );
    for (offset, len) in [(0, MIB), (4096, 100), (MIB - 1, 1), (12345, 54321)] {
        let part = cache.lookup(buffer[offset..].as_ptr(), len).unwrap();
        assert_eq!(part.serial(), whole.serial());
        assert_eq!(part.rkey(), whole.rkey());
    }
    assert_eq!(cache.registrations(), 1);
    assert_eq!(cache.hits(), 4);
    assert_eq!(cache.registered_bytes(), whole.len());
    assert!(cache.lookup(ptr::null(), 1).is_err());
    assert!(cache.lookup(buffer.as_ptr(), 0).is_err());
}

/// Lookups of overlapping ranges merge into one registration covering both.
#[test]
fn overlapping_lookups_merge() {
    let _serial = serial();
    let ctx = context(TRANSPORTS[0].1);
    let mut cache = RegCache::new(&ctx, 64 * MIB);
    let p = map(None, 16 * 4096);
    let first = cache.lookup(p, 8 * 4096).unwrap();
    let second = cache.lookup(p.wrapping_add(6 * 4096), 8 * 4096).unwrap();
    assert_ne!(first.serial(), second.serial());
    assert!(second.covers(p, 14 * 4096));
    assert_eq!((cache.len(), cache.registered_bytes()), (1, 14 * 4096));
    let again = cache.lookup(p.wrapping_add(4096), 10 * 4096).unwrap();
    assert_eq!(again.serial(), second.serial());
    assert_eq!(cache.registrations(), 2);
    drop((first, second, again, cache));
    // SAFETY: no reference into the mapping remains.
    unsafe { unmap(p, 16 * 4096) };
}

/// Registers a fresh 3-page mapping, applies `release` to it (which returns what remains to
/// unmap), and reports whether the next lookup (of another buffer) dropped the registration.
fn dropped_after(release: impl FnOnce(*mut u8) -> (*mut u8, usize)) -> bool {
    let ctx = context(TRANSPORTS[0].1);
    let mut cache = RegCache::new(&ctx, 64 * MIB);
    let p = map(None, 3 * PAGE);
    drop(cache.lookup(p, 3 * PAGE).unwrap());
    let ((q, len), other) = (release(p), vec![0u8; 100]);
    drop(cache.lookup(other.as_ptr(), other.len()).unwrap());
    let dropped = cache.invalidations() == 1 && cache.len() == 1;
    drop(cache);
    // SAFETY: nothing refers to what is left of the mapping (`munmap` ignores unmapped pages).
    unsafe { unmap(q, len) };
    dropped
}

fn munmap_middle(p: *mut u8) -> (*mut u8, usize) {
    // SAFETY: no reference into the mapping exists.
    unsafe { unmap(p.wrapping_add(PAGE), PAGE) };
    (p, 3 * PAGE)
}

fn map_fixed_over(p: *mut u8) -> (*mut u8, usize) {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    // SAFETY: replaces a page of our own mapping, referenced nowhere.
    let q = unsafe { libc::mmap(p.cast(), PAGE, libc::PROT_READ, flags, -1, 0) };
    assert_eq!(q.cast(), p);
    (p, 3 * PAGE)
}

fn dontneed(p: *mut u8) -> (*mut u8, usize) {
    // SAFETY: discards the contents of our own mapping, referenced nowhere.
    let rc = unsafe { libc::madvise(p.cast(), PAGE, libc::MADV_DONTNEED) };
    assert_eq!(rc, 0);
    (p, 3 * PAGE)
}

fn mremap_larger(p: *mut u8) -> (*mut u8, usize) {
    // SAFETY: resizes (perhaps moves) our own mapping, referenced nowhere.
    let q = unsafe { libc::mremap(p.cast(), 3 * PAGE, 64 * PAGE, libc::MREMAP_MAYMOVE) };
    assert_ne!(q, libc::MAP_FAILED);
    (q.cast(), 64 * PAGE)
}

/// Each way of taking pages away is reported by the hooks, from a direct `munmap` of one page
/// to `madvise(MADV_DONTNEED)`; the control takes nothing away and drops nothing.
#[test]
fn unmapping_calls_drop_the_registration() {
    let _serial = serial();
    assert!(
        !dropped_after(|p| (p, 3 * PAGE)),
        "nothing unmapped, yet dropped"
    );
    assert!(dropped_after(munmap_middle), "munmap not seen");
    assert!(
        dropped_after(map_fixed_over),
        "mmap(MAP_FIXED) over it not seen"
    );
    assert!(dropped_after(dontneed), "madvise(MADV_DONTNEED) not seen");
    assert!(dropped_after(mremap_larger), "mremap not seen");
}

fn munmap_and_remap_at_the_same_address(settings: &'static [(&str, &str)]) {
    const LEN: usize = MIB;
    let _serial = serial();
    let mut client = Client::new(settings, 256 * MIB);
    let p = map(None, LEN);
    {
        // SAFETY: the mapping is ours; this is the only reference, gone before the unmap.
        let old = unsafe { bytes(p, LEN) };
        old.copy_from_slice(&pattern(1, LEN));
        assert!(
            client.read_through_cache(old) == pattern(1, LEN),
            "first read"
        );
        let part = &old[PAGE..2 * PAGE];
        assert!(client.read_through_cache(part) == pattern(1, LEN)[PAGE..2 * PAGE]);
    }
    assert_eq!((client.cache.registrations(), client.cache.hits()), (1, 1));
    let old_serial = client.cache.lookup(p, LEN).unwrap().serial();

    // SAFETY: no reference into the mapping exists.
    unsafe { unmap(p, LEN) };
    let q = map(Some(p), LEN);
    assert_eq!(q, p, "the new mapping takes the old address");
    let region = client.cache.lookup(q, LEN).unwrap();
    assert_ne!(region.serial(), old_serial, "stale registration handed out");
    assert_eq!(client.cache.registrations(), 2);
    assert_eq!(client.cache.invalidations(), 1);
    drop(region);
    {
        // SAFETY: the new mapping is ours; this is the only reference, gone before the unmap.
        let new = unsafe { bytes(q, LEN) };
        new.copy_from_slice(&pattern(2, LEN));
        assert!(
            client.read_through_cache(new) == pattern(2, LEN),
            "read after remap"
        );
    }
    assert_eq!(client.cache.registrations(), 2);
    client.finish();
    // SAFETY: the cache and the peer are gone; no reference into the mapping exists.
    unsafe { unmap(q, LEN) };
}
#[test]
fn munmap_and_remap_at_the_same_address_tcp() {
    munmap_and_remap_at_the_same_address(TRANSPORTS[0].1);
}

#[test]
fn munmap_and_remap_at_the_same_address_shm() {
    munmap_and_remap_at_the_same_address(TRANSPORTS[1].1);
}

/// A 64 MiB `Vec` whose bytes `WINDOW` at `AT` hold `pattern(seed)`, the rest `seed`.
fn big_vec(seed: u64) -> Vec<u8> {
    let mut v = vec![seed as u8; BIG];
    v[AT..AT + WINDOW].copy_from_slice(&pattern(seed, WINDOW));
    v
}

const AT: usize = 40 * MIB + 123;
const WINDOW: usize = MIB;

fn vec_dropped_and_reallocated(settings: &'static [(&str, &str)]) {
    let _serial = serial();
    let mut client = Client::new(settings, 256 * MIB);
    let old = big_vec(3);
    let old_serial = client.cache.lookup(old.as_ptr(), BIG).unwrap().serial();
    let read = client.read_through_cache(&old[AT..AT + WINDOW]);
    assert!(read == pattern(3, WINDOW), "first read");
    assert_eq!((client.cache.registrations(), client.cache.hits()), (1, 1));
    let old_address = old.as_ptr();
    drop(old);

    let new = big_vec(4);
    let region = client.cache.lookup(new.as_ptr(), BIG).unwrap();
    assert_eq!(
        client.cache.invalidations(),
        1,
        "drop of a 64 MiB Vec not seen"
    );
    assert_eq!(client.cache.registrations(), 2);
    assert_eq!(
        client.cache.len(),
        1,
        "the old registration is still cached"
    );
    if new.as_ptr() == old_address {
        assert_ne!(region.serial(), old_serial, "stale registration handed out");
    }
    drop(region);
    let read = client.read_through_cache(&new[AT..AT + WINDOW]);
    assert!(read == pattern(4, WINDOW), "read after reallocation");
    assert_eq!(client.cache.registrations(), 2);
    client.finish();
}

#[test]
fn vec_dropped_and_reallocated_tcp() {
    vec_dropped_and_reallocated(TRANSPORTS[0].1);
}

#[test]
fn vec_dropped_and_reallocated_shm() {
    vec_dropped_and_reallocated(TRANSPORTS[1].1);
}

#[test]
fn lru_eviction_keeps_the_cache_bounded() {
    let _serial = serial();
    const SLICE: usize = 64 * 1024;
    const STRIDE: usize = 2 * SLICE;
    const MAX: usize = 4 * SLICE;
    let ctx = context(TRANSPORTS[0].1);
    let mut cache = RegCache::new(&ctx, MAX);
    let p = map(None, 64 * STRIDE);
    let slice = |i: usize| p.wrapping_add(i * STRIDE);
    // Eight slices stay in use throughout.
    let held: Vec<_> = (0..8)
        .map(|i| cache.lookup(slice(i), SLICE).unwrap())
        .collect();
    for i in 8..64 {
        drop(cache.lookup(slice(i), SLICE).unwrap());
        assert!(cache.registered_bytes() <= MAX + 8 * SLICE);
    }
    // Each new slice evicted the one before it; the last one and those in use remain.
    assert_eq!(cache.evictions(), 55);
    assert_eq!(cache.registered_bytes(), 9 * SLICE);
    // The slices in use were never evicted.
    let hits = cache.hits();
    for (i, region) in held.iter().enumerate() {
        assert_eq!(
            cache.lookup(slice(i), SLICE).unwrap().serial(),
            region.serial()
        );
    }
    assert_eq!(cache.hits(), hits + 8);
    drop(held);
    // Least recently used go first: the most recent of the rest survive.
    for i in 8..12 {
        drop(cache.lookup(slice(i), SLICE).unwrap());
    }
    assert_eq!(cache.registered_bytes(), MAX);
    let registrations = cache.registrations();
    for i in 8..12 {
        drop(cache.lookup(slice(i), SLICE).unwrap());
    }
    assert_eq!(
        cache.registrations(),
        registrations,
        "recent slices were evicted"
    );
    drop(cache.lookup(slice(0), SLICE).unwrap());
    assert_eq!(
        cache.registrations(),
        registrations + 1,
        "old slice not evicted"
    );
    assert_eq!(cache.registered_bytes(), MAX);
    drop(cache);
    // SAFETY: no registration or reference into the mapping remains.
    unsafe { unmap(p, 64 * STRIDE) };
}

/// With UCX memory events disabled the cache registers per lookup and keeps nothing. Runs in
/// a child process: UCX reads `UCX_MEM_EVENTS` when it is loaded.
#[test]
fn without_memory_events_nothing_is_cached() {
    const CHILD: &str = "BENCHFS_REGCACHE_CHILD";
    const NAME: &str = "without_memory_events_nothing_is_cached";
    if std::env::var_os(CHILD).is_some() {
        let ctx = context(TRANSPORTS[0].1);
        let mut cache = RegCache::new(&ctx, 64 * MIB);
        assert!(!cache.hooks_active());
        let buffer = vec![0u8; MIB];
        let first = cache.lookup(buffer.as_ptr(), MIB).unwrap();
        let second = cache.lookup(buffer.as_ptr(), MIB).unwrap();
        assert!(first.covers(buffer.as_ptr(), MIB));
        assert_ne!(first.serial(), second.serial());
        assert_eq!((cache.registrations(), cache.hits()), (2, 0));
        assert_eq!((cache.len(), cache.registered_bytes()), (0, 0));
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--test-threads=1"])
        .env(CHILD, "1")
        .env("UCX_MEM_EVENTS", "no")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
