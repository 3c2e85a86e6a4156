//! `mkdir`, `rm` and `mv`: changing the namespace, as the coreutils commands of those names.

use benchfs::client::EntryKind;

use crate::format::{base_name, is_dir, join};
use crate::{strerror, why, Ctl};

/// Mode of the directories made (the servers keep no owner, so no umask applies).
const DIR_MODE: u32 = 0o755;

/// Makes each of `paths` (with their missing parents when `parents`).
pub fn mkdir(ctl: &mut Ctl, paths: &[String], parents: bool) {
    for path in paths {
        let made = if parents {
            ctl.client.mkdir_all(path, DIR_MODE)
        } else {
            ctl.client.mkdir(path, DIR_MODE)
        };
        if let Err(e) = made {
            ctl.fail("mkdir", path, why(&e));
        }
    }
}

/// Removes each of `paths`: files; directories with their contents when `recursive`.
/// With `force`, missing paths are no error.
pub fn rm(ctl: &mut Ctl, paths: &[String], recursive: bool, force: bool) {
    for path in paths {
        let stat = match ctl.client.stat(path) {
            Ok(stat) => stat,
            Err(e) if force && e.errno() == libc::ENOENT => continue,
            Err(e) => {
                ctl.fail("rm", path, why(&e));
                continue;
            }
        };
        if !is_dir(stat.mode) {
            if let Err(e) = ctl.client.unlink(path) {
                ctl.fail("rm", path, why(&e));
            }
        } else if !recursive {
            ctl.fail("rm", path, strerror(libc::EISDIR));
        } else if path.split('/').all(|part| part.is_empty() || part == ".") {
            ctl.fail("rm", path, "refusing to remove the root directory");
        } else {
            remove_tree(ctl, path);
        }
    }
}

/// Removes directory `dir` bottom-up: its entries (subdirectories first emptied), then
/// itself. A directory whose contents could not all go is left (the failures are reported).
fn remove_tree(ctl: &mut Ctl, dir: &str) -> bool {
    let mut all_gone = true;
    let mut after = String::new();
    loop {
        let (page, more) = match ctl.client.readdir_page(dir, &after) {
            Ok(page) => page,
            Err(e) => {
                ctl.fail("rm", dir, why(&e));
                return false;
            }
        };
        for entry in &page {
            let path = join(dir, &entry.name);
            let gone = match entry.kind {
                EntryKind::Directory => remove_tree(ctl, &path),
                EntryKind::File => match ctl.client.unlink(&path) {
                    Ok(()) => true,
                    Err(e) => {
                        ctl.fail("rm", &path, why(&e));
                        false
                    }
                },
            };
            all_gone &= gone;
        }
        match page.last() {
            Some(last) if more => after = last.name.clone(),
            _ => break,
        }
    }
    if !all_gone {
        return false;
    }
    match ctl.client.rmdir(dir) {
        Ok(()) => true,
        Err(e) => {
            ctl.fail("rm", dir, why(&e));
            false
        }
    }
}

/// Renames the source to the destination, or moves every source into the destination when
/// it is an existing directory (which it must be for several sources).
pub fn mv(ctl: &mut Ctl, paths: &[String]) {
    let (dest, sources) = paths
        .split_last()
        .expect("clap asks for two paths at least");
    let into_dir = match ctl.client.stat(dest) {
        Ok(stat) => is_dir(stat.mode),
        Err(e) if e.errno() == libc::ENOENT => false,
        Err(e) => return ctl.fail("mv", dest, why(&e)),
    };
    if sources.len() > 1 && !into_dir {
        return ctl.fail("mv", dest, strerror(libc::ENOTDIR));
    }
    for source in sources {
        let to = if into_dir {
            join(dest, base_name(source))
        } else {
            dest.clone()
        };
        if let Err(e) = ctl.client.rename(source, &to) {
            ctl.fail("mv", source, why(&e));
        }
    }
}
