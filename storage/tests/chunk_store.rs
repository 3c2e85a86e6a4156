//! Tests of the chunk store on real O_DIRECT files: aligned and unaligned ranges at chunk and
//! block boundaries, holes, truncate, remove, sync, reopening, the open-file cache, many
//! operations in flight, and the IOR-hard pattern of interleaved unaligned records.

mod common;

use std::collections::HashSet;

use benchfs_storage::{ChunkKey, ChunkStore, ChunkStoreConfig, Error, Outcome, BLOCK_SIZE};
use common::*;

const K: ChunkKey = ChunkKey {
    file_id: 7,
    index: 0,
};

#[test]
fn aligned_ranges_round_trip_without_copies() {
    let dir = tempdir();
    let mut store = store(dir.path(), 4);
    let cases = [
        (0u64, BLOCK_SIZE),
        (BLOCK_SIZE as u64, 64 << 10),
        ((CHUNK - BLOCK_SIZE) as u64, BLOCK_SIZE),
        (0, CHUNK),
    ];
    for (n, (offset, len)) in cases.into_iter().enumerate() {
        let data = pattern(n as u64, len);
        write(&mut store, K, offset, &data);
        let (back, chunk_len) = read(&mut store, K, offset, len);
        assert!(back == data, "case {n}: data differs");
        assert!(chunk_len >= offset + len as u64);
    }
    let counters = store.counters();
    assert_eq!(counters.bytes_copied, 0, "aligned I/O must not copy");
    assert_eq!(counters.edge_reads, 0);
    assert_eq!(store.open_files(), 1);
}

#[test]
fn unaligned_ranges_at_block_and_chunk_edges() {
    let dir = tempdir();
    let mut store = store(dir.path(), 4);
    let mut model = vec![0u8; CHUNK];
    let b = BLOCK_SIZE as u64;
    let cases = [
        (0u64, 1usize),
        (b - 1, 2),
        (3, 5),
        (b + 17, 3 * BLOCK_SIZE),
        ((CHUNK - 1) as u64, 1),
        ((CHUNK - 100) as u64, 100),
        (2 * b - 3, 6),
        (1, CHUNK - 2),
        (12345, 47008),
    ];
    let mut copied_max = 0;
    let mut end_max = 0;
    for (n, (offset, len)) in cases.into_iter().enumerate() {
        let data = pattern(100 + n as u64, len);
        write(&mut store, K, offset, &data);
        model[offset as usize..offset as usize + len].copy_from_slice(&data);
        copied_max += 2 * (BLOCK_SIZE - 1) as u64;
        end_max = end_max.max(offset + len as u64);
        let (whole, chunk_len) = read(&mut store, K, 0, CHUNK);
        assert!(
            whole == model,
            "case {n} ({offset}+{len}): chunk differs from model"
        );
        assert_eq!(chunk_len, end_max);
        // An unaligned read of exactly the range written.
        let (back, _) = read(&mut store, K, offset, len);
        assert!(back == data, "case {n}: unaligned read differs");
    }
    let counters = store.counters();
    assert!(counters.bytes_copied > 0 && counters.bytes_copied <= copied_max);
    assert!(counters.edge_reads > 0);
}

#[test]
fn chunk_length_follows_the_furthest_write_and_padding_is_trimmed() {
    let dir = tempdir();
    let mut store = store(dir.path(), 2);
    write(&mut store, K, 10, b"hello");
    let (_, chunk_len) = read(&mut store, K, 0, 1);
    assert_eq!(chunk_len, 15);
    write(&mut store, K, 5000, b"world");
    let (data, chunk_len) = read(&mut store, K, 0, 6000);
    assert_eq!(chunk_len, 5005);
    assert_eq!(&data[10..15], b"hello");
    assert_eq!(&data[5000..5005], b"world");
    assert!(data[..10].iter().all(|&x| x == 0));
    assert!(data[15..5000].iter().all(|&x| x == 0));
    assert!(
        data[5005..].iter().all(|&x| x == 0),
        "past the end reads zeros"
    );
    // An earlier write does not shorten the chunk.
    write(&mut store, K, 0, b"ab");
    assert_eq!(read(&mut store, K, 0, 2), (b"ab".to_vec(), 5005));
    // The block padding of the last unaligned write was trimmed from the file.
    let file = chunk_file(dir.path(), K);
    assert_eq!(std::fs::metadata(file).unwrap().len(), 5005);
    assert!(store.counters().trims > 0);
}

#[test]
fn holes_and_unwritten_chunks_read_as_zeros() {
    let dir = tempdir();
    let mut store = store(dir.path(), 2);
    let never = ChunkKey::new(99, 3);
    assert_eq!(read(&mut store, never, 100, 5000), (vec![0; 5000], 0));
    assert!(!store.chunk_exists(never), "a read must not create a chunk");
    let data = pattern(1, 8192);
    write(&mut store, K, 128 << 10, &data);
    let (hole, chunk_len) = read(&mut store, K, 0, 128 << 10);
    assert!(hole.iter().all(|&x| x == 0));
    assert_eq!(chunk_len, (128 << 10) + 8192);
    let (beyond, _) = read(&mut store, K, (200 << 10) + 7, 3000);
    assert!(beyond.iter().all(|&x| x == 0));
    let (across, _) = read(&mut store, K, (128 << 10) - 10, 20);
    assert_eq!(&across[..10], &[0; 10]);
    assert_eq!(&across[10..], &data[..10]);
}

#[test]
fn truncate_shrinks_grows_and_removes() {
    let dir = tempdir();
    let mut store = store(dir.path(), 2);
    let data = pattern(2, 100_000);
    write(&mut store, K, 0, &data);
    truncate(&mut store, K, 50_001);
    let (back, chunk_len) = read(&mut store, K, 0, 100_000);
    assert_eq!(chunk_len, 50_001);
    assert!(back[..50_001] == data[..50_001]);
    assert!(
        back[50_001..].iter().all(|&x| x == 0),
        "shrunk bytes read as zeros"
    );
    // Writing inside the block that holds the new end keeps the bytes before it.
    write(&mut store, K, 50_010, b"xyz");
    let (back, chunk_len) = read(&mut store, K, 49_000, 1013);
    assert_eq!(chunk_len, 50_013);
    assert!(back[..1001] == data[49_000..50_001]);
    assert!(back[1001..1010].iter().all(|&x| x == 0));
    assert_eq!(&back[1010..], b"xyz");
    truncate(&mut store, K, 200_000);
    let (back, chunk_len) = read(&mut store, K, 50_013, 149_987);
    assert_eq!(chunk_len, 200_000);
    assert!(back.iter().all(|&x| x == 0), "grown bytes read as zeros");
    truncate(&mut store, K, 0);
    assert!(!store.chunk_exists(K));
    assert!(!chunk_file(dir.path(), K).exists());
    assert_eq!(read(&mut store, K, 0, 10), (vec![0; 10], 0));
    store.submit_truncate(9, K, CHUNK as u64 + 1);
    let err = wait_for(&mut store, 9)
        .result
        .expect_err("beyond the chunk size");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn remove_file_drops_every_chunk_of_that_file_only() {
    let dir = tempdir();
    let mut store = store(dir.path(), 2);
    for index in 0..5 {
        write(&mut store, ChunkKey::new(1, index), 0, b"one");
        write(&mut store, ChunkKey::new(2, index * 1000), 4096, b"two");
    }
    assert_eq!(store.usage().unwrap().chunk_files, 10);
    assert_eq!(store.remove_file(1).unwrap(), 5);
    for index in 0..5 {
        assert!(!store.chunk_exists(ChunkKey::new(1, index)));
        assert!(!chunk_file(dir.path(), ChunkKey::new(1, index)).exists());
        let (data, _) = read(&mut store, ChunkKey::new(2, index * 1000), 4096, 3);
        assert_eq!(data, b"two");
    }
    let usage = store.usage().unwrap();
    assert_eq!(usage.chunk_files, 5);
    assert!(usage.total_bytes > 0 && usage.free_bytes <= usage.total_bytes);
    assert_eq!(
        store.remove_file(1).unwrap(),
        0,
        "removing twice finds nothing"
    );
    // A file with an operation in flight is busy.
    let slot = filled_slot(&mut store, 0, b"x");
    store.submit_write(5, ChunkKey::new(2, 0), 0, 1, slot);
    let err = store.remove_file(2).expect_err("busy");
    assert_eq!(err.errno(), libc::EBUSY);
    let done = wait_for(&mut store, 5);
    store.release_slot(done.slot.unwrap());
    assert_eq!(store.remove_file(2).unwrap(), 5);
}

#[test]
fn data_survives_reopening_and_sync() {
    let dir = tempdir();
    let keys: Vec<ChunkKey> = (0..6).map(|i| ChunkKey::new(3 + i % 2, i)).collect();
    {
        let mut store = store(dir.path(), 2);
        for (n, key) in keys.iter().enumerate() {
            write(
                &mut store,
                *key,
                n as u64 * 1000,
                &pattern(n as u64, 70_000),
            );
        }
        sync(&mut store, 3);
        sync(&mut store, 4);
        // Nothing dirty is left: a second sync has nothing to do and still succeeds.
        sync(&mut store, 3);
    }
    let mut store = store(dir.path(), 2);
    assert_eq!(store.usage().unwrap().chunk_files, keys.len() as u64);
    for (n, key) in keys.iter().enumerate() {
        assert!(store.chunk_exists(*key));
        let offset = n as u64 * 1000;
        let (data, chunk_len) = read(&mut store, *key, offset, 70_000);
        assert!(
            data == pattern(n as u64, 70_000),
            "chunk {n} differs after reopen"
        );
        assert_eq!(chunk_len, offset + 70_000);
    }
}

#[test]
fn open_file_cache_stays_bounded() {
    let dir = tempdir();
    let mut config = ChunkStoreConfig::new(dir.path());
    config.chunk_size_bytes = CHUNK;
    config.slot_count = 2;
    config.open_files_max = 4;
    let mut store = ChunkStore::open(config).unwrap();
    for index in 0..40 {
        write(
            &mut store,
            ChunkKey::new(5, index),
            0,
            &pattern(index, 5000),
        );
        assert!(store.open_files() <= 4, "{} files open", store.open_files());
    }
    sync(&mut store, 5);
    for index in 0..40 {
        let (data, _) = read(&mut store, ChunkKey::new(5, index), 0, 5000);
        assert!(data == pattern(index, 5000), "chunk {index} differs");
        assert!(store.open_files() <= 4);
    }
}

#[test]
fn bad_ranges_are_refused_and_return_the_slot() {
    let dir = tempdir();
    let mut store = store(dir.path(), 1);
    for (offset, len) in [(CHUNK as u64, 1), (1, CHUNK), (u64::MAX, 2)] {
        let slot = store.acquire_slot().unwrap();
        store.submit_write(1, K, offset, len, slot);
        let done = wait_for(&mut store, 1);
        assert!(matches!(done.result, Err(Error::InvalidArgument(_))));
        let slot = done.slot.expect("the slot comes back");
        store.submit_read(2, K, offset, len, slot);
        let done = wait_for(&mut store, 2);
        assert!(matches!(done.result, Err(Error::InvalidArgument(_))));
        store.release_slot(done.slot.expect("the slot comes back"));
    }
    assert!(!store.chunk_exists(K));
    assert_eq!(store.acquire_slot().map(|s| s.index()), Some(0));
}

#[test]
fn tmpfs_data_dir_is_refused_with_the_fix() {
    let shm = std::path::Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (a tmpfs) to exist");
    let dir = tempfile::tempdir_in(shm).unwrap();
    let err = ChunkStore::open(ChunkStoreConfig::new(dir.path())).expect_err("tmpfs");
    assert!(matches!(err, Error::NoDirectIo { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("tmpfs") && msg.contains("disk-backed"),
        "{msg}"
    );
}

#[test]
fn many_operations_in_flight_finish_with_their_own_tags() {
    let dir = tempdir();
    let slots = 64;
    let mut store = store(dir.path(), slots);
    // 64 writes at once over 8 chunks, aligned and unaligned, more than the ring holds.
    let mut expected = Vec::new();
    for tag in 0..slots as u64 {
        let key = ChunkKey::new(11, tag % 8);
        let offset = (tag / 8) * 24_000 + tag % 3;
        let data = pattern(tag, 16_384 + (tag as usize % 5) * 1000);
        let slot = filled_slot(&mut store, offset, &data);
        store.submit_write(tag, key, offset, data.len(), slot);
        expected.push((key, offset, data));
    }
    assert_eq!(store.pending(), slots);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while seen.len() < slots {
        store.wait(&mut out, 1).unwrap();
        for done in out.drain(..) {
            let len = expected[done.tag as usize].2.len();
            assert_eq!(done.result.unwrap(), Outcome::Written { len });
            assert!(seen.insert(done.tag), "tag {} completed twice", done.tag);
            store.release_slot(done.slot.unwrap());
        }
    }
    assert_eq!(store.pending(), 0);
    // Then 64 reads at once; each slot must hold its own range.
    for (tag, (key, offset, data)) in expected.iter().enumerate() {
        let slot = store.acquire_slot().unwrap();
        store.submit_read(tag as u64, *key, *offset, data.len(), slot);
    }
    let mut left = slots;
    while left > 0 {
        store.wait(&mut out, 1).unwrap();
        for done in out.drain(..) {
            let (_, offset, data) = &expected[done.tag as usize];
            let slot = done.slot.unwrap();
            let at = ChunkStore::data_offset(*offset);
            assert!(store.slot_data(&slot)[at..at + data.len()] == data[..]);
            assert!(done.result.is_ok());
            store.release_slot(slot);
            left -= 1;
        }
    }
}

/// IOR hard: 47008-byte records of one shared file, written by many clients at once in an
/// interleaved order. Neighbouring records share blocks, so their read-modify-writes must not
/// overlap in time.
#[test]
fn interleaved_unaligned_records_written_concurrently_lose_nothing() {
    const RECORD: usize = 47_008;
    let dir = tempdir();
    let mut config = ChunkStoreConfig::new(dir.path());
    config.chunk_size_bytes = 4 << 20;
    config.slot_count = 32;
    let mut store = ChunkStore::open(config).unwrap();
    let chunk = 4usize << 20;
    let records = chunk / RECORD + 1; // the last record is cut at the chunk end
    let key = ChunkKey::new(0x1234, 2);
    // Four "clients", each owning every fourth record, submitting round by round, with odd
    // rounds reversed so that neighbours land in the queue in both orders.
    let mut order = Vec::new();
    for round in 0..records.div_ceil(4) {
        let mut batch: Vec<usize> = (0..4)
            .map(|c| round * 4 + c)
            .filter(|&r| r < records)
            .collect();
        if round % 2 == 1 {
            batch.reverse();
        }
        order.extend(batch);
    }
    let range_of = |r: usize| {
        let start = r * RECORD;
        (start, RECORD.min(chunk - start))
    };
    let mut out = Vec::new();
    let mut next = 0;
    let mut in_flight = 0;
    let mut max_in_flight = 0;
    while next < order.len() || in_flight > 0 {
        while next < order.len() {
            let Some(mut slot) = store.acquire_slot() else {
                break;
            };
            let r = order[next];
            let (start, len) = range_of(r);
            let at = ChunkStore::data_offset(start as u64);
            store.slot_data_mut(&mut slot)[at..at + len].copy_from_slice(&pattern(r as u64, len));
            store.submit_write(r as u64, key, start as u64, len, slot);
            next += 1;
            in_flight += 1;
        }
        max_in_flight = max_in_flight.max(in_flight);
        store.wait(&mut out, 1).unwrap();
        for done in out.drain(..) {
            let (_, len) = range_of(done.tag as usize);
            assert_eq!(done.result.unwrap(), Outcome::Written { len });
            store.release_slot(done.slot.unwrap());
            in_flight -= 1;
        }
    }
    assert!(
        max_in_flight >= 16,
        "only {max_in_flight} writes were in flight at once"
    );
    let (data, chunk_len) = read(&mut store, key, 0, chunk);
    assert_eq!(chunk_len, chunk as u64);
    for r in 0..records {
        let (start, len) = range_of(r);
        assert!(
            data[start..start + len] == pattern(r as u64, len)[..],
            "record {r} at {start} was damaged"
        );
    }
    let copied = store.counters().bytes_copied;
    assert!(
        copied <= (records * 2 * (BLOCK_SIZE - 1)) as u64,
        "{copied} bytes copied"
    );
}

fn chunk_file(dir: &std::path::Path, key: ChunkKey) -> std::path::PathBuf {
    benchfs_storage::chunk::layout::Layout::new(dir).chunk_path(key)
}
