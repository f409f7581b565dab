//! `ovlfs reset`: back to the factory state (OpenWrt's firstboot), keeping
//! chosen paths (as sysupgrade's keep list).
//!
//! The new upper is built beside the old one (`.U.reset-new`, same parent,
//! same filesystem): kept entries are hard-linked into it (whiteouts,
//! opaque and redirect marks of kept subtrees included), their parent
//! directories recreated with the old owners, modes, times and origins but
//! without opaque or redirect marks (so the lower layers show around what is
//! kept). Then one RENAME_EXCHANGE swaps it with the old upper, and the old
//! one (now `.U.reset-old`) and the workdir's contents are removed. An
//! interruption leaves the old upper or the new one in place, never a mix;
//! what it left beside the upper (and a workdir not yet emptied) is cleared
//! by running the reset again.

use crate::format::xattr::OvlXattr;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use super::layers::{ToolError, io_err, link_tree, open_dir, sibling};
use crate::engine::{Errno, remove_tree};
use crate::format::xattr::XattrNames;
use crate::sys;

/// What a reset did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Kept paths found in the upper (and kept).
    pub kept: Vec<PathBuf>,
    /// Kept paths the upper did not have (nothing to keep).
    pub absent: Vec<PathBuf>,
}

/// Read a keep file: one path per line; blank lines and `#` comments ignored.
pub fn read_keep_file(path: &Path) -> Result<Vec<PathBuf>, ToolError> {
    let text = std::fs::read(path).map_err(|e| ToolError::Io {
        path: path.to_path_buf(),
        what: "cannot read the keep file",
        errno: Errno::from(e),
    })?;
    Ok(text
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(|l| PathBuf::from(OsString::from_vec(l.to_vec())))
        .collect())
}

/// The components of a kept path, inside the layer: no `..`, no empty path.
fn components(keep: &Path) -> Result<Vec<OsString>, ToolError> {
    let mut out = Vec::new();
    for c in keep.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_os_string()),
            _ => {
                return Err(ToolError::Io {
                    path: keep.to_path_buf(),
                    what: "a kept path may not contain '..'",
                    errno: Errno::EINVAL,
                });
            }
        }
    }
    Ok(out)
}

/// Reset `upper` and `work`, keeping `keep` (paths in the merged view).
pub fn reset(
    upper: &Path,
    work: &Path,
    keep: &[PathBuf],
    userxattr: bool,
) -> Result<ResetReport, ToolError> {
    let xattr = XattrNames::new(userxattr);
    let old = open_dir(upper)?;
    let work_fd = open_dir(work)?;
    let (parent_path, new_name) = sibling(upper, ".reset-new")?;
    let (_, old_name) = sibling(upper, ".reset-old")?;
    let parent = open_dir(&parent_path)?;
    let upper_name = upper
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    // Leftovers of an interrupted reset.
    for n in [&new_name, &old_name] {
        remove_tree(parent.as_fd(), n).map_err(io_err(
            &parent_path,
            "cannot remove a leftover of an earlier reset",
        ))?;
    }
    // The new root: the old root's owner, mode, times and non-overlay xattrs.
    let root_st = sys::fstat(old.as_fd()).map_err(io_err(upper, "cannot stat"))?;
    sys::mkdirat(parent.as_fd(), &new_name, 0o700)
        .map_err(io_err(&parent_path, "cannot create the new upper"))?;
    let new = sys::openat(
        parent.as_fd(),
        &new_name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(io_err(&parent_path, "cannot open the new upper"))?;
    let new_path = parent_path.join(&new_name);
    copy_dir_attrs(&xattr, old.as_fd(), new.as_fd(), &root_st, true)
        .map_err(io_err(&new_path, "cannot set attributes"))?;

    let mut report = ResetReport::default();
    for k in keep {
        let comps = components(k)?;
        if comps.is_empty() {
            continue;
        }
        if keep_one(&xattr, old.as_fd(), new.as_fd(), &comps).map_err(io_err(
            &upper.join(k.strip_prefix("/").unwrap_or(k)),
            "cannot keep",
        ))? {
            report.kept.push(k.clone());
        } else {
            report.absent.push(k.clone());
        }
    }
    let _ = sys::utimensat(
        parent.as_fd(),
        &new_name,
        Some(sys::timespec(root_st.st_atime, root_st.st_atime_nsec)),
        Some(sys::timespec(root_st.st_mtime, root_st.st_mtime_nsec)),
    );
    // The switch: one step.
    sys::renameat2(
        parent.as_fd(),
        &new_name,
        parent.as_fd(),
        &upper_name,
        sys::RENAME_EXCHANGE,
    )
    .map_err(io_err(upper, "cannot swap in the new upper"))?;
    sys::renameat2(
        parent.as_fd(),
        &new_name,
        parent.as_fd(),
        &old_name,
        sys::RENAME_NOREPLACE,
    )
    .map_err(io_err(&new_path, "cannot move the old upper aside"))?;
    remove_tree(parent.as_fd(), &old_name).map_err(io_err(
        &parent_path.join(&old_name),
        "cannot remove the old upper",
    ))?;
    // The workdir: scratch, index and incompat marks all go.
    for e in sys::read_dir(work_fd.as_fd()).map_err(io_err(work, "cannot read"))? {
        remove_tree(work_fd.as_fd(), &e.name)
            .map_err(io_err(&work.join(&e.name), "cannot remove"))?;
    }
    Ok(report)
}

/// Owner, mode and xattrs of a directory onto another; the overlay's opaque
/// and redirect marks (and on the root every overlay xattr) are left out.
fn copy_dir_attrs(
    x: &XattrNames,
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    st: &libc::stat,
    root: bool,
) -> Result<(), Errno> {
    sys::fchown(to, Some(st.st_uid), Some(st.st_gid))?;
    sys::fchmod(to, st.st_mode & 0o7777)?;
    let skip = [x.get(OvlXattr::Opaque), x.get(OvlXattr::Redirect)];
    for name in sys::listxattr(from).unwrap_or_default() {
        if skip.contains(&name.as_os_str())
            || root && name.as_bytes().starts_with(x.prefix().as_bytes())
        {
            continue;
        }
        if let Ok(v) = sys::getxattr(from, &name) {
            sys::setxattr(to, &name, &v, 0)?;
        }
    }
    Ok(())
}

/// Keep `old/comps` in `new`: parents recreated, the entry hard-linked (a
/// directory recreated and its contents kept whole). False if it is absent.
fn keep_one(
    x: &XattrNames,
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    comps: &[OsString],
) -> Result<bool, Errno> {
    let mut from: OwnedFd = sys::openat(old, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let mut to: OwnedFd = sys::openat(new, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let (last, dirs) = comps.split_last().expect("not empty");
    for c in dirs {
        let st = match sys::fstatat(from.as_fd(), c) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => st,
            Ok(_) | Err(_) => return Ok(false),
        };
        let sub_from = sys::openat(
            from.as_fd(),
            c,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        match sys::mkdirat(to.as_fd(), c, 0o700) {
            Ok(()) => {
                let fd = sys::openat(
                    to.as_fd(),
                    c,
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                copy_dir_attrs(x, sub_from.as_fd(), fd.as_fd(), &st, false)?;
                let _ = sys::utimensat(
                    to.as_fd(),
                    c,
                    Some(sys::timespec(st.st_atime, st.st_atime_nsec)),
                    Some(sys::timespec(st.st_mtime, st.st_mtime_nsec)),
                );
            }
            Err(e) if e == Errno::EEXIST => {}
            Err(e) => return Err(e),
        }
        to = sys::openat(
            to.as_fd(),
            c,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        from = sub_from;
    }
    match sys::fstatat(from.as_fd(), last) {
        Ok(_) => {}
        Err(e) if e == Errno::ENOENT => return Ok(false),
        Err(e) => return Err(e),
    }
    link_tree(from.as_fd(), last, to.as_fd())?;
    Ok(true)
}
