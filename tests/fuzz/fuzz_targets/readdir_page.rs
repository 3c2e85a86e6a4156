//! Both ends of readdir. A client decodes a page of entries from the reply data: arbitrary
//! bytes never panic [`decode_entries`], and what it accepts re-encodes to the input. A shard
//! takes the cursor (the name to list after) from the request data, as the shard does: at most
//! `NAME_MAX_BYTES` of UTF-8; any such cursor lists exactly the names after it, in order.
#![no_main]

use std::sync::OnceLock;

use benchfs::proto::{decode_entries, encode_entry, NAME_MAX_BYTES};
use benchfs::server::meta::MetaService;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 7] = ["0", "a", "a\u{7f}", "b.c", "zz", "é", "\u{1F600}"];

/// A shard's metadata with directory `/d` holding [`NAMES`] (kept with its directory).
fn directory() -> &'static (tempfile::TempDir, MetaService) {
    static META: OnceLock<(tempfile::TempDir, MetaService)> = OnceLock::new();
    META.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut meta = MetaService::open(dir.path(), 0, 0).expect("metadata service");
        meta.mkdir("/d", 0o755).expect("mkdir");
        for name in NAMES {
            meta.add_entry(&format!("/d/{name}"), 8).expect("add entry");
        }
        (dir, meta)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_entries(data) {
        let mut encoded = Vec::new();
        for (kind, name) in &entries {
            assert!(!name.is_empty() && name.len() <= NAME_MAX_BYTES);
            encode_entry(&mut encoded, *kind, name);
        }
        assert_eq!(encoded, data);
    }
    let Some(cursor) = Some(data)
        .filter(|d| d.len() <= NAME_MAX_BYTES)
        .and_then(|d| std::str::from_utf8(d).ok())
    else {
        return;
    };
    let page_bytes = 1 + usize::from(data.first().copied().unwrap_or(0) % 32);
    let (page, more) = directory()
        .1
        .readdir("/d", cursor, page_bytes)
        .expect("readdir");
    let want: Vec<&str> = NAMES.iter().copied().filter(|n| *n > cursor).collect();
    let got: Vec<&str> = page.iter().map(|e| e.name.as_str()).collect();
    assert!(!got.is_empty() || want.is_empty());
    assert_eq!(got[..], want[..got.len()]);
    assert_eq!(more, got.len() < want.len());
});
