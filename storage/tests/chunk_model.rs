//! Model-based test of the chunk store: random sequences of operations on real O_DIRECT files,
//! checked against an in-memory model of the chunks' bytes and lengths.
//!
//! Reads and writes are submitted in batches that run concurrently. The store grants
//! conflicting ranges in submission order, so every read must see exactly the model's bytes
//! at its position in the batch; a chunk's reported length depends on which writes of the
//! batch finished first, so it is checked against the lengths before and after the batch.

mod common;

use std::collections::BTreeMap;

use benchfs_storage::{ChunkKey, ChunkStore, Outcome};
use common::*;
use proptest::prelude::*;

type Model = BTreeMap<ChunkKey, Vec<u8>>;

const FILES: u64 = 2;
const CHUNKS_PER_FILE: u64 = 2;

#[derive(Debug, Clone)]
enum Io {
    Write {
        key: ChunkKey,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Read {
        key: ChunkKey,
        offset: u64,
        len: usize,
    },
}

#[derive(Debug, Clone)]
enum Action {
    Batch(Vec<Io>),
    Truncate { key: ChunkKey, len: u64 },
    RemoveFile(u64),
    Sync(u64),
    Reopen,
}

fn key() -> impl Strategy<Value = ChunkKey> {
    (1..=FILES, 0..CHUNKS_PER_FILE).prop_map(|(f, i)| ChunkKey::new(f, i))
}

/// Offsets and lengths biased towards block edges, where alignment bugs live.
fn range() -> impl Strategy<Value = (u64, usize)> {
    let edge = (0..CHUNK as u64 / 4096, -3i64..=3)
        .prop_map(|(b, d)| (b as i64 * 4096 + d).clamp(0, CHUNK as i64 - 1) as u64);
    let offset = prop_oneof![edge, 0..CHUNK as u64];
    let len = prop_oneof![1usize..64, 4090usize..4100, 1usize..70_000];
    (offset, len).prop_map(|(o, l)| (o, l.min(CHUNK - o as usize)))
}

fn io() -> impl Strategy<Value = Io> {
    prop_oneof![
        3 => (key(), range(), any::<u64>()).prop_map(|(key, (offset, len), seed)| Io::Write {
            key, offset, len, seed
        }),
        2 => (key(), range()).prop_map(|(key, (offset, len))| Io::Read { key, offset, len }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => prop::collection::vec(io(), 1..6).prop_map(Action::Batch),
        2 => (key(), prop_oneof![Just(0u64), 0..=CHUNK as u64])
            .prop_map(|(key, len)| Action::Truncate { key, len }),
        1 => (1..=FILES).prop_map(Action::RemoveFile),
        1 => (1..=FILES).prop_map(Action::Sync),
        1 => Just(Action::Reopen),
    ]
}

fn model_len(model: &Model, key: ChunkKey) -> u64 {
    model.get(&key).map_or(0, |v| v.len() as u64)
}

/// Submits a batch at once, applying writes to the model in order; returns, per read tag, the
/// expected bytes and the chunk's length before the batch.
fn submit_batch(
    store: &mut ChunkStore,
    model: &mut Model,
    batch: &[Io],
) -> BTreeMap<u64, (Vec<u8>, u64)> {
    let mut expected = BTreeMap::new();
    let before = model.clone();
    for (tag, io) in batch.iter().enumerate() {
        match *io {
            Io::Write {
                key,
                offset,
                len,
                seed,
            } => {
                let data = pattern(seed, len);
                let slot = filled_slot(store, offset, &data);
                store.submit_write(tag as u64, key, offset, len, slot);
                let chunk = model.entry(key).or_default();
                let end = offset as usize + len;
                if chunk.len() < end {
                    chunk.resize(end, 0);
                }
                chunk[offset as usize..end].copy_from_slice(&data);
            }
            Io::Read { key, offset, len } => {
                let mut slot = store.acquire_slot().expect("a slot per batch entry");
                store.slot_data_mut(&mut slot).fill(0xee);
                store.submit_read(tag as u64, key, offset, len, slot);
                let mut want = vec![0u8; len];
                if let Some(chunk) = model.get(&key) {
                    let start = (offset as usize).min(chunk.len());
                    let end = (offset as usize + len).min(chunk.len());
                    want[..end - start].copy_from_slice(&chunk[start..end]);
                }
                expected.insert(tag as u64, (want, model_len(&before, key)));
            }
        }
    }
    expected
}

fn run_batch(store: &mut ChunkStore, model: &mut Model, batch: &[Io]) {
    let mut expected = submit_batch(store, model, batch);
    let mut out = Vec::new();
    let mut left = batch.len();
    while left > 0 {
        store.wait(&mut out, 1).expect("wait");
        for done in out.drain(..) {
            left -= 1;
            let slot = done.slot.expect("reads and writes return their slot");
            match (&batch[done.tag as usize], done.result.expect("I/O")) {
                (Io::Write { len, .. }, outcome) => {
                    assert_eq!(outcome, Outcome::Written { len: *len });
                }
                (
                    Io::Read { key, .. },
                    Outcome::Read {
                        data_offset,
                        len,
                        chunk_len,
                    },
                ) => {
                    let (want, len_before) = expected.remove(&done.tag).unwrap();
                    let got = &store.slot_data(&slot)[data_offset..data_offset + len];
                    assert!(got == want, "read {} of {key:?} differs", done.tag);
                    let len_after = model_len(model, *key);
                    assert!(
                        (len_before..=len_after).contains(&chunk_len),
                        "chunk length {chunk_len} outside {len_before}..={len_after}"
                    );
                }
                (io, outcome) => panic!("{io:?} finished with {outcome:?}"),
            }
            store.release_slot(slot);
        }
    }
}

fn apply(store: &mut ChunkStore, model: &mut Model, action: &Action, dir: &std::path::Path) {
    match action {
        Action::Batch(batch) => run_batch(store, model, batch),
        Action::Truncate { key, len } => {
            truncate(store, *key, *len);
            if *len == 0 {
                model.remove(key);
            } else {
                model.entry(*key).or_default().resize(*len as usize, 0);
            }
        }
        Action::RemoveFile(file_id) => {
            let removed = store.remove_file(*file_id).expect("remove");
            let before = model.len();
            model.retain(|k, _| k.file_id != *file_id);
            assert_eq!(removed, (before - model.len()) as u64);
        }
        Action::Sync(file_id) => sync(store, *file_id),
        Action::Reopen => {
            *store = common::store(dir, 8);
        }
    }
    for file_id in 1..=FILES {
        for index in 0..CHUNKS_PER_FILE {
            let key = ChunkKey::new(file_id, index);
            assert_eq!(store.chunk_exists(key), model.contains_key(&key), "{key:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_the_model(actions in prop::collection::vec(action(), 1..24)) {
        let dir = tempdir();
        let mut store = store(dir.path(), 8);
        let mut model = Model::new();
        for action in &actions {
            apply(&mut store, &mut model, action, dir.path());
        }
        // Finally every chunk reads back whole, with its exact length.
        for (key, bytes) in &model {
            let (data, chunk_len) = read(&mut store, *key, 0, CHUNK);
            prop_assert_eq!(chunk_len, bytes.len() as u64);
            prop_assert!(data[..bytes.len()] == bytes[..]);
            prop_assert!(data[bytes.len()..].iter().all(|&x| x == 0));
        }
    }
}
