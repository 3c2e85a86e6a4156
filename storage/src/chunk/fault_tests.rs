//! Failure and partial-transfer paths of the chunk store, driven by replacing the kernel's
//! result of chosen ring completions (the requests themselves really run on real files).

use super::ops::{REQ_EDGE, REQ_READ, REQ_SYNC, REQ_WRITE};
use super::*;

const CHUNK: usize = 256 << 10;
const HEAD: u64 = 0;
const BODY: u64 = 1;

/// A test directory beside the test binary, on the disk that holds the build (tmpfs, where
/// `/tmp` often lives, has no O_DIRECT).
fn test_dir() -> tempfile::TempDir {
    let exe = std::env::current_exe().expect("test binary path");
    tempfile::tempdir_in(exe.parent().expect("binary directory")).expect("test dir")
}

fn open(dir: &Path) -> ChunkStore {
    let mut config = ChunkStoreConfig::new(dir);
    config.chunk_size_bytes = CHUNK;
    config.slot_count = 4;
    ChunkStore::open(config).expect("open chunk store")
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn submit_write(store: &mut ChunkStore, tag: u64, key: ChunkKey, offset: u64, data: &[u8]) {
    let mut slot = store.acquire_slot().expect("slot");
    let at = ChunkStore::data_offset(offset);
    store.slot_data_mut(&mut slot)[at..at + data.len()].copy_from_slice(data);
    store.submit_write(tag, key, offset, data.len(), slot);
}

/// Waits until `n` operations have finished; returns them sorted by tag, slots released.
fn collect(store: &mut ChunkStore, n: usize) -> Vec<(u64, Result<Outcome>)> {
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            store.pending() > 0,
            "only {} of {n} operations finished",
            out.len()
        );
        store.wait(&mut out, 1).expect("wait");
    }
    assert_eq!(store.pending(), 0, "operations left over");
    out.sort_by_key(|c| c.tag);
    out.into_iter()
        .map(|c| {
            if let Some(slot) = c.slot {
                store.release_slot(slot);
            }
            (c.tag, c.result)
        })
        .collect()
}

fn read(store: &mut ChunkStore, key: ChunkKey, offset: u64, len: usize) -> Result<Vec<u8>> {
    let slot = store.acquire_slot().expect("slot");
    store.submit_read(9, key, offset, len, slot);
    let mut out = Vec::new();
    store.wait(&mut out, 1).expect("wait");
    let done = out.pop().expect("one completion");
    let slot = done.slot.expect("reads return their slot");
    let result = done.result.map(|_| {
        let at = ChunkStore::data_offset(offset);
        store.slot_data(&slot)[at..at + len].to_vec()
    });
    store.release_slot(slot);
    result
}

fn errno_of(result: &Result<Outcome>) -> i32 {
    result
        .as_ref()
        .expect_err("the operation must fail")
        .errno()
}

const K: ChunkKey = ChunkKey {
    file_id: 1,
    index: 0,
};

#[test]
fn failed_body_write_fails_the_write_and_frees_its_ranges() {
    let dir = test_dir();
    let mut store = open(dir.path());
    store.fail_next(REQ_WRITE + BODY, -libc::EIO);
    let data = pattern(1, 20_000);
    submit_write(&mut store, 1, K, 100, &data);
    let done = collect(&mut store, 1);
    assert_eq!(errno_of(&done[0].1), libc::EIO);
    // The ranges were released: the same write goes through now.
    submit_write(&mut store, 2, K, 100, &data);
    assert_eq!(
        collect(&mut store, 1)[0].1.as_ref().unwrap(),
        &Outcome::Written { len: 20_000 }
    );
    assert_eq!(read(&mut store, K, 100, 20_000).unwrap(), data);
}

#[test]
fn failed_edge_read_writes_nothing() {
    let dir = test_dir();
    let mut store = open(dir.path());
    let first = pattern(2, 8192);
    submit_write(&mut store, 1, K, 0, &first);
    collect(&mut store, 1)[0].1.as_ref().expect("aligned write");
    store.fail_next(REQ_EDGE + HEAD, -libc::EIO);
    submit_write(&mut store, 2, K, 5, b"0123456789");
    assert_eq!(errno_of(&collect(&mut store, 1)[0].1), libc::EIO);
    assert_eq!(read(&mut store, K, 0, 8192).unwrap(), first);
}

/// A write whose body fails while its head still waits behind another write: it finishes once
/// its requests are in, dropping the waiting range, and the other write is unaffected.
#[test]
fn failure_while_a_piece_waits_for_its_range() {
    let dir = test_dir();
    let mut store = open(dir.path());
    let a = pattern(3, 4096);
    let b = pattern(4, 20_000);
    submit_write(&mut store, 1, K, 0, &a);
    store.fail_next(REQ_WRITE + BODY, -libc::EIO);
    submit_write(&mut store, 2, K, 4000, &b);
    let done = collect(&mut store, 2);
    assert_eq!(done[0].1.as_ref().unwrap(), &Outcome::Written { len: 4096 });
    assert_eq!(errno_of(&done[1].1), libc::EIO);
    assert_eq!(read(&mut store, K, 0, 4000).unwrap(), a[..4000]);
    // Nothing is left locked: a write over the whole range completes.
    submit_write(&mut store, 3, K, 0, &b);
    assert!(collect(&mut store, 1)[0].1.is_ok());
}

#[test]
fn short_transfers_are_resumed() {
    let dir = test_dir();
    let mut store = open(dir.path());
    let data = pattern(5, 64 << 10);
    // The kernel writes only the first block: the store writes the rest.
    store.fail_short(REQ_WRITE + BODY, 4096);
    submit_write(&mut store, 1, K, 0, &data);
    assert!(collect(&mut store, 1)[0].1.is_ok());
    assert!(store.caps.is_empty(), "the cap was used");
    store.fail_short(REQ_READ, 8192);
    assert_eq!(read(&mut store, K, 0, data.len()).unwrap(), data);
    // A write that transfers nothing is an error, not a loop.
    store.fail_next(REQ_WRITE + BODY, 0);
    submit_write(&mut store, 2, K, 0, &data);
    assert_eq!(errno_of(&collect(&mut store, 1)[0].1), libc::EIO);
}

#[test]
fn failed_read_returns_the_error_and_the_slot() {
    let dir = test_dir();
    let mut store = open(dir.path());
    submit_write(&mut store, 1, K, 0, &pattern(6, 4096));
    collect(&mut store, 1);
    store.fail_next(REQ_READ, -libc::EIO);
    let err = read(&mut store, K, 0, 4096).expect_err("injected failure");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(store.slab().free_slots(), 4);
    assert_eq!(read(&mut store, K, 0, 4096).unwrap(), pattern(6, 4096));
}

#[test]
fn failed_sync_keeps_the_chunks_dirty() {
    let dir = test_dir();
    let mut store = open(dir.path());
    submit_write(&mut store, 1, K, 0, &pattern(7, 4096));
    collect(&mut store, 1);
    let sync = |store: &mut ChunkStore| {
        store.submit_sync(5, K.file_id, None);
        collect(store, 1).remove(0).1
    };
    store.fail_next(REQ_SYNC, -libc::EIO);
    assert_eq!(errno_of(&sync(&mut store)), libc::EIO);
    // The chunk is still dirty, so the next sync issues fsyncs again (and fails again).
    store.fail_next(REQ_SYNC, -libc::EIO);
    assert_eq!(errno_of(&sync(&mut store)), libc::EIO);
    assert_eq!(sync(&mut store).unwrap(), Outcome::Synced);
    // Now nothing is dirty: no fsync is issued, so the armed fault is never used.
    store.fail_next(REQ_SYNC, -libc::EIO);
    assert_eq!(sync(&mut store).unwrap(), Outcome::Synced);
    assert_eq!(store.faults.len(), 1);
}
