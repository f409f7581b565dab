//! Open files: open (copy-up for writing), read, write, fsync and friends.
//!
//! A handle opened read-only on a lower file follows its file when it is
//! copied up later: the next read reopens the upper copy, so writes made
//! through other handles are seen, as in the kernel since 4.19.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::copy_up::CopyUp;
use super::node::Node;
use super::{Errno, Overlay, Result};
use crate::params::Atime;
use crate::sys;

/// One open of a regular file.
pub struct OpenFile {
    pub node: Arc<Node>,
    flags: i32,
    fd: RwLock<Arc<OwnedFd>>,
    on_upper: AtomicBool,
}

impl OpenFile {
    pub fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_RDONLY
    }

    /// The real fd, switched to the upper copy if the file was copied up since.
    pub(super) fn real_fd(&self) -> Result<Arc<OwnedFd>> {
        if !self.on_upper.load(Ordering::Acquire)
            && self.node.data_in_upper()
            && let Some(up) = self.node.upper()?
        {
            let fresh = Arc::new(sys::reopen(
                up.as_fd(),
                real_flags(self.flags) & !libc::O_TRUNC,
            )?);
            *self.fd.write().unwrap() = fresh;
            self.on_upper.store(true, Ordering::Release);
        }
        Ok(self.fd.read().unwrap().clone())
    }
}

#[derive(Default)]
pub struct FileTable {
    map: RwLock<HashMap<u64, Arc<OpenFile>>>,
    next: AtomicU64,
}

impl FileTable {
    pub fn get(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.map.read().unwrap().get(&fh).cloned()
    }

    pub(super) fn insert(&self, f: OpenFile) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.write().unwrap().insert(fh, Arc::new(f));
        fh
    }

    fn remove(&self, fh: u64) {
        self.map.write().unwrap().remove(&fh);
    }
}

/// Flags the real open may carry: creation is ours, not the caller's.
/// Flags for the daemon's own fd of the real file. Not O_DIRECT: the data of
/// a FUSE request sits at no aligned address, so direct I/O from it fails
/// with EINVAL (the caller's O_DIRECT already bypasses the FUSE page cache;
/// passthrough opens keep it, on their own backing file).
pub(super) fn real_flags(flags: i32) -> i32 {
    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_DIRECT)
}

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl Overlay {
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        // A metacopy file's data is checked against its digest first (verity=).
        self.validate_verity(&node)?;
        if wants_write(flags) {
            self.check_writable()?;
            let how = if flags & libc::O_TRUNC != 0 && !node.has_upper() {
                CopyUp::Empty
            } else {
                CopyUp::Full
            };
            self.copy_up_with(&node, how)?;
        }
        // Where the data is: the upper copy, or (read-only) a lower or metacopy data file.
        let on_upper = node.data_in_upper();
        let fd = node.data_fd()?.ok_or(Errno::ENOENT)?;
        // Lower layers are never changed, atimes included. Upper atimes follow
        // the mount's flags: relatime is left to the upper filesystem's own
        // (the same rule, and no ctime change), the others are applied on
        // each read (touch_atime).
        let real = match on_upper && self.cfg.atime == Atime::Relative {
            true => sys::reopen(fd.as_fd(), real_flags(flags))?,
            false => sys::reopen_noatime(fd.as_fd(), real_flags(flags))?,
        };
        Ok(self.register_open(node, flags, real, on_upper))
    }

    /// The upper file the kernel may read and write directly for this open
    /// (FUSE passthrough), opened read-write because every passthrough open
    /// of the inode shares it. `None` where the data is not in the upper
    /// layer: such files are served here, so reads follow a later copy-up.
    pub fn backing_file(&self, fh: u64) -> Option<OwnedFd> {
        let f = self.files.get(fh)?;
        if f.node.kind != libc::S_IFREG {
            return None;
        }
        // A read-only mount is served here: the kernel reads a backing file
        // with the caller's open flags through the layer's own mount, so a
        // passed-through read would change the atime of a lower file (never
        // changed by the kernel overlay) or of an upper one (a read-only
        // overlay changes none).
        if self.read_only() {
            return None;
        }
        if !f.node.data_in_upper() || !f.on_upper.load(Ordering::Relaxed) {
            return None;
        }
        let up = f.node.upper().ok()??;
        // A set-ID file is served here: a write by another user must drop
        // the bits, and the kernel says so only on writes it sends us.
        let st = sys::fstat(up.as_fd()).ok()?;
        if st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
            return None;
        }
        // The kernel reads a backing file with the caller's open flags, and
        // the upper filesystem's own mount (relatime) decides its atime:
        // right for relatime; noatime and strictatime reads are served here,
        // where the mount's policy is applied.
        match self.cfg.atime {
            Atime::Relative => sys::reopen(up.as_fd(), libc::O_RDWR | libc::O_LARGEFILE).ok(),
            Atime::Never | Atime::Always => None,
        }
    }

    pub(super) fn register_open(
        &self,
        node: Arc<Node>,
        flags: i32,
        real: OwnedFd,
        on_upper: bool,
    ) -> u64 {
        self.files.insert(OpenFile {
            node,
            flags: real_flags(flags),
            fd: RwLock::new(Arc::new(real)),
            on_upper: AtomicBool::new(on_upper),
        })
    }

    fn file(&self, fh: u64) -> Result<Arc<OpenFile>> {
        self.files.get(fh).ok_or(Errno::EBADF)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(size as usize, 0);
        let done = self.read_into(fh, offset, buf)?;
        buf.truncate(done);
        Ok(())
    }

    /// Read into `buf` (as much as it holds, short only at the end of the
    /// file); the byte count.
    pub fn read_into(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let f = self.file(fh)?;
        let fd = f.real_fd()?;
        let mut done = 0;
        while done < buf.len() {
            let n = sys::pread(fd.as_fd(), &mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        if self.cfg.atime == Atime::Always
            && f.on_upper.load(Ordering::Relaxed)
            && f.flags & libc::O_NOATIME == 0
            && !self.read_only()
        {
            // Changes the ctime too (the kernel's touch_atime does not).
            let _ = sys::futimens_path(fd.as_fd(), Some(sys::now_timespec()), None);
        }
        Ok(done)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let f = self.file(fh)?;
        let fd = f.real_fd()?;
        let n = if f.flags & libc::O_APPEND != 0 {
            sys::write(fd.as_fd(), data)?
        } else {
            sys::pwrite(fd.as_fd(), data, offset)?
        };
        Ok(n as u32)
    }

    pub fn flush(&self, fh: u64) -> Result<()> {
        self.file(fh).map(|_| ())
    }

    pub fn release(&self, fh: u64) {
        self.files.remove(fh);
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let f = self.file(fh)?;
        sys::fsync(f.real_fd()?.as_fd(), datasync)
    }

    pub fn fallocate(&self, fh: u64, mode: i32, offset: u64, len: u64) -> Result<()> {
        let f = self.file(fh)?;
        sys::fallocate(f.real_fd()?.as_fd(), mode, offset, len)
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let f = self.file(fh)?;
        sys::lseek(f.real_fd()?.as_fd(), offset, whence)
    }

    /// Copy between two open files; a read-only lower source works too.
    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let fin = self.file(fh_in)?;
        let fout = self.file(fh_out)?;
        if !fout.writable() {
            return Err(Errno::EBADF);
        }
        let (src, dst) = (fin.real_fd()?, fout.real_fd()?);
        let len = len.min(1 << 30) as usize;
        match sys::copy_file_range(src.as_fd(), off_in, dst.as_fd(), off_out, len) {
            Ok(n) => Ok(n as u64),
            Err(e) if e == Errno::EXDEV || e == Errno::EINVAL || e == Errno::EOPNOTSUPP => {
                // Layers on different filesystems: copy through our buffer.
                let mut buf = vec![0u8; len.min(1 << 20)];
                let n = sys::pread(src.as_fd(), &mut buf, off_in)?;
                let mut done = 0;
                while done < n {
                    done += sys::pwrite(dst.as_fd(), &buf[done..n], off_out + done as u64)?;
                }
                Ok(n as u64)
            }
            Err(e) => Err(e),
        }
    }
}
