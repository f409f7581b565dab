//! Namespace changes: create, mkdir, mknod, symlink, link, unlink, rmdir, rename.
//!
//! Each starts from a fresh resolution of the names involved, under the
//! parent directories' locks. Where a lower entry lies below a removed name a
//! whiteout is left; an object created over a whiteout replaces it atomically
//! (built in the workdir and exchanged), and a directory made there is opaque.

use crate::format::xattr::OvlXattr;
use std::ffi::{OsStr, OsString};
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

pub(super) fn lock(node: &Node) -> MutexGuard<'_, ()> {
    node.dir_lock.lock().unwrap()
}

/// A directory's lock held for a change to its names: on release (still
/// under the lock, before the kernel hears of the change) its listings
/// become stale, ours and any the kernel cached.
pub(super) struct Changing<'a> {
    ovl: &'a Overlay,
    node: &'a Node,
    _lock: MutexGuard<'a, ()>,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        if self.node.names_changed() {
            self.ovl.listing_changed(self.node.ino);
        }
    }
}

pub(super) fn lock_for_change<'a>(ovl: &'a Overlay, node: &'a Node) -> Changing<'a> {
    Changing {
        _lock: lock(node),
        ovl,
        node,
    }
}

/// Lock two directories for a change, in a fixed order (or one, if the same).
pub(super) fn lock_pair<'a>(
    ovl: &'a Overlay,
    a: &'a Node,
    b: &'a Node,
) -> (Changing<'a>, Option<Changing<'a>>) {
    if a.ino == b.ino {
        (lock_for_change(ovl, a), None)
    } else if a.ino < b.ino {
        let ga = lock_for_change(ovl, a);
        (ga, Some(lock_for_change(ovl, b)))
    } else {
        let gb = lock_for_change(ovl, b);
        (lock_for_change(ovl, a), Some(gb))
    }
}

/// The xattr of a directory's default POSIX ACL.
const DEFAULT_ACL: &str = "system.posix_acl_default";

/// Where a new object is built in the workdir: `W/work/TMP` itself, or,
/// where the upper parent has a default ACL, `W/work/TMP/o` inside a
/// directory carrying the same default ACL, so the filesystem applies it as
/// it would have in place.
struct BuildPlace<'a> {
    work: &'a OwnedFd,
    tmp: &'a OsStr,
    dir: OwnedFd,
    name: OsString,
}

impl<'a> BuildPlace<'a> {
    fn new(work: &'a OwnedFd, tmp: &'a OsStr, default_acl: Option<&[u8]>) -> Result<Self> {
        let Some(acl) = default_acl else {
            let dir = work.try_clone().map_err(Errno::from)?;
            return Ok(BuildPlace {
                work,
                tmp,
                dir,
                name: tmp.to_os_string(),
            });
        };
        sys::mkdirat(work.as_fd(), tmp, 0o700)?;
        let made = sys::openat(work.as_fd(), tmp, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .and_then(|d| sys::setxattr(d.as_fd(), OsStr::new(DEFAULT_ACL), acl, 0).map(|()| d));
        let place = |dir| BuildPlace {
            work,
            tmp,
            dir,
            name: "o".into(),
        };
        made.map(place).inspect_err(|_| {
            let _ = super::remove_tree(work.as_fd(), tmp);
        })
    }

    /// Remove what was built (after a failure).
    fn discard(&self) {
        let _ = super::remove_tree(self.work.as_fd(), self.tmp);
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
        owner: Option<(u32, u32)>,
    ) -> Result<Option<OwnedFd>> {
        let perm = mode & 0o7777;
        let mut file = None;
        match what {
            NewObject::File { flags } => {
                let f = libc::O_CREAT
                    | libc::O_EXCL
                    | (super::file::real_flags(*flags) & !libc::O_TRUNC);
                file = Some(sys::openat(dir, name, f, perm)?);
            }
            NewObject::Dir => sys::mkdirat(dir, name, perm)?,
            NewObject::Node { rdev } => sys::mknodat(dir, name, mode, *rdev)?,
            NewObject::Symlink { target } => sys::symlinkat(target, dir, name)?,
            NewObject::Link { source } => {
                let up = source.upper()?.ok_or(Errno::EIO)?;
                return sys::link_fd(up.as_fd(), dir, name).map(|()| None);
            }
        }
        let Some((uid, gid)) = owner else {
            return Ok(file);
        };
        let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let undo = |e: Errno| {
            let _ = sys::unlinkat(dir, name, matches!(what, NewObject::Dir));
            e
        };
        sys::fchown(fd.as_fd(), Some(uid), Some(gid)).map_err(undo)?;
        if !matches!(what, NewObject::Symlink { .. }) && perm & (libc::S_ISUID | libc::S_ISGID) != 0
        {
            // chown dropped the set-id bits; the caller asked for them. The
            // permission bits stay as made (a default ACL may have masked them).
            let made = sys::fstat(fd.as_fd()).map_err(undo)?.st_mode & 0o777;
            sys::fchmod(fd.as_fd(), made | (perm & 0o7000)).map_err(undo)?;
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
        // Copy-ups first, without any directory lock held (copy-up takes the
        // parent's lock itself for its final rename); a link to a name that
        // exists must not copy its source up. (Other creates come after the
        // kernel found the name absent: the check under the lock suffices.)
        if let NewObject::Link { source } = &what {
            if self.resolve(&parent, name, false)?.visible() {
                return Err(Errno::EEXIST);
            }
            self.copy_up_meta(source)?;
            self.set_link_redirect(source)?;
        }
        let pfd = self.upper_dir(&parent)?;
        let _g = lock_for_change(self, &parent);
        let r = self.resolve(&parent, name, false)?;
        if r.visible() {
            return Err(Errno::EEXIST);
        }
        let (uid, gid, mode) = self.new_owner(caller, &parent, mode)?;
        // The parent's default ACL decides the new object's permissions, as
        // the layer's filesystem applies it; without one, the caller's umask.
        let inherit = match self.cfg.acl {
            true => sys::getxattr(pfd.as_fd(), OsStr::new(DEFAULT_ACL)).ok(),
            false => None,
        };
        let mode = match inherit {
            Some(_) => mode,
            None => mode & !(caller.umask & 0o777),
        };
        if let NewObject::Link { source } = &what {
            self.nlink_start(source)?;
        }
        // A new name for an object with an origin: the directory now holds an
        // entry whose inode number is not its own.
        if let NewObject::Link { source } = &what
            && let Some(up) = source.upper()?
            && sys::getxattr(up.as_fd(), self.xattr.get(OvlXattr::Origin)).is_ok()
        {
            self.set_impure(&parent, pfd.as_fd())?;
        }
        // With features that rule out offline changes to the lower layers, the
        // kernel marks a directory made in a merged one opaque: nothing below
        // needs to be looked at ever.
        let opaque_mkdir =
            matches!(what, NewObject::Dir) && !self.allow_offline_changes() && parent.is_merged();
        // Made directly in place only when the layer gives it the right owner by
        // itself (root caller) or it has none of its own (a link); else it is
        // built in the workdir and moved in, so a crash never leaves an object
        // with the daemon's ownership at the visible path.
        let pst = parent.stat()?;
        let direct = matches!(what, NewObject::Link { .. })
            || caller.uid == 0 && (caller.gid == 0 || pst.st_mode & libc::S_ISGID != 0);
        let file = if r.upper_whiteout || !direct {
            // Build it in the workdir and swap it with the whiteout in one step.
            let work = self.work_fd()?;
            let tmp = self.tmp_name();
            let build = BuildPlace::new(work, &tmp, inherit.as_deref())?;
            let (bdir, bname) = (build.dir.as_fd(), build.name.as_os_str());
            let file = self
                .make_real(bdir, bname, &what, mode, Some((uid, gid)))
                .inspect_err(|_| build.discard())?;
            let flags = if r.upper_whiteout {
                sys::RENAME_EXCHANGE
            } else {
                sys::RENAME_NOREPLACE
            };
            let swapped = (|| {
                if (r.upper_whiteout || opaque_mkdir) && matches!(what, NewObject::Dir) {
                    let fd = sys::openat(bdir, bname, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
                    sys::setxattr(fd.as_fd(), self.xattr.get(OvlXattr::Opaque), b"y", 0)?;
                }
                sys::renameat2(bdir, bname, pfd.as_fd(), name, flags)
            })();
            if let Err(e) = swapped {
                build.discard();
                return Err(e);
            }
            if r.upper_whiteout || inherit.is_some() {
                self.remove_work_tree(&tmp);
            }
            file
        } else {
            let file = self.make_real(pfd.as_fd(), name, &what, mode, None)?;
            if opaque_mkdir
                && let Ok(fd) = sys::openat(pfd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)
            {
                // Only an optimization (nothing lies below), so failure is fine.
                let _ = sys::setxattr(fd.as_fd(), self.xattr.get(OvlXattr::Opaque), b"y", 0);
            }
            file
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

    /// A metacopy file about to get another name finds its data through an
    /// absolute redirect from then on (the kernel's ovl_set_link_redirect).
    fn set_link_redirect(&self, source: &Arc<Node>) -> Result<()> {
        if !source.is_metacopy() {
            return Ok(());
        }
        let up = source.upper()?.ok_or(Errno::EIO)?;
        let (parent, name) = source.parent_and_name();
        let parent = parent.ok_or(Errno::EIO)?;
        match self.redirect_for(self.read_redirect(up.as_fd())?, &parent, &name, false) {
            Ok(Some(v)) => sys::setxattr(
                up.as_fd(),
                self.xattr.get(OvlXattr::Redirect),
                &v.encode(),
                0,
            ),
            Ok(None) => Ok(()),
            // Too long: bring the data up instead; then no redirect is needed.
            Err(e) if e == Errno::EXDEV => self.copy_up_data(source),
            Err(e) => Err(e),
        }
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
    fn remove_entry(&self, pfd: &OwnedFd, name: &OsStr, r: &Resolved, is_dir: bool) -> Result<()> {
        let work = self.work_fd()?;
        // Whether the name itself lies below (not where a redirect leads), as the
        // kernel's ovl_lower_positive decides.
        if r.lower_positive {
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
    pub(super) fn forget_if_gone(&self, victim: Option<Arc<Node>>) {
        if let Some(v) = victim {
            let gone = match v.upper() {
                Ok(Some(up)) => sys::fstat(up.as_fd())
                    .map(|s| s.st_nlink == 0)
                    .unwrap_or(true),
                Ok(None) => false,
                // Its name no longer leads to it.
                Err(_) => true,
            };
            if gone {
                self.nodes.unkey(&v);
            }
        }
    }

    /// The live node for a resolved name, if the kernel holds one.
    pub(super) fn live_node(&self, parent: &Arc<Node>, name: &OsStr) -> Option<Arc<Node>> {
        let r = self.resolve(parent, name, false).ok()?;
        if !r.visible() {
            return None;
        }
        let n = self.node_for(parent, name, r);
        self.forget(n.ino, 1);
        Some(n)
    }

    /// The checks of unlink and rmdir, made before anything changes and again
    /// under the lock. Returns the resolution and the victim's node.
    fn check_remove(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        dir: bool,
    ) -> Result<(Resolved, Arc<Node>)> {
        let r = self.resolve(parent, name, true)?;
        if !r.visible() {
            return Err(Errno::ENOENT);
        }
        match (dir, r.is_dir()) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        let victim = self.live_node(parent, name).ok_or(Errno::ENOENT)?;
        if dir && !self.is_empty_dir(&victim)? {
            return Err(Errno::ENOTEMPTY);
        }
        Ok((r, victim))
    }

    fn remove(&self, parent_ino: u64, name: &OsStr, dir: bool) -> Result<()> {
        self.check_writable()?;
        let parent = self.node(parent_ino)?;
        let (_, victim) = self.check_remove(&parent, name, dir)?;
        // An indexed file keeps its union link count in its upper inode: give
        // this name its upper link first, so removing it counts (as the kernel).
        if !dir && self.is_indexed(&victim) {
            self.copy_up_meta(&victim)?;
        }
        let pfd = self.upper_dir(&parent)?;
        let _g = lock_for_change(self, &parent);
        let (r, victim) = self.check_remove(&parent, name, dir)?;
        self.nlink_start(&victim)?;
        victim.pin_upper();
        self.remove_entry(&pfd, name, &r, dir)?;
        self.nlink_end(&victim);
        if dir {
            self.nodes.unkey(&victim);
        } else {
            self.forget_if_gone(Some(victim));
        }
        Ok(())
    }

    pub fn unlink(&self, parent_ino: u64, name: &OsStr) -> Result<()> {
        self.remove(parent_ino, name, false)
    }

    pub fn rmdir(&self, parent_ino: u64, name: &OsStr) -> Result<()> {
        self.remove(parent_ino, name, true)
    }

    pub(super) fn set_opaque(&self, dir: &Node) -> Result<()> {
        let up = dir.upper()?.ok_or(Errno::EIO)?;
        sys::setxattr(up.as_fd(), self.xattr.get(OvlXattr::Opaque), b"y", 0)?;
        dir.state.write().unwrap().opaque = true;
        Ok(())
    }
}
