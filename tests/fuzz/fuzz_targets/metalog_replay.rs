//! Replay of a metadata log file with arbitrary contents, written to a disk-backed directory
//! (this crate's `target/`). The open never panics; it either refuses the file and leaves it
//! untouched, or recovers a consistent state: the file is cut to the valid prefix it replayed
//! (a short file that is a prefix of the header gets a fresh header), a second open replays
//! the same state with nothing to cut, and a record appended after recovery survives a reopen.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use benchfs::storage::metalog::{
    MetaLog, MetaLogOptions, FILE_HEADER_LEN, LOG_FILE_NAME, TEMP_FILE_NAME,
};
use benchfs::storage::Error;
use libfuzzer_sys::fuzz_target;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// This process's directory for the log (parallel fuzzing jobs do not share one).
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
        fs::create_dir_all(&base).expect("fuzz target directory");
        tempfile::Builder::new()
            .prefix("metalog_replay")
            .tempdir_in(base)
            .expect("temporary directory")
            .keep()
    })
}

fn options() -> MetaLogOptions {
    MetaLogOptions {
        auto_compact: false,
        ..MetaLogOptions::default()
    }
}

fn contents(log: &MetaLog) -> Model {
    log.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let path = dir.join(LOG_FILE_NAME);
    let _ = fs::remove_file(dir.join(TEMP_FILE_NAME));
    fs::write(&path, data).expect("write the log file");
    let log = match MetaLog::open_with(dir, options()) {
        Ok(log) => log,
        Err(Error::Corrupt { .. }) => {
            assert_eq!(
                fs::read(&path).expect("read back"),
                data,
                "a refused file changed"
            );
            return;
        }
        Err(e) => panic!("open failed without a corrupt file: {e}"),
    };
    let on_disk = fs::read(&path).expect("read back");
    assert_eq!(on_disk.len() as u64, log.file_bytes());
    if data.len() >= FILE_HEADER_LEN {
        assert_eq!(
            on_disk[..],
            data[..on_disk.len()],
            "recovery rewrote the valid prefix"
        );
        let report = log.last_recovery();
        assert_eq!(report.truncated_bytes, (data.len() - on_disk.len()) as u64);
        assert_eq!(
            report.truncated_reason.is_some(),
            report.truncated_bytes > 0
        );
    } else {
        assert!(on_disk.starts_with(data) && on_disk.len() == FILE_HEADER_LEN);
    }
    let state = contents(&log);
    assert_eq!(state.len(), log.len());
    drop(log);
    let mut again = MetaLog::open_with(dir, options()).expect("reopen a recovered log");
    assert_eq!(again.last_recovery().truncated_bytes, 0);
    assert_eq!(contents(&again), state);
    again.put(b"appended", b"after recovery").expect("append");
    drop(again);
    let last = MetaLog::open_with(dir, options()).expect("reopen after an append");
    assert_eq!(last.last_recovery().truncated_bytes, 0);
    assert_eq!(last.get(b"appended"), Some(&b"after recovery"[..]));
});
