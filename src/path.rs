//! Path normalisation: the one spelling of a path under which its inode is placed and stored.
//!
//! Rules: a path must be absolute and valid UTF-8 without NUL bytes; repeated slashes collapse
//! (`//a` is `/a`), a trailing slash is dropped, `.` components vanish, and `..` is refused
//! rather than resolved (resolving it would need the directory tree, and it is how a request
//! tries to escape). Components are at most [`NAME_MAX_BYTES`] bytes and the normalised path at
//! most [`PATH_MAX_BYTES`]. The root is `/`.

use thiserror::Error;

/// Longest path, in bytes, after normalisation (as Linux's `PATH_MAX` minus the NUL).
pub const PATH_MAX_BYTES: usize = 4095;
/// Longest component, in bytes (as Linux's `NAME_MAX`).
pub const NAME_MAX_BYTES: usize = 255;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path {0:?} is not absolute")]
    NotAbsolute(String),
    /// The path has a `..` component.
    #[error("path {0:?} contains '..'")]
    DotDot(String),
    /// The path has a NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
    /// The path or one of its components is too long.
    #[error("path is too long ({0} bytes)")]
    TooLong(usize),
    /// The bytes are not UTF-8.
    #[error("path is not valid UTF-8")]
    NotUtf8,
}

impl PathError {
    /// The errno a POSIX call would give.
    pub fn errno(&self) -> i32 {
        match self {
            PathError::TooLong(_) => libc::ENAMETOOLONG,
            _ => libc::EINVAL,
        }
    }
}

/// The normalised form of `path`.
pub fn normalize(path: &str) -> Result<String, PathError> {
    if path.as_bytes().contains(&0) {
        return Err(PathError::Nul);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(path.to_string()));
    }
    let mut out = String::with_capacity(path.len());
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(PathError::DotDot(path.to_string())),
            name if name.len() > NAME_MAX_BYTES => return Err(PathError::TooLong(name.len())),
            name => {
                out.push('/');
                out.push_str(name);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    if out.len() > PATH_MAX_BYTES {
        return Err(PathError::TooLong(out.len()));
    }
    Ok(out)
}

/// [`normalize`] for raw bytes (from the wire or from C).
pub fn normalize_bytes(path: &[u8]) -> Result<String, PathError> {
    normalize(std::str::from_utf8(path).map_err(|_| PathError::NotUtf8)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_collapse_to_one() {
        for (raw, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/a", "/a"),
            ("/a/", "/a"),
            ("//a//b///", "/a/b"),
            ("/./a/./b/.", "/a/b"),
            ("/mdtest//test-dir.0-0/", "/mdtest/test-dir.0-0"),
        ] {
            assert_eq!(normalize(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn bad_paths_are_refused_with_their_errno() {
        assert!(matches!(normalize("a/b"), Err(PathError::NotAbsolute(_))));
        assert!(matches!(normalize(""), Err(PathError::NotAbsolute(_))));
        assert!(matches!(normalize("/a/../b"), Err(PathError::DotDot(_))));
        assert_eq!(normalize("/a\0b"), Err(PathError::Nul));
        let long_name = format!("/{}", "x".repeat(NAME_MAX_BYTES + 1));
        assert_eq!(
            normalize(&long_name).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        let long_path = "/abcdefgh".repeat(PATH_MAX_BYTES / 9 + 1);
        assert_eq!(
            normalize(&long_path).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        assert_eq!(normalize_bytes(b"/\xff"), Err(PathError::NotUtf8));
        assert_eq!(normalize("/a/..").unwrap_err().errno(), libc::EINVAL);
    }
}
