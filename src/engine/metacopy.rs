//! Metacopy: regular files whose upper (or top lower) copy holds metadata
//! only, their data still below (docs/format.md §8, §10).
//!
//! With `metacopy=on`, chmod, chown, utimes, xattr changes, link and rename
//! copy a lower file up without its data: an empty sparse file of the right
//! size carrying an empty `metacopy` xattr (and origin). Reads go to the data
//! file below, found by name or by the file's redirect, through intermediate
//! metacopy files and, for absolute redirects, the data-only layers. The data
//! is copied in place on the first open for write or truncate, then the
//! xattr is removed.

use crate::format::xattr::OvlXattr;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::layer_walk::{Below, Stop, walk_dirs};
use super::lookup::probe;
use super::node::{LowerEntry, Node};
use super::{Errno, Overlay, Result};
use crate::format::{metacopy, whiteout};
use crate::params::Verity;
use crate::sys::{self, Stat};

/// Where a metacopy file's data turned out to be.
pub(super) enum DataSearch {
    Found(usize, OwnedFd, Stat),
    /// Not in any layer, but an absolute redirect could have led to a data-only
    /// layer: the kernel looks lazily and fails the open with ENOENT.
    Missing,
}

impl Overlay {
    /// Whether a regular file carries the metacopy mark. Meeting one without
    /// `metacopy=on` is refused, as the kernel does (EPERM).
    pub(super) fn is_metacopy_file(&self, fd: BorrowedFd<'_>, st: &Stat) -> Result<bool> {
        let marked = self.has_metacopy_mark(fd, st)?;
        if marked {
            self.require_metacopy()?;
        }
        Ok(marked)
    }

    /// The mark alone (a bad size: EIO), for lookups that check a redirect
    /// before refusing metacopy files, as the kernel.
    pub(super) fn has_metacopy_mark(&self, fd: BorrowedFd<'_>, st: &Stat) -> Result<bool> {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(false);
        }
        metacopy::read(&self.xattr, fd)
    }

    /// [`Self::has_metacopy_mark`] for a lower layer's `dir/name` (read by
    /// name: the lower layers do not change under a mount).
    pub(super) fn has_metacopy_mark_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &Stat,
    ) -> Result<bool> {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(false);
        }
        metacopy::read_at(&self.xattr, dir, name)
    }

    pub(super) fn require_metacopy(&self) -> Result<()> {
        if !self.cfg.metacopy {
            tracing::warn!("refusing to follow metacopy origin (mount without metacopy=on)");
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// The `metacopy` value for a copy-up whose data stays in `data`: empty,
    /// or with the data's fs-verity digest (verity=on|require). `None`:
    /// verity=require and the data has no digest, so the data must be copied
    /// (the kernel's ovl_need_meta_copy_up).
    pub(super) fn metacopy_value(&self, data: Option<BorrowedFd<'_>>) -> Option<Vec<u8>> {
        if self.cfg.verity == Verity::Off {
            return Some(Vec::new());
        }
        match data.map(sys::measure_verity) {
            Some(Ok((algo, digest))) => Some(metacopy::encode(algo, &digest)),
            _ if self.cfg.verity == Verity::Require => None,
            _ => Some(Vec::new()),
        }
    }

    /// Before a metacopy file's data is read or copied up: with verity=on a
    /// recorded digest must match the data's fs-verity digest, with
    /// verity=require one must be recorded (the kernel's ovl_validate_verity).
    pub(super) fn validate_verity(&self, node: &Node) -> Result<()> {
        if self.cfg.verity == Verity::Off || !node.is_metacopy() {
            return Ok(());
        }
        let meta = sys::getxattr(node.top_fd()?.as_fd(), self.xattr.get(OvlXattr::Metacopy))
            .unwrap_or_default();
        let Some((want_algo, want)) = metacopy::digest(&meta)? else {
            if self.cfg.verity == Verity::Require {
                tracing::warn!("metacopy file has no digest (verity=require)");
                return Err(Errno::EIO);
            }
            return Ok(());
        };
        let data = node.data_fd()?.ok_or(Errno::EIO)?;
        match sys::measure_verity(data.as_fd()) {
            Ok((algo, digest)) if algo == want_algo && digest == want => Ok(()),
            Ok(_) => {
                tracing::warn!("lower file has the wrong fs-verity digest");
                Err(Errno::EIO)
            }
            Err(e) => {
                tracing::warn!(%e, "lower file has no fs-verity digest");
                Err(Errno::EIO)
            }
        }
    }

    /// Search the lower layers from `start` for the data of a metacopy file:
    /// the first regular file that is not metacopy itself, following redirects.
    pub(super) fn find_data(
        &self,
        plowers: &[LowerEntry],
        mut below: Below,
        start: usize,
    ) -> Result<DataSearch> {
        let mut stop = Stop::No;
        // Data-only layers are searched only below a lower metacopy file (the
        // kernel's ctr > 0): an upper one's redirect cannot lead there itself.
        let mut below_lower_metacopy = start > 0;
        for layer in start..self.lowers.len() {
            let Some((dir, leaf)) = self.layer_dir(layer, plowers, &mut below, &mut stop)? else {
                match stop {
                    Stop::No => continue,
                    _ => break,
                }
            };
            let Some((fd, st)) = probe(dir.as_fd(), &leaf)? else {
                // An opaque directory on the way: nothing below is searched.
                match stop {
                    Stop::No => continue,
                    _ => break,
                }
            };
            if st.st_mode & libc::S_IFMT != libc::S_IFREG
                || whiteout::is_xattr_whiteout(&self.xattr, dir.as_fd(), &leaf, &st)
            {
                break;
            }
            if !self.is_metacopy_file(fd.as_fd(), &st)? {
                return Ok(DataSearch::Found(layer, fd, st));
            }
            // Another metacopy file: the search goes on below it, as its own
            // redirect says (not read in the bottom layer, where it leads
            // nowhere but to data-only layers).
            stop = Stop::No;
            below_lower_metacopy = true;
            let bottom = layer + 1 == self.lowers.len() && self.data_layers.is_empty();
            if !bottom && let Some(v) = self.read_redirect(fd.as_fd())? {
                below = below.redirected(&v);
            }
        }
        // Data-only layers are reached by absolute redirects alone.
        if let Below::Path(comps) = &below
            && !self.data_layers.is_empty()
            && below_lower_metacopy
        {
            for (i, l) in self.data_layers.iter().enumerate() {
                let Some(dir) = walk_dirs(l.root.as_fd(), &comps[..comps.len() - 1])? else {
                    continue;
                };
                if let Some((fd, st)) = probe(dir.as_fd(), &comps[comps.len() - 1])?
                    && st.st_mode & libc::S_IFMT == libc::S_IFREG
                {
                    return Ok(DataSearch::Found(self.lowers.len() + i, fd, st));
                }
            }
            return Ok(DataSearch::Missing);
        }
        tracing::warn!("metacopy with no lower data found");
        Err(Errno::EIO)
    }

    /// Bring a metacopy upper file's data up, in place, then drop the mark. An
    /// interruption leaves the mark, so the data below stays the one read.
    pub(super) fn copy_up_data(&self, node: &Arc<Node>) -> Result<()> {
        let _guard = node.copy_up_lock.lock().unwrap();
        if !node.is_metacopy() {
            return Ok(());
        }
        self.validate_verity(node)?;
        let upper = node.upper()?.ok_or(Errno::EIO)?;
        let data = node.data_fd()?.ok_or(Errno::ENOENT)?;
        let size = sys::fstat(upper.as_fd())?.st_size as u64;
        let input = sys::reopen(data.as_fd(), libc::O_RDONLY)?;
        let out = sys::reopen(upper.as_fd(), libc::O_WRONLY)?;
        let dev = sys::fstat(input.as_fd())?.st_dev;
        super::copy_up::copy_data(input.as_fd(), dev, out.as_fd(), size)?;
        if self.fsync_data() {
            sys::fsync(out.as_fd(), false)?;
        }
        sys::removexattr(upper.as_fd(), self.xattr.get(OvlXattr::Metacopy))?;
        {
            let mut st = node.state.write().unwrap();
            st.metacopy = false;
            st.data = None;
        }
        self.attr_changed(node.ino);
        Ok(())
    }
}
