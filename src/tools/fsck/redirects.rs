//! A lower directory shown at two places of the merged view. The kernel
//! moves a merged directory by giving the new place a redirect to the lower
//! one and the old place a whiteout, so each lower directory shows at one
//! place. Shown at a redirect and again by name (the old place's whiteout
//! is missing), the kernel fails lookups with ESTALE once both are reached
//! (both claim one lower inode); shown at two redirects, there is no telling
//! which of them was moved there.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::Fsck;
use crate::errno::Errno;
use crate::sys;

/// How a merged directory comes to show a lower directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shown {
    /// An upper directory with a redirect to it.
    Redirect,
    /// An upper directory of the same name, merged with it.
    UpperByName,
    /// No upper directory; `upper_parent`: the upper directory holding the
    /// place's name, where there is one (a whiteout can go there).
    LowerOnly { upper_parent: Option<PathBuf> },
}

/// A merged directory (path within the view) showing a lower directory.
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub(super) path: PathBuf,
    pub(super) shown: Shown,
}

impl Fsck<'_> {
    /// Report every lower directory shown at more than one place.
    pub(super) fn check_places(&mut self) {
        let mut groups: Vec<Vec<Place>> = std::mem::take(&mut self.places)
            .into_values()
            .filter(|p| p.len() > 1)
            .collect();
        for g in &mut groups {
            g.sort_by(|a, b| a.path.cmp(&b.path));
        }
        groups.sort_by(|a, b| a[0].path.cmp(&b[0].path));
        for places in groups {
            let (redirects, by_name): (Vec<Place>, Vec<Place>) =
                places.into_iter().partition(|p| p.shown == Shown::Redirect);
            let Some(moved) = redirects.first() else {
                continue;
            };
            let moved_to = self.upper_path.join(&moved.path);
            for p in &redirects[1..] {
                self.hidden.push(p.path.clone());
                self.unfixable(
                    self.upper_path.join(&p.path),
                    "duplicate-redirect",
                    format!(
                        "its redirect leads to the lower directory {} redirects to too: one \
                         of them was not moved there, and which one is not known",
                        moved_to.display()
                    ),
                );
            }
            for p in by_name {
                self.hidden.push(p.path.clone());
                let path = self.upper_path.join(&p.path);
                let detail = format!(
                    "shows by name the lower directory {} was moved from (by redirect): the \
                     whiteout the move leaves here is missing",
                    moved_to.display()
                );
                match &p.shown {
                    Shown::LowerOnly {
                        upper_parent: Some(parent),
                    } => {
                        let parent = self.upper_path.join(parent);
                        let name = p.path.file_name().unwrap_or(OsStr::new("")).to_os_string();
                        self.found(path, "missing-redirect-whiteout", detail, || {
                            let dir = std::fs::File::open(&parent).map_err(Errno::from)?;
                            sys::mknodat(dir.as_fd(), &name, libc::S_IFCHR, 0)
                        });
                    }
                    Shown::UpperByName => self.unfixable(
                        path,
                        "missing-redirect-whiteout",
                        format!(
                            "{detail}; an upper directory is merged with it here, whose entries \
                             may belong to either place"
                        ),
                    ),
                    _ => self.unfixable(
                        path,
                        "missing-redirect-whiteout",
                        format!("{detail}; its parent is not in the upper layer"),
                    ),
                }
            }
        }
    }
}
