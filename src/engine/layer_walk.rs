//! Walking inside one lower layer: what a lookup searches for below (a name
//! in the parent's lower directories, or a path from the layer roots after
//! an absolute redirect), and the walk of such a path as the kernel's
//! `ovl_lookup_layer` makes it: every intermediate directory is looked up
//! as a name is (whiteouts and non-directories end the whole lookup, an
//! opaque one ends it after this layer, a redirect rewrites the path for the
//! layers below), and no step leaves the layer (`check_component`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::lookup::{dir_is_opaque, probe};
use super::node::LowerEntry;
use super::{Errno, Overlay, Result};
use crate::format::redirect::{Redirect, check_component};
use crate::format::whiteout;
use crate::sys;

/// What the lower layers are searched for.
#[derive(Clone)]
pub(super) enum Below {
    /// This name in the parent's lower directories.
    Name(OsString),
    /// This path from each lower layer's root (an absolute redirect).
    Path(Vec<OsString>),
}

impl Below {
    /// Where a redirect leads: a relative one replaces the last component, an
    /// absolute one starts again from the layer roots.
    pub(super) fn redirected(self, v: &Redirect) -> Below {
        match (v, self) {
            (Redirect::Absolute(comps), _) => Below::Path(comps.clone()),
            (Redirect::Relative(n), Below::Name(_)) => Below::Name(n.clone()),
            (Redirect::Relative(n), Below::Path(mut comps)) => {
                *comps.last_mut().expect("paths are never empty") = n.clone();
                Below::Path(comps)
            }
        }
    }
}

/// How far a lookup still goes down the layers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Stop {
    No,
    /// An opaque directory on the way: this layer is the last searched.
    AfterThisLayer,
    /// A whiteout or a non-directory on the way: nothing more is searched.
    Now,
}

/// A directory of a lower layer: one a node holds, or one walked to for a path.
pub(super) enum LayerDir {
    Held(Arc<OwnedFd>),
    Walked(OwnedFd),
}

impl LayerDir {
    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            LayerDir::Held(fd) => fd.as_fd(),
            LayerDir::Walked(fd) => fd.as_fd(),
        }
    }
}

/// Walk directories from a layer's `root` without following symlinks or
/// leaving it, with no overlay semantics on the way (data-only layers): a
/// component the kernel's lookup refuses (`..`, `.`, empty) is EACCES, as
/// there. `None`: some component is missing or not a directory.
pub(super) fn walk_dirs(root: BorrowedFd<'_>, comps: &[OsString]) -> Result<Option<OwnedFd>> {
    let mut cur = sys::openat(root, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    for c in comps {
        check_component(c)?;
        cur = match sys::openat(
            cur.as_fd(),
            c,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) if not_there(e) => return Ok(None),
            Err(e) => return Err(e),
        };
    }
    Ok(Some(cur))
}

/// Errors of a lookup in a layer that mean "nothing here" (a name too long
/// for the layer is not found, as in the kernel; a symlink or file on the way
/// ends the walk).
fn not_there(e: Errno) -> bool {
    e == Errno::ENOENT || e == Errno::ENAMETOOLONG || e == Errno::ENOTDIR || e == Errno::ELOOP
}

fn is_dir(st: &sys::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl Overlay {
    /// The directory of lower layer `layer` in which `below` is looked up,
    /// and the name to look up there. A path is walked with the overlay's
    /// rules ([`Overlay::walk_path`]), which may rewrite it and set `stop`.
    pub(super) fn layer_dir(
        &self,
        layer: usize,
        plowers: &[LowerEntry],
        below: &mut Below,
        stop: &mut Stop,
    ) -> Result<Option<(LayerDir, OsString)>> {
        Ok(match below {
            Below::Name(n) => plowers
                .iter()
                .find(|e| e.layer == layer)
                .map(|e| e.fd())
                .transpose()?
                .map(|fd| (LayerDir::Held(fd), n.clone())),
            Below::Path(comps) => self
                .walk_path(layer, plowers, comps, stop)?
                .map(|fd| (LayerDir::Walked(fd), comps[comps.len() - 1].clone())),
        })
    }

    /// The directory of `layer` holding the last component of an absolute
    /// lookup path, each directory on the way looked up as the kernel's
    /// `ovl_lookup_single` looks up one that is not the last element. A
    /// redirect met on the way rewrites `comps` (the rest of this layer's
    /// walk goes on below the directory found, the layers below follow the
    /// new path).
    pub(super) fn walk_path(
        &self,
        layer: usize,
        plowers: &[LowerEntry],
        comps: &mut Vec<OsString>,
        stop: &mut Stop,
    ) -> Result<Option<OwnedFd>> {
        let root = self.lowers[layer].root.as_fd();
        let mut cur = sys::openat(root, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let last = self.last_layer(layer, plowers);
        let mut i = 0;
        while i + 1 < comps.len() {
            let name = comps[i].clone();
            let Some((fd, st)) = probe(cur.as_fd(), &name)? else {
                if sys::fstatat(cur.as_fd(), &whiteout::wh_name(&name)).is_ok() {
                    *stop = Stop::Now;
                }
                return Ok(None);
            };
            if !is_dir(&st) || whiteout::is_whiteout_at(&self.xattr, cur.as_fd(), &name, &st) {
                *stop = Stop::Now;
                return Ok(None);
            }
            // `.wh.NAME` beside it: NAME is hidden in the layers below.
            if *stop == Stop::No && sys::fstatat(cur.as_fd(), &whiteout::wh_name(&name)).is_ok() {
                *stop = Stop::AfterThisLayer;
            }
            if !last {
                if dir_is_opaque(&self.xattr, fd.as_fd(), true) {
                    *stop = Stop::AfterThisLayer;
                } else if let Some(v) = self.read_redirect(fd.as_fd())? {
                    self.refuse_redirect(true)?;
                    match v {
                        Redirect::Absolute(new) => {
                            let rest = comps.split_off(i + 1);
                            *comps = new;
                            i = comps.len() - 1;
                            comps.extend(rest);
                            *stop = Stop::No;
                        }
                        Redirect::Relative(n) => comps[i] = n,
                    }
                }
            }
            cur = fd;
            i += 1;
        }
        Ok(Some(cur))
    }
}
