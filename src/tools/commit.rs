//! `ovlfs commit`: an upper layer as a new lower layer (the `docker commit`
//! step), or a whole stack flattened into one directory.
//!
//! The merged view is read through the engine itself (the upper mounted
//! read-only as the top lower layer), so redirects, metacopy files,
//! whiteouts and opaque directories mean exactly what they mean to a mount.
//! - commit: every path `diff` reports is written into NEW from the merged
//!   view: added and changed entries as plain objects (a moved directory
//!   with everything it brought, a metacopy file with its real data),
//!   deleted ones as 0/0 whiteouts. No redirect, metacopy, origin, impure or
//!   nlink xattrs are left; stacked as `NEW:L1:L2` it shows the same view.
//! - flatten: the whole merged view, no whiteouts.
//!
//! Hard links inside the written tree stay hard links. NEW must not exist
//! yet; it is built as `.NEW.commit-tmp` and renamed into place at the end.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::diff::{Change, ChangeKind, Diff, diff, root_dirs};
use super::layers::{Stack, ToolError, io_err, open_dir, sibling};
use super::view::View;
use crate::engine::{Errno, ROOT_INO};
use crate::format::xattr::{TRUSTED_PREFIX, USER_PREFIX};
use crate::sys;

/// How much was written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub entries: usize,
    pub whiteouts: usize,
    pub bytes: u64,
}

pub(super) struct Writer<'a> {
    view: View,
    into: OwnedFd,
    into_path: &'a Path,
    /// `--in-place`: the tree written into is a copy of the top lower layer,
    /// and these are the layers under it.
    below: Option<Below<'a>>,
    /// Inode number shown by a hard-linked file → where it was written first.
    links: HashMap<u64, PathBuf>,
    report: CommitReport,
    /// Directories written, with the times to give them at the end.
    dir_times: Vec<(PathBuf, (libc::timespec, libc::timespec))>,
    /// Entries written so far, on a terminal.
    progress: indicatif::ProgressBar,
}

/// The layers under the top lower, for `--in-place`: whether a deletion
/// needs a whiteout there.
pub(super) struct Below<'a> {
    pub(super) view: Diff<'a>,
    pub(super) roots: &'a [OwnedFd],
}

impl<'a> Writer<'a> {
    pub(super) fn new(
        view: View,
        into: OwnedFd,
        into_path: &'a Path,
        below: Option<Below<'a>>,
    ) -> Self {
        Writer {
            view,
            into,
            into_path,
            below,
            links: HashMap::new(),
            report: CommitReport::default(),
            dir_times: Vec::new(),
            progress: super::progress::bar(None, "commit: entries written"),
        }
    }

    fn err(&self, rel: &Path, what: &'static str) -> impl Fn(Errno) -> ToolError + use<> {
        let path = self.into_path.join(rel);
        move |errno| ToolError::Io {
            path: path.clone(),
            what,
            errno,
        }
    }

    /// The directory `rel` in NEW, made (with the merged view's attributes) if missing.
    fn dir_in_new(&mut self, rel: &Path) -> Result<OwnedFd, ToolError> {
        let mut cur = sys::openat(self.into.as_fd(), OsStr::new("."), libc::O_PATH, 0)
            .map_err(self.err(rel, "cannot open"))?;
        let mut sofar = PathBuf::new();
        for c in rel.components() {
            sofar.push(c);
            let name = c.as_os_str();
            if sys::fstatat(cur.as_fd(), name).is_err() {
                let ino = self
                    .view
                    .resolve(&sofar)
                    .map_err(self.err(&sofar, "not in the merged view"))?;
                self.write_entry(cur.as_fd(), name, ino, &sofar, false)?;
            }
            cur = sys::openat(
                cur.as_fd(),
                name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(self.err(&sofar, "cannot open"))?;
        }
        Ok(cur)
    }

    /// Write merged node `ino` as `dir/name`; with `deep`, a directory's whole
    /// merged contents too.
    fn write_entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        ino: u64,
        rel: &Path,
        deep: bool,
    ) -> Result<(), ToolError> {
        let a = self
            .view
            .ovl
            .getattr(ino)
            .map_err(self.err(rel, "cannot stat in the merged view"))?;
        let st = a.stat;
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            // By the number shown: the names of a lower hard link are
            // different nodes showing one number (index=off).
            if let Some(first) = self.links.get(&a.st_ino).cloned() {
                let src = sys::openat(
                    self.into.as_fd(),
                    first.as_os_str(),
                    libc::O_PATH | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(self.err(&first, "cannot open"))?;
                sys::link_fd(src.as_fd(), dir, name).map_err(self.err(rel, "cannot link"))?;
                self.report.entries += 1;
                return Ok(());
            }
            self.links.insert(a.st_ino, rel.to_path_buf());
        }
        let e = self.err(rel, "cannot create");
        match kind {
            libc::S_IFDIR => match sys::mkdirat(dir, name, 0o700) {
                Ok(()) => {}
                Err(x) if x == Errno::EEXIST => {}
                Err(x) => return Err(e(x)),
            },
            libc::S_IFLNK => {
                let target = self
                    .view
                    .ovl
                    .readlink(ino)
                    .map_err(self.err(rel, "cannot read the link"))?;
                sys::symlinkat(&target, dir, name).map_err(e)?;
            }
            libc::S_IFREG => {
                let out = sys::openat(
                    dir,
                    name,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600,
                )
                .map_err(e)?;
                self.copy_data(ino, out.as_fd(), rel)?;
            }
            _ => sys::mknodat(dir, name, st.st_mode, st.st_rdev).map_err(e)?,
        }
        self.report.entries += 1;
        self.progress.inc(1);
        let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(self.err(rel, "cannot open"))?;
        sys::fchown(fd.as_fd(), Some(st.st_uid), Some(st.st_gid))
            .map_err(self.err(rel, "cannot chown"))?;
        if kind != libc::S_IFLNK {
            sys::fchmod(fd.as_fd(), st.st_mode & 0o7777).map_err(self.err(rel, "cannot chmod"))?;
        }
        for (x, v) in self.view.xattrs(ino) {
            sys::setxattr(fd.as_fd(), &x, &v, 0).map_err(self.err(rel, "cannot set an xattr"))?;
        }
        if deep && kind == libc::S_IFDIR {
            let sub = sys::openat(
                dir,
                name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(self.err(rel, "cannot open"))?;
            self.write_children(sub.as_fd(), ino, rel)?;
        }
        let times = (
            sys::timespec(st.st_atime, st.st_atime_nsec),
            sys::timespec(st.st_mtime, st.st_mtime_nsec),
        );
        if kind == libc::S_IFDIR {
            // Set once nothing more is written inside.
            self.dir_times.push((rel.to_path_buf(), times));
            return Ok(());
        }
        sys::utimensat(dir, name, Some(times.0), Some(times.1))
            .map_err(self.err(rel, "cannot set times"))
    }

    fn write_children(
        &mut self,
        dir: BorrowedFd<'_>,
        ino: u64,
        rel: &Path,
    ) -> Result<(), ToolError> {
        let names = self
            .view
            .children(ino)
            .map_err(self.err(rel, "cannot list"))?;
        for name in names {
            let child = self
                .view
                .lookup_child(ino, &name)
                .map_err(self.err(&rel.join(&name), "cannot look up"))?;
            let r = self.write_entry(dir, &name, child, &rel.join(&name), true);
            self.view.ovl.forget(child, 1);
            r?;
        }
        Ok(())
    }

    /// The whole merged tree at `from` (a path in the view) as `name` in the
    /// directory written into.
    pub(super) fn write_tree(&mut self, from: &Path, name: &OsStr) -> Result<(), ToolError> {
        let ino = self
            .view
            .resolve(from)
            .map_err(self.err(from, "not in the merged view"))?;
        let into = self
            .into
            .try_clone()
            .map_err(|e| self.err(from, "cannot open")(e.into()))?;
        let r = self.write_entry(into.as_fd(), name, ino, Path::new(name), true);
        self.view.release_held();
        r
    }

    /// The merged view's attributes of `ino`.
    pub(super) fn merged_root_attrs(&self, ino: u64) -> Result<sys::Stat, ToolError> {
        Ok(self
            .view
            .ovl
            .getattr(ino)
            .map_err(self.err(Path::new(""), "cannot stat the merged root"))?
            .stat)
    }

    /// Directories' times (deepest first: setting one changes none above);
    /// the report.
    pub(super) fn finish(mut self) -> Result<CommitReport, ToolError> {
        self.progress.finish_and_clear();
        let mut dirs = std::mem::take(&mut self.dir_times);
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, (atime, mtime)) in dirs {
            sys::utimensat(self.into.as_fd(), rel.as_os_str(), Some(atime), Some(mtime))
                .map_err(self.err(&rel, "cannot set times"))?;
        }
        Ok(self.report)
    }

    /// Write the changes `diff` reported, each from the merged view.
    pub(super) fn write_changes(&mut self, changes: &[Change]) -> Result<(), ToolError> {
        for c in changes {
            let rel = c.path.strip_prefix("/").unwrap_or(&c.path).to_path_buf();
            let (Some(pdir), Some(name)) = (rel.parent(), rel.file_name()) else {
                continue;
            };
            let dir = self.dir_in_new(pdir)?;
            let existing = sys::fstatat(dir.as_fd(), name).ok();
            match c.kind {
                ChangeKind::Deleted => {
                    if let Some(st) = existing.filter(|_| self.below.is_some()) {
                        // In place: what the top lower had there goes.
                        self.remove(dir.as_fd(), name, &st, &rel)?;
                    }
                    if self.below.is_none() || self.below_shows(pdir, name) {
                        sys::mknodat(dir.as_fd(), name, libc::S_IFCHR, 0)
                            .map_err(self.err(&rel, "cannot create a whiteout"))?;
                        self.report.whiteouts += 1;
                    }
                }
                _ => {
                    let ino = self
                        .view
                        .resolve(&rel)
                        .map_err(self.err(&rel, "not in the merged view"))?;
                    // A changed directory keeps its own entries in place;
                    // what changed inside comes as separate paths.
                    match existing {
                        None => self.write_entry(dir.as_fd(), name, ino, &rel, false)?,
                        Some(_) if self.below.is_none() => {}
                        Some(st) => self.replace(dir.as_fd(), name, ino, &rel, &st)?,
                    }
                }
            }
            self.view.release_held();
        }
        Ok(())
    }

    /// In place: merged node `ino` over what the top lower's copy has at
    /// `dir/name`. Non-directories are never changed where they are (they
    /// are hard links to the old layer's inodes): replaced whole.
    fn replace(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        ino: u64,
        rel: &Path,
        st: &sys::Stat,
    ) -> Result<(), ToolError> {
        let new_is_dir = self
            .view
            .ovl
            .getattr(ino)
            .map_err(self.err(rel, "cannot stat in the merged view"))?
            .stat
            .st_mode
            & libc::S_IFMT
            == libc::S_IFDIR;
        let was_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if was_dir && new_is_dir {
            // Its attributes from the merged view; overlay xattrs (opaque)
            // stay, they still decide what shows from below.
            let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
                .map_err(self.err(rel, "cannot open"))?;
            let keep: Vec<_> = self.view.xattrs(ino).into_iter().map(|(n, _)| n).collect();
            for x in sys::listxattr(fd.as_fd()).unwrap_or_default() {
                let overlay = [TRUSTED_PREFIX, USER_PREFIX]
                    .iter()
                    .any(|p| x.as_bytes().starts_with(p.as_bytes()));
                if !overlay && !keep.contains(&x) {
                    sys::removexattr(fd.as_fd(), &x)
                        .map_err(self.err(rel, "cannot remove an xattr"))?;
                }
            }
            return self.write_entry(dir, name, ino, rel, false);
        }
        self.remove(dir, name, st, rel)?;
        self.write_entry(dir, name, ino, rel, false)?;
        if new_is_dir && !was_dir {
            // A directory where the layer had a whiteout or a file: what the
            // layers below have there stayed hidden, and must stay so.
            let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
                .map_err(self.err(rel, "cannot open"))?;
            let opaque = self.below.as_ref().map(|b| b.view.opaque_name());
            if let Some(o) = opaque {
                sys::setxattr(fd.as_fd(), o, b"y", 0)
                    .map_err(self.err(rel, "cannot mark opaque"))?;
            }
        }
        Ok(())
    }

    fn remove(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &sys::Stat,
        rel: &Path,
    ) -> Result<(), ToolError> {
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            crate::engine::remove_tree(dir, name).map_err(self.err(rel, "cannot remove"))
        } else {
            sys::unlinkat(dir, name, false).map_err(self.err(rel, "cannot remove"))
        }
    }

    /// In place: whether the layers under the top lower show `name` in
    /// `parent` (then a deletion needs a whiteout), given the opaque
    /// directories of the layer being written.
    fn below_shows(&self, parent: &Path, name: &OsStr) -> bool {
        let Some(b) = &self.below else { return true };
        let Ok(mut cur) = sys::openat(self.into.as_fd(), OsStr::new("."), libc::O_PATH, 0) else {
            return true;
        };
        let mut view = root_dirs(b.roots);
        for c in parent.components() {
            if b.view.is_opaque(cur.as_fd(), false) {
                return false;
            }
            view = b.view.lower_children(&view, c.as_os_str());
            match sys::openat(
                cur.as_fd(),
                c.as_os_str(),
                libc::O_PATH | libc::O_NOFOLLOW,
                0,
            ) {
                Ok(fd) => cur = fd,
                Err(_) => return true,
            }
        }
        !b.view.is_opaque(cur.as_fd(), false) && b.view.lower_has(&view, name)
    }

    fn copy_data(&mut self, ino: u64, out: BorrowedFd<'_>, rel: &Path) -> Result<(), ToolError> {
        let n = self
            .view
            .read_data(ino, &mut |buf, off| {
                let mut done = 0;
                while done < buf.len() {
                    match sys::pwrite(out, &buf[done..], off + done as u64)? {
                        0 => return Err(Errno::EIO),
                        n => done += n,
                    }
                }
                Ok(())
            })
            .map_err(self.err(rel, "cannot copy the data"))?;
        self.report.bytes += n;
        Ok(())
    }
}

/// Write the changes of `upper` over `lowers` (or, with `flatten`, the whole
/// merged view of `lowers`) into the new directory `into`.
pub fn commit(
    upper: Option<&Path>,
    work: Option<&Path>,
    lowers: &[PathBuf],
    into: &Path,
    userxattr: bool,
) -> Result<CommitReport, ToolError> {
    if std::fs::symlink_metadata(into).is_ok() {
        return Err(ToolError::Io {
            path: into.to_path_buf(),
            what: "already exists (commit writes a new directory)",
            errno: Errno::EEXIST,
        });
    }
    let stack = upper.map(|upper| Stack {
        upper,
        work,
        lowers,
        userxattr,
    });
    let view = match &stack {
        Some(s) => s.view()?,
        None => View::new(lowers, userxattr)?,
    };
    let (parent_path, tmp) = sibling(into, ".commit-tmp")?;
    let parent = open_dir(&parent_path)?;
    crate::engine::remove_tree(parent.as_fd(), &tmp)
        .map_err(io_err(&parent_path, "cannot remove a leftover"))?;
    sys::mkdirat(parent.as_fd(), &tmp, 0o755).map_err(io_err(&parent_path, "cannot create"))?;
    let tmp_fd = sys::openat(
        parent.as_fd(),
        &tmp,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(io_err(&parent_path, "cannot open"))?;
    let tmp_path = parent_path.join(&tmp);
    let mut w = Writer::new(view, tmp_fd, &tmp_path, None);
    let root_attr = w
        .view
        .ovl
        .getattr(ROOT_INO)
        .map_err(io_err(&tmp_path, "cannot stat the merged root"))?;
    match stack {
        None => {
            let root = sys::openat(w.into.as_fd(), OsStr::new("."), libc::O_PATH, 0)
                .map_err(io_err(&tmp_path, "cannot open"))?;
            w.write_children(root.as_fd(), ROOT_INO, Path::new(""))?;
        }
        Some(stack) => w.write_changes(&diff(&stack)?)?,
    }
    let st = root_attr.stat;
    let root = sys::openat(w.into.as_fd(), OsStr::new("."), libc::O_PATH, 0)
        .map_err(io_err(&tmp_path, "cannot open"))?;
    let _ = sys::fchown(root.as_fd(), Some(st.st_uid), Some(st.st_gid));
    let _ = sys::fchmod(root.as_fd(), st.st_mode & 0o7777);
    let report = w.finish()?;
    let name = into.file_name().unwrap_or(OsStr::new(""));
    sys::renameat2(
        parent.as_fd(),
        &tmp,
        parent.as_fd(),
        name,
        sys::RENAME_NOREPLACE,
    )
    .map_err(io_err(into, "cannot move the new layer into place"))?;
    Ok(report)
}
