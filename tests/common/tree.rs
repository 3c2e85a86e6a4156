//! Helpers of the namespace tests: whole trees listed by readdir, files written and read
//! whole, data that tells where each byte belongs.

#![allow(dead_code)]

use std::collections::BTreeMap;

use benchfs::client::{Client, EntryKind, OpenFlags, Result};

/// `dir/name`, also for the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Every path under `root` (not `root` itself) with its kind, found by readdir; each listing
/// must be in strictly ascending name order.
pub fn walk(client: &mut Client, root: &str) -> Result<BTreeMap<String, EntryKind>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(dir) = todo.pop() {
        let entries = client.readdir(&dir)?;
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "readdir {dir} is not in name order: {names:?}"
        );
        for entry in entries {
            let path = join(&dir, &entry.name);
            if entry.kind == EntryKind::Directory {
                todo.push(path.clone());
            }
            found.insert(path, entry.kind);
        }
    }
    Ok(found)
}

/// A readable account of how `actual` differs from `expected` (at most a few paths of each
/// kind of difference).
pub fn diff(
    expected: &BTreeMap<String, EntryKind>,
    actual: &BTreeMap<String, EntryKind>,
) -> String {
    let differs = |a: &BTreeMap<String, EntryKind>, b: &BTreeMap<String, EntryKind>| {
        let found: Vec<_> = a
            .iter()
            .filter(|(p, k)| b.get(*p) != Some(k))
            .take(5)
            .collect();
        format!("{found:?}")
    };
    let (missing, extra) = (differs(expected, actual), differs(actual, expected));
    format!(
        "{} expected, {} found; missing (first 5): {missing}; unexpected (first 5): {extra}",
        expected.len(),
        actual.len()
    )
}

/// Fails with [`diff`] unless the tree under `root` is exactly `expected`.
pub fn assert_tree(client: &mut Client, root: &str, expected: &BTreeMap<String, EntryKind>) {
    let actual = walk(client, root).unwrap_or_else(|e| panic!("listing {root}: {e}"));
    assert!(
        actual == *expected,
        "tree under {root}: {}",
        diff(expected, &actual)
    );
}

/// Creates (or opens) `path`, writes `data` at 0 and closes it; returns the file id.
pub fn write_file(client: &mut Client, path: &str, data: &[u8]) -> Result<u64> {
    let mut file = client.create(path, 0o644)?;
    client.write_at(&mut file, data, 0)?;
    let id = file.file_id();
    client.close(file)?;
    Ok(id)
}

/// The whole content of `path`.
pub fn read_file(client: &mut Client, path: &str) -> Result<Vec<u8>> {
    let file = client.open(path, OpenFlags::READ, 0)?;
    let mut buf = vec![0u8; file.size() as usize];
    let n = client.read_at(&file, &mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` bytes of the data stream `seed` from byte `offset` on: every aligned 8-byte word
/// differs from the others of the stream and from other streams.
pub fn pattern_at(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|p| mix64(seed.rotate_left(32) ^ (p / 8)).to_le_bytes()[(p % 8) as usize])
        .collect()
}

/// [`pattern_at`] from the start of the stream.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    pattern_at(seed, 0, len)
}

/// The errno of a call that must fail.
pub fn errno_of<T: std::fmt::Debug>(result: Result<T>) -> i32 {
    match result {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

/// A small seeded random generator (SplitMix64): the same seed gives the same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
