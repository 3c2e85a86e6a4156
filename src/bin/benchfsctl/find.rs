//! `find`: walks directory trees, prints the paths that pass every test, and ends with
//! `MATCHED <hits>/<examined>`, the last line IO500 reads from an external find script.
//!
//! Arguments are GNU find's subset that IO500 passes (`DIR -newer FILE -size 3901c -name
//! "*01*"`) plus `-type`: starting paths first (the root when none), then tests, all of which
//! must pass:
//!
//! - `-name GLOB`: the last component matches the shell pattern (`*`, `?`, `[...]`);
//! - `-size [+|-]N(c|k|M)`: the size in bytes, KiB or MiB, rounded up to whole units, is
//!   exactly, more than or less than N (as GNU find: `-size -1k` is only empty files);
//! - `-newer FILE`: the modification time is strictly later than FILE's (GNU find's
//!   definition; IO500's own pfind compares change times with `>=` instead, which for files
//!   written after the timestamp file is made selects the same files). FILE is looked up in
//!   BenchFS and, when it is not there, in the local file system, where IO500 keeps its
//!   timestamp file;
//! - `-type f|d`: regular files or directories.
//!
//! As GNU find, each starting path is tested itself, then everything under it, in
//! pre-order with names sorted. `examined` counts every entry tested, starting paths
//! included. Directories are read a page at a time; entries are only stat'ed when a size or
//! time test needs it and the cheaper tests passed.

use std::io::{BufWriter, StdoutLock, Write};
use std::os::unix::fs::MetadataExt;

use benchfs::client::{EntryKind, Stat};

use crate::format::{base_name, is_dir, join};
use crate::{io_why, why, Ctl};

/// The size test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeTest {
    /// How the rounded-up size must compare with `count`.
    order: std::cmp::Ordering,
    count: u64,
    unit: u64,
}

impl SizeTest {
    fn parse(text: &str) -> Option<SizeTest> {
        let (order, rest) = match text.as_bytes().first()? {
            b'+' => (std::cmp::Ordering::Greater, &text[1..]),
            b'-' => (std::cmp::Ordering::Less, &text[1..]),
            _ => (std::cmp::Ordering::Equal, text),
        };
        let unit = match rest.as_bytes().last()? {
            b'c' => 1,
            b'k' => 1 << 10,
            b'M' => 1 << 20,
            _ => return None,
        };
        let digits = &rest[..rest.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let count = digits.parse().ok()?;
        Some(SizeTest { order, count, unit })
    }

    fn passes(&self, size: u64) -> bool {
        size.div_ceil(self.unit).cmp(&self.count) == self.order
    }
}

/// Every test of one command line.
#[derive(Debug, Default)]
struct Tests {
    name: Option<glob::Pattern>,
    size: Option<SizeTest>,
    newer: Option<String>,
    kind: Option<EntryKind>,
}

/// Splits `args` into starting paths and tests; the argument and the complaint on error.
fn parse(args: &[String]) -> Result<(Vec<String>, Tests), (String, String)> {
    let paths: Vec<String> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    let mut tests = Tests::default();
    let mut rest = args[paths.len()..].iter();
    while let Some(test) = rest.next() {
        let complaint = |what: &str| (test.clone(), what.to_string());
        let known = ["-name", "-size", "-newer", "-type"];
        if !known.contains(&test.as_str()) {
            return Err(complaint(
                "unknown test (known: -name, -size, -newer, -type)",
            ));
        }
        let value = rest.next().ok_or_else(|| complaint("missing argument"))?;
        let invalid = || (test.clone(), format!("invalid argument {value:?}"));
        match test.as_str() {
            "-name" => tests.name = Some(glob::Pattern::new(value).map_err(|_| invalid())?),
            "-size" => tests.size = Some(SizeTest::parse(value).ok_or_else(invalid)?),
            "-newer" => tests.newer = Some(value.clone()),
            _ => {
                tests.kind = Some(match value.as_str() {
                    "f" => EntryKind::File,
                    "d" => EntryKind::Directory,
                    _ => return Err(invalid()),
                })
            }
        }
    }
    let paths = if paths.is_empty() {
        vec!["/".to_string()]
    } else {
        paths
    };
    Ok((paths, tests))
}

/// The modification time of `file`, ns since the epoch: in BenchFS, else locally.
fn reference_mtime(ctl: &mut Ctl, file: &str) -> Result<i64, String> {
    if file.starts_with('/') {
        match ctl.client.stat(file) {
            Ok(stat) => return Ok(stat.mtime_ns),
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => return Err(why(&e)),
        }
    }
    let meta = std::fs::metadata(file).map_err(|e| io_why(&e))?;
    Ok(meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
}

/// The walk of one command: tests, counts, output.
struct Walk<'a> {
    ctl: &'a mut Ctl,
    tests: Tests,
    newer_than: Option<i64>,
    out: BufWriter<StdoutLock<'static>>,
    hits: u64,
    examined: u64,
    /// Standard output is gone (a closed pipe): stop.
    broken: bool,
}

/// Runs `find` with its raw arguments.
pub fn find(ctl: &mut Ctl, args: &[String]) {
    let (paths, tests) = match parse(args) {
        Ok(parsed) => parsed,
        Err((arg, complaint)) => return ctl.fail("find", arg, complaint),
    };
    let newer_than = match &tests.newer {
        Some(file) => match reference_mtime(ctl, file) {
            Ok(ns) => Some(ns),
            Err(e) => return ctl.fail("find", file, e),
        },
        None => None,
    };
    let mut walk = Walk {
        ctl,
        tests,
        newer_than,
        out: BufWriter::new(std::io::stdout().lock()),
        hits: 0,
        examined: 0,
        broken: false,
    };
    for path in &paths {
        walk.start(path);
    }
    let (hits, examined) = (walk.hits, walk.examined);
    walk.print(&format!("MATCHED {hits}/{examined}"));
    if walk.out.flush().is_err() {
        walk.broken = true;
    }
}

impl Walk<'_> {
    fn start(&mut self, path: &str) {
        if self.broken {
            return;
        }
        let stat = match self.ctl.client.stat(path) {
            Ok(stat) => stat,
            Err(e) => return self.ctl.fail("find", path, why(&e)),
        };
        let kind = if is_dir(stat.mode) {
            EntryKind::Directory
        } else {
            EntryKind::File
        };
        self.visit(path, base_name(path), kind, Some(stat));
        if kind == EntryKind::Directory {
            self.walk_dir(path);
        }
    }

    /// Tests the entries of `dir` and descends into its subdirectories, page by page.
    fn walk_dir(&mut self, dir: &str) {
        let mut after = String::new();
        while !self.broken {
            let (page, more) = match self.ctl.client.readdir_page(dir, &after) {
                Ok(page) => page,
                Err(e) => return self.ctl.fail("find", dir, why(&e)),
            };
            for entry in &page {
                let path = join(dir, &entry.name);
                self.visit(&path, &entry.name, entry.kind, None);
                if entry.kind == EntryKind::Directory {
                    self.walk_dir(&path);
                }
            }
            match page.last() {
                Some(last) if more => after = last.name.clone(),
                _ => return,
            }
        }
    }

    /// Tests one entry (stat'ing it only if needed) and prints it when it passes.
    fn visit(&mut self, path: &str, name: &str, kind: EntryKind, stat: Option<Stat>) {
        self.examined += 1;
        let t = &self.tests;
        let cheap =
            t.kind.is_none_or(|k| k == kind) && t.name.as_ref().is_none_or(|p| p.matches(name));
        if !cheap {
            return;
        }
        if t.size.is_some() || self.newer_than.is_some() {
            let stat = match stat.map_or_else(|| self.ctl.client.stat(path), Ok) {
                Ok(stat) => stat,
                Err(e) => return self.ctl.fail("find", path, why(&e)),
            };
            let size_ok = t.size.is_none_or(|s| s.passes(stat.size));
            if !size_ok || self.newer_than.is_some_and(|ns| stat.mtime_ns <= ns) {
                return;
            }
        }
        self.hits += 1;
        self.print(path);
    }

    fn print(&mut self, line: &str) {
        if !self.broken && writeln!(self.out, "{line}").is_err() {
            self.broken = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn sizes_round_up_to_whole_units() {
        let exact = SizeTest::parse("3901c").unwrap();
        assert!(exact.passes(3901) && !exact.passes(3900) && !exact.passes(3902));
        let under_a_k = SizeTest::parse("-1k").unwrap();
        assert!(under_a_k.passes(0) && !under_a_k.passes(1));
        let over = SizeTest::parse("+1M").unwrap();
        assert!(!over.passes(1 << 20) && over.passes((1 << 20) + 1));
        for bad in ["", "c", "12", "12x", "+-1c", "1.5k"] {
            assert!(SizeTest::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn io500_arguments_parse() {
        let line = "/io500/data -newer /results/timestampfile -size 3901c -name *01*";
        let (paths, tests) = parse(&args(line)).unwrap();
        assert_eq!(paths, ["/io500/data"]);
        assert_eq!(tests.newer.as_deref(), Some("/results/timestampfile"));
        assert_eq!(tests.size, SizeTest::parse("3901c"));
        let name = tests.name.unwrap();
        assert!(name.matches("file.mdtest.3.01") && !name.matches("file.0"));
    }

    #[test]
    fn bad_arguments_are_named() {
        assert_eq!(parse(&args("/ -print")).unwrap_err().0, "-print");
        assert_eq!(parse(&args("/ -name")).unwrap_err().0, "-name");
        assert_eq!(parse(&args("/ -type l")).unwrap_err().0, "-type");
        let (paths, tests) = parse(&[]).unwrap();
        assert_eq!(paths, ["/"]);
        assert!(tests.name.is_none() && tests.kind.is_none());
    }
}
