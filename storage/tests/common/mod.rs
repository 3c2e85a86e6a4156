//! A synchronous harness over the completion-driven [`ChunkStore`], for tests: each call
//! submits, waits for its own completion and checks that the slot came back.

#![allow(dead_code)] // each test file uses part of it

use std::path::Path;

use benchfs_storage::{ChunkKey, ChunkStore, ChunkStoreConfig, Completion, Outcome, Slot};

/// Chunk size of the test stores: small enough to fill quickly, several blocks large.
pub const CHUNK: usize = 256 << 10;

/// A store in `dir` with the test chunk size and `slots` slots.
pub fn store(dir: &Path, slots: usize) -> ChunkStore {
    let mut config = ChunkStoreConfig::new(dir);
    config.chunk_size_bytes = CHUNK;
    config.slot_count = slots;
    config.ring_entries = 32;
    ChunkStore::open(config).expect("open chunk store")
}

/// A test directory on the disk that holds the build (tmpfs has no O_DIRECT).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("test dir")
}

/// Deterministic bytes for write number `seed`: no two writes look alike.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A slot holding `data` where a write at chunk offset `offset` expects it.
pub fn filled_slot(store: &mut ChunkStore, offset: u64, data: &[u8]) -> Slot {
    let mut slot = store.acquire_slot().expect("a free slot");
    let at = ChunkStore::data_offset(offset);
    store.slot_data_mut(&mut slot)[at..at + data.len()].copy_from_slice(data);
    slot
}

/// Waits for the completion tagged `tag`, keeping the others in `spare`.
pub fn wait_for(store: &mut ChunkStore, tag: u64) -> Completion {
    let mut out = Vec::new();
    loop {
        store.wait(&mut out, 1).expect("wait");
        if let Some(pos) = out.iter().position(|c| c.tag == tag) {
            let done = out.swap_remove(pos);
            assert!(out.is_empty(), "unexpected completions: {out:?}");
            return done;
        }
        assert!(store.pending() > 0, "completion {tag} never arrived");
    }
}

/// Writes `data` at `offset` of `key` and returns the store's result.
pub fn try_write(
    store: &mut ChunkStore,
    key: ChunkKey,
    offset: u64,
    data: &[u8],
) -> benchfs_storage::Result<Outcome> {
    let slot = filled_slot(store, offset, data);
    store.submit_write(1, key, offset, data.len(), slot);
    let done = wait_for(store, 1);
    store.release_slot(done.slot.expect("writes return their slot"));
    done.result
}

/// Writes `data` at `offset` of `key`, which must succeed.
pub fn write(store: &mut ChunkStore, key: ChunkKey, offset: u64, data: &[u8]) {
    let outcome = try_write(store, key, offset, data).expect("write");
    assert_eq!(outcome, Outcome::Written { len: data.len() });
}

/// Reads `len` bytes at `offset` of `key`; returns the data and the chunk's length.
pub fn read(store: &mut ChunkStore, key: ChunkKey, offset: u64, len: usize) -> (Vec<u8>, u64) {
    let mut slot = store.acquire_slot().expect("a free slot");
    // Poison the slot so that bytes the read fails to set are caught.
    store.slot_data_mut(&mut slot).fill(0xee);
    store.submit_read(2, key, offset, len, slot);
    let done = wait_for(store, 2);
    let slot = done.slot.expect("reads return their slot");
    let outcome = done.result.expect("read");
    let Outcome::Read {
        data_offset,
        len: got,
        chunk_len,
    } = outcome
    else {
        panic!("a read finished with {outcome:?}");
    };
    assert_eq!(got, len);
    assert_eq!(data_offset, ChunkStore::data_offset(offset));
    let data = store.slot_data(&slot)[data_offset..data_offset + len].to_vec();
    store.release_slot(slot);
    (data, chunk_len)
}

/// Sets chunk `key` to `len` bytes.
pub fn truncate(store: &mut ChunkStore, key: ChunkKey, len: u64) {
    store.submit_truncate(3, key, len);
    let done = wait_for(store, 3);
    assert!(done.slot.is_none());
    assert_eq!(done.result.expect("truncate"), Outcome::Truncated);
}

/// Syncs the dirty chunks of `file_id`.
pub fn sync(store: &mut ChunkStore, file_id: u64) {
    store.submit_sync(4, file_id, None);
    let done = wait_for(store, 4);
    assert_eq!(done.result.expect("sync"), Outcome::Synced);
}
