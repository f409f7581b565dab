//! rename(2) and renameat2 with RENAME_NOREPLACE and RENAME_EXCHANGE.
//!
//! As the kernel's ovl_rename: every check that can fail is made before the
//! upper layer changes; then the objects and both parents are copied up
//! (without directory locks held), the locks taken, the checks made again,
//! and one real renameat2 does the move. A lower name left behind gets a
//! whiteout in the same step (RENAME_WHITEOUT, or an exchange with a whiteout
//! already at the target); a pure upper directory moved into a merged one is
//! marked opaque first. Directories that come from a lower layer cannot move
//! without redirect_dir: EXDEV, as the kernel says.

use crate::format::redirect::Redirect;
use crate::format::xattr::OvlXattr;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::dir::lock_pair;
use super::lookup::Resolved;
use super::node::{Node, RealRef};
use super::remove_tree;
use super::{Errno, Overlay, Result};
use crate::params::RedirectDir;
use crate::sys;

/// One side of a rename, resolved and checked.
struct Side {
    r: Resolved,
    node: Option<Arc<Node>>,
}

struct Plan {
    src: Side,
    dst: Side,
    /// Same object under both names (hard links): nothing to do.
    same: bool,
}

impl Overlay {
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

        let plan = self.plan_rename(&op, old_name, &np, new_name, flags)?;
        if plan.same {
            return Ok(());
        }
        self.copy_up_meta(plan.src.node.as_ref().ok_or(Errno::ENOENT)?)?;
        let ofd = self.upper_dir(&op)?;
        let nfd = self.upper_dir(&np)?;
        if exchange {
            self.copy_up_meta(plan.dst.node.as_ref().ok_or(Errno::ENOENT)?)?;
        } else if let Some(d) = &plan.dst.node
            && self.is_indexed(d)
        {
            // Replaced: it loses a name, counted in its upper inode (as unlink).
            self.copy_up_meta(d)?;
        }

        let _g = lock_pair(self, &op, &np);
        let plan = self.plan_rename(&op, old_name, &np, new_name, flags)?;
        if plan.same {
            return Ok(());
        }
        let (src, dst) = (plan.src, plan.dst);
        // A parent receiving an entry with an origin may now hold an entry whose
        // inode number is not its own: mark it impure first.
        let has_origin = |r: &Resolved| {
            r.upper.as_ref().is_some_and(|(fd, _)| {
                sys::getxattr(fd.as_fd(), self.xattr.get(OvlXattr::Origin)).is_ok()
            })
        };
        if has_origin(&src.r) {
            self.set_impure(&np, nfd.as_fd())?;
        }
        if exchange && has_origin(&dst.r) {
            self.set_impure(&op, ofd.as_fd())?;
        }
        let src_node = src.node.clone().ok_or(Errno::ENOENT)?;
        // Copied up above: if the upper object is gone now, the name raced away.
        if src.r.upper.is_none() || exchange && dst.r.upper.is_none() {
            return Err(Errno::ENOENT);
        }
        let (src_dir, dst_dir) = (src.r.is_dir(), dst.r.is_dir());
        let samedir = op.ino == np.ino;
        // A directory that comes from below keeps finding its lower directories
        // through a redirect; a pure upper one moved into a merged directory must
        // not show what lies below its new name: it is marked opaque. Both before
        // the move, so no state in between shows anything else.
        if src_dir {
            self.before_dir_move(&src_node, &src.r, &op, old_name, &np, samedir)?;
        } else if src_node.is_metacopy() {
            self.before_metacopy_move(&src_node, &src.r, &op, old_name, samedir)?;
        }
        if exchange {
            let dst_node = dst.node.clone().ok_or(Errno::ENOENT)?;
            if dst_dir {
                self.before_dir_move(&dst_node, &dst.r, &np, new_name, &op, samedir)?;
            } else if dst_node.is_metacopy() {
                self.before_metacopy_move(&dst_node, &dst.r, &np, new_name, samedir)?;
            }
            sys::renameat2(
                ofd.as_fd(),
                old_name,
                nfd.as_fd(),
                new_name,
                sys::RENAME_EXCHANGE,
            )?;
            set_place(&src_node, &np, &nfd, new_name);
            set_place(&dst_node, &op, &ofd, old_name);
            return Ok(());
        }

        // Overwriting a merged (empty) directory: replace its upper with an empty
        // opaque copy first, so the real rename replaces an empty directory.
        // What the target name held loses it: keep it reachable for open files.
        if let Some(d) = &dst.node {
            self.nlink_start(d)?;
            d.pin_upper();
        }
        let cleared = if dst_dir && dst.r.upper.is_some() && !dst.r.lowers.is_empty() {
            Some(self.clear_empty(&nfd, new_name, dst.r.upper.as_ref().ok_or(Errno::EIO)?)?)
        } else {
            None
        };
        let mut rflags = 0;
        let mut drop_whiteout = false;
        if src.r.lower_positive {
            // Leave a whiteout at the old name; swap with one already at the new name.
            rflags = if dst.r.upper_whiteout {
                sys::RENAME_EXCHANGE
            } else {
                sys::RENAME_WHITEOUT
            };
        } else if src_dir && dst.r.upper_whiteout {
            // A directory cannot replace the whiteout: swap, then drop it.
            rflags = sys::RENAME_EXCHANGE;
            drop_whiteout = true;
        }
        sys::renameat2(ofd.as_fd(), old_name, nfd.as_fd(), new_name, rflags)?;
        if drop_whiteout {
            let _ = sys::unlinkat(ofd.as_fd(), old_name, false);
        }
        if let Some(tmp) = cleared {
            self.remove_work_tree(&tmp);
        }
        set_place(&src_node, &np, &nfd, new_name);
        if let Some(d) = &dst.node {
            self.nlink_end(d);
        }
        self.forget_if_gone(dst.node);
        Ok(())
    }

    /// Resolve both names and make every check the kernel makes before changing anything.
    fn plan_rename(
        &self,
        op: &Arc<Node>,
        old_name: &OsStr,
        np: &Arc<Node>,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<Plan> {
        let exchange = flags & sys::RENAME_EXCHANGE != 0;
        let src = self.resolve(op, old_name, true)?;
        if !src.visible() {
            return Err(Errno::ENOENT);
        }
        let dst = self.resolve(np, new_name, true)?;
        if dst.visible() && flags & sys::RENAME_NOREPLACE != 0 {
            return Err(Errno::EEXIST);
        }
        if exchange && !dst.visible() {
            return Err(Errno::ENOENT);
        }
        let (src_dir, dst_dir) = (src.is_dir(), dst.is_dir());
        if dst.visible() && !exchange {
            if src_dir && !dst_dir {
                return Err(Errno::ENOTDIR);
            }
            if !src_dir && dst_dir {
                return Err(Errno::EISDIR);
            }
        }
        let src_node = self.live_node(op, old_name);
        let dst_node = if dst.visible() {
            self.live_node(np, new_name)
        } else {
            None
        };
        let same = matches!((&src_node, &dst_node), (Some(s), Some(d)) if s.ino == d.ino);
        // Moving a directory into itself is caught by the VFS before we are called.
        let moves_lower_dir =
            src_dir && !src.lowers.is_empty() || exchange && dst_dir && !dst.lowers.is_empty();
        if !same && moves_lower_dir && self.cfg.redirect_dir != RedirectDir::On {
            return Err(Errno::EXDEV);
        }
        // A merged target must be empty in the union; a pure upper one is left to
        // the real rename (after the opaque mark is set, as in the kernel).
        if !same && dst_dir && !exchange && !dst.lowers.is_empty() {
            let d = dst_node.as_ref().ok_or(Errno::ENOENT)?;
            if !self.is_empty_dir(d)? {
                return Err(Errno::ENOTEMPTY);
            }
        }
        Ok(Plan {
            src: Side {
                r: src,
                node: src_node,
            },
            dst: Side {
                r: dst,
                node: dst_node,
            },
            same,
        })
    }

    /// Prepare a directory to move from `from/name` into `to`: a redirect for one
    /// with lower directories, the opaque mark for a pure upper one entering a
    /// merged directory.
    fn before_dir_move(
        &self,
        dir: &Arc<Node>,
        r: &Resolved,
        from: &Arc<Node>,
        name: &OsStr,
        to: &Arc<Node>,
        samedir: bool,
    ) -> Result<()> {
        if r.lowers.is_empty() {
            if !r.opaque && to.is_merged() {
                self.set_opaque(dir)?;
            }
            return Ok(());
        }
        let value = match self.redirect_for(r.redirect.clone(), from, name, samedir) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(()),
            // Too long for the kernel to follow: instead of failing as the kernel
            // does, bring the whole tree up, so it needs no redirect at all.
            Err(e) if e == Errno::EXDEV => return self.materialize_tree(dir),
            Err(e) => return Err(e),
        };
        let up = dir.upper()?.ok_or(Errno::EIO)?;
        sys::setxattr(
            up.as_fd(),
            self.xattr.get(OvlXattr::Redirect),
            &value.encode(),
            0,
        )
        .map_err(|_| Errno::EXDEV)
    }

    /// A metacopy file finds its data by name: moving it needs a redirect, as
    /// a directory does; too long a one, and the data is copied up instead.
    fn before_metacopy_move(
        &self,
        file: &Arc<Node>,
        r: &Resolved,
        from: &Arc<Node>,
        name: &OsStr,
        samedir: bool,
    ) -> Result<()> {
        // A hard-linked file's other names cannot share a relative redirect:
        // the kernel writes an absolute one even in place.
        let linked = file
            .data_fd()?
            .and_then(|d| sys::fstat(d.as_fd()).ok())
            .is_some_and(|st| st.st_nlink > 1);
        match self.redirect_for(r.redirect.clone(), from, name, samedir && !linked) {
            Ok(Some(v)) => {
                let up = file.upper()?.ok_or(Errno::EIO)?;
                sys::setxattr(
                    up.as_fd(),
                    self.xattr.get(OvlXattr::Redirect),
                    &v.encode(),
                    0,
                )
            }
            Ok(None) => Ok(()),
            Err(e) if e == Errno::EXDEV => self.copy_up_data(file),
            Err(e) => Err(e),
        }
    }

    /// The redirect a directory from below needs to move (None: keep its own).
    /// As the kernel's ovl_get_redirect: in the same directory, its original
    /// name; elsewhere, its absolute path in the layers, built upward from its
    /// old place through the ancestors' redirects. Too long for the kernel: EXDEV.
    pub(super) fn redirect_for(
        &self,
        own: Option<Redirect>,
        from: &Arc<Node>,
        name: &OsStr,
        samedir: bool,
    ) -> Result<Option<Redirect>> {
        let leaf = match own {
            Some(Redirect::Absolute(_)) => return Ok(None),
            Some(_) if samedir => return Ok(None),
            None if samedir => return Ok(Some(Redirect::Relative(name.to_os_string()))),
            Some(Redirect::Relative(n)) => n,
            None => name.to_os_string(),
        };
        // Components leaf first, reversed at the end.
        let mut comps = vec![leaf];
        let mut cur = Some(from.clone());
        while let Some(node) = cur {
            if node.ino == super::ROOT_INO {
                break;
            }
            let (parent, pname) = node.parent_and_name();
            let up = node.upper()?;
            match up
                .map(|u| self.read_redirect(u.as_fd()))
                .transpose()?
                .flatten()
            {
                Some(Redirect::Absolute(path)) => {
                    comps.extend(path.into_iter().rev());
                    break;
                }
                Some(Redirect::Relative(n)) => comps.push(n),
                None => comps.push(pname),
            }
            cur = parent;
        }
        comps.reverse();
        Redirect::absolute(comps)
            .map(Some)
            .map_err(|_| Errno::EXDEV)
    }

    /// Copy up everything a directory shows, recursively, then make it opaque
    /// and drop its now useless whiteouts: it no longer needs its lower
    /// directories, so it can move anywhere without a redirect and any kernel
    /// reads it. Children first, so an interruption never hides anything.
    fn materialize_tree(&self, dir: &Arc<Node>) -> Result<()> {
        let up = self.copy_up(dir)?;
        for e in self.merged_entries(dir, false)? {
            let child = self.lookup(dir.ino, &e.name)?;
            let done = self.copy_up(&child).and_then(|_| {
                if child.is_dir() {
                    self.materialize_tree(&child)
                } else {
                    Ok(())
                }
            });
            self.forget(child.ino, 1);
            done?;
        }
        self.set_opaque(dir)?;
        dir.state.write().unwrap().lowers.clear();
        for ent in sys::read_dir(up.as_fd())? {
            if ent.d_type == libc::DT_CHR
                && sys::fstatat(up.as_fd(), &ent.name)
                    .is_ok_and(|st| crate::format::whiteout::is_whiteout_stat(&st))
            {
                sys::unlinkat(up.as_fd(), &ent.name, false)?;
            }
        }
        Ok(())
    }

    /// Swap the upper directory `dir/name` (empty in the union, but holding
    /// whiteouts) for an empty opaque copy with the same owner, mode, xattrs
    /// and times, as the kernel's ovl_clear_empty. Returns the work name of the
    /// old directory, to be removed once the rename is done.
    fn clear_empty(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        old: &(OwnedFd, sys::Stat),
    ) -> Result<OsString> {
        let (old_fd, st) = old;
        let work = self.work_fd()?;
        let tmp = self.tmp_name();
        let built = (|| {
            sys::mkdirat(work.as_fd(), &tmp, st.st_mode & 0o7777)?;
            let fd = sys::openat(work.as_fd(), &tmp, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            self.copy_metadata(old_fd.as_fd(), st, work.as_fd(), &tmp, fd.as_fd())?;
            sys::setxattr(fd.as_fd(), self.xattr.get(OvlXattr::Opaque), b"y", 0)?;
            sys::renameat2(work.as_fd(), &tmp, dir.as_fd(), name, sys::RENAME_EXCHANGE)
        })();
        if let Err(e) = built {
            let _ = remove_tree(work.as_fd(), &tmp);
            return Err(e);
        }
        Ok(tmp)
    }
}

/// Record a node's new place after it moved.
/// Record a node's new place after it moved; a leaf's upper object is now
/// found under the new name in the new parent's upper directory.
fn set_place(node: &Node, parent: &Arc<Node>, parent_upper: &Arc<OwnedFd>, name: &OsStr) {
    // A moved directory's `..` is another one now (the kernel's cached copy
    // keeps the old number for it: harmless, and not worth a drop).
    node.listing_stale();
    let mut st = node.state.write().unwrap();
    st.parent = Some(parent.clone());
    st.name = name.to_os_string();
    // An indexed file's upper object is its index entry, which does not move.
    if st.index_name.is_none()
        && let Some(RealRef::At { dir, name: n, .. }) = &mut st.upper
    {
        *dir = parent_upper.clone();
        *n = name.to_os_string();
    }
}
