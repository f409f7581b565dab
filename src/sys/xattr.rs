//! xattrs of an fd's object, O_PATH fds included.
//!
//! The layers' objects are mostly held as O_PATH fds, which the f*xattr
//! calls refuse (EBADF). Reaching them through the magic link
//! `/proc/self/fd/N` costs a path walk through procfs on every call (a
//! quarter of the daemon's time when listing big directories), so each call
//! tries, in order: the f*xattr call (real fds: cheapest); for reads, the
//! *xattrat call of Linux 6.13 on `N` in a kept-open `/proc/self/fd` (no
//! walk from `/`); the magic path.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::{check_size, cstr, proc_path};
use crate::errno::Errno;

// The *xattrat syscalls (same numbers on every architecture).
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// `struct xattr_args` of the *xattrat calls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Whether the *xattrat calls exist (cleared at the first ENOSYS).
static XATTRAT: AtomicBool = AtomicBool::new(true);

/// An open `/proc/self/fd` of this process. Checked against the pid: one
/// opened before a fork (the daemon detaches after setting up) names the
/// parent's table, gone with the parent.
fn proc_fd_dir() -> Option<RawFd> {
    static FD: AtomicI32 = AtomicI32::new(-1);
    static PID: AtomicI32 = AtomicI32::new(0);
    static OPENING: Mutex<()> = Mutex::new(());
    // SAFETY: plain call.
    let pid = unsafe { libc::getpid() };
    if PID.load(Ordering::Acquire) == pid {
        return Some(FD.load(Ordering::Acquire)).filter(|fd| *fd >= 0);
    }
    let _g = OPENING.lock().unwrap_or_else(|e| e.into_inner());
    if PID.load(Ordering::Acquire) != pid {
        let fd = super::open_path(
            c"/proc/self/fd",
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
        .map(|fd| fd.into_raw_fd())
        .unwrap_or(-1);
        // The one opened before a fork stays open in the child: a few bytes.
        FD.store(fd, Ordering::Release);
        PID.store(pid, Ordering::Release);
    }
    Some(FD.load(Ordering::Acquire)).filter(|fd| *fd >= 0)
}

/// How a call reaches the object.
#[derive(Clone, Copy)]
enum Via<'a> {
    Fd(RawFd),
    /// `N` in the open `/proc/self/fd`, following the magic link.
    At(RawFd, &'a CStr),
    Path(&'a CStr),
}

/// Run `call` the cheapest way that works for `fd`. Changes (`read` false)
/// never take the *xattrat way: they are rare, and tools that trace or
/// inject faults by syscall name (strace 6.1 does not know the new calls)
/// still see them as setxattr/fsetxattr.
fn run(
    fd: BorrowedFd<'_>,
    read: bool,
    call: &mut dyn FnMut(Via<'_>) -> isize,
) -> Result<usize, Errno> {
    let r = call(Via::Fd(fd.as_raw_fd()));
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = Errno::last();
    if e != Errno::EBADF {
        return Err(e);
    }
    if read
        && XATTRAT.load(Ordering::Relaxed)
        && let Some(dir) = proc_fd_dir()
    {
        let n = CString::new(fd.as_raw_fd().to_string()).expect("no NUL in a number");
        let r = call(Via::At(dir, &n));
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = Errno::last();
        if e != Errno::ENOSYS {
            return Err(e);
        }
        XATTRAT.store(false, Ordering::Relaxed);
    }
    let p = proc_path(fd);
    check_size(call(Via::Path(&p)))
}

fn get_once(fd: BorrowedFd<'_>, n: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    let (ptr, len) = (buf.as_mut_ptr(), buf.len());
    run(fd, true, &mut |via| {
        // SAFETY: the buffer is writable for `len` bytes (null with len 0:
        // a size query); the strings are NUL-terminated.
        unsafe {
            match via {
                Via::Fd(f) => libc::fgetxattr(f, n.as_ptr(), ptr.cast(), len),
                Via::At(d, name) => {
                    let mut args = XattrArgs {
                        value: ptr as u64,
                        size: len as u32,
                        flags: 0,
                    };
                    libc::syscall(
                        SYS_GETXATTRAT,
                        d,
                        name.as_ptr(),
                        0,
                        n.as_ptr(),
                        &mut args as *mut XattrArgs,
                        std::mem::size_of::<XattrArgs>(),
                    ) as isize
                }
                Via::Path(p) => libc::getxattr(p.as_ptr(), n.as_ptr(), ptr.cast(), len),
            }
        }
    })
}

/// A value or list read with `once` (the buffer's length as the size;
/// an empty buffer asks for the size), grown while it does not fit.
fn read_sized(once: &mut dyn FnMut(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 256];
    loop {
        match once(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e == Errno::ERANGE => {
                let need = once(&mut [])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn getxattr(fd: BorrowedFd<'_>, name: &OsStr) -> Result<Vec<u8>, Errno> {
    let n = cstr(name)?;
    read_sized(&mut |buf| get_once(fd, &n, buf))
}

pub fn setxattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8], flags: i32) -> Result<(), Errno> {
    let n = cstr(name)?;
    run(fd, false, &mut |via| {
        // SAFETY: the value is readable for its length; valid C strings.
        unsafe {
            match via {
                Via::Fd(f) => {
                    libc::fsetxattr(f, n.as_ptr(), value.as_ptr().cast(), value.len(), flags)
                        as isize
                }
                Via::At(d, name) => {
                    let args = XattrArgs {
                        value: value.as_ptr() as u64,
                        size: value.len() as u32,
                        flags: flags as u32,
                    };
                    libc::syscall(
                        SYS_SETXATTRAT,
                        d,
                        name.as_ptr(),
                        0,
                        n.as_ptr(),
                        &args as *const XattrArgs,
                        std::mem::size_of::<XattrArgs>(),
                    ) as isize
                }
                Via::Path(p) => libc::setxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                ) as isize,
            }
        }
    })
    .map(drop)
}

pub fn removexattr(fd: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let n = cstr(name)?;
    run(fd, false, &mut |via| {
        // SAFETY: valid C strings.
        unsafe {
            match via {
                Via::Fd(f) => libc::fremovexattr(f, n.as_ptr()) as isize,
                Via::At(d, name) => {
                    libc::syscall(SYS_REMOVEXATTRAT, d, name.as_ptr(), 0, n.as_ptr()) as isize
                }
                Via::Path(p) => libc::removexattr(p.as_ptr(), n.as_ptr()) as isize,
            }
        }
    })
    .map(drop)
}

fn list_once(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    let (ptr, len) = (buf.as_mut_ptr(), buf.len());
    run(fd, true, &mut |via| {
        // SAFETY: the buffer is writable for `len` bytes (null with len 0).
        unsafe {
            match via {
                Via::Fd(f) => libc::flistxattr(f, ptr.cast(), len),
                Via::At(d, name) => {
                    libc::syscall(SYS_LISTXATTRAT, d, name.as_ptr(), 0, ptr, len) as isize
                }
                Via::Path(p) => libc::listxattr(p.as_ptr(), ptr.cast(), len),
            }
        }
    })
}

/// All xattr names of an fd's object.
pub fn listxattr(fd: BorrowedFd<'_>) -> Result<Vec<OsString>, Errno> {
    let buf = read_sized(&mut |buf| list_once(fd, buf))?;
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect())
}

/// An xattr of `dir/name` itself (a final symlink not followed), without
/// opening it: for objects whose name cannot change under the caller (the
/// lower layers are read-only by contract).
pub fn getxattr_at(dir: BorrowedFd<'_>, name: &OsStr, attr: &OsStr) -> Result<Vec<u8>, Errno> {
    if XATTRAT.load(Ordering::Relaxed) {
        let (p, a) = (cstr(name)?, cstr(attr)?);
        let mut at = |buf: &mut [u8]| -> Result<usize, Errno> {
            let mut args = XattrArgs {
                value: buf.as_mut_ptr() as u64,
                size: buf.len() as u32,
                flags: 0,
            };
            // SAFETY: the buffer is writable for its length; valid C strings.
            let r = unsafe {
                libc::syscall(
                    SYS_GETXATTRAT,
                    dir.as_raw_fd(),
                    p.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    a.as_ptr(),
                    &mut args as *mut XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            };
            check_size(r as isize)
        };
        match read_sized(&mut at) {
            Err(e) if e == Errno::ENOSYS => XATTRAT.store(false, Ordering::Relaxed),
            r => return r,
        }
    }
    let fd = super::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    getxattr(fd.as_fd(), attr)
}
