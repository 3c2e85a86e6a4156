//! One soak client thread: its client, its part of the model, and every operation it
//! picks, each checked against the model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use benchfs::client::{Client, ClientConfig, EntryKind, Error, OpenFlags};

use crate::model::*;

/// One client thread: its client, its part of the model and its counters.
pub(crate) struct Worker<'a> {
    pub(crate) client: Client,
    pub(crate) id: u32,
    pub(crate) root: String,
    pub(crate) files: BTreeMap<String, FileModel>,
    /// Certain directories, the root included.
    pub(crate) dirs: BTreeSet<String>,
    /// Uncertain paths and since when.
    pub(crate) uncertain: BTreeMap<String, Instant>,
    /// Paths found lost, with what they should have held (looked at again by `verify`).
    pub(crate) lost: BTreeMap<String, FileModel>,
    /// Uncertain paths removed since (unlink or rmdir succeeded or found nothing).
    pub(crate) settled: BTreeSet<String>,
    /// Settled paths that directories still list: entries without an inode.
    pub(crate) dangling: BTreeSet<String>,
    /// Uncertain directories that hold entries nobody knows of (they are left alone).
    pub(crate) stuck: BTreeSet<String>,
    pub(crate) next_name: u64,
    pub(crate) counters: Counters,
    pub(crate) rng: Rng,
    pub(crate) budget: u64,
    pub(crate) chunk: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) check: Vec<u8>,
    pub(crate) progress: &'a Progress,
}

pub(crate) fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("/", |(p, _)| p)
}

pub(crate) fn connect(registry: &PathBuf, timeout_ms: u64, chunk: u64) -> Result<Client, String> {
    let mut config = ClientConfig::from_env(registry).map_err(|e| e.to_string())?;
    config.request_timeout = Duration::from_millis(timeout_ms.max(1));
    config.connect_timeout = Duration::from_secs(60);
    config.chunk_size_bytes = chunk;
    Client::connect(config).map_err(|e| format!("connecting: {e}"))
}

impl Worker<'_> {
    pub(crate) fn op(&mut self, name: &str) {
        *self.counters.ops.entry(name.to_string()).or_default() += 1;
        self.progress.ops.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fresh_name(&mut self, dir: &str, prefix: &str) -> String {
        self.next_name += 1;
        format!("{dir}/{prefix}{}", self.next_name)
    }

    /// Counts `e` of `op`; prints it when it is unexpected.
    pub(crate) fn error(&mut self, op: &str, e: &Error) -> Failure {
        let kind = classify(e);
        *self
            .counters
            .errors
            .entry(errno_name(e.errno()))
            .or_default() += 1;
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        match kind {
            Failure::Unexpected => self.unexpected(&format!("{op}: {e}")),
            // As an application would, wait a little before going on: a server that is down
            // fails requests at once, which would otherwise make every path uncertain.
            Failure::Fault => std::thread::sleep(FAULT_PAUSE),
            Failure::Missing => {}
        }
        kind
    }

    /// Counts an unexpected outcome; the first few are printed.
    pub(crate) fn unexpected(&mut self, what: &str) {
        self.counters.unexpected += 1;
        if self.counters.unexpected <= 20 {
            eprintln!("benchfs-soak: client {}: unexpected: {what}", self.id);
        }
    }

    /// Records certain file `path` as lost (missing or wrong) and drops it from the model.
    pub(crate) fn lost(&mut self, path: &str, why: &str) {
        let model = self.files.remove(path).unwrap_or_default();
        let size = model.size;
        self.dirs.remove(path);
        self.lost.insert(path.to_string(), model);
        self.counters.lost_files += 1;
        self.counters.lost_bytes += size.max(1);
        self.progress.lost.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "benchfs-soak: client {}: LOST {path} ({size} bytes): {why}",
            self.id
        );
    }

    pub(crate) fn forget(&mut self, path: &str) {
        self.files.remove(path);
        self.dirs.remove(path);
        self.uncertain.insert(path.to_string(), Instant::now());
    }

    /// After a failed operation: `changed` (the paths it may have changed) become uncertain;
    /// when a server said a path is missing, each certain path of `changed` and `context`
    /// (the directories it relied on) is looked up again, and those missing are lost.
    pub(crate) fn failed(&mut self, op: &str, e: &Error, changed: &[&str], context: &[&str]) {
        let kind = self.error(op, e);
        let mut gone = BTreeSet::new();
        if kind == Failure::Missing {
            for &path in changed.iter().chain(context) {
                let certain = self.files.contains_key(path) || self.dirs.contains(path);
                if !certain {
                    continue;
                }
                if let Err(e2) = self.client.stat(path) {
                    if classify(&e2) == Failure::Missing {
                        self.lost(path, &format!("{op}: {e}"));
                        gone.insert(path);
                    }
                }
            }
        }
        for &path in changed {
            if !gone.contains(path) {
                self.forget(path);
            }
        }
    }

    pub(crate) fn live_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    pub(crate) fn random_file(&mut self) -> Option<String> {
        let n = self.files.len() as u64;
        let i = self.rng.below(n) as usize;
        self.files.keys().nth(i).cloned()
    }

    pub(crate) fn random_dir(&mut self) -> String {
        let i = self.rng.below(self.dirs.len() as u64) as usize;
        self.dirs
            .iter()
            .nth(i)
            .cloned()
            .unwrap_or(self.root.clone())
    }

    /// A size: empty, tiny, around a page, IOR hard's record, around a chunk, several chunks.
    pub(crate) fn random_size(&mut self) -> u64 {
        let c = self.chunk;
        match self.rng.below(12) {
            0 => 0,
            1 => 1 + self.rng.below(100),
            2 => 4096,
            3 => 4095 + self.rng.below(3),
            4 => 47008,
            5 => 65536 + self.rng.below(2) * 333,
            6 => c,
            7 => c - 1 + self.rng.below(3),
            8 => 2 * c + self.rng.below(c) + 1,
            9 => 3 * c + 17,
            _ => 1 + self.rng.below(c),
        }
    }

    /// Fills `self.buf` with `len` bytes of `seed` from `offset`.
    pub(crate) fn data(&mut self, seed: u64, offset: u64, len: u64) {
        self.buf.resize(len as usize, 0);
        fill(&mut self.buf, seed, offset);
    }

    /// One random operation.
    pub(crate) fn step(&mut self) {
        let over = self.live_bytes() > self.budget || self.files.len() > 64;
        let roll = self.rng.below(100);
        match roll {
            _ if over && roll < 50 => self.unlink(),
            0..=21 => self.create(),
            22..=31 => self.overwrite(),
            32..=51 => self.read(),
            52..=59 => self.stat(),
            60..=67 => self.rename(),
            68..=76 => self.unlink(),
            77..=81 => self.truncate(),
            82..=85 => self.mkdir(),
            86..=91 => self.readdir(),
            92..=94 => self.rmdir(),
            95 => self.rename_dir(),
            _ => self.settle(),
        }
    }

    /// Writes `(offset, len)` pieces of `seed` into `file`; false (and the path uncertain)
    /// when one fails.
    pub(crate) fn write_pieces(
        &mut self,
        file: &mut benchfs::client::File,
        pieces: &[(u64, u64)],
        seed: u64,
    ) -> bool {
        for &(offset, len) in pieces {
            self.data(seed, offset, len);
            let buf = std::mem::take(&mut self.buf);
            let result = self.client.write_at(file, &buf, offset);
            self.buf = buf;
            if let Err(e) = result {
                let path = file.path().to_string();
                self.failed("write", &e, &[&path], &[]);
                return false;
            }
            self.counters.bytes_written += len;
        }
        true
    }

    /// Create, write (in pieces, in any order, maybe after a hole), maybe fsync, close.
    pub(crate) fn create(&mut self) {
        let dir = self.random_dir();
        let path = self.fresh_name(&dir, "f");
        let len = self.random_size();
        let hole = if len > 0 && self.rng.percent(10) {
            self.rng.below(2 * self.chunk)
        } else {
            0
        };
        let seed = self.rng.next() & SEED_MASK;
        self.op("create");
        let mut file = match self.client.create(&path, 0o644) {
            Ok(f) => f,
            Err(e) => return self.failed("create", &e, &[&path], &[&dir]),
        };
        // Nothing is written for an empty file (a write of no bytes is not a write).
        let mut pieces = if len == 0 {
            Vec::new()
        } else {
            vec![(hole, len)]
        };
        if len > 1 && self.rng.percent(40) {
            let cut = 1 + self.rng.below(len - 1);
            pieces = vec![(hole, cut), (hole + cut, len - cut)];
            if self.rng.percent(50) {
                pieces.reverse();
            }
        }
        self.op("write");
        if !self.write_pieces(&mut file, &pieces, seed) {
            let _ = self.client.close(file);
            return;
        }
        let model = FileModel::written(hole, len, seed);
        self.finish(file, model, None);
    }

    /// Maybe fsync, then close `file`, whose content is `model` once both succeed. With
    /// `fsynced`, the file was already durable with that content.
    pub(crate) fn finish(
        &mut self,
        mut file: benchfs::client::File,
        model: FileModel,
        fsynced: Option<FileModel>,
    ) {
        let path = file.path().to_string();
        let mut durable = fsynced;
        if self.rng.percent(30) {
            self.op("fsync");
            match self.client.fsync(&mut file) {
                Ok(()) => durable = Some(model.clone()),
                Err(e) => {
                    self.failed("fsync", &e, &[&path], &[]);
                    let _ = self.client.close(file);
                    return;
                }
            }
        }
        self.op("close");
        match self.client.close(file) {
            Ok(()) => {
                self.uncertain.remove(&path);
                self.files.insert(path, model);
            }
            Err(e) => {
                // Durable after an fsync even if the close fails (nothing was written since).
                let synced_last = durable.as_ref().is_some_and(|d| d.size == model.size)
                    && durable.as_ref().map(|d| d.extents.len()) == Some(model.extents.len());
                self.failed("close", &e, &[&path], &[]);
                if synced_last {
                    if let Some(d) = durable {
                        self.uncertain.remove(&path);
                        self.files.insert(path, d);
                    }
                }
            }
        }
    }

    /// Write into an existing file (maybe beyond its end), maybe fsync between two writes.
    pub(crate) fn overwrite(&mut self) {
        let Some(path) = self.random_file() else {
            return self.create();
        };
        if self.files[&path].extents.len() >= MAX_EXTENTS {
            return self.read();
        }
        self.op("open");
        let mut file = match self.client.open(&path, OpenFlags::READ_WRITE, 0) {
            Ok(f) => f,
            Err(e) => {
                // Opening changes nothing: the file stays certain unless it is missing.
                if self.error("open", &e) == Failure::Missing {
                    self.lost(&path, &format!("open: {e}"));
                }
                return;
            }
        };
        let mut model = self.files[&path].clone();
        let mut fsynced = None;
        let writes = 1 + self.rng.below(2);
        for n in 0..writes {
            let offset = self.rng.below(model.size + self.chunk / 4);
            let len = 1 + self.rng.below(self.chunk + self.chunk / 2);
            let seed = self.rng.next() & SEED_MASK;
            self.op("write");
            if !self.write_pieces(&mut file, &[(offset, len)], seed) {
                let _ = self.client.close(file);
                return;
            }
            model.write(offset, len, seed);
            if n + 1 < writes {
                self.op("fsync");
                match self.client.fsync(&mut file) {
                    Ok(()) => fsynced = Some(model.clone()),
                    Err(e) => {
                        self.failed("fsync", &e, &[&path], &[]);
                        let _ = self.client.close(file);
                        return;
                    }
                }
            }
        }
        // From the first write on, the file is what the last acknowledged step made it.
        self.files.remove(&path);
        self.uncertain.insert(path.clone(), Instant::now());
        if let Some(synced) = &fsynced {
            self.uncertain.remove(&path);
            self.files.insert(path.clone(), synced.clone());
        }
        self.finish(file, model, fsynced);
    }

    /// Read a whole file or a range of it and compare every byte.
    pub(crate) fn read(&mut self) {
        let Some(path) = self.random_file() else {
            return self.create();
        };
        let model = self.files[&path].clone();
        self.op("read");
        let file = match self.client.open(&path, OpenFlags::READ, 0) {
            Ok(f) => f,
            Err(e) => {
                if self.error("open", &e) == Failure::Missing {
                    self.lost(&path, &format!("open: {e}"));
                }
                return;
            }
        };
        if file.size() != model.size {
            let why = format!("size {} at open, {} acknowledged", file.size(), model.size);
            return self.lost(&path, &why);
        }
        let (offset, len) = if model.size == 0 || self.rng.percent(50) {
            (0, model.size)
        } else {
            let offset = self.rng.below(model.size);
            (offset, 1 + self.rng.below(model.size - offset))
        };
        self.buf.resize(len as usize, 0);
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.client.read_at(&file, &mut buf, offset);
        self.buf = buf;
        match result {
            Ok(n) if n as u64 != len => {
                self.lost(&path, &format!("short read at {offset}: {n} of {len}"))
            }
            Ok(_) => self.compare(&path, &model, offset),
            Err(e) => {
                if self.error("read", &e) == Failure::Missing {
                    self.lost(&path, &format!("read: {e}"));
                }
            }
        }
    }

    /// Compares `self.buf` (read at `offset`) with the model of `path`.
    pub(crate) fn compare(&mut self, path: &str, model: &FileModel, offset: u64) {
        self.check.resize(self.buf.len(), 0);
        model.expected(offset, &mut self.check);
        let Some(i) = first_difference(&self.buf, &self.check) else {
            self.counters.bytes_verified += self.buf.len() as u64;
            return;
        };
        // Tell damage on the servers from a read that returned wrong bytes: read again into
        // a fresh buffer.
        let mut again = vec![0u8; self.buf.len()];
        let second = match self.client.open(path, OpenFlags::READ, 0) {
            Ok(file) => match self.client.read_at(&file, &mut again, offset) {
                Ok(_) if again == self.check => "intact".to_string(),
                Ok(_) => "wrong too".to_string(),
                Err(e) => format!("failed: {e}"),
            },
            Err(e) => format!("failed: {e}"),
        };
        let why = format!(
            "read of {} bytes at {offset}: wrong byte at offset {} (read again: {second})",
            self.buf.len(),
            offset + i as u64
        );
        self.lost(path, &why);
    }

    pub(crate) fn stat(&mut self) {
        let dir_instead = self.rng.percent(20);
        let path = match self.random_file() {
            Some(p) if !dir_instead => p,
            _ => self.random_dir(),
        };
        self.op("stat");
        match self.client.stat(&path) {
            Ok(st) => {
                let is_dir = st.mode & libc::S_IFMT == libc::S_IFDIR;
                match self.files.get(&path) {
                    Some(m) if is_dir || st.size != m.size => {
                        let why = format!("stat: size {}, {} acknowledged", st.size, m.size);
                        self.lost(&path, &why);
                    }
                    None if !is_dir => self.lost(&path, "stat: not a directory"),
                    _ => {}
                }
            }
            Err(e) => {
                if self.error("stat", &e) == Failure::Missing {
                    self.lost(&path, &format!("stat: {e}"));
                }
            }
        }
    }

    /// Rename a file to a new name or over another file.
    pub(crate) fn rename(&mut self) {
        let Some(from) = self.random_file() else {
            return self.create();
        };
        let to = match self.random_file() {
            Some(other) if other != from && self.rng.percent(30) => other,
            _ => {
                let dir = self.random_dir();
                self.fresh_name(&dir, "f")
            }
        };
        self.op("rename");
        match self.client.rename(&from, &to) {
            Ok(()) => {
                let model = self.files.remove(&from).expect("certain");
                self.files.insert(to, model);
            }
            Err(e) => {
                let (pf, pt) = (parent_of(&from).to_string(), parent_of(&to).to_string());
                self.failed("rename", &e, &[&from, &to], &[&pf, &pt]);
            }
        }
    }

    pub(crate) fn unlink(&mut self) {
        let Some(path) = self.random_file() else {
            return self.create();
        };
        self.unlink_path(&path);
    }

    pub(crate) fn unlink_path(&mut self, path: &str) -> bool {
        self.op("unlink");
        match self.client.unlink(path) {
            Ok(()) => {
                self.files.remove(path);
                true
            }
            Err(e) => {
                self.failed("unlink", &e, &[path], &[parent_of(path)]);
                false
            }
        }
    }

    /// Shrink, grow, or cut at a chunk boundary.
    pub(crate) fn truncate(&mut self) {
        let Some(path) = self.random_file() else {
            return self.create();
        };
        let old = self.files[&path].size;
        let size = match self.rng.below(4) {
            0 | 1 => self.rng.below(old + 1),
            2 => old + 1 + self.rng.below(self.chunk),
            _ => (self.rng.below(3) * self.chunk + self.rng.below(3)).saturating_sub(1),
        };
        self.op("truncate");
        match self.client.truncate(&path, size) {
            Ok(()) => {
                if let Some(m) = self.files.get_mut(&path) {
                    m.truncate(size);
                }
            }
            Err(e) => self.failed("truncate", &e, &[&path], &[]),
        }
    }

    pub(crate) fn mkdir(&mut self) {
        if self.dirs.len() > MAX_DIRS {
            return self.readdir();
        }
        let root = self.root.clone();
        let path = self.fresh_name(&root, "d");
        self.op("mkdir");
        match self.client.mkdir(&path, 0o755) {
            Ok(()) => {
                self.dirs.insert(path);
            }
            Err(e) => self.failed("mkdir", &e, &[&path], &[&root]),
        }
    }

    /// Removes an old uncertain path (a file, or a directory without uncertain entries):
    /// once that succeeds or finds nothing, the path is known to be absent.
    pub(crate) fn settle(&mut self) {
        let now = Instant::now();
        let old: Vec<String> = self
            .uncertain
            .iter()
            .filter(|(_, since)| now.duration_since(**since) > SETTLE_AFTER)
            .map(|(path, _)| path.clone())
            .collect();
        let old: Vec<String> = old
            .into_iter()
            .filter(|p| !self.stuck.contains(p))
            .collect();
        let Some(path) = self.rng.pick(&old).cloned() else {
            return self.readdir();
        };
        let is_dir = path
            .rsplit_once('/')
            .is_some_and(|(_, n)| n.starts_with('d'));
        if is_dir && !self.children(&path).1.is_empty() {
            return self.readdir();
        }
        self.op("settle");
        let result = if is_dir {
            self.client.rmdir(&path)
        } else {
            self.client.unlink(&path)
        };
        match result {
            Ok(()) => {
                self.uncertain.remove(&path);
                self.settled.insert(path);
            }
            Err(e) if e.errno() == libc::ENOTEMPTY => {
                // Entries left inside by failed operations (see `dangling`).
                *self.counters.errors.entry("ENOTEMPTY".into()).or_default() += 1;
                self.stuck.insert(path);
            }
            Err(e) => {
                if self.error("settle", &e) == Failure::Missing {
                    self.uncertain.remove(&path);
                    self.settled.insert(path);
                } else {
                    self.uncertain.insert(path, Instant::now());
                }
            }
        }
    }

    /// Certain and uncertain paths right under `dir`.
    pub(crate) fn children(&self, dir: &str) -> (Vec<String>, Vec<String>) {
        let under = |p: &&String| parent_of(p) == dir;
        let certain = self
            .files
            .keys()
            .chain(self.dirs.iter())
            .filter(under)
            .cloned()
            .collect();
        // Entries without inodes count as uncertain: they keep a directory from going.
        let uncertain = self
            .uncertain
            .keys()
            .chain(self.dangling.iter())
            .filter(under)
            .cloned()
            .collect();
        (certain, uncertain)
    }

    /// List a directory: every certain entry is there with its kind, nothing unknown is.
    pub(crate) fn readdir(&mut self) {
        let dir = self.random_dir();
        self.op("readdir");
        let entries = match self.client.readdir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                if self.error("readdir", &e) == Failure::Missing {
                    self.lost(&dir, &format!("readdir: {e}"));
                }
                return;
            }
        };
        let listed: BTreeMap<String, EntryKind> = entries
            .into_iter()
            .map(|e| (format!("{dir}/{}", e.name), e.kind))
            .collect();
        let (certain, uncertain) = self.children(&dir);
        for path in &certain {
            let want = if self.dirs.contains(path) {
                EntryKind::Directory
            } else {
                EntryKind::File
            };
            match listed.get(path) {
                Some(&kind) if kind == want => {}
                Some(kind) => self.lost(path, &format!("readdir lists it as {kind:?}")),
                None => self.lost(path, "readdir does not list it"),
            }
        }
        for path in listed.keys() {
            if certain.contains(path) || uncertain.contains(path) || self.lost.contains_key(path) {
                continue;
            }
            if self.settled.contains(path) {
                // Left by a failed operation whose undo could not reach the entry's target.
                if self.dangling.insert(path.clone()) {
                    self.counters.dangling += 1;
                    eprintln!(
                        "benchfs-soak: client {}: readdir {dir} lists {path}, which unlink or \
                         rmdir found missing (an entry without its inode)",
                        self.id
                    );
                }
            } else {
                self.unexpected(&format!("readdir {dir} lists {path}, never acknowledged"));
            }
        }
    }

    /// A random subdirectory without uncertain entries, and its certain entries. Without one,
    /// does something else instead (a mkdir when there is no subdirectory, else a readdir)
    /// and returns `None`.
    fn settled_subdir(&mut self) -> Option<(String, Vec<String>)> {
        let subdirs: Vec<String> = self
            .dirs
            .iter()
            .filter(|d| **d != self.root)
            .cloned()
            .collect();
        let Some(dir) = self.rng.pick(&subdirs).cloned() else {
            self.mkdir();
            return None;
        };
        let (certain, uncertain) = self.children(&dir);
        if !uncertain.is_empty() {
            self.readdir();
            return None;
        }
        Some((dir, certain))
    }

    /// Empty a subdirectory (unlinking its files) and remove it.
    pub(crate) fn rmdir(&mut self) {
        let Some((dir, certain)) = self.settled_subdir() else {
            return;
        };
        for path in &certain {
            if !self.unlink_path(path) {
                return;
            }
        }
        self.op("rmdir");
        match self.client.rmdir(&dir) {
            Ok(()) => {
                self.dirs.remove(&dir);
            }
            Err(e) => {
                let root = self.root.clone();
                self.failed("rmdir", &e, &[&dir], &[&root]);
            }
        }
    }

    /// Rename a subdirectory (with its files) to a new name.
    pub(crate) fn rename_dir(&mut self) {
        let Some((from, certain)) = self.settled_subdir() else {
            return;
        };
        let root = self.root.clone();
        let to = self.fresh_name(&root, "d");
        self.op("rename_dir");
        match self.client.rename(&from, &to) {
            Ok(()) => {
                self.dirs.remove(&from);
                self.dirs.insert(to.clone());
                for path in certain {
                    if let Some(m) = self.files.remove(&path) {
                        let name = path.rsplit_once('/').map_or("", |(_, n)| n);
                        self.files.insert(format!("{to}/{name}"), m);
                    }
                }
            }
            Err(e) => {
                let mut paths = vec![from.clone(), to.clone()];
                for path in certain {
                    let name = path.rsplit_once('/').map_or("", |(_, n)| n).to_string();
                    paths.push(format!("{to}/{name}"));
                    paths.push(path);
                }
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                self.failed("rename_dir", &e, &refs, &[&root]);
            }
        }
    }
}

pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(Some(a.len().min(b.len())))
}
