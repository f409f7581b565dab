//! The index entries of hard-linked lower files against the view: how many
//! names show each one (its upper hard links, and the lower file's names
//! that show from below and are not linked up yet), and what its `nlink`
//! xattr says, read as the kernel's ovl_get_nlink reads it.
//!
//! An entry no name shows is an orphan: the kernel removes one at mount when
//! no upper name is linked to it and its count reads zero (ovl_verify_index),
//! and keeps one whose count says names are left that are not, for good.
//! A count that disagrees with the view is rewritten as the kernel writes it
//! (ovl_set_nlink_upper: `U` and the difference to the upper link count); a
//! missing or invalid one too, rather than letting the kernel drop an entry
//! whose data lower names still show.

use crate::format::xattr::OvlXattr;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::{Fsck, Key};
use crate::format::nlink;
use crate::sys;

/// An index entry whose origin is a live lower file.
pub(super) struct IndexEntry {
    pub(super) name: OsString,
    pub(super) path: PathBuf,
    /// The lower file's identity.
    pub(super) lower: Key,
    pub(super) lower_nlink: u64,
    /// The entry's own link count: the entry and the upper names linked to it.
    pub(super) upper_nlink: u64,
}

impl Fsck<'_> {
    /// Judge the index entries once the walk has counted the lower names.
    pub(super) fn check_indexed(&mut self) {
        let Some(index) = self.index_dir.as_ref().and_then(|d| d.try_clone().ok()) else {
            return;
        };
        let nlink_name = self.x.get(OvlXattr::Nlink);
        for e in std::mem::take(&mut self.indexed) {
            let shown_below = self.aliases.get(&e.lower).map_or(0, |dirs| {
                dirs.iter()
                    .filter(|d| !self.hidden.iter().any(|h| d.starts_with(h)))
                    .count() as u64
            });
            let upper_names = e.upper_nlink - 1;
            let union = upper_names + shown_below;
            let idx = index.as_fd();
            let Ok(fd) = sys::openat(idx, &e.name, libc::O_PATH | libc::O_NOFOLLOW, 0) else {
                continue;
            };
            // ovl_get_nlink: the lower file must still be hard-linked, the
            // value valid and above zero, else the kernel falls back.
            let recorded = (e.lower_nlink > 1)
                .then(|| sys::getxattr(fd.as_fd(), nlink_name).ok())
                .flatten()
                .and_then(|v| nlink::union(&v, e.upper_nlink, Some(e.lower_nlink)));
            let name = e.name.clone();
            if union == 0 {
                self.found(
                    e.path,
                    "index-orphan",
                    "no name shows it: no upper name is linked to it and no name of its lower \
                     file shows from below"
                        .into(),
                    || sys::unlinkat(idx, &name, false),
                );
            } else if upper_names == 0 && e.lower_nlink == 1 {
                // The kernel's ovl_verify_index removes it at mount: with one
                // lower link its count is not even read.
                self.found(
                    e.path,
                    "index-orphan",
                    format!(
                        "no upper name is linked to it and its lower file has one link left (the \
                         kernel removes it at mount; {shown_below} lower name(s) show the lower file)"
                    ),
                    || sys::unlinkat(idx, &name, false),
                );
            } else if e.lower_nlink > 1 && recorded != Some(union) {
                let shown = recorded.map_or("nothing valid".into(), |n| n.to_string());
                let value = nlink::encode(nlink::NlinkBase::Upper, union, e.upper_nlink);
                self.found(
                    e.path,
                    "index-nlink",
                    format!(
                        "its nlink xattr says {shown}, but {union} names show it ({upper_names} \
                         upper, {shown_below} lower not linked up yet)"
                    ),
                    || sys::setxattr(fd.as_fd(), nlink_name, value.as_bytes(), 0),
                );
            }
        }
    }
}
