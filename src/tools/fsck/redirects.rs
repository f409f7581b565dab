//! A lower directory shown at two places of the merged view. The kernel
//! moves a merged directory by giving the new place a redirect to the lower
//! one and the old place a whiteout, so each lower directory shows at one
//! place. Shown at a redirect and again by name (the old place's whiteout
//! is missing), the kernel fails lookups with ESTALE once both are reached
//! (both claim one lower inode); shown at two redirects, there is no telling
//! which of them was moved there.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::Fsck;
use crate::errno::Errno;
use crate::sys;
use crate::tools::commit::Writer;
use crate::tools::layers::{Stack, ToolError, io_err, open_dir};

/// Replace the upper directory `rel` by a plain opaque copy of what the
/// mount shows there (its own entries and what its redirect brings from
/// below), built in W/work and swapped in with RENAME_EXCHANGE, so an
/// interruption leaves the old directory or the new one. Hard links to
/// files outside it are split.
fn materialize(s: &Stack<'_>, work: &Path, rel: &Path) -> Result<(), ToolError> {
    let view = s.view()?;
    let work_path = work.join("work");
    let work = open_dir(&work_path)?;
    let tmp = std::ffi::OsString::from(format!("#fsck-{}", std::process::id()));
    let _ = crate::fsutil::remove_tree(work.as_fd(), &tmp);
    let mut w = Writer::new(
        view,
        work.try_clone()
            .map_err(|e| io_err(&work_path, "cannot open")(e.into()))?,
        &work_path,
        None,
    );
    let built = w.write_tree(rel, &tmp).and_then(|()| w.finish().map(drop));
    let swapped = built.and_then(|()| {
        let at = work_path.join(&tmp);
        let fd = sys::openat(work.as_fd(), &tmp, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(io_err(&at, "cannot open"))?;
        let opaque = crate::format::xattr::XattrNames::new(s.userxattr);
        sys::setxattr(
            fd.as_fd(),
            opaque.get(crate::format::xattr::OvlXattr::Opaque),
            b"y",
            0,
        )
        .map_err(io_err(&at, "cannot mark opaque"))?;
        let parent = s.upper.join(rel.parent().unwrap_or(Path::new("")));
        let pfd = open_dir(&parent)?;
        let pst = sys::fstat(pfd.as_fd()).map_err(io_err(&parent, "cannot stat"))?;
        let name = rel.file_name().unwrap_or_default();
        sys::renameat2(work.as_fd(), &tmp, pfd.as_fd(), name, sys::RENAME_EXCHANGE)
            .map_err(io_err(&s.upper.join(rel), "cannot swap in the copy"))?;
        // The swap changed the parent's times; the view's stay as they were.
        let _ = sys::futimens_path(
            pfd.as_fd(),
            Some(sys::timespec(pst.st_atime, pst.st_atime_nsec)),
            Some(sys::timespec(pst.st_mtime, pst.st_mtime_nsec)),
        );
        Ok(())
    });
    // The copy (failed) or the old directory (swapped out).
    let _ = crate::fsutil::remove_tree(work.as_fd(), &tmp);
    swapped
}

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
                let path = self.upper_path.join(&p.path);
                let detail = format!(
                    "its redirect leads to the lower directory {} redirects to too: one of \
                     them was not moved there, and which one is not known",
                    moved_to.display()
                );
                let Some(work) = self.work_path else {
                    self.unfixable(
                        path,
                        "duplicate-redirect",
                        detail + " (repair needs workdir=)",
                    );
                    continue;
                };
                let stack = Stack {
                    upper: self.upper_path,
                    work: Some(work),
                    lowers: self.lower_paths,
                    userxattr: self.userxattr,
                };
                let detail = detail + "; the repair copies what it shows into the upper";
                self.found(path, "duplicate-redirect", detail, || {
                    materialize(&stack, work, &p.path).map_err(|e| {
                        tracing::warn!(%e, "materializing a redirected directory");
                        match e {
                            ToolError::Io { errno, .. } => errno,
                            _ => Errno::EIO,
                        }
                    })
                });
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
