//! Paths from the wire or from C: arbitrary bytes never panic [`normalize_bytes`]; what it
//! accepts is in normal form (absolute, no empty, `.` or `..` component, no trailing slash,
//! within the limits), normalising it again changes nothing, and other spellings of it
//! normalise to it.
#![no_main]

use benchfs::path::{normalize, normalize_bytes, PathError, NAME_MAX_BYTES, PATH_MAX_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = match normalize_bytes(data) {
        Ok(path) => path,
        Err(PathError::NotUtf8) => return assert!(std::str::from_utf8(data).is_err()),
        Err(PathError::Nul) => return assert!(data.contains(&0)),
        Err(PathError::NotAbsolute(_)) => return assert!(data.first() != Some(&b'/')),
        Err(PathError::DotDot(_)) => {
            let text = std::str::from_utf8(data).unwrap();
            return assert!(text.split('/').any(|part| part == ".."));
        }
        Err(PathError::TooLong(_)) => return,
    };
    assert!(path.starts_with('/') && path.len() <= PATH_MAX_BYTES && !path.contains('\0'));
    if path != "/" {
        assert!(!path.ends_with('/'));
        for part in path[1..].split('/') {
            assert!(!part.is_empty() && part != "." && part != "..");
            assert!(part.len() <= NAME_MAX_BYTES);
        }
    }
    assert_eq!(normalize(&path).as_ref(), Ok(&path));
    let noisy = format!("/.{}/./", path.replace('/', "//"));
    assert_eq!(normalize(&noisy).as_ref(), Ok(&path));
});
