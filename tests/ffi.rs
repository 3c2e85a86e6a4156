//! The C API through its Rust exports: every function against a TCP cluster, nested
//! init/finalize, threads, and a table of bad inputs; and that the header, the source and
//! the built `libbenchfs.so` name the same functions.

mod common;

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::{Mutex, MutexGuard};

use benchfs::ffi::*;
use common::{Cluster, Options, Transport};

static SERIAL: Mutex<()> = Mutex::new(());

struct Session {
    cluster: Cluster,
    _serial: MutexGuard<'static, ()>,
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn strerror() -> String {
    // SAFETY: no arguments.
    let text = unsafe { benchfs_strerror() };
    // SAFETY: a NUL-terminated string valid until the thread's next failure.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts a call failed with `errno` and left a message.
fn fails(rc: i64, errno: i32, what: &str) {
    assert_eq!(rc, -(errno as i64), "{what}: got {rc} ({})", strerror());
    assert!(!strerror().is_empty(), "{what}: no message");
}

const OPTIONS: &str = "timeout_ms=10000,wait_ms=30000";

fn start() -> Session {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("UCX_TLS", "tcp");
    std::env::set_var("UCX_NET_DEVICES", "lo");
    let cluster = Cluster::start(Options::new(Transport::Tcp));
    let registry = c(cluster.registry().to_str().unwrap());
    // SAFETY: both arguments are NUL-terminated strings.
    let rc = unsafe { benchfs_init(registry.as_ptr(), c(OPTIONS).as_ptr()) };
    assert_eq!(rc, 0, "init: {}", strerror());
    Session {
        cluster,
        _serial: serial,
    }
}

fn finish(_session: Session) {
    // SAFETY: no arguments.
    assert_eq!(unsafe { benchfs_finalize() }, 0, "finalize: {}", strerror());
}

fn create(path: &str) -> *mut benchfs_file {
    let mut file = null_mut();
    // SAFETY: NUL-terminated path, writable out-pointer.
    let rc = unsafe { benchfs_create(c(path).as_ptr(), 0o644, &mut file) };
    assert_eq!(rc, 0, "create {path}: {}", strerror());
    file
}

fn open(path: &str, flags: c_int) -> Result<*mut benchfs_file, i32> {
    let mut file = null_mut();
    // SAFETY: NUL-terminated path, writable out-pointer.
    match unsafe { benchfs_open(c(path).as_ptr(), flags, 0o644, &mut file) } {
        0 => Ok(file),
        rc => Err(rc),
    }
}

fn write(file: *mut benchfs_file, data: &[u8], offset: u64) -> i64 {
    // SAFETY: `data` is readable for its length.
    unsafe { benchfs_pwrite(file, data.as_ptr().cast(), data.len() as u64, offset) }
}

fn read(file: *mut benchfs_file, len: usize, offset: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { benchfs_pread(file, buf.as_mut_ptr().cast(), len as u64, offset) };
    assert!(n >= 0, "pread: {}", strerror());
    buf.truncate(n as usize);
    buf
}

fn stat(path: &str) -> Result<benchfs_stat_t, i32> {
    let mut st = benchfs_stat_t::default();
    // SAFETY: NUL-terminated path, writable out-pointer.
    match unsafe { benchfs_stat(c(path).as_ptr(), &mut st) } {
        0 => Ok(st),
        rc => Err(rc),
    }
}

fn call(f: unsafe extern "C" fn(*const c_char) -> i32, path: &str) -> i32 {
    // SAFETY: NUL-terminated path.
    unsafe { f(c(path).as_ptr()) }
}

fn listing(path: &str) -> Vec<(String, c_int)> {
    let mut dir = null_mut();
    // SAFETY: NUL-terminated path, writable out-pointer.
    assert_eq!(unsafe { benchfs_opendir(c(path).as_ptr(), &mut dir) }, 0);
    let mut out = Vec::new();
    loop {
        let mut name = [0 as c_char; 256];
        let mut kind = 0;
        // SAFETY: `name` has 256 writable bytes, `kind` is writable.
        let rc = unsafe { benchfs_readdir(dir, name.as_mut_ptr(), name.len(), &mut kind) };
        assert!(rc >= 0, "readdir: {}", strerror());
        if rc == 0 {
            break;
        }
        // SAFETY: readdir wrote a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) };
        out.push((name.to_string_lossy().into_owned(), kind));
    }
    // SAFETY: a handle from opendir.
    assert_eq!(unsafe { benchfs_closedir(dir) }, 0);
    out
}

#[test]
fn files_read_write_and_namespace() {
    let session = start();
    let file = create("/f");
    assert_eq!(write(file, b"hello world", 0), 11);
    assert_eq!(write(file, b"!", 11), 1);
    assert_eq!(read(file, 100, 0), b"hello world!");
    assert_eq!(read(file, 5, 6), b"world");
    // SAFETY: a handle from create.
    unsafe {
        assert_eq!(benchfs_fsync(file), 0);
    }
    // SAFETY: no arguments.
    assert_eq!(unsafe { benchfs_sync() }, 0);
    // SAFETY: a handle from create.
    assert_eq!(unsafe { benchfs_close(file) }, 0);
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { benchfs_get_file_size(c("/f").as_ptr()) }, 12);
    let st = stat("//f/").unwrap();
    assert_eq!((st.size, st.mode & 0o170000), (12, 0o100000));
    assert!(st.blksize > 0 && st.ino != 0);

    let ro = open("/f", BENCHFS_O_RDONLY).unwrap();
    assert_eq!(read(ro, 12, 0), b"hello world!");
    fails(write(ro, b"x", 0), libc::EBADF, "write on read-only");
    // SAFETY: a handle from open.
    assert_eq!(unsafe { benchfs_close(ro) }, 0);
    assert_eq!(
        open("/f", BENCHFS_O_CREAT | BENCHFS_O_EXCL | BENCHFS_O_RDWR),
        Err(-libc::EEXIST)
    );
    assert_eq!(open("/missing", BENCHFS_O_RDONLY), Err(-libc::ENOENT));
    let t = open("/f", BENCHFS_O_WRONLY | BENCHFS_O_TRUNC).unwrap();
    // SAFETY: a handle from open.
    assert_eq!(unsafe { benchfs_close(t) }, 0);
    assert_eq!(stat("/f").unwrap().size, 0);
    let n = open("/new", BENCHFS_O_CREAT | BENCHFS_O_WRONLY).unwrap();
    // SAFETY: a handle from open.
    assert_eq!(unsafe { benchfs_close(n) }, 0);

    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { benchfs_truncate(c("/f").as_ptr(), 5000) }, 0);
    assert_eq!(stat("/f").unwrap().size, 5000);
    // SAFETY: NUL-terminated path.
    let rc = unsafe { benchfs_access(c("/f").as_ptr(), BENCHFS_R_OK | BENCHFS_W_OK) };
    assert_eq!(rc, 0);
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { benchfs_access(c("/f").as_ptr(), BENCHFS_F_OK) }, 0);
    // SAFETY: NUL-terminated path.
    let x = unsafe { benchfs_access(c("/f").as_ptr(), BENCHFS_X_OK) };
    fails(x as i64, libc::EACCES, "access X_OK on 0644");
    // SAFETY: NUL-terminated paths.
    let rc = unsafe { benchfs_rename(c("/f").as_ptr(), c("/g").as_ptr()) };
    assert_eq!(rc, 0);
    assert_eq!(stat("/f"), Err(-libc::ENOENT));
    assert_eq!(stat("/g").unwrap().size, 5000);
    assert_eq!(call(benchfs_remove, "/g"), 0);
    assert_eq!(call(benchfs_remove, "/g"), -libc::ENOENT);
    assert_eq!(call(benchfs_remove, "/new"), 0);

    let mut fs = benchfs_statfs_t::default();
    // SAFETY: writable out-pointer.
    assert_eq!(unsafe { benchfs_statfs(&mut fs) }, 0);
    assert_eq!(fs.targets, 4);
    assert!(fs.total_bytes > 0);
    finish(session);
}

#[test]
fn directories_listing_and_errors() {
    let session = start();
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { benchfs_mkdir(c("/d").as_ptr(), 0o755) }, 0);
    // SAFETY: NUL-terminated path.
    let rc = unsafe { benchfs_mkdir(c("/d").as_ptr(), 0o755) };
    assert_eq!(rc, -libc::EEXIST);
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { benchfs_mkdir(c("/d/sub").as_ptr(), 0o755) }, 0);
    let f = create("/d/file");
    // SAFETY: a handle from create.
    assert_eq!(unsafe { benchfs_close(f) }, 0);
    assert_eq!(
        listing("/d"),
        vec![
            ("file".to_string(), BENCHFS_DT_REG),
            ("sub".to_string(), BENCHFS_DT_DIR)
        ]
    );
    assert_eq!(stat("/d").unwrap().mode & 0o170000, 0o040000);
    assert_eq!(call(benchfs_rmdir, "/d"), -libc::ENOTEMPTY);
    assert_eq!(open("/d", BENCHFS_O_RDONLY), Err(-libc::EISDIR));
    assert_eq!(call(benchfs_rmdir, "/d/file"), -libc::ENOTDIR);

    // A name that does not fit is refused and stays next.
    let mut dir = null_mut();
    // SAFETY: NUL-terminated path, writable out-pointer.
    assert_eq!(unsafe { benchfs_opendir(c("/d").as_ptr(), &mut dir) }, 0);
    let (mut small, mut kind) = ([0 as c_char; 4], 0);
    // SAFETY: `small` has 4 writable bytes.
    let rc = unsafe { benchfs_readdir(dir, small.as_mut_ptr(), 4, &mut kind) };
    fails(rc as i64, libc::ENAMETOOLONG, "readdir into 4 bytes");
    let mut name = [0 as c_char; 5];
    // SAFETY: `name` has 5 writable bytes.
    let rc = unsafe { benchfs_readdir(dir, name.as_mut_ptr(), 5, &mut kind) };
    assert_eq!(rc, 1);
    // SAFETY: a handle from opendir.
    assert_eq!(unsafe { benchfs_closedir(dir) }, 0);
    // SAFETY: a closed handle is looked up, not dereferenced.
    fails(
        unsafe { benchfs_closedir(dir) } as i64,
        libc::EBADF,
        "closedir twice",
    );
    // SAFETY: as above.
    let rc = unsafe { benchfs_readdir(dir, name.as_mut_ptr(), 5, &mut kind) };
    fails(rc as i64, libc::EBADF, "readdir after closedir");

    assert_eq!(call(benchfs_remove, "/d/file"), 0);
    assert_eq!(call(benchfs_rmdir, "/d/sub"), 0);
    assert_eq!(call(benchfs_rmdir, "/d"), 0);
    assert!(listing("/").is_empty());
    finish(session);
}

#[test]
fn nested_init_and_finalize() {
    let session = start();
    let registry = c(session.cluster.registry().to_str().unwrap());
    // SAFETY: NUL-terminated strings.
    let rc = unsafe { benchfs_init(registry.as_ptr(), c(OPTIONS).as_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: NUL-terminated strings.
    let other = unsafe { benchfs_init(registry.as_ptr(), c("timeout_ms=5").as_ptr()) };
    fails(other as i64, libc::EINVAL, "nested init with other options");
    let file = create("/nested");
    // SAFETY: no arguments.
    assert_eq!(unsafe { benchfs_finalize() }, 0);
    // Still connected: one reference is left.
    assert_eq!(write(file, b"abc", 0), 3);
    // SAFETY: no arguments.
    assert_eq!(unsafe { benchfs_finalize() }, 0);
    // The last finalize closed the handle (publishing its size) and disconnected.
    fails(
        stat("/nested").unwrap_err() as i64,
        libc::EINVAL,
        "stat after finalize",
    );
    // SAFETY: no arguments.
    fails(
        unsafe { benchfs_finalize() } as i64,
        libc::EINVAL,
        "finalize without init",
    );
    // SAFETY: NUL-terminated strings.
    assert_eq!(unsafe { benchfs_init(registry.as_ptr(), null()) }, 0);
    assert_eq!(stat("/nested").unwrap().size, 3);
    fails(
        write(file, b"x", 0),
        libc::EBADF,
        "handle of an earlier session",
    );
    assert_eq!(call(benchfs_remove, "/nested"), 0);
    finish(session);
}

#[test]
fn handles_belong_to_their_thread() {
    let session = start();
    let file = create("/mine") as usize;
    let other = std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        // SAFETY: the handle is only looked up; `buf` is writable.
        let rc = unsafe { benchfs_pread(file as *mut _, buf.as_mut_ptr().cast(), 4, 0) };
        let own = create("/theirs");
        let wrote = write(own, b"zz", 0);
        // SAFETY: a handle from create on this thread.
        let closed = unsafe { benchfs_close(own) };
        (rc, strerror(), wrote, closed)
    })
    .join()
    .unwrap();
    assert_eq!(other.0, -(libc::EBADF as i64), "{}", other.1);
    assert_eq!((other.2, other.3), (2, 0));
    assert_eq!(stat("/theirs").unwrap().size, 2);
    // SAFETY: a handle from create on this thread.
    assert_eq!(unsafe { benchfs_close(file as *mut _) }, 0);
    finish(session);
}

#[test]
fn register_version_and_strerror() {
    let session = start();
    // SAFETY: no arguments.
    let version = unsafe { benchfs_version() };
    // SAFETY: a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(version) };
    assert_eq!(
        version.to_str().unwrap(),
        format!("benchfs {}", benchfs::VERSION)
    );
    // SAFETY: no arguments.
    assert_eq!(unsafe { benchfs_api_version() }, BENCHFS_API_VERSION);
    let buf = vec![7u8; 1 << 20];
    // SAFETY: `buf` is owned memory of that length.
    let rc = unsafe { benchfs_register(buf.as_ptr().cast(), buf.len() as u64) };
    assert_eq!(rc, 0);
    let file = create("/reg");
    assert_eq!(write(file, &buf, 0), buf.len() as i64);
    assert_eq!(read(file, buf.len(), 0), buf);
    // SAFETY: as above.
    let rc = unsafe { benchfs_unregister(buf.as_ptr().cast(), buf.len() as u64) };
    assert_eq!(rc, 0);
    // SAFETY: a handle from create.
    assert_eq!(unsafe { benchfs_close(file) }, 0);
    assert_eq!(call(benchfs_remove, "/reg"), 0);
    assert_eq!(call(benchfs_remove, "/reg"), -libc::ENOENT);
    assert!(strerror().contains("reg"), "{}", strerror());
    finish(session);
}

/// Every bad input gets its documented errno, a message, and the cluster keeps serving.
#[test]
fn bad_inputs_table() {
    let session = start();
    let file = create("/ok");
    let closed = create("/closed");
    // SAFETY: a handle from create.
    assert_eq!(unsafe { benchfs_close(closed) }, 0);
    let long = format!("/{}", "a/".repeat(2100));
    let long_name = format!("/{}", "n".repeat(300));
    let mut buf = [0u8; 16];
    let (mut st, mut kind) = (benchfs_stat_t::default(), 0);
    let mut out = null_mut();
    let mut dir_out = null_mut();
    let bogus = 0xdead_beef_usize as *mut benchfs_file;
    let p = |s: &str| c(s);
    let (rel, dots, longc, lname) = (p("rel/x"), p("/a/../b"), p(&long), p(&long_name));
    let badreg = p("/nonexistent-registry");
    // One block for the whole table: each call is checked by the table below.
    #[allow(clippy::multiple_unsafe_ops_per_block)]
    // SAFETY: every pointer is NULL, a NUL-terminated string, or writable memory of the
    // size given; handles are only looked up.
    let cases: Vec<(&str, i64, i32)> = unsafe {
        vec![
            (
                "create NULL path",
                benchfs_create(null(), 0o644, &mut out) as i64,
                libc::EINVAL,
            ),
            (
                "create NULL out",
                benchfs_create(p("/x").as_ptr(), 0o644, null_mut()) as i64,
                libc::EINVAL,
            ),
            (
                "create relative",
                benchfs_create(rel.as_ptr(), 0o644, &mut out) as i64,
                libc::EINVAL,
            ),
            (
                "create ..",
                benchfs_create(dots.as_ptr(), 0o644, &mut out) as i64,
                libc::EINVAL,
            ),
            (
                "create long path",
                benchfs_create(longc.as_ptr(), 0o644, &mut out) as i64,
                libc::ENAMETOOLONG,
            ),
            (
                "create long name",
                benchfs_create(lname.as_ptr(), 0o644, &mut out) as i64,
                libc::ENAMETOOLONG,
            ),
            (
                "create bad mode",
                benchfs_create(p("/x").as_ptr(), 0o170644, &mut out) as i64,
                libc::EINVAL,
            ),
            (
                "open bad flags",
                benchfs_open(p("/ok").as_ptr(), 0x10000, 0, &mut out) as i64,
                libc::EINVAL,
            ),
            (
                "open accmode 3",
                benchfs_open(p("/ok").as_ptr(), 3, 0, &mut out) as i64,
                libc::EINVAL,
            ),
            (
                "open trunc rdonly",
                benchfs_open(p("/ok").as_ptr(), BENCHFS_O_TRUNC, 0, &mut out) as i64,
                libc::EINVAL,
            ),
            (
                "open NULL out",
                benchfs_open(p("/ok").as_ptr(), 0, 0, null_mut()) as i64,
                libc::EINVAL,
            ),
            ("close NULL", benchfs_close(null_mut()) as i64, libc::EINVAL),
            ("close closed", benchfs_close(closed) as i64, libc::EBADF),
            ("close bogus", benchfs_close(bogus) as i64, libc::EBADF),
            (
                "pwrite closed",
                benchfs_pwrite(closed, buf.as_ptr().cast(), 4, 0),
                libc::EBADF,
            ),
            (
                "pwrite NULL buf",
                benchfs_pwrite(file, null(), 4, 0),
                libc::EINVAL,
            ),
            (
                "pwrite huge len",
                benchfs_pwrite(file, buf.as_ptr().cast(), u64::MAX, 0),
                libc::EINVAL,
            ),
            (
                "pwrite huge offset",
                benchfs_pwrite(file, buf.as_ptr().cast(), 4, u64::MAX - 1),
                libc::EINVAL,
            ),
            (
                "pread closed",
                benchfs_pread(closed, buf.as_mut_ptr().cast(), 4, 0),
                libc::EBADF,
            ),
            (
                "pread NULL buf",
                benchfs_pread(file, null_mut(), 4, 0),
                libc::EINVAL,
            ),
            (
                "pread huge len",
                benchfs_pread(file, buf.as_mut_ptr().cast(), 1 << 63, 0),
                libc::EINVAL,
            ),
            ("fsync closed", benchfs_fsync(closed) as i64, libc::EBADF),
            ("fsync NULL", benchfs_fsync(null_mut()) as i64, libc::EINVAL),
            ("remove NULL", benchfs_remove(null()) as i64, libc::EINVAL),
            (
                "remove relative",
                benchfs_remove(rel.as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "remove missing",
                benchfs_remove(p("/nope").as_ptr()) as i64,
                libc::ENOENT,
            ),
            (
                "stat NULL out",
                benchfs_stat(p("/ok").as_ptr(), null_mut()) as i64,
                libc::EINVAL,
            ),
            (
                "stat ..",
                benchfs_stat(dots.as_ptr(), &mut st) as i64,
                libc::EINVAL,
            ),
            (
                "stat long",
                benchfs_stat(longc.as_ptr(), &mut st) as i64,
                libc::ENAMETOOLONG,
            ),
            ("size NULL", benchfs_get_file_size(null()), libc::EINVAL),
            (
                "size missing",
                benchfs_get_file_size(p("/nope").as_ptr()),
                libc::ENOENT,
            ),
            (
                "access bad mode",
                benchfs_access(p("/ok").as_ptr(), 64) as i64,
                libc::EINVAL,
            ),
            (
                "access NULL",
                benchfs_access(null(), 0) as i64,
                libc::EINVAL,
            ),
            (
                "mkdir NULL",
                benchfs_mkdir(null(), 0o755) as i64,
                libc::EINVAL,
            ),
            (
                "mkdir no parent",
                benchfs_mkdir(p("/no/dir").as_ptr(), 0o755) as i64,
                libc::ENOENT,
            ),
            (
                "mkdir bad mode",
                benchfs_mkdir(p("/m").as_ptr(), 0o1000000) as i64,
                libc::EINVAL,
            ),
            (
                "rmdir root-relative",
                benchfs_rmdir(rel.as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "rename NULL from",
                benchfs_rename(null(), p("/y").as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "rename NULL to",
                benchfs_rename(p("/ok").as_ptr(), null()) as i64,
                libc::EINVAL,
            ),
            (
                "rename ..",
                benchfs_rename(p("/ok").as_ptr(), dots.as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "truncate huge",
                benchfs_truncate(p("/ok").as_ptr(), u64::MAX) as i64,
                libc::EINVAL,
            ),
            (
                "truncate NULL",
                benchfs_truncate(null(), 0) as i64,
                libc::EINVAL,
            ),
            (
                "statfs NULL",
                benchfs_statfs(null_mut()) as i64,
                libc::EINVAL,
            ),
            (
                "opendir NULL out",
                benchfs_opendir(p("/").as_ptr(), null_mut()) as i64,
                libc::EINVAL,
            ),
            (
                "opendir missing",
                benchfs_opendir(p("/nope").as_ptr(), &mut dir_out) as i64,
                libc::ENOENT,
            ),
            (
                "opendir file",
                benchfs_opendir(p("/ok").as_ptr(), &mut dir_out) as i64,
                libc::ENOTDIR,
            ),
            (
                "readdir NULL",
                benchfs_readdir(null_mut(), buf.as_mut_ptr().cast(), 16, &mut kind) as i64,
                libc::EINVAL,
            ),
            (
                "readdir bogus",
                benchfs_readdir(bogus.cast(), buf.as_mut_ptr().cast(), 16, &mut kind) as i64,
                libc::EBADF,
            ),
            (
                "closedir NULL",
                benchfs_closedir(null_mut()) as i64,
                libc::EINVAL,
            ),
            (
                "register NULL",
                benchfs_register(null(), 16) as i64,
                libc::EINVAL,
            ),
            (
                "register 0",
                benchfs_register(buf.as_ptr().cast(), 0) as i64,
                libc::EINVAL,
            ),
            (
                "register huge",
                benchfs_register(buf.as_ptr().cast(), u64::MAX) as i64,
                libc::EINVAL,
            ),
            (
                "unregister NULL",
                benchfs_unregister(null(), 16) as i64,
                libc::EINVAL,
            ),
            (
                "init unknown key",
                benchfs_init(null(), p("colour=blue").as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "init not key=value",
                benchfs_init(null(), p("chunk_size").as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "init server option without server",
                benchfs_init(null(), p("rank=1").as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "init server without shards",
                benchfs_init(null(), p("server=1,data_dir=/x,shards=0").as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "init bad number",
                benchfs_init(null(), p("timeout_ms=soon").as_ptr()) as i64,
                libc::EINVAL,
            ),
            (
                "init other registry",
                benchfs_init(badreg.as_ptr(), p(OPTIONS).as_ptr()) as i64,
                libc::EINVAL,
            ),
        ]
    };
    for (what, rc, errno) in cases {
        assert_eq!(rc, -(errno as i64), "{what}: got {rc}");
    }
    assert!(!strerror().is_empty());
    assert_eq!(
        stat("/x"),
        Err(-libc::ENOENT),
        "no file was made by a refused call"
    );
    // Still serving.
    assert_eq!(write(file, b"fine", 0), 4);
    assert_eq!(read(file, 4, 0), b"fine");
    // SAFETY: a handle from create.
    assert_eq!(unsafe { benchfs_close(file) }, 0);
    finish(session);
}

#[test]
fn calls_before_init_and_bad_registry() {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("UCX_TLS", "tcp");
    std::env::set_var("UCX_NET_DEVICES", "lo");
    fails(
        stat("/").unwrap_err() as i64,
        libc::EINVAL,
        "stat before init",
    );
    // SAFETY: no arguments.
    fails(
        unsafe { benchfs_sync() } as i64,
        libc::EINVAL,
        "sync before init",
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = c(dir.path().join("none").to_str().unwrap());
    // SAFETY: NUL-terminated strings.
    let rc = unsafe { benchfs_init(missing.as_ptr(), c("wait_ms=100").as_ptr()) };
    fails(rc as i64, libc::ENOENT, "init with a missing registry");
    // SAFETY: NUL-terminated strings.
    let rc = unsafe { benchfs_init(c("").as_ptr(), null()) };
    fails(rc as i64, libc::EINVAL, "init with an empty registry");
    // SAFETY: no arguments.
    fails(
        unsafe { benchfs_finalize() } as i64,
        libc::EINVAL,
        "finalize after failed init",
    );
    drop(serial);
}

/// Names of `benchfs_*` functions declared in the header.
fn header_functions() -> Vec<String> {
    let header = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/include/benchfs_c_api.h"
    ))
    .unwrap();
    let mut names = Vec::new();
    for (i, _) in header.match_indices("benchfs_") {
        let rest = &header[i..];
        let end = rest
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .unwrap_or(rest.len());
        let after = rest[end..].trim_start();
        let before = header[..i].chars().last();
        let in_word = before.is_some_and(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if after.starts_with('(') && !in_word {
            names.push(rest[..end].to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Names of the `#[no_mangle]` functions in src/ffi.
fn source_functions() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ffi");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim() != "#[no_mangle]" {
                continue;
            }
            let next = lines[i + 1];
            let start = next.find("fn ").expect("a function after #[no_mangle]") + 3;
            let name: String = next[start..]
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                .collect();
            names.push(name);
        }
    }
    names.sort();
    names
}

/// `benchfs_*` symbols exported by the built `libbenchfs.so`.
fn library_functions() -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let lib = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("libbenchfs.so");
    assert!(lib.exists(), "{} is not built", lib.display());
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm runs");
    assert!(
        out.status.success(),
        "nm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|n| n.starts_with("benchfs_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn header_source_and_library_agree() {
    let header = header_functions();
    assert_eq!(header.len(), 26, "{header:?}");
    assert_eq!(source_functions(), header, "src/ffi vs the header");
    assert_eq!(library_functions(), header, "libbenchfs.so vs the header");
}

#[test]
fn embedded_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("UCX_TLS", "tcp");
    std::env::set_var("UCX_NET_DEVICES", "lo");
    let root = common::disk_tempdir();
    let registry = c(root.path().join("registry").to_str().unwrap());
    let options = format!(
        "server=1,data_dir={},rank=0,servers=1,wait_ms=30000",
        root.path().join("data").display()
    );
    let small_slab = c(&format!("{options},slab_size=1m"));
    // SAFETY: NUL-terminated strings.
    let rc = unsafe { benchfs_init(registry.as_ptr(), small_slab.as_ptr()) };
    assert_eq!(rc, -libc::EINVAL, "a slab below one chunk is refused");
    assert!(strerror().contains("slab"), "{}", strerror());
    assert!(!root.path().join("data").exists(), "nothing started");
    // SAFETY: NUL-terminated strings.
    let rc = unsafe { benchfs_init(registry.as_ptr(), c(&options).as_ptr()) };
    assert_eq!(rc, 0, "init with a server: {}", strerror());
    let file = create("/embedded");
    assert_eq!(write(file, b"inside", 0), 6);
    assert_eq!(read(file, 6, 0), b"inside");
    // SAFETY: no arguments.
    assert_eq!(unsafe { benchfs_finalize() }, 0, "{}", strerror());
    let reg = benchfs::registry::Registry::open_existing(&root.path().join("registry")).unwrap();
    assert!(
        reg.list().unwrap().is_empty(),
        "the stopped server unpublished"
    );
}
