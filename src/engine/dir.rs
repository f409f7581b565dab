//! Namespace changes: create, mkdir, mknod, symlink, link, unlink, rmdir, rename.
//!
//! Each starts from a fresh resolution of the names involved, under the
//! parent directories' locks. Where a lower entry lies below a removed name a
//! whiteout is left; an object created over a whiteout replaces it atomically
//! (built in the workdir and exchanged), and a directory made there is opaque.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, MutexGuard};

use super::lookup::Resolved;
use super::node::Node;
use super::{Caller, Errno, Overlay, Result};
use crate::sys;

/// What to create.
pub enum NewObject<'a> {
    File { flags: i32 },
    Dir,
    Node { rdev: u64 },
    Symlink { target: &'a OsStr },
    Link { source: Arc<Node> },
}

fn lock(node: &Node) -> MutexGuard<'_, ()> {
    node.dir_lock.lock().unwrap()
}

/// Lock two directories in a fixed order (or one, if the same).
fn lock_pair<'a>(a: &'a Node, b: &'a Node) -> (MutexGuard<'a, ()>, Option<MutexGuard<'a, ()>>) {
    if a.ino == b.ino {
        (lock(a), None)
    } else if a.ino < b.ino {
        let ga = lock(a);
        (ga, Some(lock(b)))
    } else {
        let gb = lock(b);
        (lock(a), Some(gb))
    }
}

impl Overlay {
    /// Owner and mode of a new object, as inode_init_owner computes them for
    /// the overlay inode: the caller's fsuid, and the fsgid unless the parent
    /// directory is set-group-ID.
    fn new_owner(&self, caller: &Caller, parent: &Node, mode: u32) -> Result<(u32, u32, u32)> {
        let pst = parent.stat()?;
        let mut mode = mode;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            if mode & libc::S_IFMT == libc::S_IFDIR {
                mode |= libc::S_ISGID;
            } else if mode & (libc::S_ISGID | libc::S_IXGRP) == (libc::S_ISGID | libc::S_IXGRP)
                && caller.uid != 0
                && !caller.in_group(pst.st_gid)
            {
                mode &= !libc::S_ISGID;
            }
            pst.st_gid
        } else {
            caller.gid
        };
        Ok((caller.uid, gid, mode))
    }

    /// Make the object as `dir/name` (a real directory of the upper layer).
    /// Returns an open fd for new regular files.
    fn make_real(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        what: &NewObject<'_>,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<Option<OwnedFd>> {
        let perm = mode & 0o7777;
        let mut file = None;
        match what {
            NewObject::File { flags } => {
                let f = libc::O_CREAT
                    | libc::O_EXCL
                    | (flags & !(libc::O_TRUNC | libc::O_CREAT | libc::O_EXCL));
                file = Some(sys::openat(dir, name, f, perm)?);
            }
            NewObject::Dir => sys::mkdirat(dir, name, perm)?,
            NewObject::Node { rdev } => sys::mknodat(dir, name, mode, *rdev)?,
            NewObject::Symlink { target } => sys::symlinkat(target, dir, name)?,
            NewObject::Link { source } => {
                let up = source.upper().ok_or(Errno::EIO)?;
                return sys::link_fd(up.as_fd(), dir, name).map(|()| None);
            }
        }
        let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let undo = |e: Errno| {
            let _ = sys::unlinkat(dir, name, matches!(what, NewObject::Dir));
            e
        };
        sys::fchown(fd.as_fd(), Some(owner.0), Some(owner.1)).map_err(undo)?;
        if !matches!(what, NewObject::Symlink { .. }) && perm & (libc::S_ISUID | libc::S_ISGID) != 0
        {
            // chown dropped the set-id bits; the caller asked for them.
            sys::fchmod(fd.as_fd(), perm).map_err(undo)?;
        }
        Ok(file)
    }

    /// Create `name` in `parent`: the common path of create, mkdir, mknod,
    /// symlink and link. Returns the new node and, for files, an open fd.
    fn create_object(
        &self,
        caller: &Caller,
        parent_ino: u64,
        name: &OsStr,
        what: NewObject<'_>,
        mode: u32,
    ) -> Result<(Arc<Node>, Option<OwnedFd>)> {
        self.check_writable()?;
        let parent = self.node(parent_ino)?;
        let _g = lock(&parent);
        let r = self.resolve(&parent, name, false)?;
        if r.visible() {
            return Err(Errno::EEXIST);
        }
        if let NewObject::Link { source } = &what {
            self.copy_up(source)?;
        }
        let pfd = self.upper_dir(&parent)?;
        let (uid, gid, mode) = self.new_owner(caller, &parent, mode)?;
        let file = if r.upper_whiteout {
            // Build it in the workdir and swap it with the whiteout in one step.
            let work = self.work_fd()?;
            let tmp = self.tmp_name();
            let file = self.make_real(work.as_fd(), &tmp, &what, mode, (uid, gid))?;
            let swapped = (|| {
                if matches!(what, NewObject::Dir) {
                    let fd = sys::openat(work.as_fd(), &tmp, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
                    sys::setxattr(fd.as_fd(), &self.xattr.opaque(), b"y", 0)?;
                }
                sys::renameat2(work.as_fd(), &tmp, pfd.as_fd(), name, sys::RENAME_EXCHANGE)
            })();
            if let Err(e) = swapped {
                let _ = super::remove_tree(work.as_fd(), &tmp);
                return Err(e);
            }
            self.remove_work_tree(&tmp);
            file
        } else {
            self.make_real(pfd.as_fd(), name, &what, mode, (uid, gid))?
        };
        let node = match &what {
            NewObject::Link { source } => {
                self.nodes.add_lookup(source);
                source.clone()
            }
            _ => {
                let r = self.resolve(&parent, name, false)?;
                if !r.visible() {
                    return Err(Errno::EIO);
                }
                self.node_for(&parent, name, r)
            }
        };
        Ok((node, file))
    }

    pub fn mkdir(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Result<Arc<Node>> {
        let mode = libc::S_IFDIR | (mode & 0o7777);
        Ok(self
            .create_object(caller, parent, name, NewObject::Dir, mode)?
            .0)
    }

    pub fn mknod(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> Result<Arc<Node>> {
        // A 0/0 character device is a whiteout: the overlay never lets one be made.
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return Err(Errno::EPERM);
        }
        Ok(self
            .create_object(caller, parent, name, NewObject::Node { rdev }, mode)?
            .0)
    }

    pub fn symlink(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<Arc<Node>> {
        let mode = libc::S_IFLNK | 0o777;
        Ok(self
            .create_object(caller, parent, name, NewObject::Symlink { target }, mode)?
            .0)
    }

    pub fn link(&self, ino: u64, parent: u64, name: &OsStr) -> Result<Arc<Node>> {
        let source = self.node(ino)?;
        if source.is_dir() {
            return Err(Errno::EPERM);
        }
        let what = NewObject::Link { source };
        Ok(self.create_object(&Caller::ROOT, parent, name, what, 0)?.0)
    }

    /// Create and open a regular file.
    pub fn create(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Arc<Node>, u64)> {
        let mode = libc::S_IFREG | (mode & 0o7777);
        let (node, file) =
            self.create_object(caller, parent, name, NewObject::File { flags }, mode)?;
        let file = file.ok_or(Errno::EIO)?;
        let fh = self.register_open(node.clone(), flags, file, true);
        Ok((node, fh))
    }

    // ---- removal -------------------------------------------------------------

    /// Replace `pfd/name` with a whiteout, or remove it where nothing lies below.
    /// Returns the removed upper object's fd for bookkeeping.
    fn remove_entry(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        r: &Resolved,
        is_dir: bool,
    ) -> Result<()> {
        let pfd = self.upper_dir(parent)?;
        let work = self.work_fd()?;
        if r.lower_positive || !r.lowers.is_empty() {
            let wh = self.make_tmp_whiteout()?;
            let flags = if r.upper.is_some() {
                sys::RENAME_EXCHANGE
            } else {
                sys::RENAME_NOREPLACE
            };
            if let Err(e) = sys::renameat2(work.as_fd(), &wh, pfd.as_fd(), name, flags) {
                let _ = sys::unlinkat(work.as_fd(), &wh, false);
                return Err(e);
            }
            if r.upper.is_some() {
                self.remove_work_tree(&wh);
            }
        } else if is_dir {
            // A pure upper directory may still hold stale whiteouts: move it away whole.
            let tmp = self.tmp_name();
            sys::renameat2(pfd.as_fd(), name, work.as_fd(), &tmp, sys::RENAME_NOREPLACE)?;
            self.remove_work_tree(&tmp);
        } else {
            sys::unlinkat(pfd.as_fd(), name, false)?;
        }
        Ok(())
    }

    /// After an object lost a name: if it is gone for good, stop finding its node by number.
    fn forget_if_gone(&self, victim: Option<Arc<Node>>) {
        if let Some(v) = victim
            && let Some(up) = v.upper()
            && sys::fstat(up.as_fd())
                .map(|s| s.st_nlink == 0)
                .unwrap_or(true)
        {
            self.nodes.unkey(&v);
        }
    }

    /// The live node for a resolved name, if the kernel holds one.
    fn live_node(&self, parent: &Arc<Node>, name: &OsStr) -> Option<Arc<Node>> {
        let r = self.resolve(parent, name, false).ok()?;
        if !r.visible() {
            return None;
        }
        let n = self.node_for(parent, name, r);
        self.forget(n.ino, 1);
        Some(n)
    }

    pub fn unlink(&self, parent_ino: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        let parent = self.node(parent_ino)?;
        let _g = lock(&parent);
        let r = self.resolve(&parent, name, true)?;
        if !r.visible() {
            return Err(Errno::ENOENT);
        }
        if r.is_dir() {
            return Err(Errno::EISDIR);
        }
        let victim = self.live_node(&parent, name);
        self.remove_entry(&parent, name, &r, false)?;
        self.forget_if_gone(victim);
        Ok(())
    }

    pub fn rmdir(&self, parent_ino: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        let parent = self.node(parent_ino)?;
        let _g = lock(&parent);
        let r = self.resolve(&parent, name, true)?;
        if !r.visible() {
            return Err(Errno::ENOENT);
        }
        if !r.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let victim = self.live_node(&parent, name).ok_or(Errno::ENOENT)?;
        if !self.is_empty_dir(&victim)? {
            return Err(Errno::ENOTEMPTY);
        }
        self.remove_entry(&parent, name, &r, true)?;
        self.nodes.unkey(&victim);
        Ok(())
    }

    // ---- rename -------------------------------------------------------------

    pub fn rename(
        &self,
        old_parent: u64,
        old_name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.check_writable()?;
        if flags & sys::RENAME_WHITEOUT != 0
            || flags & !(sys::RENAME_NOREPLACE | sys::RENAME_EXCHANGE) != 0
            || flags & sys::RENAME_NOREPLACE != 0 && flags & sys::RENAME_EXCHANGE != 0
        {
            return Err(Errno::EINVAL);
        }
        let exchange = flags & sys::RENAME_EXCHANGE != 0;
        let op = self.node(old_parent)?;
        let np = self.node(new_parent)?;
        let _g = lock_pair(&op, &np);
        let src = self.resolve(&op, old_name, true)?;
        if !src.visible() {
            return Err(Errno::ENOENT);
        }
        let dst = self.resolve(&np, new_name, true)?;
        if dst.visible() && flags & sys::RENAME_NOREPLACE != 0 {
            return Err(Errno::EEXIST);
        }
        if exchange && !dst.visible() {
            return Err(Errno::ENOENT);
        }
        let src_dir = src.is_dir();
        let dst_dir = dst.is_dir();
        if dst.visible() && !exchange {
            if src_dir && !dst_dir {
                return Err(Errno::ENOTDIR);
            }
            if !src_dir && dst_dir {
                return Err(Errno::EISDIR);
            }
        }
        let src_node = self.live_node(&op, old_name).ok_or(Errno::ENOENT)?;
        let dst_node = if dst.visible() {
            self.live_node(&np, new_name)
        } else {
            None
        };
        if let Some(d) = &dst_node
            && d.ino == src_node.ino
        {
            return Ok(()); // same object (hard links): nothing to do
        }
        // Moving a directory into itself is caught by the VFS before we are called.
        if src_dir && !src.lowers.is_empty() || exchange && dst_dir && !dst.lowers.is_empty() {
            return Err(Errno::EXDEV);
        }
        // A merged target must be empty in the union; a pure upper one is left
        // to the real rename (after the opaque mark is set, as in the kernel).
        if dst_dir && !exchange && !dst.lowers.is_empty() {
            let d = dst_node.as_ref().ok_or(Errno::ENOENT)?;
            if !self.is_empty_dir(d)? {
                return Err(Errno::ENOTEMPTY);
            }
        }
        self.copy_up(&src_node)?;
        if let Some(d) = &dst_node
            && exchange
        {
            self.copy_up(d)?;
        }
        let ofd = self.upper_dir(&op)?;
        let nfd = self.upper_dir(&np)?;
        let work = self.work_fd()?;

        if exchange {
            sys::renameat2(
                ofd.as_fd(),
                old_name,
                nfd.as_fd(),
                new_name,
                sys::RENAME_EXCHANGE,
            )?;
            // A pure upper directory moved into a merged one must not show what lies below.
            if src_dir && !src.opaque && np.is_merged() {
                self.set_opaque(&src_node)?;
            }
            if dst_dir && !dst.opaque && op.is_merged() {
                self.set_opaque(dst_node.as_ref().ok_or(Errno::EIO)?)?;
            }
        } else {
            // Overwriting a merged (empty) directory: first swap it for an empty
            // opaque one, so the real rename replaces an empty directory.
            let mut cleared = None;
            if dst_dir && dst.upper.is_some() && !dst.lowers.is_empty() {
                let tmp = self.tmp_name();
                sys::mkdirat(work.as_fd(), &tmp, 0o755)?;
                sys::renameat2(
                    work.as_fd(),
                    &tmp,
                    nfd.as_fd(),
                    new_name,
                    sys::RENAME_EXCHANGE,
                )
                .inspect_err(|_| {
                    let _ = sys::unlinkat(work.as_fd(), &tmp, true);
                })?;
                cleared = Some(tmp);
            }
            let mut rflags = 0;
            let mut drop_whiteout = false;
            if src.lower_positive {
                rflags = if dst.upper_whiteout {
                    sys::RENAME_EXCHANGE
                } else {
                    sys::RENAME_WHITEOUT
                };
            } else if src_dir && dst.upper_whiteout {
                rflags = sys::RENAME_EXCHANGE;
                drop_whiteout = true;
            }
            if src_dir && !src.opaque && np.is_merged() {
                self.set_opaque(&src_node)?;
            }
            self.rename_real(&ofd, old_name, &nfd, new_name, rflags)?;
            if drop_whiteout {
                let _ = sys::unlinkat(ofd.as_fd(), old_name, false);
            }
            if let Some(tmp) = cleared {
                self.remove_work_tree(&tmp);
            }
        }

        {
            let mut st = src_node.state.write().unwrap();
            st.parent = Some(np.clone());
            st.name = new_name.to_os_string();
        }
        if let Some(d) = dst_node {
            if exchange {
                let mut st = d.state.write().unwrap();
                st.parent = Some(op.clone());
                st.name = old_name.to_os_string();
            } else {
                self.forget_if_gone(Some(d));
            }
        }
        Ok(())
    }

    /// renameat2 in the upper layer; RENAME_WHITEOUT falls back to an exchange
    /// with a whiteout made in the workdir where the filesystem lacks it.
    fn rename_real(
        &self,
        ofd: &OwnedFd,
        old: &OsStr,
        nfd: &OwnedFd,
        new: &OsStr,
        flags: u32,
    ) -> Result<()> {
        match sys::renameat2(ofd.as_fd(), old, nfd.as_fd(), new, flags) {
            Err(e) if flags == sys::RENAME_WHITEOUT && e == Errno::EINVAL => {
                sys::renameat2(ofd.as_fd(), old, nfd.as_fd(), new, 0)?;
                let wh = self.make_tmp_whiteout()?;
                let work = self.work_fd()?;
                sys::renameat2(work.as_fd(), &wh, ofd.as_fd(), old, sys::RENAME_NOREPLACE)
            }
            other => other,
        }
    }

    fn set_opaque(&self, dir: &Node) -> Result<()> {
        let up = dir.upper().ok_or(Errno::EIO)?;
        sys::setxattr(up.as_fd(), &self.xattr.opaque(), b"y", 0)?;
        dir.state.write().unwrap().opaque = true;
        Ok(())
    }
}
