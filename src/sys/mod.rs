//! The only home of raw syscalls and `unsafe`.
//!
//! Every call takes a directory fd and a single name (or an fd alone), so no
//! path is ever resolved from `/` inside a layer: a symlink in a layer is never
//! followed by the daemon.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::errno::Errno;
use std::sync::atomic::{AtomicBool, Ordering};

/// fchmodat2(2), Linux 6.6 (not in libc 0.2 for every target).
const SYS_FCHMODAT2: libc::c_long = 452;

mod process;
mod xattr;
pub use process::*;
pub use xattr::{getxattr, getxattr_at, listxattr, removexattr, setxattr};

pub type Stat = libc::stat;

fn cstr(name: &OsStr) -> Result<CString, Errno> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

fn check(ret: libc::c_int) -> Result<(), Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn check_size(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// The magic `/proc/self/fd/N` path of an fd, to reach an O_PATH fd's object
/// with calls that have no fd variant (reopen, xattrs, chmod).
pub fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

pub fn openat(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    let c = cstr(name)?;
    // SAFETY: c is a valid C string; the returned fd is owned by us.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open an absolute path (a layer root, `/proc/self/fd/N`).
pub fn open_path(path: &CStr, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: path is a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open the object an O_PATH fd points to with real access flags.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd, Errno> {
    open_path(
        &proc_path(fd),
        flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW),
        0,
    )
}

/// Run `open` with O_NOATIME, again without it where refused (O_NOATIME
/// needs the file's owner or CAP_FOWNER): reads that leave atimes alone,
/// as the kernel overlay reads lower layers.
fn with_noatime<T>(open: impl Fn(i32) -> Result<T, Errno>) -> Result<T, Errno> {
    match open(libc::O_NOATIME) {
        Err(e) if e == Errno::EPERM => open(0),
        r => r,
    }
}

/// [`reopen`] without touching the file's atime where allowed.
pub fn reopen_noatime(fd: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd, Errno> {
    with_noatime(|extra| reopen(fd, flags | extra))
}

pub fn fstatat(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Stat, Errno> {
    let c = cstr(name)?;
    // SAFETY: zeroed stat is a valid out buffer.
    let mut st: Stat = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub fn fstat(fd: BorrowedFd<'_>) -> Result<Stat, Errno> {
    // SAFETY: as above; AT_EMPTY_PATH stats the fd itself (works on O_PATH fds).
    let mut st: Stat = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> Result<(), Errno> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> Result<(), Errno> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode, rdev) })
}

pub fn symlinkat(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
}

/// Read the target of the symlink an O_PATH fd refers to.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> Result<OsString, Errno> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for its length; "" with an O_PATH symlink fd reads that link.
    let n = check_size(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

/// Hard link the object behind an O_PATH fd as `dir/name`.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let c = cstr(name)?;
    // SAFETY: valid C strings; AT_EMPTY_PATH links the fd's own inode (needs CAP_DAC_READ_SEARCH).
    check(unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
}

/// Hard-link `odir/oname` as `ndir/nname` (a final symlink is linked, not followed).
pub fn linkat(
    odir: BorrowedFd<'_>,
    oname: &OsStr,
    ndir: BorrowedFd<'_>,
    nname: &OsStr,
) -> Result<(), Errno> {
    let (o, n) = (cstr(oname)?, cstr(nname)?);
    // SAFETY: valid C strings.
    check(unsafe {
        libc::linkat(
            odir.as_raw_fd(),
            o.as_ptr(),
            ndir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> Result<(), Errno> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

pub const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
pub const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;
pub const RENAME_WHITEOUT: u32 = libc::RENAME_WHITEOUT;

pub fn renameat2(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
    flags: u32,
) -> Result<(), Errno> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })
}

/// chown the object behind an fd (O_PATH fds included; never follows a symlink).
pub fn fchown(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
    let u = uid.unwrap_or(u32::MAX);
    let g = gid.unwrap_or(u32::MAX);
    // SAFETY: "" with AT_EMPTY_PATH acts on the fd itself.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            u,
            g,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Whether fchmodat2/utimensat take AT_EMPTY_PATH on an O_PATH fd here
/// (Linux 6.6); cleared on the first refusal, then the /proc path is used.
static EMPTY_PATH_OK: AtomicBool = AtomicBool::new(true);

fn refused_empty_path(e: Errno) -> bool {
    // Older kernels: no such call, an unknown flag, or "" taken as a name.
    let refused = e == Errno::ENOSYS || e == Errno::EINVAL || e == Errno::ENOENT;
    if refused {
        EMPTY_PATH_OK.store(false, Ordering::Relaxed);
    }
    refused
}

/// chmod the object behind an fd (O_PATH or not) that is not a symlink.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    if EMPTY_PATH_OK.load(Ordering::Relaxed) {
        // SAFETY: valid C string; fchmodat2(2) with AT_EMPTY_PATH acts on the fd.
        let r = check(unsafe {
            libc::syscall(
                SYS_FCHMODAT2,
                fd.as_raw_fd(),
                c"".as_ptr(),
                mode,
                libc::AT_EMPTY_PATH,
            ) as i32
        });
        match r {
            Err(e) if refused_empty_path(e) => {}
            r => return r,
        }
    }
    let p = proc_path(fd);
    // SAFETY: valid C string; the magic link resolves to the fd's object.
    check(unsafe { libc::chmod(p.as_ptr(), mode) })
}

/// chmod through a file opened for reading or writing.
pub fn fchmod_open(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    // SAFETY: plain fchmod(2) on an open fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// The times argument of utimensat: `None` leaves a time alone.
fn utimes_arg(atime: Option<libc::timespec>, mtime: Option<libc::timespec>) -> [libc::timespec; 2] {
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    [atime.unwrap_or(omit), mtime.unwrap_or(omit)]
}

/// A timespec from stat's seconds and nanoseconds.
pub fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Set times by `dir/name` without following a symlink. `None` leaves a time alone.
pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> Result<(), Errno> {
    let times = utimes_arg(atime, mtime);
    let c = cstr(name)?;
    // SAFETY: valid C string and a two-element array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Set times on the object behind an fd that is not a symlink.
pub fn futimens_path(
    fd: BorrowedFd<'_>,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> Result<(), Errno> {
    let times = utimes_arg(atime, mtime);
    if EMPTY_PATH_OK.load(Ordering::Relaxed) {
        // SAFETY: valid C string and a two-element array; acts on the fd itself.
        let r = check(unsafe {
            libc::utimensat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                times.as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        });
        match r {
            Err(e) if refused_empty_path(e) => {}
            r => return r,
        }
    }
    let p = proc_path(fd);
    // SAFETY: valid C string and a two-element array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })
}

/// Set times through a file opened for reading or writing.
pub fn futimens(
    fd: BorrowedFd<'_>,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> Result<(), Errno> {
    let times = utimes_arg(atime, mtime);
    // SAFETY: a two-element array; futimens(3) is utimensat on the fd.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

pub fn now_timespec() -> libc::timespec {
    libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    }
}

// ---- data ---------------------------------------------------------------------

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
    // SAFETY: buf is writable for its length.
    check_size(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            off as i64,
        )
    })
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> Result<usize, Errno> {
    // SAFETY: buf is readable for its length.
    check_size(unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off as i64) })
}

/// Append-mode write: the offset the kernel sent is ignored by O_APPEND fds.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: buf is readable for its length.
    check_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

/// Non-blocking exclusive flock.
pub fn flock_exclusive(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: plain fd call.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })
}

/// Change the flags of the mounted filesystem at `target` (MS_REMOUNT).
pub fn remount(target: &std::path::Path, flags: libc::c_ulong) -> Result<(), Errno> {
    let t = std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid C string; null source, type and data are allowed for a remount.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            t.as_ptr(),
            std::ptr::null(),
            flags | libc::MS_REMOUNT,
            std::ptr::null(),
        )
    })
}

/// Flush the whole filesystem `fd` is on (fd opened for reading, not O_PATH).
pub fn syncfs(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: plain fd call.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> Result<(), Errno> {
    // SAFETY: plain fd call.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> Result<(), Errno> {
    // SAFETY: plain fd call.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) })
}

/// truncate(2) the object behind an fd by path: unlike ftruncate it leaves the
/// times alone when the size does not change, as truncate through a path does.
pub fn truncate_path(fd: BorrowedFd<'_>, size: u64) -> Result<(), Errno> {
    let p = proc_path(fd);
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(p.as_ptr(), size as i64) })
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> Result<(), Errno> {
    // SAFETY: plain fd call.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as i64, len as i64) })
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> Result<i64, Errno> {
    // SAFETY: plain fd call.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

/// Clone all of `src` into `dst` (reflink); fails with EOPNOTSUPP/EXDEV where unsupported.
/// The fs-verity digest of a file: (algorithm, digest). EOPNOTSUPP or
/// ENODATA where the filesystem or the file has none.
pub fn measure_verity(fd: BorrowedFd<'_>) -> Result<(u8, Vec<u8>), Errno> {
    const MAX_DIGEST: usize = 64;
    // struct fsverity_digest { u16 algorithm; u16 size; u8 digest[] }: _IOWR('f', 134, 4 bytes).
    const FS_IOC_MEASURE_VERITY: libc::c_ulong = 0xc004_6686;
    let mut buf = [0u8; 4 + MAX_DIGEST];
    buf[2..4].copy_from_slice(&(MAX_DIGEST as u16).to_ne_bytes());
    let file = reopen(fd, libc::O_RDONLY)?;
    // SAFETY: the buffer holds the header and MAX_DIGEST bytes, as announced in it.
    check(unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_MEASURE_VERITY, buf.as_mut_ptr()) })?;
    let algo = u16::from_ne_bytes([buf[0], buf[1]]);
    let size = (u16::from_ne_bytes([buf[2], buf[3]]) as usize).min(MAX_DIGEST);
    Ok((algo as u8, buf[4..4 + size].to_vec()))
}

pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: FICLONE takes the source fd as its argument.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) })
}

pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> Result<usize, Errno> {
    let mut so = src_off as i64;
    let mut d = dst_off as i64;
    // SAFETY: offsets are valid pointers to locals.
    check_size(unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, len, 0)
    })
}

pub fn fstatfs(fd: BorrowedFd<'_>) -> Result<libc::statvfs, Errno> {
    // SAFETY: zeroed statvfs is a valid out buffer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

pub fn major_minor(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

// ---- directories ----------------------------------------------------------------

/// One entry of a real directory.
pub struct RawDirEntry {
    pub name: OsString,
    pub ino: u64,
    pub d_type: u8,
}

/// Read a whole real directory (`.` and `..` left out).
pub fn read_dir(dir: BorrowedFd<'_>) -> Result<Vec<RawDirEntry>, Errno> {
    read_dir_with(dir, 0)
}

/// [`read_dir`] leaving the directory's atime alone where the caller may
/// (O_NOATIME: its owner or CAP_FOWNER), as the kernel overlay reads lower
/// layers.
pub fn read_dir_noatime(dir: BorrowedFd<'_>) -> Result<Vec<RawDirEntry>, Errno> {
    with_noatime(|extra| read_dir_with(dir, extra))
}

fn read_dir_with(dir: BorrowedFd<'_>, extra: i32) -> Result<Vec<RawDirEntry>, Errno> {
    let fd = openat(
        dir,
        OsStr::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY | extra,
        0,
    )?;
    let raw: RawFd = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: fdopendir takes ownership of raw; closedir releases it.
    let dp = unsafe { libc::fdopendir(raw) };
    if dp.is_null() {
        let e = Errno::last();
        // SAFETY: fdopendir failed, so raw is still ours.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: errno is thread-local; reset it to tell end-of-dir from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dp is a live DIR*.
        let ent = unsafe { libc::readdir64(dp) };
        if ent.is_null() {
            let e = Errno::last();
            // SAFETY: dp is live; closes raw too.
            unsafe { libc::closedir(dp) };
            if e.0 != 0 {
                return Err(e);
            }
            return Ok(out);
        }
        // SAFETY: ent points to a valid dirent64 until the next readdir call.
        let (name, ino, d_type) = unsafe {
            let e = &*ent;
            (
                CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                e.d_ino,
                e.d_type,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push(RawDirEntry {
            name: OsString::from_vec(name),
            ino,
            d_type,
        });
    }
}

/// Raise the open-file limit as far as allowed: nodes hold O_PATH fds (one or
/// two per inode the kernel caches). Root may raise the hard limit too, up to
/// the system's nr_open.
/// Give memory the allocator holds free back to the system (glibc's malloc_trim).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn raise_nofile_limit() {
    let nr_open: libc::rlim_t = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        let want = libc::rlimit {
            rlim_cur: nr_open,
            rlim_max: nr_open.max(r.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

// ---- file handles and filesystem identity ------------------------------------------

/// A file handle as name_to_handle_at returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHandle {
    pub handle_type: i32,
    pub bytes: Vec<u8>,
}

const MAX_HANDLE_SZ: usize = 128;

#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// The file handle of the object behind an fd (O_PATH fds included).
pub fn name_to_handle(fd: BorrowedFd<'_>) -> Result<FileHandle, Errno> {
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: raw is a valid file_handle with room for MAX_HANDLE_SZ bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut raw as *mut RawHandle,
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    let n = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok(FileHandle {
        handle_type: raw.handle_type,
        bytes: raw.f_handle[..n].to_vec(),
    })
}

/// Open an object by file handle on the filesystem of `mount_fd` (O_PATH).
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, fh: &FileHandle) -> Result<OwnedFd, Errno> {
    if fh.bytes.len() > MAX_HANDLE_SZ {
        return Err(Errno::EINVAL);
    }
    let mut raw = RawHandle {
        handle_bytes: fh.bytes.len() as u32,
        handle_type: fh.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..fh.bytes.len()].copy_from_slice(&fh.bytes);
    // SAFETY: raw is a valid file_handle; the returned fd is ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            &mut raw as *mut RawHandle,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: r is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// The filesystem UUID (FS_IOC_GETFSUUID), as the kernel stores it in sb->s_uuid.
/// `None` where the filesystem has none.
pub fn fs_uuid(fd: BorrowedFd<'_>) -> Option<[u8; 16]> {
    #[repr(C)]
    struct FsUuid2 {
        len: u8,
        uuid: [u8; 16],
    }
    // _IOR(0x15, 0, struct fsuuid2)
    const FS_IOC_GETFSUUID: libc::c_ulong = (2 << 30) | (17 << 16) | (0x15 << 8);
    let f = reopen(fd, libc::O_RDONLY | libc::O_NONBLOCK).ok()?;
    let mut out = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    // SAFETY: out is a valid fsuuid2 buffer.
    let r = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            FS_IOC_GETFSUUID as _,
            &mut out as *mut FsUuid2,
        )
    };
    (r == 0 && out.len == 16).then_some(out.uuid)
}
