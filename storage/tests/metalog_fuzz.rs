//! Replay of hostile metadata log files: arbitrary contents never panic the open; it either
//! refuses the file untouched ([`Error::Corrupt`]) or recovers a consistent state: the file is
//! cut to the valid prefix it replayed, a second open replays it whole with nothing cut, and
//! appends after it survive a reopen. A log written by [`MetaLog`] with one byte changed or
//! cut short recovers exactly the mutations whose records lie before the damage.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use benchfs_storage::metalog::{
    Batch, MetaLog, MetaLogOptions, FILE_HEADER_LEN, FILE_MAGIC, FORMAT_VERSION, LOG_FILE_NAME,
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

fn options() -> MetaLogOptions {
    MetaLogOptions {
        auto_compact: false,
        ..MetaLogOptions::default()
    }
}

fn header() -> Vec<u8> {
    let mut header = FILE_MAGIC.to_vec();
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    header
}

/// Opens a log file holding `bytes` and checks the outcome against the documented recovery.
fn open_hostile(bytes: &[u8]) -> Result<Option<Model>, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    fs::write(log_path(dir.path()), bytes).unwrap();
    let log = match MetaLog::open_with(dir.path(), options()) {
        Ok(log) => log,
        Err(Error::Corrupt { .. }) => {
            prop_assert_eq!(fs::read(log_path(dir.path())).unwrap(), bytes);
            return Ok(None);
        }
        Err(e) => return Err(TestCaseError::fail(format!("open failed: {e}"))),
    };
    let on_disk = fs::read(log_path(dir.path())).unwrap();
    prop_assert_eq!(on_disk.len() as u64, log.file_bytes());
    if bytes.len() >= FILE_HEADER_LEN {
        prop_assert_eq!(&on_disk[..], &bytes[..on_disk.len()]);
        let report = log.last_recovery();
        prop_assert_eq!(report.truncated_bytes, (bytes.len() - on_disk.len()) as u64);
        prop_assert_eq!(
            report.truncated_reason.is_some(),
            report.truncated_bytes > 0
        );
    } else {
        prop_assert_eq!(on_disk, header());
    }
    let state = contents(&log);
    drop(log);
    let mut again = MetaLog::open_with(dir.path(), options()).unwrap();
    prop_assert_eq!(again.last_recovery().truncated_bytes, 0);
    prop_assert_eq!(&contents(&again), &state);
    again.put(b"appended", b"after recovery").unwrap();
    drop(again);
    let last = MetaLog::open_with(dir.path(), options()).unwrap();
    prop_assert_eq!(last.get(b"appended"), Some(&b"after recovery"[..]));
    prop_assert_eq!(
        last.len(),
        state.len() + usize::from(!state.contains_key(&b"appended"[..]))
    );
    Ok(Some(state))
}

#[derive(Debug, Clone)]
enum Mutation {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
}

fn key_of(i: u8) -> Vec<u8> {
    format!("/k{}", i % 8).into_bytes()
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = || prop::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        4 => (any::<u8>(), value()).prop_map(|(k, v)| Mutation::Put(k, v)),
        2 => any::<u8>().prop_map(Mutation::Delete),
        2 => prop::collection::vec((any::<u8>(), prop::option::of(value())), 1..4)
            .prop_map(Mutation::Batch),
    ]
}

/// Writes `mutations` with [`MetaLog`]; returns the file and, after each mutation, the file
/// length and the state (starting with the empty log).
fn written_log(mutations: &[Mutation]) -> (Vec<u8>, Vec<(u64, Model)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open_with(dir.path(), options()).unwrap();
    let mut steps = vec![(log.file_bytes(), Model::new())];
    for m in mutations {
        match m {
            Mutation::Put(k, v) => log.put(&key_of(*k), v).unwrap(),
            Mutation::Delete(k) => drop(log.delete(&key_of(*k)).unwrap()),
            Mutation::Batch(ops) => {
                let mut batch = Batch::new();
                for (k, v) in ops {
                    match v {
                        Some(v) => batch.put(&key_of(*k), v),
                        None => batch.delete(&key_of(*k)),
                    };
                }
                log.apply(batch).unwrap();
            }
        }
        steps.push((log.file_bytes(), contents(&log)));
    }
    drop(log);
    (fs::read(log_path(dir.path())).unwrap(), steps)
}

/// The state of the last mutation whose record ends at or before `valid`.
fn state_before(steps: &[(u64, Model)], valid: u64) -> &Model {
    &steps.iter().rev().find(|(end, _)| *end <= valid).unwrap().1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_files_are_refused_untouched_or_recovered_consistently(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        open_hostile(&bytes)?;
    }

    #[test]
    fn arbitrary_records_after_a_valid_header_recover_consistently(
        tail in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = header();
        bytes.extend_from_slice(&tail);
        prop_assert!(open_hostile(&bytes)?.is_some());
    }

    #[test]
    fn header_prefixes_get_a_header_and_other_short_files_are_refused(
        len in 0..FILE_HEADER_LEN,
        flip in any::<prop::sample::Index>(),
    ) {
        let mut bytes = header()[..len].to_vec();
        prop_assert_eq!(open_hostile(&bytes)?, Some(Model::new()));
        if len > 0 {
            bytes[flip.index(len)] ^= 0x40;
            prop_assert_eq!(open_hostile(&bytes)?, None);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_changed_byte_drops_its_record_and_everything_after(
        mutations in prop::collection::vec(mutation(), 1..12),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let (mut bytes, steps) = written_log(&mutations);
        let at = at.index(bytes.len());
        bytes[at] ^= xor;
        let recovered = open_hostile(&bytes)?;
        if at < FILE_HEADER_LEN {
            prop_assert_eq!(recovered, None);
        } else {
            prop_assert_eq!(recovered.as_ref(), Some(state_before(&steps, at as u64)));
        }
    }

    #[test]
    fn a_cut_keeps_exactly_the_whole_records_before_it(
        mutations in prop::collection::vec(mutation(), 1..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let (bytes, steps) = written_log(&mutations);
        let cut = FILE_HEADER_LEN + cut.index(bytes.len() - FILE_HEADER_LEN + 1);
        let recovered = open_hostile(&bytes[..cut])?;
        prop_assert_eq!(recovered.as_ref(), Some(state_before(&steps, cut as u64)));
    }

    #[test]
    fn garbage_after_a_valid_log_is_cut(
        mutations in prop::collection::vec(mutation(), 1..8),
        garbage in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let (mut bytes, steps) = written_log(&mutations);
        bytes.extend_from_slice(&garbage);
        let recovered = open_hostile(&bytes)?;
        // Garbage can only hold a valid record by chance of a matching CRC-32 and lengths.
        prop_assert_eq!(recovered.as_ref(), Some(&steps.last().unwrap().1));
    }
}
