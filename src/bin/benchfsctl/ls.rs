//! `ls`, `stat` and `df`: looking at files, directories and the cluster's capacity.
//!
//! Output is one name a line whatever the terminal; names are sorted bytewise (as coreutils
//! in the C locale). As `ls`, files named on the command line come first, then each directory
//! under a `PATH:` header when there are several operands or with `-R`, sections separated by
//! a blank line.

use std::io::Write;

use benchfs::client::{EntryKind, Stat};

use crate::format::{full_time, human_df, is_dir, join, minutes, mode_string};
use crate::{why, Ctl};

/// How `ls` lists.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Long format.
    pub long: bool,
    /// Into subdirectories.
    pub recursive: bool,
}

/// Lists `paths` (the root when empty).
pub fn ls(ctl: &mut Ctl, paths: &[String], options: Options) {
    let root = ["/".to_string()];
    let paths = if paths.is_empty() { &root[..] } else { paths };
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for path in paths {
        match ctl.client.stat(path) {
            Ok(stat) if is_dir(stat.mode) => dirs.push(path.clone()),
            Ok(stat) => files.push((path.clone(), stat)),
            Err(e) => ctl.fail("ls", path, why(&e)),
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    dirs.sort();
    let mut out = std::io::stdout().lock();
    let mut first = files.is_empty();
    print_block(&mut out, &files, options.long);
    let headers = options.recursive || paths.len() > 1;
    for dir in dirs {
        list_dir(ctl, &mut out, &dir, options, headers, &mut first);
    }
    let _ = out.flush();
}

/// Lists directory `dir` (and its subdirectories with `-R`).
fn list_dir(
    ctl: &mut Ctl,
    out: &mut impl Write,
    dir: &str,
    options: Options,
    header: bool,
    first: &mut bool,
) {
    let entries = match ctl.client.readdir(dir) {
        Ok(entries) => entries,
        Err(e) => return ctl.fail("ls", dir, why(&e)),
    };
    if !*first {
        let _ = writeln!(out);
    }
    *first = false;
    if header {
        let _ = writeln!(out, "{dir}:");
    }
    let mut block = Vec::with_capacity(entries.len());
    for entry in &entries {
        if !options.long {
            block.push((entry.name.clone(), None));
            continue;
        }
        let path = join(dir, &entry.name);
        match ctl.client.stat(&path) {
            Ok(stat) => block.push((entry.name.clone(), Some(stat))),
            Err(e) => ctl.fail("ls", &path, why(&e)),
        }
    }
    block.sort_by(|a, b| a.0.cmp(&b.0));
    print_names(out, &block);
    if !options.recursive {
        return;
    }
    let mut subdirs: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Directory)
        .map(|e| e.name.as_str())
        .collect();
    subdirs.sort_unstable();
    for name in subdirs {
        list_dir(ctl, out, &join(dir, name), options, true, first);
    }
}

fn print_block(out: &mut impl Write, files: &[(String, Stat)], long: bool) {
    let block: Vec<(String, Option<Stat>)> = files
        .iter()
        .map(|(path, stat)| (path.clone(), long.then_some(*stat)))
        .collect();
    print_names(out, &block);
}

/// One line per entry: the name, or the long format when the entry has its attributes.
fn print_names(out: &mut impl Write, block: &[(String, Option<Stat>)]) {
    let width = |f: fn(&Stat) -> u64| {
        let widest = block.iter().filter_map(|(_, s)| s.as_ref().map(f)).max();
        widest.map_or(1, |n| n.to_string().len())
    };
    let links = width(|s| u64::from(s.nlink));
    let size = width(|s| s.size);
    for (name, stat) in block {
        let _ = match stat {
            None => writeln!(out, "{name}"),
            Some(s) => writeln!(
                out,
                "{} {:>links$} {:>size$} {} {name}",
                mode_string(s.mode),
                s.nlink,
                s.size,
                minutes(s.mtime_ns),
            ),
        };
    }
}

/// Shows the attributes of each of `paths`, as coreutils `stat`.
pub fn stat(ctl: &mut Ctl, paths: &[String]) {
    for path in paths {
        match ctl.client.stat(path) {
            Ok(s) => print!("{}", stat_text(path, &s)),
            Err(e) => ctl.fail("stat", path, why(&e)),
        }
    }
}

fn stat_text(path: &str, s: &Stat) -> String {
    let kind = match s.mode & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFREG if s.size == 0 => "regular empty file",
        libc::S_IFREG => "regular file",
        _ => "unknown",
    };
    format!(
        "  File: {path}\n  Size: {:<15} Blocks: {:<10} IO Block: {:<8} {kind}\n \
         Inode: {:<15} Links: {}\nAccess: ({:04o}/{})\nAccess: {}\nModify: {}\nChange: {}\n",
        s.size,
        s.blocks,
        s.blksize,
        s.ino,
        s.nlink,
        s.mode & 0o7777,
        mode_string(s.mode),
        full_time(s.atime_ns),
        full_time(s.mtime_ns),
        full_time(s.ctime_ns),
    )
}

/// Shows the capacity of the cluster, as `df` (`-h`: human units; bytes otherwise).
pub fn df(ctl: &mut Ctl, human: bool) {
    let fs = match ctl.client.statfs() {
        Ok(fs) => fs,
        Err(e) => return ctl.fail("df", "/", why(&e)),
    };
    let used = fs.total_bytes.saturating_sub(fs.free_bytes);
    let size = |n: u64| if human { human_df(n) } else { n.to_string() };
    let percent = match used + fs.available_bytes {
        0 => "-".to_string(),
        all => format!("{}%", (used * 100).div_ceil(all)),
    };
    println!(
        "{:<10} {:>15} {:>15} {:>15} {:>4} {:>10} {:>7}",
        "Filesystem", "Size", "Used", "Avail", "Use%", "Files", "Targets"
    );
    println!(
        "{:<10} {:>15} {:>15} {:>15} {percent:>4} {:>10} {:>7}",
        "benchfs",
        size(fs.total_bytes),
        size(used),
        size(fs.available_bytes),
        fs.files,
        fs.targets
    );
}
