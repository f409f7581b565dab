//! Origin and impure: how an upper object remembers the lower object it was
//! copied from, so its inode number survives copy-up and remount.
//!
//! As the kernel (docs/format.md §3, §4): copy-up writes `origin` (an ovl_fb
//! of the lower object, or an empty value where the lower filesystem has no
//! file handles) on directories and on non-directories with one link; the
//! parent gets `impure`. Lookup decodes the origin of upper non-directories
//! by file handle to give them the lower object's inode number.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};

use super::node::{Key, Node};
use super::{Overlay, Result};
use crate::format::fh::OvlFb;
use crate::sys::{self, Stat};

impl Overlay {
    /// The `origin` value for a lower object of layer `layer`.
    pub(super) fn origin_value(&self, layer: usize, lower: BorrowedFd<'_>) -> Vec<u8> {
        match sys::name_to_handle(lower) {
            Ok(h) => OvlFb::new(self.lowers[layer].uuid, h)
                .encode()
                .unwrap_or_default(),
            // No file handles on that filesystem: "copied up, origin unknown".
            Err(_) => Vec::new(),
        }
    }

    /// Whether a copy-up of an object with this stat records its origin: not for
    /// a hard-linked lower file, whose link the copy-up breaks (no index).
    pub(super) fn records_origin(st: &Stat) -> bool {
        st.st_mode & libc::S_IFMT == libc::S_IFDIR || st.st_nlink == 1
    }

    /// Mark a directory's upper copy impure (it holds entries with an origin).
    pub(super) fn set_impure(&self, dir: &Node, upper: BorrowedFd<'_>) -> Result<()> {
        if dir.state.read().unwrap().impure {
            return Ok(());
        }
        let name = self.xattr.name("impure");
        if sys::getxattr(upper, &name).is_err() {
            sys::setxattr(upper, &name, b"y", 0)?;
        }
        dir.state.write().unwrap().impure = true;
        Ok(())
    }

    /// The lower object an upper object was copied from, by its origin handle:
    /// its identity (st_dev, st_ino), if the origin decodes in one of the lower
    /// layers and is of the same type.
    pub(super) fn decode_origin(&self, upper: BorrowedFd<'_>, upper_st: &Stat) -> Option<Key> {
        let value = sys::getxattr(upper, &self.xattr.name("origin")).ok()?;
        self.decode_origin_value(&value, upper_st.st_mode & libc::S_IFMT)
    }

    /// Decode a stored origin value for an object of type `kind` (S_IFMT bits).
    pub(super) fn decode_origin_value(&self, value: &[u8], kind: u32) -> Option<Key> {
        let fb = OvlFb::decode(value).ok()?;
        // A null UUID matches nothing: such origins cannot be told apart.
        if fb.uuid == [0; 16] {
            return None;
        }
        for layer in self.lowers.iter().filter(|l| l.uuid == fb.uuid) {
            let Some(mount_fd) = &layer.root_rd else {
                continue;
            };
            let fd = match sys::open_by_handle(mount_fd.as_fd(), &fb.handle) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::debug!(%e, layer = %layer.path.display(), "origin does not decode");
                    continue;
                }
            };
            let st = sys::fstat(fd.as_fd()).ok()?;
            if st.st_mode & libc::S_IFMT != kind {
                tracing::warn!("invalid origin: type differs from the upper object");
                return None;
            }
            return Some(Key::new(st.st_dev, st.st_ino));
        }
        None
    }

    /// A merged directory whose upper has no origin gets the origin of its lower
    /// directory, and its parent is marked impure (the kernel's ovl_fix_origin:
    /// lookups write to the upper layer too).
    pub(super) fn fix_origin(
        &self,
        parent: &Node,
        upper: BorrowedFd<'_>,
        layer: usize,
        lower: BorrowedFd<'_>,
    ) {
        if self.read_only() {
            return;
        }
        let name = self.xattr.name("origin");
        if sys::getxattr(upper, &name).is_ok() {
            return;
        }
        let value = self.origin_value(layer, lower);
        if let Err(e) = sys::setxattr(upper, &name, &value, 0) {
            tracing::debug!(%e, "cannot record the origin of a merged directory");
            return;
        }
        if let Some(pu) = parent.upper() {
            let _ = self.set_impure(parent, pu.as_fd());
        }
    }
}

/// Read an xattr of `dir/name` without following a final symlink.
pub(super) fn lgetxattr_at(dir: BorrowedFd<'_>, name: &OsStr, attr: &OsStr) -> Result<Vec<u8>> {
    let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    sys::getxattr(fd.as_fd(), attr)
}
