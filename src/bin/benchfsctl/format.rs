//! Formatting shared by the commands: sizes, modes, local times, path joining.

/// `bytes` in binary units with one decimal ("1.5GiB"), as `status` shows counters.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// `bytes` as `df -h` shows them: powers of 1024 with a one-letter suffix, rounded up, one
/// decimal below 10 ("9.8G", "69G", "512").
pub fn human_df(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return bytes.to_string();
    }
    let tenths = (value * 10.0).ceil() / 10.0;
    if tenths < 10.0 {
        format!("{tenths:.1}{}", UNITS[unit])
    } else {
        format!("{}{}", value.ceil() as u64, UNITS[unit])
    }
}

/// Whether `mode` is a directory's.
pub fn is_dir(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

/// The type letter and permission bits of `mode`, as `ls -l` shows them ("drwxr-xr-x").
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFREG => '-',
        _ => '?',
    };
    let mut out = String::with_capacity(10);
    out.push(kind);
    let special = [libc::S_ISUID, libc::S_ISGID, libc::S_ISVTX];
    for (class, &bit) in special.iter().enumerate() {
        let bits = (mode >> (6 - 3 * class)) & 0o7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        out.push(match (mode & bit != 0, exec, class == 2) {
            (false, true, _) => 'x',
            (false, false, _) => '-',
            (true, true, false) => 's',
            (true, false, false) => 'S',
            (true, true, true) => 't',
            (true, false, true) => 'T',
        });
    }
    out
}

/// The broken-down local time of `ns` nanoseconds since the epoch.
fn local_tm(ns: i64) -> libc::tm {
    let secs = ns.div_euclid(1_000_000_000) as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: both pointers are valid for the call; localtime_r only writes `tm`.
    let done = unsafe { libc::localtime_r(&secs, tm.as_mut_ptr()) };
    if done.is_null() {
        // Out of range: the zeroed value reads as 1900-01-00 00:00.
        return zeroed_tm();
    }
    // SAFETY: localtime_r succeeded and filled every field.
    unsafe { tm.assume_init() }
}

fn zeroed_tm() -> libc::tm {
    // SAFETY: libc::tm is plain integers (and a pointer that may be null).
    unsafe { std::mem::zeroed() }
}

/// `ns` as local `%Y-%m-%d %H:%M`, as `ls -l --time-style=+%Y-%m-%d %H:%M` shows.
pub fn minutes(ns: i64) -> String {
    let tm = local_tm(ns);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// `ns` as local time with nanoseconds and the UTC offset, as `stat` shows it
/// ("2024-05-01 12:34:56.123456789 +0200").
pub fn full_time(ns: i64) -> String {
    let tm = local_tm(ns);
    let offset = tm.tm_gmtoff / 60;
    let sign = if offset < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09} {sign}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ns.rem_euclid(1_000_000_000),
        offset.abs() / 60,
        offset.abs() % 60
    )
}

/// `name` under directory `dir` as the user spelled it (no doubled slash).
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of `path` ("/" for the root).
pub fn base_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "" } else { "/" };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(mode_string(libc::S_IFREG | 0o4750), "-rwsr-x---");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1770), "drwxrwx--T");
    }

    #[test]
    fn df_sizes_round_up() {
        assert_eq!(human_df(512), "512");
        assert_eq!(human_df(1024), "1.0K");
        assert_eq!(human_df(1025), "1.1K");
        assert_eq!(human_df(69 * (1 << 30)), "69G");
        assert_eq!(human_df(69 * (1 << 30) + 1), "70G");
    }

    #[test]
    fn paths_join_and_split() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(join("/a/", "b"), "/a/b");
        assert_eq!(base_name("/a/b"), "b");
        assert_eq!(base_name("/a/b/"), "b");
        assert_eq!(base_name("/"), "/");
        assert_eq!(base_name("c"), "c");
    }

    #[test]
    fn times_have_the_documented_shape() {
        let t = full_time(1_700_000_000_123_456_789);
        assert_eq!(t.len(), "2023-11-14 22:13:20.123456789 +0000".len(), "{t}");
        assert!(t.contains(".123456789 "), "{t}");
        assert_eq!(minutes(1_700_000_000_000_000_000).len(), 16);
    }
}
