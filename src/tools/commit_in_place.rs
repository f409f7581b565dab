//! `ovlfs commit --in-place`: merge an upper down into its top lower layer,
//! then empty the upper (and the workdir, whose index and scratch refer to
//! the old state).
//!
//! The new top lower is built beside the old one (`.L1.commit-new`): a copy
//! of it made of hard links (unchanged files keep their inodes, so their
//! numbers and origins elsewhere stay good), with the upper's changes
//! written over it from the merged view, each changed entry replaced whole
//! (a hard-linked inode is never changed where it is). It is marked with
//! the `ovlfs.commit-in-place` xattr, flushed, and swapped with the old one
//! by one RENAME_EXCHANGE. Then the upper and workdir are emptied (`reset`:
//! itself one swap), the mark removed and the old layer deleted.
//!
//! An interruption leaves either the old state (plus a leftover beside the
//! layer, removed by the next run) or the new top lower still marked while
//! the upper is not yet empty: stacked again, the upper would apply its
//! changes twice (a moved directory's redirect would lead nowhere), so
//! running the commit again, or `ovlfs fsck -y` (`commit-interrupted`),
//! finishes the job.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::commit::{Below, CommitReport, Writer};
use super::diff::{Diff, diff};
use super::layers::{Stack, ToolError, copy_dir_meta, io_err, link_tree, open_dir, sibling};
use crate::engine::{Errno, ROOT_INO, remove_tree};
use crate::format::xattr::commit_mark;
use crate::sys;

const NEW_SUFFIX: &str = ".commit-new";

/// The mark's value: the upper merged in, by its canonical path.
fn mark_value(upper: &Path) -> Vec<u8> {
    std::fs::canonicalize(upper)
        .unwrap_or_else(|_| upper.to_path_buf())
        .into_os_string()
        .into_encoded_bytes()
}

/// Whether the top lower `l1` carries the mark of an in-place commit of
/// `upper` that did not empty it yet. (A mark naming another upper is not
/// this one's to finish.)
pub fn interrupted(l1: &Path, upper: &Path, userxattr: bool) -> bool {
    open_dir(l1).is_ok_and(|fd| {
        sys::getxattr(fd.as_fd(), &commit_mark(userxattr)).is_ok_and(|v| v == mark_value(upper))
    })
}

/// Finish an interrupted in-place commit: empty the upper and workdir,
/// unmark the top lower, remove the old layer beside it.
pub fn finish(upper: &Path, work: &Path, l1: &Path, userxattr: bool) -> Result<(), ToolError> {
    super::reset::reset(upper, work, &[], userxattr)?;
    let fd = open_dir(l1)?;
    match sys::removexattr(fd.as_fd(), &commit_mark(userxattr)) {
        Ok(()) => {}
        Err(e) if e == Errno::ENODATA => {}
        Err(e) => return Err(io_err(l1, "cannot remove the commit mark")(e)),
    }
    remove_leftover(l1)
}

fn remove_leftover(l1: &Path) -> Result<(), ToolError> {
    let (parent_path, tmp) = sibling(l1, NEW_SUFFIX)?;
    let parent = open_dir(&parent_path)?;
    remove_tree(parent.as_fd(), &tmp).map_err(io_err(&parent_path.join(&tmp), "cannot remove"))
}

/// Merge `upper` into `lowers[0]` (over the rest of `lowers`), then empty
/// `upper` and `work`.
pub fn commit_in_place(
    upper: &Path,
    work: &Path,
    lowers: &[PathBuf],
    userxattr: bool,
) -> Result<CommitReport, ToolError> {
    let Some((l1, below)) = lowers.split_first() else {
        return Err(io_err(upper, "--in-place needs a lower layer")(
            Errno::EINVAL,
        ));
    };
    if interrupted(l1, upper, userxattr) {
        tracing::warn!(layer = %l1.display(), "finishing an interrupted in-place commit first");
        finish(upper, work, l1, userxattr)?;
        return Ok(CommitReport::default());
    }
    let (parent_path, tmp) = sibling(l1, NEW_SUFFIX)?;
    let parent = open_dir(&parent_path)?;
    let l1_fd = open_dir(l1)?;
    let (pst, lst) = (
        sys::fstat(parent.as_fd()).map_err(io_err(&parent_path, "cannot stat"))?,
        sys::fstat(l1_fd.as_fd()).map_err(io_err(l1, "cannot stat"))?,
    );
    if pst.st_dev != lst.st_dev {
        return Err(io_err(
            l1,
            "is a mount point: --in-place swaps the layer with a new one beside it",
        )(Errno::EXDEV));
    }
    remove_tree(parent.as_fd(), &tmp).map_err(io_err(&parent_path, "cannot remove a leftover"))?;
    let tmp_path = parent_path.join(&tmp);
    sys::mkdirat(parent.as_fd(), &tmp, 0o700).map_err(io_err(&tmp_path, "cannot create"))?;
    let result = (|| {
        let new = sys::openat(
            parent.as_fd(),
            &tmp,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(io_err(&tmp_path, "cannot open"))?;
        let copy = io_err(&tmp_path, "cannot hard-link a copy of the layer");
        for e in sys::read_dir(l1_fd.as_fd()).map_err(&copy)? {
            link_tree(l1_fd.as_fd(), &e.name, new.as_fd()).map_err(&copy)?;
        }
        copy_dir_meta(l1_fd.as_fd(), new.as_fd(), &lst).map_err(&copy)?;

        let stack = Stack {
            upper,
            work: Some(work),
            lowers,
            userxattr,
        };
        let changes = diff(&stack)?;
        let view = stack.view()?;
        let below_roots = below
            .iter()
            .map(|l| open_dir(l))
            .collect::<Result<Vec<_>, _>>()?;
        let into = sys::openat(new.as_fd(), OsStr::new("."), libc::O_PATH, 0)
            .map_err(io_err(&tmp_path, "cannot open"))?;
        let mut w = Writer::new(
            view,
            into,
            &tmp_path,
            Some(Below {
                view: Diff::new(userxattr, &below_roots, upper),
                roots: &below_roots,
            }),
        );
        w.write_changes(&changes)?;
        let root = w.merged_root_attrs(ROOT_INO)?;
        let report = w.finish()?;
        let _ = sys::fchown(new.as_fd(), Some(root.st_uid), Some(root.st_gid));
        let _ = sys::fchmod(new.as_fd(), root.st_mode & 0o7777);
        sys::setxattr(new.as_fd(), &commit_mark(userxattr), &mark_value(upper), 0)
            .map_err(io_err(&tmp_path, "cannot mark the new layer"))?;
        let rd: OwnedFd = sys::reopen(new.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(io_err(&tmp_path, "cannot open"))?;
        sys::syncfs(rd.as_fd()).map_err(io_err(&tmp_path, "cannot flush"))?;
        Ok(report)
    })();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = remove_tree(parent.as_fd(), &tmp);
            return Err(e);
        }
    };
    let name = l1.file_name().unwrap_or(OsStr::new(""));
    sys::renameat2(
        parent.as_fd(),
        &tmp,
        parent.as_fd(),
        name,
        sys::RENAME_EXCHANGE,
    )
    .map_err(io_err(l1, "cannot swap in the merged layer"))?;
    // The swap on disk before the upper is emptied (it may be on another
    // filesystem): never an empty upper over the old layer.
    let parent_rd = sys::reopen(parent.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(io_err(&parent_path, "cannot open"))?;
    sys::fsync(parent_rd.as_fd(), false).map_err(io_err(&parent_path, "cannot flush"))?;
    // From here on the new layer is in place and marked: what is left is
    // finished by a second run or by fsck.
    finish(upper, work, l1, userxattr)?;
    Ok(report)
}
