//! The inodes index (`index=on`): hard links of lower files survive copy-up.
//!
//! As the kernel (docs/format.md §7): a lower non-directory with several links
//! is copied up into `W/index/<hex of its origin handle>`, and each of its
//! names is hard-linked to that entry when it is copied up ("link-up"). Names
//! not linked up yet find the copy through the index, so writing through one
//! name shows through all. The union link count lives in the `nlink` xattr of
//! the upper inode, relative to a real count (`U` upper, `L` lower), so a
//! link or unlink that changes both keeps it right without a rewrite.
//!
//! At mount the upper root's `origin` ties the upper to the first lower root
//! and `W/index`'s `upper` ties the index to the upper; entries are checked
//! and stale or orphaned ones removed, as the kernel's ovl_indexdir_cleanup.

use crate::format::xattr::OvlXattr;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::layer::SetupError;
use super::node::{Key, Node, RealRef};
use super::{Errno, Overlay, Result};
use crate::format::fh::{FLAG_PATH_UPPER, OvlFb};
use crate::format::nlink::{self, NlinkBase};
use crate::format::whiteout;
use crate::params::UuidMode;
use crate::sys::{self, Stat};

/// The name of the index entry for an origin value.
pub(super) fn hex_name(value: &[u8]) -> OsString {
    OsString::from(crate::format::fh::to_hex(value))
}

fn setup_err(path: PathBuf, what: &'static str) -> impl Fn(Errno) -> SetupError {
    move |errno| SetupError::Io {
        path: path.clone(),
        what,
        errno,
    }
}

impl Overlay {
    /// Prepare `W/index` for a mount with index=on: verify (or, on a fresh
    /// upper, record) which lower root and upper the index belongs to, then
    /// clean the index up. `None` where the index cannot work (read-only, no
    /// file handles), with a warning, as the kernel falls back to index=off.
    pub(super) fn open_index(&self) -> std::result::Result<Option<Arc<OwnedFd>>, SetupError> {
        let (Some(upper), Some(workdir)) = (&self.upper, &self._workdir) else {
            tracing::warn!("index=on needs a writable upper layer: index is off");
            return Ok(None);
        };
        let handles_ok = std::iter::once(upper)
            .chain(self.lowers.iter())
            .all(|l| sys::name_to_handle(l.root.as_fd()).is_ok());
        if !handles_ok {
            tracing::warn!("a layer's filesystem has no file handles: falling back to index=off");
            return Ok(None);
        }
        if self.read_only() {
            return self.read_index(upper, workdir);
        }
        // The upper belongs to this stack: its root's origin is the first lower root.
        let root_fh = self.origin_value(0, self.lowers[0].root.as_fd());
        let origin = self.xattr.get(OvlXattr::Origin);
        let uroot = upper.root.as_fd();
        // As the kernel: a value that does not parse counts as none and is
        // replaced; only a valid handle of another root refuses the mount.
        match self.stored_root_origin(uroot) {
            Ok(v) if v == root_fh => {}
            Ok(_) => {
                return Err(SetupError::IndexMismatch(
                    upper.path.clone(),
                    "its root's origin is another lower root than the first lowerdir (the lower layers \
                 changed since index=on was used): mount with index=off, or start a new upper and workdir",
                ));
            }
            Err(e) if e == Errno::ENODATA => sys::setxattr(uroot, origin, &root_fh, 0).map_err(
                setup_err(upper.path.clone(), "cannot record the upper root's origin"),
            )?,
            Err(e) => {
                return Err(setup_err(
                    upper.path.clone(),
                    "cannot read the root's origin",
                )(e));
            }
        }
        let path = workdir.path.join("index");
        let wdir = workdir.root.as_fd();
        match sys::mkdirat(wdir, OsStr::new("index"), 0) {
            Ok(()) => {}
            Err(e) if e == Errno::EEXIST => {}
            Err(e) => return Err(setup_err(path, "cannot create")(e)),
        }
        let dir = sys::openat(
            wdir,
            OsStr::new("index"),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(setup_err(path.clone(), "cannot open (not a directory?)"))?;
        // The index belongs to this upper: its `upper` is the upper root's handle.
        let upper_fh = self.upper_value(uroot).map_err(setup_err(
            upper.path.clone(),
            "cannot encode the upper root's file handle",
        ))?;
        let mismatch = SetupError::IndexMismatch(
            path.clone(),
            "it belongs to another upper directory: remove it or mount with index=off",
        );
        // Older kernels kept the same handle in `origin`.
        if let Ok(v) = sys::getxattr(dir.as_fd(), origin)
            && v != upper_fh
        {
            return Err(mismatch);
        }
        match sys::getxattr(dir.as_fd(), self.xattr.get(OvlXattr::Upper)) {
            Ok(v) if v == upper_fh => {}
            Ok(_) => return Err(mismatch),
            Err(e) if e == Errno::ENODATA => {
                sys::setxattr(dir.as_fd(), self.xattr.get(OvlXattr::Upper), &upper_fh, 0)
                    .map_err(setup_err(path.clone(), "cannot set the upper xattr"))?
            }
            Err(e) => return Err(setup_err(path, "cannot read the upper xattr")(e)),
        }
        self.clean_index(dir.as_fd(), &path)?;
        Ok(Some(Arc::new(dir)))
    }

    /// The upper root's origin as a valid handle (re-encoded); ENODATA for
    /// none or one that does not parse.
    fn stored_root_origin(&self, uroot: BorrowedFd<'_>) -> Result<Vec<u8>> {
        let origin = self.xattr.get(OvlXattr::Origin);
        sys::getxattr(uroot, origin).and_then(|v| {
            OvlFb::decode(&v)
                .and_then(|fb| fb.encode())
                .map_err(|_| Errno::ENODATA)
        })
    }

    /// A read-only mount: an existing `W/index` is used for lookups, as the
    /// kernel does (names not linked up show the index copy), after the same
    /// checks of whom it belongs to; nothing is written or cleaned up.
    fn read_index(
        &self,
        upper: &super::Layer,
        workdir: &super::Layer,
    ) -> std::result::Result<Option<Arc<OwnedFd>>, SetupError> {
        let path = workdir.path.join("index");
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let dir = match sys::openat(workdir.root.as_fd(), OsStr::new("index"), flags, 0) {
            Ok(d) => d,
            Err(e) if e == Errno::ENOENT => return Ok(None),
            Err(e) => return Err(setup_err(path, "cannot open (not a directory?)")(e)),
        };
        let root_fh = self.origin_value(0, self.lowers[0].root.as_fd());
        let uroot = upper.root.as_fd();
        if self.stored_root_origin(uroot).is_ok_and(|v| v != root_fh) {
            return Err(SetupError::IndexMismatch(
                upper.path.clone(),
                "its root's origin is another lower root than the first lowerdir (the lower layers \
                 changed since index=on was used): mount with index=off",
            ));
        }
        let upper_fh = self.upper_value(uroot).map_err(setup_err(
            upper.path.clone(),
            "cannot encode the upper root's file handle",
        ))?;
        if sys::getxattr(dir.as_fd(), self.xattr.get(OvlXattr::Upper)).is_ok_and(|v| v != upper_fh)
        {
            return Err(SetupError::IndexMismatch(
                path,
                "it belongs to another upper directory: mount with index=off",
            ));
        }
        Ok(Some(Arc::new(dir)))
    }

    /// The handle of an upper object, as the kernel encodes one (flag "upper").
    fn upper_value(&self, fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
        let uuid = match (&self.upper, self.uuid) {
            (_, UuidMode::Off) | (None, _) => [0; 16],
            (Some(u), _) => u.uuid,
        };
        let mut fb = OvlFb::new(uuid, sys::name_to_handle(fd)?);
        fb.flags |= FLAG_PATH_UPPER;
        fb.encode().map_err(|_| Errno::EIO)
    }

    /// Check each index entry as the kernel does at mount: temporaries and
    /// stale or orphaned entries go; an entry that is not an index entry at
    /// all stops the mount (the index cannot be trusted then).
    fn clean_index(
        &self,
        dir: BorrowedFd<'_>,
        path: &std::path::Path,
    ) -> std::result::Result<(), SetupError> {
        let entries = sys::read_dir(dir).map_err(setup_err(path.to_path_buf(), "cannot read"))?;
        for ent in entries {
            let name = ent.name.as_os_str();
            let epath = path.join(name);
            if name.as_bytes().starts_with(b"#") {
                super::remove_tree(dir, name)
                    .map_err(setup_err(epath, "cannot remove a leftover"))?;
                continue;
            }
            match self.check_index_entry(dir, name) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(entry = %epath.display(), "removing a stale or orphan index entry");
                    sys::unlinkat(dir, name, false)
                        .map_err(setup_err(epath, "cannot remove a stale index entry"))?;
                }
                Err(what) => {
                    return Err(SetupError::BadIndex(epath, what));
                }
            }
        }
        Ok(())
    }

    /// Ok(true): keep; Ok(false): stale or orphan; Err: not a valid entry.
    fn check_index_entry(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> std::result::Result<bool, &'static str> {
        let fh = crate::format::fh::index_name_bytes(name.as_bytes())
            .ok_or("name is not the hex of a file handle")?;
        OvlFb::decode(&fh).map_err(|_| "name is not a valid overlay file handle")?;
        let st = sys::fstatat(dir, name).map_err(|_| "cannot stat")?;
        // Whiteouts (nfs_export) and directory entries are kept unverified, as
        // the kernel does without nfs_export.
        if whiteout::is_whiteout_stat(&st) || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Ok(true);
        }
        let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|_| "cannot open")?;
        let origin = match sys::getxattr(fd.as_fd(), self.xattr.get(OvlXattr::Origin)) {
            Ok(v) => v,
            Err(_) => return Err("index entry has no origin xattr"),
        };
        if origin != fh {
            return Ok(false);
        }
        if st.st_nlink != 1 {
            return Ok(true);
        }
        // Only the index holds it: keep it while a lower name still shows it.
        let Some(lower) = self.decode_origin_stat(&origin, st.st_mode & libc::S_IFMT) else {
            return Ok(false);
        };
        Ok(self
            .nlink_from_xattr(fd.as_fd(), &st, Some(&lower))
            .is_some_and(|n| n > 0))
    }

    /// The union link count an indexed upper inode records, if it is valid.
    pub(super) fn nlink_from_xattr(
        &self,
        upper: BorrowedFd<'_>,
        upper_st: &Stat,
        lower: Option<&Stat>,
    ) -> Option<u64> {
        if lower.is_some_and(|l| l.st_nlink == 1) {
            return None;
        }
        let v = sys::getxattr(upper, self.xattr.get(OvlXattr::Nlink)).ok()?;
        let n = nlink::union(&v, upper_st.st_nlink, lower.map(|l| l.st_nlink));
        if n.is_none() {
            tracing::warn!(value = ?String::from_utf8_lossy(&v), "bad index nlink");
        }
        n
    }

    /// The union link count of an indexed node: from the xattr once it has an
    /// upper inode, else the lower file's own count.
    pub(super) fn union_nlink(&self, node: &Node) -> Result<u64> {
        let lower = match node.lowers().first() {
            Some(l) => Some(l.r.stat()?),
            None => None,
        };
        match node.upper()? {
            Some(up) => {
                let ust = sys::fstat(up.as_fd())?;
                let lower = match lower {
                    Some(l) => Some(l),
                    None => sys::getxattr(up.as_fd(), self.xattr.get(OvlXattr::Origin))
                        .ok()
                        .and_then(|v| self.decode_origin_stat(&v, node.kind)),
                };
                Ok(self
                    .nlink_from_xattr(up.as_fd(), &ust, lower.as_ref())
                    .unwrap_or(ust.st_nlink))
            }
            None => Ok(lower.ok_or(Errno::EIO)?.st_nlink),
        }
    }

    /// Record the union count relative to a real count (`U` or `L`).
    fn write_nlink(
        &self,
        upper: BorrowedFd<'_>,
        base: NlinkBase,
        union: u64,
        real: u64,
    ) -> Result<()> {
        let v = nlink::encode(base, union, real);
        sys::setxattr(upper, self.xattr.get(OvlXattr::Nlink), v.as_bytes(), 0)
    }

    /// Whether `node` goes through the index: a lower non-directory with
    /// several links, with index=on.
    pub(super) fn is_indexed(&self, node: &Node) -> bool {
        self.index.is_some() && node.index_name().is_some()
    }

    /// Whether node `ino` is an indexed file whose copy exists (its names
    /// show it, linked up or not).
    pub fn shows_index_copy(&self, ino: u64) -> Result<bool> {
        let node = self.node(ino)?;
        Ok(self.is_indexed(&node) && node.has_upper())
    }

    /// Publish a copy built as `work/tmp` as the index entry of `node`, with
    /// its union count; the node's names are then linked up one by one.
    pub(super) fn publish_to_index(
        &self,
        node: &Arc<Node>,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
        lower_nlink: u64,
    ) -> Result<(Arc<OwnedFd>, Stat)> {
        let index = self.index.as_ref().ok_or(Errno::EIO)?;
        let iname = node.index_name().ok_or(Errno::EIO)?;
        let fd = sys::openat(work, tmp, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        self.write_nlink(fd.as_fd(), NlinkBase::Upper, lower_nlink, 1)?;
        sys::renameat2(work, tmp, index.as_fd(), &iname, sys::RENAME_NOREPLACE)?;
        let st = sys::fstat(fd.as_fd())?;
        node.state.write().unwrap().upper = Some(RealRef::At {
            dir: index.clone(),
            name: iname,
            dev: st.st_dev,
            ino: st.st_ino,
        });
        node.set_link_up_pending(true);
        self.nodes.rekey(node, Key::new(st.st_dev, st.st_ino));
        Ok((Arc::new(fd), st))
    }

    /// Give the name `node` was last reached by its hard link to the index
    /// entry (the kernel's ovl_link_up). Called with the node's copy-up lock.
    pub(super) fn link_up(
        &self,
        node: &Arc<Node>,
        parent: &Arc<Node>,
        pfd: &Arc<OwnedFd>,
    ) -> Result<()> {
        let name = node.parent_and_name().1;
        let up = node.upper()?.ok_or(Errno::EIO)?;
        let _dir = super::dir::lock(parent);
        let pst = sys::fstat(pfd.as_fd())?;
        self.set_impure(parent, pfd.as_fd())?;
        let union = self.union_nlink(node)?;
        if let Some(l) = node.lowers().first() {
            self.write_nlink(up.as_fd(), NlinkBase::Lower, union, l.r.stat()?.st_nlink)?;
        }
        sys::link_fd(up.as_fd(), pfd.as_fd(), &name)?;
        let ust = sys::fstat(up.as_fd())?;
        self.write_nlink(up.as_fd(), NlinkBase::Upper, union, ust.st_nlink)?;
        let _ = sys::futimens_path(
            pfd.as_fd(),
            Some(sys::timespec(pst.st_atime, pst.st_atime_nsec)),
            Some(sys::timespec(pst.st_mtime, pst.st_mtime_nsec)),
        );
        node.set_link_up_pending(false);
        Ok(())
    }

    /// Before a link, unlink or rename touches an indexed node's upper inode:
    /// record the union count relative to the upper count, which the
    /// operation changes by the same amount (the kernel's ovl_nlink_start).
    pub(super) fn nlink_start(&self, node: &Node) -> Result<()> {
        if !self.is_indexed(node) || node.is_dir() {
            return Ok(());
        }
        let Some(up) = node.upper()? else {
            return Ok(());
        };
        let union = self.union_nlink(node)?;
        let ust = sys::fstat(up.as_fd())?;
        self.write_nlink(up.as_fd(), NlinkBase::Upper, union, ust.st_nlink)
    }

    /// After a name of an indexed node went: once no name is left, the index
    /// entry goes too (the kernel's ovl_nlink_end and ovl_cleanup_index).
    pub(super) fn nlink_end(&self, node: &Node) {
        if !self.is_indexed(node) || node.is_dir() {
            return;
        }
        let Ok(Some(up)) = node.upper() else {
            return;
        };
        let Ok(ust) = sys::fstat(up.as_fd()) else {
            return;
        };
        let lower = node.lowers().first().and_then(|l| l.r.stat().ok());
        let recorded = sys::getxattr(up.as_fd(), self.xattr.get(OvlXattr::Nlink))
            .ok()
            .and_then(|v| nlink::count(&v, ust.st_nlink, lower.map(|l| l.st_nlink)));
        if lower.is_some_and(|l| l.st_nlink == 1) || recorded.is_none_or(|n| n > 0) {
            return;
        }
        if ust.st_nlink != 1 {
            // A lower hard link was added under the mount, or the count is off:
            // keep the entry and count what the upper really holds.
            tracing::warn!(nlink = ust.st_nlink, "index entry still linked; keeping it");
            let _ = self.write_nlink(up.as_fd(), NlinkBase::Upper, ust.st_nlink - 1, ust.st_nlink);
            return;
        }
        if let (Some(index), Some(iname)) = (&self.index, node.index_name())
            && let Err(e) = sys::unlinkat(index.as_fd(), &iname, false)
        {
            tracing::warn!(?iname, %e, "cannot remove an orphan index entry");
        }
    }
}
