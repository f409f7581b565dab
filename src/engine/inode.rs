//! Attributes and xattrs: getattr, setattr (with copy-up), readlink, statfs,
//! and the xattr calls with the overlay's private names hidden and escaped.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;

use super::copy_up::CopyUp;
use super::node::Node;
use std::sync::Arc;

use super::{Caller, Errno, Overlay, Result};
use crate::sys::{self, Stat};

/// Attributes of an overlay inode, as the overlay shows them.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// The node id: what the engine's calls take.
    pub ino: u64,
    /// The inode number shown (several nodes may show one, see Node::st_ino).
    pub st_ino: u64,
    pub stat: Stat,
    /// Several names share this inode and which one an operation comes
    /// through matters (index=on hard links): not to be cached by the kernel.
    pub shared: bool,
}

/// A time to set: a given instant or "now".
#[derive(Debug, Clone, Copy)]
pub enum Timestamp {
    Now,
    At { sec: i64, nsec: i64 },
}

impl Timestamp {
    fn to_timespec(self) -> libc::timespec {
        match self {
            Timestamp::Now => sys::now_timespec(),
            Timestamp::At { sec, nsec } => libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            },
        }
    }
}

/// The changes of one setattr call.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    /// The open file the change came through, if any.
    pub fh: Option<u64>,
    /// The kernel says the change drops set-ID bits (KILLPRIV_V2): the
    /// caller lacks CAP_FSETID (see `Overlay::drop_setid`).
    pub kill_suidgid: bool,
    /// The change is a chown (of the owner or the group).
    pub chown: bool,
}

impl Overlay {
    pub(super) fn attr_of(&self, node: &Node) -> Result<Attr> {
        let mut stat = node.stat()?;
        // Counting subdirectories across layers is not worth it: nlink 1 tells
        // find and friends not to rely on it, as the kernel overlay does.
        if node.is_dir() && node.is_merged() {
            stat.st_nlink = 1;
        }
        // Indexed hard links count their names across layers.
        if self.is_indexed(node) {
            stat.st_nlink = self.union_nlink(node)?;
        }
        // A metacopy file occupies its data file's blocks, as the kernel reports.
        if node.is_metacopy() {
            stat.st_blocks = match node.data_fd()? {
                Some(d) => sys::fstat(d.as_fd())?.st_blocks,
                None => {
                    (stat.st_size + stat.st_blksize - 1) / stat.st_blksize * stat.st_blksize / 512
                }
            };
        }
        Ok(Attr {
            ino: node.ino,
            st_ino: node.st_ino(),
            stat,
            shared: self.is_indexed(node),
        })
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        self.attr_of(&node)
    }

    /// getattr through an open file (fstat): the open file's own fd answers,
    /// so a file unlinked while open still has its attributes.
    pub fn getattr_fh(&self, ino: u64, fh: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        match self.files.get(fh) {
            Some(f) if f.node.ino == ino && node.data_in_upper() && !self.is_indexed(&node) => {
                Ok(Attr {
                    ino,
                    st_ino: node.st_ino(),
                    stat: sys::fstat(f.real_fd()?.as_fd())?,
                    shared: false,
                })
            }
            _ => self.attr_of(&node),
        }
    }

    pub fn setattr(&self, ino: u64, set: SetAttr, caller: &Caller) -> Result<Attr> {
        let node = self.node(ino)?;
        self.check_writable()?;
        self.check_chown_kill(&node, &set, caller)?;
        // Truncating to zero needs no data copied up; the size still changes
        // (from the lower's), so the times must change as the truncate would.
        let mut emptied = false;
        // Through an open file on the upper layer (fchmod, ftruncate, ...): act
        // on it, which also works once its name is gone.
        let open_upper = set
            .fh
            .and_then(|fh| self.files.get(fh))
            .filter(|f| f.node.ino == ino && node.data_in_upper())
            .map(|f| f.real_fd())
            .transpose()?;
        // An indexed file's name gets its upper link first, as the kernel's
        // ovl_setattr copies the name up whatever the fd.
        if node.link_up_pending() {
            self.copy_up_meta(&node)?;
        }
        let upper = match open_upper {
            Some(fd) => fd,
            None => match node.upper()? {
                None if set.size == Some(0) && !node.is_dir() => {
                    emptied = node.stat()?.st_size != 0;
                    self.copy_up_with(&node, CopyUp::Empty)?
                }
                // A size change needs the data; other attributes only metadata.
                _ if set.size.is_some() => self.copy_up(&node)?,
                _ => self.copy_up_meta(&node)?,
            },
        };
        let fd = upper.as_fd();
        if emptied {
            sys::futimens_path(fd, None, Some(sys::now_timespec()))?;
        }
        if let Some(size) = set.size {
            match set.fh.and_then(|fh| self.files.get(fh)) {
                Some(f) if f.writable() => sys::ftruncate(f.real_fd()?.as_fd(), size)?,
                _ => sys::truncate_path(fd, size)?,
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            sys::fchown(fd, set.uid, set.gid)?;
        }
        if let Some(mode) = set.mode {
            if node.kind == libc::S_IFLNK {
                return Err(Errno::EOPNOTSUPP);
            }
            sys::fchmod(fd, mode & 0o7777)?;
        }
        if set.kill_suidgid && node.kind == libc::S_IFREG {
            kill_setid(fd, caller)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let a = set.atime.map(Timestamp::to_timespec);
            let m = set.mtime.map(Timestamp::to_timespec);
            if node.kind == libc::S_IFLNK {
                let (parent, name) = node.parent_and_name();
                let pfd = self.upper_dir(&parent.ok_or(Errno::EIO)?)?;
                sys::utimensat(pfd.as_fd(), &name, a, m)?;
            } else {
                sys::futimens_path(fd, a, m)?;
            }
        }
        self.attr_of(&node)
    }

    pub fn readlink(&self, ino: u64) -> Result<OsString> {
        let node = self.node(ino)?;
        if node.kind != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        sys::readlink_fd(node.top_fd()?.as_fd())
    }

    /// Drop set-ID bits of node `ino` as a write, truncating open or other
    /// change by `caller` does, where the kernel says so (KILLPRIV_V2: it
    /// sends the flag when the caller lacks CAP_FSETID).
    /// Through open file `fh` where given (it may have lost its name).
    pub fn drop_setid(&self, ino: u64, fh: Option<u64>, caller: &Caller) -> Result<()> {
        let node = self.node(ino)?;
        if node.kind != libc::S_IFREG {
            return Ok(());
        }
        let open = fh
            .and_then(|fh| self.files.get(fh))
            .filter(|f| f.node.ino == ino && f.writable() && node.data_in_upper());
        let fd = match open {
            Some(f) => f.real_fd()?,
            None => {
                let st = node.stat()?;
                if killed_mode(st.st_mode & 0o7777, st.st_gid, caller) == st.st_mode & 0o7777 {
                    return Ok(());
                }
                self.copy_up_meta(&node)?
            }
        };
        if kill_setid(fd.as_fd(), caller)? {
            self.attr_changed(ino);
        }
        Ok(())
    }

    /// A chown that drops set-ID bits changes the mode too, which the kernel
    /// allows only the owner or a holder of CAP_FOWNER (setattr_prepare: no
    /// ATTR_FORCE on chown), before anything changes.
    fn check_chown_kill(&self, node: &Node, set: &SetAttr, caller: &Caller) -> Result<()> {
        if !set.kill_suidgid || !set.chown {
            return Ok(());
        }
        if node.kind != libc::S_IFREG {
            return Ok(());
        }
        let st = node.stat()?;
        let mode = st.st_mode & 0o7777;
        let changes_mode = killed_mode(mode, st.st_gid, caller) != mode;
        if changes_mode && caller.uid != st.st_uid && !caller.has_cap(super::CAP_FOWNER) {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// Clear set-group-ID of `ino` (in its upper copy) unless `caller` is in
    /// its group or has CAP_FSETID: what setting an access ACL does to the mode.
    pub fn drop_sgid_unless_member(&self, ino: u64, caller: &Caller) -> Result<()> {
        let node = self.node(ino)?;
        let Some(up) = node.upper()? else {
            return Ok(());
        };
        let st = sys::fstat(up.as_fd())?;
        let mode = st.st_mode & 0o7777;
        if mode & libc::S_ISGID == 0 || caller.in_group(st.st_gid) || caller.has_cap_fsetid() {
            return Ok(());
        }
        sys::fchmod(up.as_fd(), mode & !libc::S_ISGID)?;
        self.attr_changed(ino);
        Ok(())
    }

    /// statfs of the upper filesystem (of the top lower without one); the name
    /// length is the largest of all layers'.
    pub fn statfs(&self) -> Result<libc::statvfs> {
        let top = self.upper.as_ref().unwrap_or(&self.lowers[0]);
        let mut st = sys::fstatfs(top.root.as_fd())?;
        for l in &self.lowers {
            if let Ok(s) = sys::fstatfs(l.root.as_fd()) {
                st.f_namemax = st.f_namemax.max(s.f_namemax);
            }
        }
        Ok(st)
    }

    // ---- xattrs ------------------------------------------------------------

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        sys::getxattr(node.top_fd()?.as_fd(), &self.xattr.to_real(name))
    }

    /// Names of the xattrs; trusted.* only for root (CAP_SYS_ADMIN), as
    /// filesystems list them.
    pub fn listxattr(&self, ino: u64, caller: &Caller) -> Result<Vec<OsString>> {
        let node = self.node(ino)?;
        let names = sys::listxattr(node.top_fd()?.as_fd())?;
        Ok(names
            .iter()
            .filter_map(|n| self.xattr.to_user(n))
            .filter(|n| caller.uid == 0 || !n.as_encoded_bytes().starts_with(b"trusted."))
            .collect())
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let node = self.node(ino)?;
        self.check_writable()?;
        let upper = self.xattr_upper(&node)?;
        sys::setxattr(upper.as_fd(), &self.xattr.to_real(name), value, flags)
    }

    /// Where an xattr change goes: the inode's upper object if it has one (an
    /// indexed file's names are not linked up for it, as in the kernel's
    /// ovl_xattr_set), else a metadata copy-up.
    fn xattr_upper(&self, node: &Arc<Node>) -> Result<Arc<std::os::fd::OwnedFd>> {
        match node.upper()? {
            Some(u) if node.link_up_pending() => Ok(u),
            _ => self.copy_up_meta(node),
        }
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        let node = self.node(ino)?;
        self.check_writable()?;
        let real = self.xattr.to_real(name);
        // Nothing to remove: fail without copying up, as the kernel does.
        if !node.has_upper() {
            sys::getxattr(node.top_fd()?.as_fd(), &real)?;
        }
        let upper = self.xattr_upper(&node)?;
        sys::removexattr(upper.as_fd(), &real)
    }
}

/// Drop the set-ID bits of the real file `fd` by `killed_mode`; whether the
/// mode changed.
fn kill_setid(fd: std::os::fd::BorrowedFd<'_>, caller: &Caller) -> Result<bool> {
    let st = sys::fstat(fd)?;
    let killed = killed_mode(st.st_mode & 0o7777, st.st_gid, caller);
    if killed == st.st_mode & 0o7777 {
        return Ok(false);
    }
    sys::fchmod(fd, killed)?;
    Ok(true)
}

/// The mode a change by `caller` leaves where the kernel says set-ID bits
/// must go (its setattr_should_drop_suidgid; chown_common for chown, whose
/// flag comes whatever the caller's capabilities): set-user-ID always;
/// set-group-ID where the file is group-executable, or the caller is neither
/// in the file's group `gid` nor holds CAP_FSETID.
fn killed_mode(mode: u32, gid: u32, caller: &Caller) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_ISGID != 0
        && (m & libc::S_IXGRP != 0 || !(caller.in_group(gid) || caller.has_cap_fsetid()))
    {
        m &= !libc::S_ISGID;
    }
    m
}
