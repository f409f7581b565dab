//! File system operations with normalised outcomes, run in-process through
//! libc on a mount point, plus a seeded PRNG and a random operation generator.
//!
//! Each [`Op`] names paths relative to the mount root; `@LONG` as a path
//! component expands to a 256-byte name (ENAMETOOLONG). [`Exec::run`] returns
//! an [`Outcome`]: `Ok(summary)` with a mount-independent description of the
//! result, or `Err(errno name)`. Two implementations agree on an operation
//! iff their outcomes are equal.
//!
//! Every open uses O_NONBLOCK so that opening a FIFO never blocks (a FIFO
//! opened O_WRONLY then fails with ENXIO on both sides).
use super::tree::{Kind, hash_bytes, norm_mtime};
use super::{cstr, errno, errno_name};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// splitmix64: tiny, seedable, good enough for test generation.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    /// True with probability `pct`/100.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Data to write, generated deterministically from `(len, seed)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Data {
    pub len: usize,
    pub seed: u8,
}

impl Data {
    pub fn bytes(&self) -> Vec<u8> {
        super::fixture::content(0xDA7A_0000 + self.seed as u64, self.len)
    }
}

/// What a node created by [`Op::Mknod`] is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NodeKind {
    Fifo,
    Char(u32, u32),
}

/// Open modes for the fd operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OpenMode {
    RdOnly,
    WrOnly,
    RdWr,
    WrTrunc,
    Append,
    RdWrCreat,
}

impl OpenMode {
    fn flags(self) -> i32 {
        match self {
            OpenMode::RdOnly => libc::O_RDONLY,
            OpenMode::WrOnly => libc::O_WRONLY,
            OpenMode::RdWr => libc::O_RDWR,
            OpenMode::WrTrunc => libc::O_WRONLY | libc::O_TRUNC,
            OpenMode::Append => libc::O_WRONLY | libc::O_APPEND,
            OpenMode::RdWrCreat => libc::O_RDWR | libc::O_CREAT,
        }
    }
}

pub type Outcome = Result<String, String>;

/// One operation. Paths are relative to the mount root.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// open O_RDONLY, read(2) to EOF: `len=N hash=H`.
    Read {
        p: String,
    },
    /// open O_CREAT|O_EXCL|O_WRONLY with `mode` (umask 022 applies).
    Create {
        p: String,
        mode: u32,
    },
    /// open O_WRONLY|O_TRUNC (|O_CREAT 0644 if `creat`) and write `data`.
    WriteTrunc {
        p: String,
        data: Data,
        creat: bool,
    },
    /// open O_RDWR and pwrite `data` at `off`.
    Pwrite {
        p: String,
        off: u64,
        data: Data,
    },
    /// open O_WRONLY|O_APPEND and write `data`.
    Append {
        p: String,
        data: Data,
    },
    Truncate {
        p: String,
        len: u64,
    },
    Mkdir {
        p: String,
        mode: u32,
    },
    Rmdir {
        p: String,
    },
    Unlink {
        p: String,
    },
    /// renameat2 with `flags` (0, RENAME_NOREPLACE, RENAME_EXCHANGE, ...).
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Symlink {
        target: String,
        p: String,
    },
    Readlink {
        p: String,
    },
    Link {
        from: String,
        to: String,
    },
    Chmod {
        p: String,
        mode: u32,
    },
    /// fchownat; `u32::MAX` leaves an id unchanged.
    Chown {
        p: String,
        uid: u32,
        gid: u32,
        nofollow: bool,
    },
    /// utimensat with explicit (sec, nsec) times (use values from UTIMES_POOL).
    Utimes {
        p: String,
        atime: (i64, i64),
        mtime: (i64, i64),
        nofollow: bool,
    },
    SetXattr {
        p: String,
        name: String,
        value: String,
        flags: i32,
        nofollow: bool,
    },
    GetXattr {
        p: String,
        name: String,
        nofollow: bool,
    },
    /// Sorted names.
    ListXattr {
        p: String,
        nofollow: bool,
    },
    RemoveXattr {
        p: String,
        name: String,
        nofollow: bool,
    },
    Mknod {
        p: String,
        mode: u32,
        kind: NodeKind,
    },
    /// stat (follow) or lstat: type, mode, uid, gid, size/nlink for non-dirs, rdev, mtime class.
    Stat {
        p: String,
        follow: bool,
    },
    /// Sorted `name:typeletter` list (without `.` and `..`).
    Readdir {
        p: String,
    },
    /// faccessat(mode) with the real ids.
    Access {
        p: String,
        mode: i32,
    },
    /// `rm -rf`: depth first, sorted; stops at the first error.
    RmRf {
        p: String,
    },
    /// Opens `p` into fd slot `slot` (closing what was there).
    FdOpen {
        slot: usize,
        p: String,
        mode: OpenMode,
    },
    /// pread from 0 to EOF through the slot's fd (ESPIPE on a FIFO).
    FdRead {
        slot: usize,
    },
    FdWrite {
        slot: usize,
        off: u64,
        data: Data,
    },
    FdStat {
        slot: usize,
    },
    FdTruncate {
        slot: usize,
        len: u64,
    },
    FdClose {
        slot: usize,
    },
}

pub const FD_SLOTS: usize = 4;

/// Expands `@LONG` components to a 256-byte name.
pub fn expand(rel: &str) -> String {
    rel.split('/')
        .map(|c| {
            if c == "@LONG" {
                "l".repeat(256)
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn err<T>() -> Result<T, String> {
    Err(errno_name(errno()))
}

fn check(r: libc::c_int) -> Outcome {
    if r < 0 { err() } else { Ok("ok".into()) }
}

/// Runs operations against one mount root, holding the fd slots.
pub struct Exec {
    pub root: PathBuf,
    fds: Vec<Option<OwnedFd>>,
}

/// Summarises a stat buffer (mount-independent).
pub fn stat_summary(st: &libc::stat) -> String {
    let kind = Kind::from_mode(st.st_mode);
    let mut s = format!(
        "{} {:04o} {}:{}",
        kind.letter(),
        st.st_mode & 0o7777,
        st.st_uid,
        st.st_gid
    );
    if kind != Kind::Dir {
        s += &format!(" size={} nlink={}", st.st_size, st.st_nlink);
    }
    if matches!(kind, Kind::Char | Kind::Block) {
        s += &format!(
            " rdev={}:{}",
            libc::major(st.st_rdev),
            libc::minor(st.st_rdev)
        );
    }
    s + &format!(" mtime={}", norm_mtime(st.st_mtime, st.st_mtime_nsec))
}

impl Exec {
    pub fn new(root: &Path) -> Exec {
        Exec {
            root: root.to_path_buf(),
            fds: (0..FD_SLOTS).map(|_| None).collect(),
        }
    }

    fn c(&self, rel: &str) -> CString {
        let rel = expand(rel);
        if rel.is_empty() {
            cstr(&self.root)
        } else {
            cstr(&self.root.join(rel))
        }
    }

    /// Closes all fd slots (needed before unmounting).
    pub fn close_all(&mut self) {
        for f in &mut self.fds {
            *f = None;
        }
    }

    fn open(&self, rel: &str, flags: i32, mode: u32) -> Result<OwnedFd, String> {
        let fd = unsafe {
            libc::open(
                self.c(rel).as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NONBLOCK,
                mode,
            )
        };
        if fd < 0 {
            err()
        } else {
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    }

    fn slot(&self, slot: usize) -> Result<i32, String> {
        self.fds
            .get(slot)
            .and_then(|f| f.as_ref())
            .map(|f| f.as_raw_fd())
            .ok_or_else(|| "EBADF(no fd in slot)".to_string())
    }

    pub fn run(&mut self, op: &Op) -> Outcome {
        use Op::*;
        match op {
            Read { p } => {
                let fd = self.open(p, libc::O_RDONLY, 0)?;
                read_all(fd.as_raw_fd(), false)
            }
            Create { p, mode } => {
                self.open(p, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, *mode)?;
                Ok("ok".into())
            }
            WriteTrunc { p, data, creat } => {
                let c = if *creat { libc::O_CREAT } else { 0 };
                let fd = self.open(p, libc::O_WRONLY | libc::O_TRUNC | c, 0o644)?;
                write_all(fd.as_raw_fd(), &data.bytes(), None)
            }
            Pwrite { p, off, data } => {
                let fd = self.open(p, libc::O_RDWR, 0)?;
                write_all(fd.as_raw_fd(), &data.bytes(), Some(*off))
            }
            Append { p, data } => {
                let fd = self.open(p, libc::O_WRONLY | libc::O_APPEND, 0)?;
                write_all(fd.as_raw_fd(), &data.bytes(), None)
            }
            Truncate { p, len } => {
                check(unsafe { libc::truncate(self.c(p).as_ptr(), *len as i64) })
            }
            Mkdir { p, mode } => check(unsafe { libc::mkdir(self.c(p).as_ptr(), *mode) }),
            Rmdir { p } => check(unsafe { libc::rmdir(self.c(p).as_ptr()) }),
            Unlink { p } => check(unsafe { libc::unlink(self.c(p).as_ptr()) }),
            Rename { from, to, flags } => check(unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    self.c(from).as_ptr(),
                    libc::AT_FDCWD,
                    self.c(to).as_ptr(),
                    *flags,
                )
            }),
            Symlink { target, p } => {
                let t = CString::new(expand(target)).unwrap();
                check(unsafe { libc::symlink(t.as_ptr(), self.c(p).as_ptr()) })
            }
            Readlink { p } => {
                let mut buf = vec![0u8; 8192];
                let n = unsafe {
                    libc::readlink(self.c(p).as_ptr(), buf.as_mut_ptr() as *mut _, buf.len())
                };
                if n < 0 {
                    return err();
                }
                buf.truncate(n as usize);
                Ok(format!("{:?}", String::from_utf8_lossy(&buf)))
            }
            Link { from, to } => check(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    self.c(from).as_ptr(),
                    libc::AT_FDCWD,
                    self.c(to).as_ptr(),
                    0,
                )
            }),
            Chmod { p, mode } => check(unsafe { libc::chmod(self.c(p).as_ptr(), *mode) }),
            Chown {
                p,
                uid,
                gid,
                nofollow,
            } => {
                let fl = if *nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
                check(unsafe { libc::fchownat(libc::AT_FDCWD, self.c(p).as_ptr(), *uid, *gid, fl) })
            }
            Utimes {
                p,
                atime,
                mtime,
                nofollow,
            } => {
                let ts = |t: (i64, i64)| libc::timespec {
                    tv_sec: t.0,
                    tv_nsec: t.1,
                };
                let fl = if *nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
                let times = [ts(*atime), ts(*mtime)];
                check(unsafe {
                    libc::utimensat(libc::AT_FDCWD, self.c(p).as_ptr(), times.as_ptr(), fl)
                })
            }
            SetXattr {
                p,
                name,
                value,
                flags,
                nofollow,
            } => {
                let n = CString::new(name.as_str()).unwrap();
                let (c, v) = (self.c(p), value.as_bytes());
                check(unsafe {
                    if *nofollow {
                        libc::lsetxattr(
                            c.as_ptr(),
                            n.as_ptr(),
                            v.as_ptr() as *const _,
                            v.len(),
                            *flags,
                        )
                    } else {
                        libc::setxattr(
                            c.as_ptr(),
                            n.as_ptr(),
                            v.as_ptr() as *const _,
                            v.len(),
                            *flags,
                        )
                    }
                })
            }
            GetXattr { p, name, nofollow } => {
                let n = CString::new(name.as_str()).unwrap();
                let c = self.c(p);
                let mut buf = vec![0u8; 65536];
                let r = unsafe {
                    if *nofollow {
                        libc::lgetxattr(
                            c.as_ptr(),
                            n.as_ptr(),
                            buf.as_mut_ptr() as *mut _,
                            buf.len(),
                        )
                    } else {
                        libc::getxattr(
                            c.as_ptr(),
                            n.as_ptr(),
                            buf.as_mut_ptr() as *mut _,
                            buf.len(),
                        )
                    }
                };
                if r < 0 {
                    return err();
                }
                buf.truncate(r as usize);
                Ok(format!("{:?}", String::from_utf8_lossy(&buf)))
            }
            ListXattr { p, nofollow } => {
                let c = self.c(p);
                let mut buf = vec![0u8; 65536];
                let r = unsafe {
                    if *nofollow {
                        libc::llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut _, buf.len())
                    } else {
                        libc::listxattr(c.as_ptr(), buf.as_mut_ptr() as *mut _, buf.len())
                    }
                };
                if r < 0 {
                    return err();
                }
                buf.truncate(r as usize);
                let mut names: Vec<String> = buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect();
                names.sort();
                Ok(names.join(","))
            }
            RemoveXattr { p, name, nofollow } => {
                let n = CString::new(name.as_str()).unwrap();
                let c = self.c(p);
                check(unsafe {
                    if *nofollow {
                        libc::lremovexattr(c.as_ptr(), n.as_ptr())
                    } else {
                        libc::removexattr(c.as_ptr(), n.as_ptr())
                    }
                })
            }
            Mknod { p, mode, kind } => {
                let (fmt, dev) = match kind {
                    NodeKind::Fifo => (libc::S_IFIFO, 0),
                    NodeKind::Char(a, b) => (libc::S_IFCHR, libc::makedev(*a, *b)),
                };
                check(unsafe { libc::mknod(self.c(p).as_ptr(), fmt | mode, dev) })
            }
            Stat { p, follow } => {
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                let c = self.c(p);
                let r = unsafe {
                    if *follow {
                        libc::stat(c.as_ptr(), &mut st)
                    } else {
                        libc::lstat(c.as_ptr(), &mut st)
                    }
                };
                if r < 0 { err() } else { Ok(stat_summary(&st)) }
            }
            Readdir { p } => {
                let path = if p.is_empty() {
                    self.root.clone()
                } else {
                    self.root.join(expand(p))
                };
                let rd = std::fs::read_dir(&path)
                    .map_err(|e| e.raw_os_error().map(errno_name).unwrap_or(e.to_string()))?;
                let mut v = Vec::new();
                for de in rd {
                    let de = de.map_err(|e| {
                        format!(
                            "readdir:{}",
                            e.raw_os_error().map(errno_name).unwrap_or(e.to_string())
                        )
                    })?;
                    let t = de
                        .file_type()
                        .map(|t| Kind::from_ft(t).letter())
                        .unwrap_or('?');
                    v.push(format!("{}:{t}", de.file_name().to_string_lossy()));
                }
                v.sort();
                Ok(v.join(","))
            }
            Access { p, mode } => {
                check(unsafe { libc::faccessat(libc::AT_FDCWD, self.c(p).as_ptr(), *mode, 0) })
            }
            RmRf { p } => {
                let path = if p.is_empty() {
                    self.root.clone()
                } else {
                    self.root.join(expand(p))
                };
                rm_rf(&path).map(|n| format!("removed {n}"))
            }
            FdOpen { slot, p, mode } => {
                if *slot >= FD_SLOTS {
                    return Err("EBADF(bad slot)".into());
                }
                self.fds[*slot] = None;
                let fd = self.open(p, mode.flags(), 0o644)?;
                self.fds[*slot] = Some(fd);
                Ok("ok".into())
            }
            FdRead { slot } => read_all(self.slot(*slot)?, true),
            FdWrite { slot, off, data } => write_all(self.slot(*slot)?, &data.bytes(), Some(*off)),
            FdStat { slot } => {
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                let r = unsafe { libc::fstat(self.slot(*slot)?, &mut st) };
                if r < 0 { err() } else { Ok(stat_summary(&st)) }
            }
            FdTruncate { slot, len } => {
                check(unsafe { libc::ftruncate(self.slot(*slot)?, *len as i64) })
            }
            FdClose { slot } => {
                self.slot(*slot)?;
                self.fds[*slot] = None;
                Ok("ok".into())
            }
        }
    }
}

/// Reads to EOF (with `pread` from offset 0, else `read` from the file
/// position): `len=N hash=H`. `pread` on a FIFO is ESPIPE.
fn read_all(fd: i32, pread: bool) -> Outcome {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = unsafe {
            if pread {
                libc::pread(fd, buf.as_mut_ptr() as *mut _, buf.len(), data.len() as i64)
            } else {
                libc::read(fd, buf.as_mut_ptr() as *mut _, buf.len())
            }
        };
        if n < 0 {
            if errno() == libc::EAGAIN {
                break; // FIFO without writer data
            }
            return err();
        }
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n as usize]);
    }
    Ok(format!(
        "len={} hash={:016x}",
        data.len(),
        hash_bytes(&data)
    ))
}

/// Writes all of `data` (pwrite from `off`, or write at the file position).
fn write_all(fd: i32, data: &[u8], off: Option<u64>) -> Outcome {
    let mut done = 0usize;
    while done < data.len() || (data.is_empty() && done == 0) {
        let rest = &data[done..];
        let n = unsafe {
            match off {
                Some(o) => libc::pwrite(
                    fd,
                    rest.as_ptr() as *const _,
                    rest.len(),
                    (o + done as u64) as i64,
                ),
                None => libc::write(fd, rest.as_ptr() as *const _, rest.len()),
            }
        };
        if n < 0 {
            return err();
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(format!("wrote {done}"))
}

fn rm_rf(p: &Path) -> Result<usize, String> {
    let io = |e: std::io::Error| e.raw_os_error().map(errno_name).unwrap_or(e.to_string());
    let md = std::fs::symlink_metadata(p).map_err(io)?;
    if !md.is_dir() {
        std::fs::remove_file(p).map_err(io)?;
        return Ok(1);
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    names.sort();
    let mut n = 0;
    for c in names {
        n += rm_rf(&c)?;
    }
    std::fs::remove_dir(p).map_err(io)?;
    Ok(n + 1)
}
