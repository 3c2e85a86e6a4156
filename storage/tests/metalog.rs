//! Tests of the metadata log: replay, torn and damaged tails, batches, compaction, limits and
//! foreign files, plus a model-based property test.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use benchfs_storage::metalog::{
    Batch, MetaLog, MetaLogOptions, FILE_HEADER_LEN, LOG_FILE_NAME, MAX_KEY_BYTES, MAX_VALUE_BYTES,
    TEMP_FILE_NAME,
};
use benchfs_storage::Error;
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn contents(log: &MetaLog) -> Model {
    log.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE_NAME)
}

fn file_len(dir: &Path) -> u64 {
    fs::metadata(log_path(dir)).unwrap().len()
}

fn no_auto_compaction() -> MetaLogOptions {
    MetaLogOptions {
        auto_compact: false,
        ..MetaLogOptions::default()
    }
}

fn value_for(i: usize, round: usize) -> Vec<u8> {
    format!("inode {i} round {round} ")
        .repeat(1 + i % 4)
        .into_bytes()
}

/// Puts `base_*` keys, closes the log and returns the model and the file length.
fn seed(dir: &Path) -> (Model, u64) {
    let mut log = MetaLog::open(dir).unwrap();
    let mut model = Model::new();
    for i in 0..10 {
        let (key, value) = (format!("base_{i}").into_bytes(), value_for(i, 0));
        log.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    let len = log.file_bytes();
    assert_eq!(len, file_len(dir));
    (model, len)
}

#[test]
fn replay_after_clean_close_restores_exact_map() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut logged = 0u64;
    {
        let mut log = MetaLog::open(dir.path()).unwrap();
        for i in 0..400 {
            let key = format!("/dir{}/file{i}", i % 7).into_bytes();
            log.put(&key, &value_for(i, 0)).unwrap();
            model.insert(key, value_for(i, 0));
            logged += 1;
        }
        for i in (0..400).step_by(3) {
            let key = format!("/dir{}/file{i}", i % 7).into_bytes();
            log.put(&key, &value_for(i, 1)).unwrap();
            model.insert(key, value_for(i, 1));
            logged += 1;
        }
        for i in (0..400).step_by(5) {
            let key = format!("/dir{}/file{i}", i % 7).into_bytes();
            assert!(log.delete(&key).unwrap());
            model.remove(&key);
            logged += 1;
        }
        log.sync().unwrap();
        assert_eq!(contents(&log), model);
    }
    let log = MetaLog::open(dir.path()).unwrap();
    assert_eq!(contents(&log), model);
    assert_eq!(log.len(), model.len());
    let report = log.last_recovery();
    assert_eq!((report.records, report.truncated_bytes), (logged, 0));
    assert_eq!(report.truncated_reason, None);
}

#[test]
fn torn_final_record_is_dropped_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut model, good_len) = seed(dir.path());
    {
        let mut log = MetaLog::open(dir.path()).unwrap();
        log.put(b"torn", &[7u8; 100]).unwrap();
    }
    let full_len = file_len(dir.path());
    let file = OpenOptions::new()
        .write(true)
        .open(log_path(dir.path()))
        .unwrap();
    file.set_len(full_len - 3).unwrap();
    drop(file);
    {
        let mut log = MetaLog::open(dir.path()).unwrap();
        let report = log.last_recovery();
        assert_eq!(report.records, 10);
        assert_eq!(report.truncated_bytes, full_len - 3 - good_len);
        assert!(report.truncated_reason.is_some());
        assert_eq!(file_len(dir.path()), good_len, "the torn tail is cut off");
        assert_eq!(log.get(b"torn"), None);
        assert_eq!(contents(&log), model);
        log.put(b"after", b"tear").unwrap();
        model.insert(b"after".to_vec(), b"tear".to_vec());
    }
    let log = MetaLog::open(dir.path()).unwrap();
    assert_eq!(log.last_recovery().truncated_bytes, 0);
    assert_eq!(contents(&log), model);
}

#[test]
fn every_cut_inside_the_tail_record_drops_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let (model, good_len) = seed(dir.path());
    MetaLog::open(dir.path())
        .unwrap()
        .put(b"tail", b"0123456789")
        .unwrap();
    let image = fs::read(log_path(dir.path())).unwrap();
    for cut in good_len as usize + 1..image.len() {
        fs::write(log_path(dir.path()), &image[..cut]).unwrap();
        let log = MetaLog::open(dir.path()).unwrap();
        assert_eq!(contents(&log), model, "cut at {cut}");
        assert_eq!(log.last_recovery().truncated_bytes, cut as u64 - good_len);
        assert_eq!(file_len(dir.path()), good_len);
    }
}

#[test]
fn flipped_byte_in_tail_record_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let (model, good_len) = seed(dir.path());
    MetaLog::open(dir.path())
        .unwrap()
        .put(b"tail", b"flip me")
        .unwrap();
    let image = fs::read(log_path(dir.path())).unwrap();
    for at in good_len as usize..image.len() {
        let mut damaged = image.clone();
        damaged[at] ^= 0x40;
        fs::write(log_path(dir.path()), &damaged).unwrap();
        let log = MetaLog::open(dir.path()).unwrap();
        assert_eq!(contents(&log), model, "flip at {at}");
        let report = log.last_recovery();
        assert_eq!(
            report.truncated_bytes,
            image.len() as u64 - good_len,
            "flip at {at}"
        );
        assert_eq!(file_len(dir.path()), good_len);
    }
    // The value bytes are covered by the checksum, so this is the reason given for them.
    let mut damaged = image.clone();
    *damaged.last_mut().unwrap() ^= 1;
    fs::write(log_path(dir.path()), &damaged).unwrap();
    let log = MetaLog::open(dir.path()).unwrap();
    assert_eq!(
        log.last_recovery().truncated_reason,
        Some("checksum mismatch")
    );
}

fn rename_batch() -> Batch {
    let mut batch = Batch::new();
    batch
        .delete(b"base_1")
        .put(b"renamed_1", b"moved")
        .put(b"base_2", b"changed");
    batch
}

#[test]
fn batch_is_replayed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut model, _) = seed(dir.path());
    MetaLog::open(dir.path())
        .unwrap()
        .apply(rename_batch())
        .unwrap();
    model.remove(b"base_1".as_slice());
    model.insert(b"renamed_1".to_vec(), b"moved".to_vec());
    model.insert(b"base_2".to_vec(), b"changed".to_vec());
    let log = MetaLog::open(dir.path()).unwrap();
    assert_eq!(contents(&log), model);
    assert_eq!(log.last_recovery().records, 11);
}

#[test]
fn batch_torn_anywhere_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (model, good_len) = seed(dir.path());
    MetaLog::open(dir.path())
        .unwrap()
        .apply(rename_batch())
        .unwrap();
    let image = fs::read(log_path(dir.path())).unwrap();
    for cut in good_len as usize + 1..image.len() {
        fs::write(log_path(dir.path()), &image[..cut]).unwrap();
        let log = MetaLog::open(dir.path()).unwrap();
        assert_eq!(contents(&log), model, "cut at {cut}");
    }
    let mut damaged = image.clone();
    damaged[image.len() - 2] ^= 0xff;
    fs::write(log_path(dir.path()), &damaged).unwrap();
    assert_eq!(contents(&MetaLog::open(dir.path()).unwrap()), model);
}

#[test]
fn appends_reach_the_kernel_without_sync() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open(dir.path()).unwrap();
    log.put(b"a", b"1").unwrap();
    let mut batch = Batch::new();
    batch.put(b"b", b"2").delete(b"a");
    log.apply(batch).unwrap();
    // A copy taken while the writer is alive and has never synced is what a kill -9 leaves.
    fs::copy(log_path(dir.path()), log_path(copy.path())).unwrap();
    let reopened = MetaLog::open(copy.path()).unwrap();
    assert_eq!(contents(&reopened), contents(&log));
    assert_eq!(reopened.get(b"b"), Some(b"2".as_slice()));
}

#[test]
fn explicit_compaction_keeps_exactly_the_live_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut log = MetaLog::open_with(dir.path(), no_auto_compaction()).unwrap();
    for round in 0..5 {
        for i in 0..200 {
            let key = format!("/f{i}").into_bytes();
            log.put(&key, &value_for(i, round)).unwrap();
            model.insert(key, value_for(i, round));
        }
    }
    for i in (0..200).step_by(2) {
        log.delete(format!("/f{i}").as_bytes()).unwrap();
        model.remove(format!("/f{i}").as_bytes());
    }
    let before = file_len(dir.path());
    assert!(log.needs_compaction() || before < MetaLogOptions::default().compact_min_bytes);
    log.compact().unwrap();
    let after = file_len(dir.path());
    assert!(after < before / 5, "{after} < {before} / 5");
    assert_eq!(after, log.file_bytes());
    assert_eq!(after, FILE_HEADER_LEN as u64 + log.live_bytes());
    assert_eq!(contents(&log), model);
    assert!(!dir.path().join(TEMP_FILE_NAME).exists());
    log.put(b"/after", b"compaction").unwrap();
    model.insert(b"/after".to_vec(), b"compaction".to_vec());
    drop(log);
    let log = MetaLog::open(dir.path()).unwrap();
    assert_eq!(contents(&log), model);
    assert_eq!(log.last_recovery().records, model.len() as u64);
}

#[test]
fn automatic_compaction_bounds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = MetaLogOptions {
        compact_min_bytes: 4096,
        auto_compact: true,
    };
    let mut log = MetaLog::open_with(dir.path(), options).unwrap();
    log.put(b"other", b"kept").unwrap();
    for i in 0..5000u32 {
        log.put(b"counter", &i.to_le_bytes()).unwrap();
        assert!(
            log.file_bytes() <= 4096 + 64,
            "file grew to {}",
            log.file_bytes()
        );
    }
    assert!(log.take_compaction_error().is_none());
    drop(log);
    let log = MetaLog::open_with(dir.path(), options).unwrap();
    assert_eq!(log.get(b"counter"), Some(4999u32.to_le_bytes().as_slice()));
    assert_eq!(log.get(b"other"), Some(b"kept".as_slice()));
    assert_eq!(log.len(), 2);
}

#[test]
fn oversized_keys_and_values_are_rejected_and_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open(dir.path()).unwrap();
    let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
    let long_value = vec![b'v'; MAX_VALUE_BYTES + 1];
    assert!(matches!(
        log.put(&long_key, b"v"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        log.put(b"k", &long_value),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        log.delete(&long_key),
        Err(Error::InvalidArgument(_))
    ));
    let mut batch = Batch::new();
    batch.put(b"fine", b"fine").put(b"k", &long_value);
    assert!(matches!(log.apply(batch), Err(Error::InvalidArgument(_))));
    assert!(log.is_empty());
    assert_eq!(file_len(dir.path()), FILE_HEADER_LEN as u64);

    let max_key = vec![b'k'; MAX_KEY_BYTES];
    let max_value = vec![b'v'; MAX_VALUE_BYTES];
    log.put(&max_key, &max_value).unwrap();
    drop(log);
    let log = MetaLog::open(dir.path()).unwrap();
    assert_eq!(log.get(&max_key).map(<[u8]>::len), Some(MAX_VALUE_BYTES));
}

#[test]
fn foreign_files_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = b"#!/bin/sh\necho this is not a metadata log\n";
    fs::write(log_path(dir.path()), foreign).unwrap();
    let err = MetaLog::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 0, .. }), "{err}");
    assert_eq!(fs::read(log_path(dir.path())).unwrap(), foreign);

    fs::write(log_path(dir.path()), b"abc").unwrap();
    assert!(matches!(
        MetaLog::open(dir.path()),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(fs::read(log_path(dir.path())).unwrap(), b"abc");

    drop(MetaLog::open(&dir.path().join("v1")).unwrap());
    let mut image = fs::read(log_path(&dir.path().join("v1"))).unwrap();
    image[8] = 2; // format version 2
    fs::write(log_path(dir.path()), &image).unwrap();
    let err = MetaLog::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 8, .. }), "{err}");
}

#[test]
fn empty_or_half_initialised_file_gets_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    drop(MetaLog::open(&fresh).unwrap());
    let header = fs::read(log_path(&fresh)).unwrap();
    assert_eq!(header.len(), FILE_HEADER_LEN);
    for len in [0, 5, FILE_HEADER_LEN - 1] {
        fs::write(log_path(dir.path()), &header[..len]).unwrap();
        let mut log = MetaLog::open(dir.path()).unwrap();
        assert!(log.is_empty());
        assert_eq!(fs::read(log_path(dir.path())).unwrap(), header);
        log.put(b"k", b"v").unwrap();
        drop(log);
        assert_eq!(
            MetaLog::open(dir.path()).unwrap().get(b"k"),
            Some(b"v".as_slice())
        );
    }
}

#[test]
fn leftover_temp_file_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = seed(dir.path());
    let mut temp = fs::File::create(dir.path().join(TEMP_FILE_NAME)).unwrap();
    temp.write_all(b"half a compaction").unwrap();
    drop(temp);
    let log = MetaLog::open(dir.path()).unwrap();
    assert!(!dir.path().join(TEMP_FILE_NAME).exists());
    assert_eq!(contents(&log), model);
}

#[test]
fn deleting_an_absent_key_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open(dir.path()).unwrap();
    log.put(b"present", b"1").unwrap();
    let len = log.file_bytes();
    assert!(!log.delete(b"absent").unwrap());
    assert_eq!(file_len(dir.path()), len);
    assert!(log.delete(b"present").unwrap());
    assert!(file_len(dir.path()) > len);
    assert!(log.is_empty());
}

#[test]
fn range_and_prefix_scans_are_ordered_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open(dir.path()).unwrap();
    let keys: [&[u8]; 7] = [
        b"/a",
        b"/a/x",
        b"/a/y",
        b"/ab",
        b"/b",
        b"\xff",
        b"\xff\xff\x01",
    ];
    for key in keys {
        log.put(key, key).unwrap();
    }
    let scan = |prefix: &[u8]| {
        log.scan_prefix(prefix)
            .map(|(k, _)| k.to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(scan(b"/a/"), vec![b"/a/x".to_vec(), b"/a/y".to_vec()]);
    assert_eq!(scan(b"/a").len(), 4);
    assert_eq!(
        scan(b"\xff"),
        vec![b"\xff".to_vec(), b"\xff\xff\x01".to_vec()]
    );
    assert_eq!(scan(b"\xff\xff"), vec![b"\xff\xff\x01".to_vec()]);
    assert_eq!(scan(b"").len(), keys.len());
    assert_eq!(scan(b"/c").len(), 0);

    let range = (
        Bound::Excluded(b"/a".as_slice()),
        Bound::Included(b"/b".as_slice()),
    );
    assert_eq!(log.range(range).count(), 4);
    assert_eq!(log.range(range).next_back().unwrap().0, b"/b");
    let inverted = (
        Bound::Included(b"/b".as_slice()),
        Bound::Excluded(b"/a".as_slice()),
    );
    assert_eq!(log.range(inverted).count(), 0);
    let empty = (
        Bound::Excluded(b"/a".as_slice()),
        Bound::Excluded(b"/a".as_slice()),
    );
    assert_eq!(log.range(empty).count(), 0);
}

#[derive(Debug, Clone)]
enum Action {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Reopen,
    Compact,
}

fn key_of(i: u8) -> Vec<u8> {
    format!("/k{}", i % 24).into_bytes()
}

fn action() -> impl Strategy<Value = Action> {
    let value = || prop::collection::vec(any::<u8>(), 0..48);
    let batch_op = (any::<u8>(), prop::option::of(value()));
    prop_oneof![
        6 => (any::<u8>(), value()).prop_map(|(k, v)| Action::Put(k, v)),
        3 => any::<u8>().prop_map(Action::Delete),
        2 => prop::collection::vec(batch_op, 1..5).prop_map(Action::Batch),
        1 => Just(Action::Reopen),
        1 => Just(Action::Compact),
    ]
}

fn run_action(log: &mut MetaLog, model: &mut Model, action: Action, dir: &Path) {
    match action {
        Action::Put(k, v) => {
            log.put(&key_of(k), &v).unwrap();
            model.insert(key_of(k), v);
        }
        Action::Delete(k) => {
            let was_there = model.remove(&key_of(k)).is_some();
            assert_eq!(log.delete(&key_of(k)).unwrap(), was_there);
        }
        Action::Batch(ops) => {
            let mut batch = Batch::new();
            for (k, v) in ops {
                match v {
                    Some(v) => {
                        batch.put(&key_of(k), &v);
                        model.insert(key_of(k), v);
                    }
                    None => {
                        batch.delete(&key_of(k));
                        model.remove(&key_of(k));
                    }
                }
            }
            log.apply(batch).unwrap();
        }
        Action::Reopen => {
            let options = MetaLogOptions {
                compact_min_bytes: log.file_bytes() / 2,
                auto_compact: true,
            };
            *log = MetaLog::open_with(dir, options).unwrap();
            assert_eq!(log.last_recovery().truncated_bytes, 0);
        }
        Action::Compact => {
            log.compact().unwrap();
            assert_eq!(log.file_bytes(), FILE_HEADER_LEN as u64 + log.live_bytes());
            assert_eq!(file_len(dir), log.file_bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_mutations_match_a_btreemap(
        actions in prop::collection::vec(action(), 1..80),
        compact_min_bytes in 0u64..3000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = MetaLogOptions { compact_min_bytes, auto_compact: true };
        let mut log = MetaLog::open_with(dir.path(), options).unwrap();
        let mut model = Model::new();
        for action in actions {
            run_action(&mut log, &mut model, action, dir.path());
            prop_assert_eq!(&contents(&log), &model);
            prop_assert!(log.take_compaction_error().is_none());
            prop_assert_eq!(file_len(dir.path()), log.file_bytes());
        }
        drop(log);
        let log = MetaLog::open(dir.path()).unwrap();
        prop_assert_eq!(contents(&log), model);
        prop_assert_eq!(log.last_recovery().truncated_bytes, 0);
    }
}

/// The log keeps space allocated past its end, so that a full disk still takes mutations
/// (unlinks, to free space): the blocks are there, the size is the log's.
#[test]
fn space_past_the_end_stays_allocated() {
    use benchfs_storage::metalog::SPACE_RESERVE_BYTES;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut log = MetaLog::open_with(dir.path(), no_auto_compaction()).unwrap();
    let allocated = |dir: &Path| fs::metadata(log_path(dir)).unwrap().blocks() * 512;
    assert_eq!(
        file_len(dir.path()),
        FILE_HEADER_LEN as u64,
        "the size is the log's"
    );
    assert!(
        allocated(dir.path()) >= SPACE_RESERVE_BYTES,
        "only {} bytes allocated",
        allocated(dir.path())
    );
    // Appends past half of the reserve top it up again.
    let value = vec![7u8; 60_000];
    for i in 0..20u32 {
        log.put(&i.to_le_bytes(), &value).unwrap();
    }
    let end = file_len(dir.path());
    assert!(
        end > SPACE_RESERVE_BYTES,
        "the log grew past the first reserve"
    );
    assert!(allocated(dir.path()) >= end + SPACE_RESERVE_BYTES / 2);
    log.compact().unwrap();
    assert!(allocated(dir.path()) >= file_len(dir.path()) + SPACE_RESERVE_BYTES / 2);
}
