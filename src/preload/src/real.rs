//! The libc functions this library stands in front of, looked up once with
//! `dlsym(RTLD_NEXT, name)`: every call that is not for BenchFS goes to them unchanged.
//!
//! The library never calls these functions through the `libc` crate: inside this library such
//! a call would resolve to its own interposed definition again.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{iovec, mode_t, off_t, size_t, ssize_t, timespec, DIR, FILE};

/// The address of the next definition of `name` (NUL-terminated) after this library. A libc
/// without it cannot run this library: the process is stopped with a message.
fn lookup(name: &'static str, cache: &AtomicPtr<c_void>) -> *mut c_void {
    let cached = cache.load(Ordering::Acquire);
    if !cached.is_null() {
        return cached;
    }
    let symbol = CStr::from_bytes_with_nul(name.as_bytes()).expect("NUL-terminated name");
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only reads the loader's tables.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, symbol.as_ptr()) };
    if found.is_null() {
        crate::diag::fatal(&format!(
            "the C library has no {}; this library needs glibc 2.28 or later",
            name.trim_end_matches('\0')
        ));
    }
    cache.store(found, Ordering::Release);
    found
}

macro_rules! real_fns {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        $(
            /// Calls libc's own definition.
            ///
            /// # Safety
            /// The caller keeps libc's contract of this function.
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
                let address = lookup(concat!(stringify!($name), "\0"), &CACHE);
                type Fn = unsafe extern "C" fn($($ty),*) -> $ret;
                // SAFETY: `address` is libc's definition of this very symbol, whose C
                // prototype is the one spelled here.
                let f = unsafe { std::mem::transmute::<*mut c_void, Fn>(address) };
                // SAFETY: the caller keeps the function's contract.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real_fns! {
    close(fd: c_int) -> c_int;
    read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t;
    pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t;
    readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t;
    writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t;
    preadv(fd: c_int, iov: *const iovec, n: c_int, off: off_t) -> ssize_t;
    pwritev(fd: c_int, iov: *const iovec, n: c_int, off: off_t) -> ssize_t;
    lseek(fd: c_int, off: off_t, whence: c_int) -> off_t;
    fstat(fd: c_int, buf: *mut libc::stat) -> c_int;
    stat(path: *const c_char, buf: *mut libc::stat) -> c_int;
    lstat(path: *const c_char, buf: *mut libc::stat) -> c_int;
    fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int;
    statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut libc::statx) -> c_int;
    access(path: *const c_char, mode: c_int) -> c_int;
    faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int;
    unlink(path: *const c_char) -> c_int;
    unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    mkdir(path: *const c_char, mode: mode_t) -> c_int;
    mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int;
    rmdir(path: *const c_char) -> c_int;
    rename(from: *const c_char, to: *const c_char) -> c_int;
    renameat(from_dir: c_int, from: *const c_char, to_dir: c_int, to: *const c_char) -> c_int;
    renameat2(
        from_dir: c_int,
        from: *const c_char,
        to_dir: c_int,
        to: *const c_char,
        flags: c_uint
    ) -> c_int;
    opendir(path: *const c_char) -> *mut DIR;
    fdopendir(fd: c_int) -> *mut DIR;
    readdir(dir: *mut DIR) -> *mut libc::dirent;
    readdir64(dir: *mut DIR) -> *mut libc::dirent64;
    readdir_r(dir: *mut DIR, entry: *mut libc::dirent, result: *mut *mut libc::dirent) -> c_int;
    closedir(dir: *mut DIR) -> c_int;
    dirfd(dir: *mut DIR) -> c_int;
    rewinddir(dir: *mut DIR) -> ();
    telldir(dir: *mut DIR) -> libc::c_long;
    seekdir(dir: *mut DIR, at: libc::c_long) -> ();
    fsync(fd: c_int) -> c_int;
    fdatasync(fd: c_int) -> c_int;
    truncate(path: *const c_char, len: off_t) -> c_int;
    ftruncate(fd: c_int, len: off_t) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(fd: c_int, to: c_int) -> c_int;
    dup3(fd: c_int, to: c_int, flags: c_int) -> c_int;
    chdir(path: *const c_char) -> c_int;
    fchdir(fd: c_int) -> c_int;
    getcwd(buf: *mut c_char, size: size_t) -> *mut c_char;
    chmod(path: *const c_char, mode: mode_t) -> c_int;
    fchmod(fd: c_int, mode: mode_t) -> c_int;
    fchmodat(dirfd: c_int, path: *const c_char, mode: mode_t, flags: c_int) -> c_int;
    chown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    lchown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    fchown(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    fchownat(
        dirfd: c_int,
        path: *const c_char,
        uid: libc::uid_t,
        gid: libc::gid_t,
        flags: c_int
    ) -> c_int;
    utimensat(dirfd: c_int, path: *const c_char, times: *const timespec, flags: c_int) -> c_int;
    futimens(fd: c_int, times: *const timespec) -> c_int;
    utimes(path: *const c_char, times: *const libc::timeval) -> c_int;
    statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int;
    fstatfs(fd: c_int, buf: *mut libc::statfs) -> c_int;
    statvfs(path: *const c_char, buf: *mut libc::statvfs) -> c_int;
    fstatvfs(fd: c_int, buf: *mut libc::statvfs) -> c_int;
    getxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t;
    lgetxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t;
    fgetxattr(fd: c_int, name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t;
    listxattr(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t;
    llistxattr(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t;
    flistxattr(fd: c_int, list: *mut c_char, size: size_t) -> ssize_t;
    setxattr(
        path: *const c_char,
        name: *const c_char,
        value: *const c_void,
        size: size_t,
        flags: c_int
    ) -> c_int;
    lsetxattr(
        path: *const c_char,
        name: *const c_char,
        value: *const c_void,
        size: size_t,
        flags: c_int
    ) -> c_int;
    fsetxattr(
        fd: c_int,
        name: *const c_char,
        value: *const c_void,
        size: size_t,
        flags: c_int
    ) -> c_int;
    removexattr(path: *const c_char, name: *const c_char) -> c_int;
    lremovexattr(path: *const c_char, name: *const c_char) -> c_int;
    fremovexattr(fd: c_int, name: *const c_char) -> c_int;
    readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t;
    readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t;
    realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char;
    copy_file_range(
        fd_in: c_int,
        off_in: *mut i64,
        fd_out: c_int,
        off_out: *mut i64,
        len: size_t,
        flags: c_uint
    ) -> ssize_t;
    sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t;
    posix_fadvise(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int;
    posix_fallocate(fd: c_int, off: off_t, len: off_t) -> c_int;
    fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int;
    mmap(
        addr: *mut c_void,
        len: size_t,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: off_t
    ) -> *mut c_void;
    isatty(fd: c_int) -> c_int;
    flock(fd: c_int, op: c_int) -> c_int;
    close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    fopen(path: *const c_char, mode: *const c_char) -> *mut FILE;
    fdopen(fd: c_int, mode: *const c_char) -> *mut FILE;
    fileno(file: *mut FILE) -> c_int;
    fileno_unlocked(file: *mut FILE) -> c_int;
    link(from: *const c_char, to: *const c_char) -> c_int;
    linkat(from_dir: c_int, from: *const c_char, to_dir: c_int, to: *const c_char, flags: c_int)
        -> c_int;
    symlink(target: *const c_char, path: *const c_char) -> c_int;
    symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int;
    execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
}

/// libc's `open`, which is variadic (the mode is read only with `O_CREAT` or `O_TMPFILE`).
///
/// # Safety
/// As for `open(2)`.
pub unsafe fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let address = lookup("open\0", &CACHE);
    // SAFETY: libc's `open` has this variadic prototype.
    let f: unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int =
        unsafe { std::mem::transmute::<*mut c_void, _>(address) };
    // SAFETY: the caller keeps open's contract; the mode travels as the variadic argument.
    unsafe { f(path, flags, mode) }
}

/// libc's `openat` (variadic like `open`).
///
/// # Safety
/// As for `openat(2)`.
pub unsafe fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let address = lookup("openat\0", &CACHE);
    // SAFETY: libc's `openat` has this variadic prototype.
    let f: unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int =
        unsafe { std::mem::transmute::<*mut c_void, _>(address) };
    // SAFETY: the caller keeps openat's contract.
    unsafe { f(dirfd, path, flags, mode) }
}

/// libc's `fcntl`, whose third argument is an integer or a pointer by command.
///
/// # Safety
/// As for `fcntl(2)` with `cmd`.
pub unsafe fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let address = lookup("fcntl\0", &CACHE);
    // SAFETY: libc's `fcntl` has this variadic prototype.
    let f: unsafe extern "C" fn(c_int, c_int, ...) -> c_int =
        unsafe { std::mem::transmute::<*mut c_void, _>(address) };
    // SAFETY: the caller keeps fcntl's contract for `cmd`.
    unsafe { f(fd, cmd, arg) }
}

/// libc's `ioctl` (variadic).
///
/// # Safety
/// As for `ioctl(2)` with `request`.
pub unsafe fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let address = lookup("ioctl\0", &CACHE);
    // SAFETY: libc's `ioctl` has this variadic prototype.
    let f: unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int =
        unsafe { std::mem::transmute::<*mut c_void, _>(address) };
    // SAFETY: the caller keeps ioctl's contract for `request`.
    unsafe { f(fd, request, arg) }
}
