//! Runs [`Op`]s against one mount root through libc and normalises the
//! outcome (see ops.rs). The new-style I/O operations (fsync, fallocate,
//! lseek, copy_file_range, mmap, statfs) are in io.rs; running as another
//! identity in creds.rs.
use super::creds;
use super::io;
use super::io::{read_all, write_all};
use super::ops::{FD_SLOTS, NodeKind, Op, Outcome, Who, expand};
use super::tree::{Kind, norm_mtime};
use super::{cstr, errno, errno_name};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub(crate) fn err<T>() -> Result<T, String> {
    Err(errno_name(errno()))
}

pub(crate) fn check(r: libc::c_int) -> Outcome {
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

    pub(crate) fn c(&self, rel: &str) -> CString {
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

    pub(crate) fn open(&self, rel: &str, flags: i32, mode: u32) -> Result<OwnedFd, String> {
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

    /// Runs `op` as `who`: in this process if root and the op allows it,
    /// else in a forked child with `who`'s credentials (creds.rs).
    pub fn run(&mut self, op: &Op, who: Who) -> Outcome {
        if who != Who::Root && op.uses_slots() {
            panic!("HARNESS: fd-slot ops run as root only, not {who:?}: {op:?}");
        }
        if who == Who::Root && !op.forked() {
            let _gate = creds::FORK_GATE.read().unwrap_or_else(|e| e.into_inner());
            return self.run_here(op);
        }
        creds::run_forked(who, || self.run_here(op))
    }

    fn run_here(&mut self, op: &Op) -> Outcome {
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
            Fsync { slot, data_only } => io::fsync(self.slot(*slot)?, *data_only),
            Fallocate {
                slot,
                punch,
                off,
                len,
            } => io::fallocate(self.slot(*slot)?, *punch, *off, *len),
            Lseek { slot, off, hole } => io::lseek(self.slot(*slot)?, *off, *hole),
            CopyRange {
                from,
                to,
                off_in,
                off_out,
                len,
            } => io::copy_range(self.slot(*from)?, self.slot(*to)?, *off_in, *off_out, *len),
            MmapRead { p } => io::mmap_read(self.open(p, libc::O_RDONLY, 0)?),
            MmapWrite { p, off, data } => {
                let fd = self.open(p, libc::O_RDWR, 0)?;
                let wrote = io::mmap_write(fd, *off, &data.bytes())?;
                let back = self
                    .open(p, libc::O_RDONLY, 0)
                    .and_then(|f| read_all(f.as_raw_fd(), false));
                Ok(format!("{wrote}; read back: {back:?}"))
            }
            Statfs { p } => io::statfs(&self.c(p)),
            TouchNow { p } => check(unsafe {
                libc::utimensat(libc::AT_FDCWD, self.c(p).as_ptr(), std::ptr::null(), 0)
            }),
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
