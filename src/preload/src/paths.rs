//! The mount prefix and how a path a program passes maps to a BenchFS path.
//!
//! Paths are resolved lexically (BenchFS has no symbolic links): `.` and empty components
//! vanish, `..` removes the previous component. A path names BenchFS when, so resolved, it is
//! the prefix or lies under it; the rest of it is the BenchFS path (`/` for the prefix).

use std::ffi::{c_char, CStr};
use std::sync::atomic::AtomicBool;

use once_cell::sync::Lazy;

/// Environment variable naming the mount prefix.
pub const MOUNT_ENV: &str = "BENCHFS_MOUNT";
/// The prefix when the variable is not set.
pub const DEFAULT_MOUNT: &str = "/benchfs";

/// The lexically normalised prefix (no trailing slash), or `None` when the variable holds
/// something unusable (said once on standard error; nothing is routed to BenchFS then).
pub static MOUNT: Lazy<Option<String>> = Lazy::new(|| {
    let raw = std::env::var(MOUNT_ENV).unwrap_or_else(|_| DEFAULT_MOUNT.to_string());
    let normal = normalize(&raw);
    if !raw.starts_with('/') || normal == "/" {
        static SAID: AtomicBool = AtomicBool::new(false);
        crate::diag::say_once(
            &SAID,
            &format!(
                "{MOUNT_ENV}={raw:?} must be an absolute path other than /; \
                 no path is routed to BenchFS"
            ),
        );
        return None;
    }
    Some(normal)
});

/// Lexical normalisation of an absolute path.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for part in &parts {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `base` joined with the relative `path` and normalised.
pub fn join(base: &str, path: &str) -> String {
    normalize(&format!("{base}/{path}"))
}

/// The BenchFS path of the normalised absolute `path`, when it is under the prefix.
pub fn inside(path: &str) -> Option<String> {
    let mount = MOUNT.as_deref()?;
    let rest = path.strip_prefix(mount)?;
    match rest {
        "" => Some("/".to_string()),
        r if r.starts_with('/') => Some(r.to_string()),
        _ => None,
    }
}

/// Whether `path` starts with the prefix as a whole component (`/benchfs/..` does).
pub fn through_mount(path: &str) -> bool {
    MOUNT
        .as_deref()
        .and_then(|mount| path.strip_prefix(mount))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The local path a program sees for BenchFS path `path`.
pub fn outside(path: &str) -> String {
    let mount = MOUNT.as_deref().unwrap_or(DEFAULT_MOUNT);
    if path == "/" {
        mount.to_string()
    } else {
        format!("{mount}{path}")
    }
}

/// Whether an absolute path may be under the prefix (a byte comparison, before any
/// normalisation: `//benchfs` or `/x/../benchfs` are checked the slow way).
pub fn maybe_inside(path: &[u8]) -> bool {
    let Some(mount) = MOUNT.as_deref() else {
        return false;
    };
    if path.starts_with(mount.as_bytes()) {
        return true;
    }
    // Paths with `//`, `/./` or `/../` may still resolve under it.
    path.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// The text of a C path, when it is non-null UTF-8 (BenchFS names are UTF-8).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
pub unsafe fn text<'a>(path: *const c_char) -> Option<&'a str> {
    if path.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated by the caller's promise.
    unsafe { CStr::from_ptr(path) }.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("//a//b/"), "/a/b");
        assert_eq!(normalize("/a/./b/../c"), "/a/c");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(join("/benchfs/a", "../b"), "/benchfs/b");
        assert_eq!(join("/benchfs", "../../etc"), "/etc");
    }

    #[test]
    fn inside_the_default_mount() {
        assert_eq!(inside("/benchfs").as_deref(), Some("/"));
        assert_eq!(inside("/benchfs/x/y").as_deref(), Some("/x/y"));
        assert_eq!(inside("/benchfsx"), None);
        assert_eq!(inside("/tmp/benchfs"), None);
        assert_eq!(outside("/x"), "/benchfs/x");
        assert_eq!(outside("/"), "/benchfs");
        assert!(maybe_inside(b"/benchfs/a"));
        assert!(maybe_inside(b"//benchfs"));
        assert!(!maybe_inside(b"/usr/lib/x.so"));
    }
}
