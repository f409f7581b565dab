//! Copy-up: giving a lower object an upper copy before it is changed.
//!
//! A transaction through `W/work`: the copy is built there under a temporary
//! name (data, xattrs, owner, mode, times), fsynced unless the mount is
//! volatile, and renamed into place; a crash leaves either no upper object or
//! a complete one. Parents are copied up first. The parent's times are
//! restored afterwards, as the kernel does.

use crate::format::xattr::OvlXattr;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::node::{Key, Node, RealRef};
use super::{Errno, Overlay, Result};
use crate::params::FsyncMode;
use crate::sys::{self, Stat};

/// The kernel's OVL_COPY_UP_CHUNK_SIZE.
const CHUNK: usize = 1 << 20;

/// What a copy-up brings up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyUp {
    /// Metadata and data.
    Full,
    /// An empty regular file (an O_TRUNC open or truncate to zero follows).
    Empty,
    /// Metadata only (metacopy=on): data stays below.
    Meta,
}

impl Overlay {
    /// The upper directory of a directory node, copying it (and its parents) up if needed.
    pub(super) fn upper_dir(&self, dir: &Arc<Node>) -> Result<Arc<OwnedFd>> {
        self.copy_up(dir)
    }

    /// Make sure `node` has an upper object with its data and return it.
    pub(super) fn copy_up(&self, node: &Arc<Node>) -> Result<Arc<OwnedFd>> {
        self.copy_up_with(node, CopyUp::Full)
    }

    /// Make sure `node` has an upper object; with metacopy=on a regular file
    /// may leave its data below (attribute and xattr changes, link, rename).
    pub(super) fn copy_up_meta(&self, node: &Arc<Node>) -> Result<Arc<OwnedFd>> {
        if self.cfg.metacopy && node.kind == libc::S_IFREG {
            self.copy_up_with(node, CopyUp::Meta)
        } else {
            self.copy_up(node)
        }
    }

    /// Copy up as `how` says; an upper metacopy file gets its data unless only
    /// metadata is asked for.
    pub(super) fn copy_up_with(&self, node: &Arc<Node>, how: CopyUp) -> Result<Arc<OwnedFd>> {
        self.check_writable()?;
        if let Some(u) = node.upper()? {
            if node.link_up_pending() && self.index.is_some() {
                let (parent, _) = node.parent_and_name();
                let parent = parent.ok_or(Errno::EIO)?;
                let pfd = self.copy_up(&parent)?;
                let _guard = node.copy_up_lock.lock().unwrap();
                if node.link_up_pending() {
                    self.link_up(node, &parent, &pfd)?;
                }
            }
            if how != CopyUp::Meta && node.is_metacopy() {
                self.copy_up_data(node)?;
            }
            return Ok(u);
        }
        let (parent, name) = node.parent_and_name();
        // Parents first, without holding this node's lock (lock order: parent before child).
        let parent = parent.ok_or(Errno::EIO)?;
        let pfd = self.copy_up(&parent)?;
        let _guard = node.copy_up_lock.lock().unwrap();
        if let Some(u) = node.upper()? {
            return Ok(u);
        }
        let lower = node.lowers().first().cloned().ok_or(Errno::EIO)?;
        let (lower_fd, st) = lower.r.open_stat()?;
        // The metacopy mark, with a digest where verity asks for one; data is
        // copied after all where verity=require finds none to record.
        let (how, meta_value) = match how {
            CopyUp::Meta if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                let data = node.data_fd()?;
                match self.metacopy_value(data.as_ref().map(|d| d.as_fd())) {
                    Some(v) => (how, v),
                    None => (CopyUp::Full, Vec::new()),
                }
            }
            _ => (how, Vec::new()),
        };
        if how == CopyUp::Full && node.is_metacopy() {
            self.validate_verity(node)?;
        }
        // Data comes from the data file below a lower metacopy file.
        let data = (st.st_mode & libc::S_IFMT == libc::S_IFREG && how == CopyUp::Full)
            .then(|| match node.is_metacopy() {
                true => node.data_fd()?.ok_or(Errno::ENOENT),
                // The lower file itself, already open.
                false => Ok(lower_fd.clone()),
            })
            .transpose()?;
        let work = self.work_fd()?;
        let tmp = self.tmp_name();
        // The copy is built without the parent's lock (it may take long) ...
        let indexed = self.is_indexed(node);
        let origin = (Self::records_origin(&st) || indexed)
            .then(|| self.origin_value(lower.layer, lower_fd.as_fd()));
        let data_src = data.as_ref().map(|d| d.as_fd());
        let source = CopySource {
            src: lower_fd.as_fd(),
            data: data_src,
            st: &st,
            how,
            origin,
            meta_value: &meta_value,
        };
        let built = self.build_copy(source, work.as_fd(), &tmp);
        if let Err(e) = built {
            let _ = super::remove_tree(work.as_fd(), &tmp);
            tracing::error!(?name, %e, "copy-up failed");
            return Err(e);
        }
        if indexed {
            // Into the index; then this name is linked to it.
            let (ufd, _) = self
                .publish_to_index(node, work.as_fd(), &tmp, st.st_nlink)
                .inspect_err(|_| {
                    let _ = super::remove_tree(work.as_fd(), &tmp);
                })?;
            set_data_state(node, how, &lower);
            self.link_up(node, &parent, &pfd)?;
            return Ok(ufd);
        }
        // ... and published under it, so no namespace change in the parent races
        // the rename, and the parent's restored times are not stale.
        let _dir = super::dir::lock(&parent);
        let pst = sys::fstat(pfd.as_fd())?;
        // The parent may now hold an entry whose inode number is not its own.
        if let Err(e) = self.set_impure(&parent, pfd.as_fd()) {
            let _ = super::remove_tree(work.as_fd(), &tmp);
            return Err(e);
        }
        if let Err(e) = sys::renameat2(
            work.as_fd(),
            &tmp,
            pfd.as_fd(),
            &name,
            sys::RENAME_NOREPLACE,
        ) {
            let _ = super::remove_tree(work.as_fd(), &tmp);
            // Something took the name meanwhile (the file was removed): it is gone.
            return Err(if e == Errno::EEXIST { Errno::ENOENT } else { e });
        }
        if self.cfg.fsync == FsyncMode::Strict {
            let _ = sys::reopen(pfd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)
                .and_then(|d| sys::fsync(d.as_fd(), false));
        }
        // The rename changed the parent's times; put them back, as the kernel does.
        let _ = sys::futimens_path(
            pfd.as_fd(),
            Some(sys::timespec(pst.st_atime, pst.st_atime_nsec)),
            Some(sys::timespec(pst.st_mtime, pst.st_mtime_nsec)),
        );
        let ufd = sys::openat(pfd.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let ust = sys::fstat(ufd.as_fd())?;
        let ufd = Arc::new(ufd);
        {
            let mut state = node.state.write().unwrap();
            // A leaf refers to its upper copy by name in the held parent.
            state.upper = Some(match node.is_dir() {
                true => RealRef::Open(ufd.clone()),
                false => RealRef::At {
                    dir: pfd.clone(),
                    name: name.clone(),
                    dev: ust.st_dev,
                    ino: ust.st_ino,
                },
            });
        }
        set_data_state(node, how, &lower);
        let key = Key::new(ust.st_dev, ust.st_ino);
        self.nodes.rekey(node, key);
        // A lower hard link split by the copy shows its own number now.
        let renumbered = !node.is_dir()
            && !Self::shows_origin_ino(st.st_nlink, false)
            && self.nodes.renumber(node, key);
        if ust.st_nlink != st.st_nlink || renumbered {
            self.attr_changed(node.ino);
        }
        Ok(ufd)
    }

    /// Build a copy of `c.src` as `work/tmp`: the object, then owner, mode,
    /// xattrs, times.
    fn build_copy(&self, c: CopySource<'_>, work: BorrowedFd<'_>, tmp: &OsStr) -> Result<()> {
        let st = c.st;
        let perm = st.st_mode & 0o7777;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => sys::mkdirat(work, tmp, perm)?,
            libc::S_IFLNK => sys::symlinkat(&sys::readlink_fd(c.src)?, work, tmp)?,
            libc::S_IFREG => return self.build_file_copy(c, work, tmp),
            _ => sys::mknodat(work, tmp, st.st_mode, st.st_rdev)?,
        }
        let dst = sys::openat(work, tmp, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        self.copy_metadata(c.src, st, work, tmp, dst.as_fd())?;
        match c.origin {
            Some(v) => sys::setxattr(dst.as_fd(), self.xattr.get(OvlXattr::Origin), &v, 0),
            None => Ok(()),
        }
    }

    /// A regular file's copy, all of it done through the one fd the data was
    /// written through (no path lookups): data, fsync, owner, mode, xattrs
    /// (after chown, which strips security.capability), the overlay's own
    /// xattrs, times last.
    fn build_file_copy(&self, c: CopySource<'_>, work: BorrowedFd<'_>, tmp: &OsStr) -> Result<()> {
        let CopySource {
            src,
            data,
            st,
            how,
            origin,
            meta_value,
        } = c;
        let out = sys::openat(
            work,
            tmp,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        )?;
        let out = out.as_fd();
        // A readable fd of the source itself, if one is opened for the data:
        // its xattrs are read through it (an O_PATH fd needs a detour).
        let mut readable = None;
        match (how, data) {
            (CopyUp::Full, Some(data)) => {
                let input = sys::reopen(data, libc::O_RDONLY)?;
                // The data is the source itself unless it lies below a metacopy file.
                let data_is_src = data.as_raw_fd() == src.as_raw_fd();
                let dev = match data_is_src {
                    true => st.st_dev,
                    false => sys::fstat(input.as_fd())?.st_dev,
                };
                copy_data(input.as_fd(), dev, out, st.st_size as u64)?;
                if data_is_src {
                    readable = Some(input);
                }
            }
            // Metadata only: the right size, no blocks.
            (CopyUp::Meta, _) => sys::ftruncate(out, st.st_size as u64)?,
            _ => {}
        }
        if self.fsync_data() {
            sys::fsync(out, false)?;
        }
        sys::fchown(out, Some(st.st_uid), Some(st.st_gid))?;
        // After chown, which clears set-id bits.
        sys::fchmod_open(out, st.st_mode & 0o7777)?;
        let xsrc = readable.as_ref().map_or(src, |r| r.as_fd());
        self.copy_xattrs(xsrc, out)?;
        if how == CopyUp::Meta {
            sys::setxattr(out, self.xattr.get(OvlXattr::Metacopy), meta_value, 0)?;
        }
        if let Some(v) = origin {
            sys::setxattr(out, self.xattr.get(OvlXattr::Origin), &v, 0)?;
        }
        sys::futimens(
            out,
            Some(sys::timespec(st.st_atime, st.st_atime_nsec)),
            Some(sys::timespec(st.st_mtime, st.st_mtime_nsec)),
        )
    }

    /// Owner, mode, xattrs, then times of `src` onto `dir/name` (open as `dst`).
    /// xattrs come after chown, which would strip security.capability.
    pub(super) fn copy_metadata(
        &self,
        src: BorrowedFd<'_>,
        st: &Stat,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        dst: BorrowedFd<'_>,
    ) -> Result<()> {
        sys::fchown(dst, Some(st.st_uid), Some(st.st_gid))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            // After chown, which clears set-id bits.
            sys::fchmod(dst, st.st_mode & 0o7777)?;
        }
        self.copy_xattrs(src, dst)?;
        sys::utimensat(
            dir,
            name,
            Some(sys::timespec(st.st_atime, st.st_atime_nsec)),
            Some(sys::timespec(st.st_mtime, st.st_mtime_nsec)),
        )
    }

    /// Copy every xattr but the overlay's private ones.
    pub(super) fn copy_xattrs(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
        let names = match sys::listxattr(src) {
            Ok(n) => n,
            Err(e) if e == Errno::EOPNOTSUPP || e == Errno::EPERM => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in names {
            if !self.xattr.copy_on_copy_up(&name) {
                continue;
            }
            let value = match sys::getxattr(src, &name) {
                Ok(v) => v,
                Err(e) if e == Errno::ENODATA => continue,
                Err(e) => return Err(e),
            };
            match sys::setxattr(dst, &name, &value, 0) {
                Ok(()) => {}
                // ACLs and security labels must follow, or access would change
                // (the kernel's ovl_must_copy_xattr); others are best effort.
                Err(e) if (e == Errno::EOPNOTSUPP || e == Errno::EPERM) && !must_copy(&name) => {
                    tracing::warn!(?name, %e, "xattr not copied up");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What a copy is made from.
struct CopySource<'a> {
    /// The object copied (its metadata and xattrs).
    src: BorrowedFd<'a>,
    /// Where a regular file's data is (below a metacopy file: elsewhere).
    data: Option<BorrowedFd<'a>>,
    st: &'a Stat,
    how: CopyUp,
    /// The overlay.origin value to record, if any.
    origin: Option<Vec<u8>>,
    /// The overlay.metacopy value (`how == Meta`).
    meta_value: &'a [u8],
}

/// Where a node's data is after a copy-up of kind `how`.
fn set_data_state(node: &Node, how: CopyUp, lower: &super::node::LowerEntry) {
    let mut state = node.state.write().unwrap();
    if how == CopyUp::Meta {
        // The data stays where it was: the lower file, or what a lower
        // metacopy file pointed to.
        if !state.metacopy {
            state.data = Some(lower.clone());
        }
        state.metacopy = true;
    } else {
        state.metacopy = false;
        state.data = None;
    }
}

fn must_copy(name: &OsStr) -> bool {
    let n = name.as_encoded_bytes();
    n == b"system.posix_acl_access"
        || n == b"system.posix_acl_default"
        || n.starts_with(b"security.")
}

/// Copy `len` bytes: reflink if the filesystem can; else, as the kernel's
/// ovl_copy_up_file, in 1 MiB chunks, skipping a hole wherever a chunk starts
/// in one (holes inside a chunk are copied as zeros, as the kernel does, so
/// SEEK_HOLE answers the same on either).
pub(super) fn copy_data(
    input: BorrowedFd<'_>,
    input_dev: u64,
    out: BorrowedFd<'_>,
    len: u64,
) -> Result<()> {
    if len == 0 || try_clone(input, input_dev, out) {
        return Ok(());
    }
    let mut pos = 0u64;
    let mut data_pos: i64 = -1;
    let mut skip_holes = true;
    while pos < len {
        if skip_holes && data_pos < pos as i64 {
            match sys::lseek(input, pos as i64, libc::SEEK_DATA) {
                Ok(d) if d as u64 > pos => {
                    pos = d as u64;
                    continue;
                }
                Ok(d) => data_pos = d,
                Err(e) if e == Errno::ENXIO => break, // only a hole remains
                Err(_) => skip_holes = false,
            }
        }
        let end = (pos + CHUNK as u64).min(len);
        if copy_range(input, out, pos, end)? < end {
            break; // the source ended early
        }
        pos = end;
    }
    // The size, where a hole (or a short source) left it short.
    if pos < len {
        sys::ftruncate(out, len)?;
    }
    Ok(())
}

/// Source filesystems (st_dev) that cannot reflink into the upper: asked
/// once, not on every copy-up.
static NO_REFLINK: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn try_clone(input: BorrowedFd<'_>, input_dev: u64, out: BorrowedFd<'_>) -> bool {
    if NO_REFLINK.lock().unwrap().contains(&input_dev) {
        return false;
    }
    match sys::ficlone(out, input) {
        Ok(()) => true,
        Err(e) => {
            // Not this pair of filesystems (other errors may pass: try again).
            if e == Errno::EOPNOTSUPP || e == Errno::EXDEV || e == Errno::EINVAL {
                let mut v = NO_REFLINK.lock().unwrap();
                if !v.contains(&input_dev) {
                    v.push(input_dev);
                }
            }
            false
        }
    }
}

/// Copy bytes [from, to) at the same offsets; where the copy ended (short
/// of `to` if the source ended first).
pub(super) fn copy_range(
    input: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    from: u64,
    to: u64,
) -> Result<u64> {
    let mut off = from;
    let mut use_cfr = true;
    let mut buf = Vec::new();
    while off < to {
        let want = ((to - off) as usize).min(CHUNK);
        if use_cfr {
            match sys::copy_file_range(input, off, out, off, want) {
                Ok(0) => return Ok(off),
                Ok(n) => {
                    off += n as u64;
                    continue;
                }
                Err(_) => use_cfr = false,
            }
        }
        if buf.is_empty() {
            buf = vec![0u8; CHUNK.min(1 << 20)];
        }
        let n = sys::pread(input, &mut buf[..want.min(1 << 20)], off)?;
        if n == 0 {
            return Ok(off);
        }
        let mut done = 0;
        while done < n {
            done += sys::pwrite(out, &buf[done..n], off + done as u64)?;
        }
        off += n as u64;
    }
    Ok(off)
}
