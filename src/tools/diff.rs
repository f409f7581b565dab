//! `ovlfs diff`: what an upper layer changes relative to its lower layers, as
//! `docker diff` prints it: `A` added, `C` changed, `D` deleted.
//!
//! The upper layer is walked; every entry is compared with what the lower
//! stack has at the same path (following the upper's redirects, honouring
//! whiteouts and opaque directories as the mount does: 0/0 devices and
//! xattr whiteouts in every layer, the OCI `.wh.` forms in lower layers
//! only, where ovlfs honours them; in the upper they are plain names):
//! - a whiteout of a name the lowers have: `D`;
//! - an entry the lowers have too: `C` (a directory in the upper exists
//!   because something in it, or it, changed);
//! - an entry they do not have: `A`, and so is everything shown below an
//!   added directory (a directory moved here with a redirect brings its
//!   lower contents along);
//! - an opaque directory over a lower one: `C`, and `D` for every lower
//!   entry it hides that the upper does not have again; the same below an
//!   opaque or moved directory, where what shows from below is not what
//!   the path held before.
//!
//! Deleted directories are reported once, not entry by entry, as docker does.

use crate::format::xattr::OvlXattr;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::layers::{Stack, ToolError, io_err, open_dir};
use crate::engine::ROOT_INO;
use crate::errno::Errno;
use crate::format::redirect::{Redirect, check_component};
use crate::format::whiteout::{self, WH_OPAQUE};
use crate::format::xattr::XattrNames;
use crate::sys::{self, Stat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path, absolute within the merged view (`/a/b`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

/// A directory of a lower layer merged at some path.
pub(super) struct LowerDir {
    pub(super) fd: OwnedFd,
}

pub(super) struct Diff<'a> {
    xattr: XattrNames,
    lower_roots: &'a [OwnedFd],
    upper_path: &'a Path,
    out: Vec<Change>,
    /// Opaque upper directories over a lower directory.
    opaque_dirs: Vec<PathBuf>,
    /// The workdir's index is at hand: index=on hard links can be followed.
    follow_index: bool,
    /// The upper holds index=on hard links (their other names are found
    /// after the walk).
    index_links: bool,
}

fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn open_sub(dir: BorrowedFd<'_>, name: &OsStr) -> Option<OwnedFd> {
    sys::openat(
        dir,
        name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .ok()
}

/// Whether two lists of lower directories are the same directories.
fn same_dirs(a: &[LowerDir], b: &[LowerDir]) -> bool {
    let ids = |v: &[LowerDir]| -> Vec<Option<(u64, u64)>> {
        v.iter()
            .map(|d| {
                sys::fstat(d.fd.as_fd())
                    .ok()
                    .map(|st| (st.st_dev, st.st_ino))
            })
            .collect()
    };
    a.len() == b.len() && ids(a) == ids(b)
}

/// The lower layers' roots, as the lower directories merged at `/`.
pub(super) fn root_dirs(roots: &[OwnedFd]) -> Vec<LowerDir> {
    roots
        .iter()
        .filter_map(|r| open_sub(r.as_fd(), OsStr::new(".")))
        .map(|fd| LowerDir { fd })
        .collect()
}

/// List the changes the stack's upper makes to its lowers.
pub fn diff(stack: &Stack<'_>) -> Result<Vec<Change>, ToolError> {
    Ok(diff_and_opaque(stack)?.0)
}

/// The changes, and the upper's opaque directories over lower ones (an OCI
/// layer marks those opaque rather than deleting what they hide one by one).
pub(super) fn diff_and_opaque(stack: &Stack<'_>) -> Result<(Vec<Change>, Vec<PathBuf>), ToolError> {
    let upper_fd = open_dir(stack.upper)?;
    let lower_roots = stack
        .lowers
        .iter()
        .map(|l| open_dir(l))
        .collect::<Result<Vec<_>, _>>()?;
    let mut d = Diff::new(stack.userxattr, &lower_roots, stack.upper);
    d.follow_index = stack.index_work().is_some();
    let (view, source) = (root_dirs(&lower_roots), root_dirs(&lower_roots));
    d.walk(upper_fd.as_fd(), Path::new("/"), &view, &source)?;
    if d.index_links {
        index_copies(stack, upper_fd.as_fd(), &mut d.out)?;
    }
    d.out.sort();
    d.out.dedup();
    Ok((d.out, d.opaque_dirs))
}

/// index=on: the names of a hard-linked lower file not linked up yet show
/// the copy another name brought up: changed, though the upper has nothing
/// at their path. Found by walking the merged view.
fn index_copies(
    stack: &Stack<'_>,
    upper: BorrowedFd<'_>,
    out: &mut Vec<Change>,
) -> Result<(), ToolError> {
    let view = stack.view()?;
    let mut dirs = vec![(ROOT_INO, PathBuf::from("/"))];
    while let Some((ino, path)) = dirs.pop() {
        let at = stack.upper.join(path.strip_prefix("/").unwrap_or(&path));
        let names = view
            .children(ino)
            .map_err(io_err(&at, "cannot list in the merged view"))?;
        for name in names {
            let p = path.join(&name);
            let Ok(child) = view.lookup_child(ino, &name) else {
                continue;
            };
            match view.ovl.getattr(child) {
                Ok(a) if a.stat.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    dirs.push((child, p));
                    continue;
                }
                Ok(_) if view.shows_index_copy(child) => {
                    let rel = p.strip_prefix("/").unwrap_or(&p);
                    if sys::fstatat(upper, rel.as_os_str()).is_err() {
                        out.push(Change {
                            path: p,
                            kind: ChangeKind::Changed,
                        });
                    }
                }
                _ => {}
            }
            view.ovl.forget(child, 1);
        }
    }
    Ok(())
}

impl<'a> Diff<'a> {
    /// A view of the lower stack (for the other tools' lookups too).
    pub(super) fn new(userxattr: bool, lower_roots: &'a [OwnedFd], upper_path: &'a Path) -> Self {
        Diff {
            xattr: XattrNames::new(userxattr),
            lower_roots,
            upper_path,
            out: Vec::new(),
            opaque_dirs: Vec::new(),
            follow_index: false,
            index_links: false,
        }
    }

    /// Whether an upper file is linked to an index entry (it carries the
    /// union link count the index keeps).
    fn indexed_link(&self, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        sys::getxattr_at(dir, name, self.xattr.get(OvlXattr::Nlink)).is_ok()
    }

    /// The opaque xattr's name in these layers' namespace.
    pub(super) fn opaque_name(&self) -> &'static OsStr {
        self.xattr.get(OvlXattr::Opaque)
    }

    fn emit(&mut self, kind: ChangeKind, path: PathBuf) {
        self.out.push(Change { path, kind });
    }

    pub(super) fn is_opaque(&self, dir: BorrowedFd<'_>, lower: bool) -> bool {
        sys::getxattr(dir, self.xattr.get(OvlXattr::Opaque))
            .is_ok_and(|v| whiteout::is_opaque_value(&v))
            || lower && sys::fstatat(dir, OsStr::new(WH_OPAQUE)).is_ok()
    }

    /// Whether the lower stack shows `name` in a directory merged from `lowers`.
    pub(super) fn lower_has(&self, lowers: &[LowerDir], name: &OsStr) -> bool {
        if check_component(name).is_err() {
            return false;
        }
        for l in lowers {
            if let Ok(st) = sys::fstatat(l.fd.as_fd(), name) {
                return !whiteout::is_whiteout_at(&self.xattr, l.fd.as_fd(), name, &st);
            }
            if sys::fstatat(l.fd.as_fd(), &whiteout::wh_name(name)).is_ok() {
                return false;
            }
        }
        false
    }

    /// The lower directories merged at `name` below `lowers`.
    pub(super) fn lower_children(&self, lowers: &[LowerDir], name: &OsStr) -> Vec<LowerDir> {
        let mut out = Vec::new();
        // `..` and the like never lead out of a layer (the mount refuses them).
        if check_component(name).is_err() {
            return out;
        }
        for l in lowers {
            let dir = l.fd.as_fd();
            match sys::fstatat(dir, name) {
                Ok(st) if is_dir(&st) => {
                    let Some(fd) = open_sub(dir, name) else { break };
                    let opaque = self.is_opaque(fd.as_fd(), true);
                    out.push(LowerDir { fd });
                    if opaque {
                        break;
                    }
                }
                Ok(_) => break,
                Err(_) if sys::fstatat(dir, &whiteout::wh_name(name)).is_ok() => break,
                Err(_) => {}
            }
        }
        out
    }

    /// The lower directories an absolute redirect (`/a/b`) leads to.
    pub(super) fn redirected(&self, comps: &[OsString]) -> Vec<LowerDir> {
        let mut dirs = root_dirs(self.lower_roots);
        for comp in comps {
            dirs = self.lower_children(&dirs, comp);
        }
        dirs
    }

    /// The names a merged lower directory shows.
    pub(super) fn lower_names(&self, lowers: &[LowerDir]) -> BTreeSet<OsString> {
        let mut seen = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        let mut shown = BTreeSet::new();
        for l in lowers {
            let Ok(entries) = sys::read_dir(l.fd.as_fd()) else {
                continue;
            };
            let mut hides = Vec::new();
            for e in entries {
                let n = e.name;
                if n.as_bytes().starts_with(whiteout::WH_PREFIX) {
                    if let Some(t) = whiteout::wh_target(&n) {
                        hides.push(t.to_os_string());
                    }
                    continue;
                }
                if seen.contains(&n) || hidden.contains(&n) {
                    continue;
                }
                seen.insert(n.clone());
                let wh = sys::fstatat(l.fd.as_fd(), &n)
                    .is_ok_and(|st| whiteout::is_whiteout_at(&self.xattr, l.fd.as_fd(), &n, &st));
                if !wh {
                    shown.insert(n);
                }
            }
            hidden.extend(hides);
        }
        shown
    }

    /// What a moved directory brings from below (`source`), against what its
    /// path held before (`view`): new names are added, with all below them;
    /// names it held before are changed, and compared further down.
    fn all_added(
        &mut self,
        source: &[LowerDir],
        view: &[LowerDir],
        path: &Path,
        except: &BTreeSet<OsString>,
    ) {
        for name in self.lower_names(source) {
            if except.contains(&name) {
                continue;
            }
            let p = path.join(&name);
            let existed = self.lower_has(view, &name);
            self.emit(
                if existed {
                    ChangeKind::Changed
                } else {
                    ChangeKind::Added
                },
                p.clone(),
            );
            let sub = self.lower_children(source, &name);
            if !sub.is_empty() {
                let sub_view = self.lower_children(view, &name);
                self.replaced(&sub, &sub_view, &p, &BTreeSet::new());
            }
        }
    }

    /// A directory at `path` whose lower contents (`source`) are not what
    /// the path held before (`view`): it is opaque, moved here, or below one
    /// that is. What it no longer shows is deleted; what it brings is added
    /// (or changed, where the path held that name before). `upper_names`
    /// are the upper's own entries, compared entry by entry by the walk.
    fn replaced(
        &mut self,
        source: &[LowerDir],
        view: &[LowerDir],
        path: &Path,
        upper_names: &BTreeSet<OsString>,
    ) {
        let brought = self.lower_names(source);
        for n in self.lower_names(view) {
            if !brought.contains(&n) && !upper_names.contains(&n) {
                self.emit(ChangeKind::Deleted, path.join(&n));
            }
        }
        self.all_added(source, view, path, upper_names);
    }

    /// Walk an upper directory shown at `path`. `view`: the lower directories
    /// at this very path (what the path held before: A, C and D are decided
    /// against it); `source`: the lower directories that show through it
    /// (the same, but none for an opaque directory, and the redirect's target
    /// for a moved one).
    fn walk(
        &mut self,
        upper: BorrowedFd<'_>,
        path: &Path,
        view: &[LowerDir],
        source: &[LowerDir],
    ) -> Result<(), ToolError> {
        let at = self.upper_path.join(path.strip_prefix("/").unwrap_or(path));
        let mut entries = sys::read_dir(upper).map_err(io_err(&at, "cannot read the directory"))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in &entries {
            // `.wh.` names in an upper are plain names, as the mount shows them.
            let name = e.name.as_os_str();
            let p = path.join(name);
            let st = sys::fstatat(upper, name).map_err(io_err(&at.join(name), "cannot stat"))?;
            let existed = self.lower_has(view, name);
            if whiteout::is_whiteout_stat(&st) {
                if existed {
                    self.emit(ChangeKind::Deleted, p);
                }
                continue;
            }
            let kind = if existed {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            };
            self.emit(kind, p.clone());
            if !is_dir(&st) {
                if st.st_nlink > 1 && self.indexed_link(upper, name) {
                    if !self.follow_index {
                        return Err(ToolError::Io {
                            path: at.join(name),
                            what: "is a hard link kept by index=on: its other names in a lower layer \
                                   show its contents too; give the overlay's workdir (--workdir) to follow them",
                            errno: Errno::EINVAL,
                        });
                    }
                    self.index_links = true;
                }
                continue;
            }
            let Some(fd) = open_sub(upper, name) else {
                continue;
            };
            let opaque = self.is_opaque(fd.as_fd(), false);
            let redirect = if opaque {
                None
            } else {
                let invalid = |errno| ToolError::Io {
                    path: p.clone(),
                    what: "has an invalid redirect, which the mount refuses (ovlfs fsck repairs it)",
                    errno,
                };
                match Redirect::read(&self.xattr, fd.as_fd()).map_err(invalid)? {
                    Some(r) if !r.stays_inside() => return Err(invalid(Errno::EACCES)),
                    r => r,
                }
            };
            let child_view = self.lower_children(view, name);
            if opaque && !child_view.is_empty() {
                self.opaque_dirs.push(p.clone());
            }
            let child_source = match &redirect {
                Some(Redirect::Absolute(comps)) => self.redirected(comps),
                Some(Redirect::Relative(n)) => self.lower_children(source, n),
                None if opaque => Vec::new(),
                None => self.lower_children(source, name),
            };
            let upper_names: BTreeSet<OsString> = sys::read_dir(fd.as_fd())
                .map(|v| v.into_iter().map(|e| e.name).collect())
                .unwrap_or_default();
            if !same_dirs(&child_view, &child_source) {
                self.replaced(&child_source, &child_view, &p, &upper_names);
            }
            self.walk(fd.as_fd(), &p, &child_view, &child_source)?;
        }
        Ok(())
    }
}

/// The `--json` form: `[{"kind":"A","path":"/x"}, ...]`.
pub fn to_json(changes: &[Change]) -> String {
    let mut s = String::from("[");
    for (i, c) in changes.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"kind\":\"{}\",\"path\":{}}}",
            c.kind.letter(),
            super::json_string(&c.path.to_string_lossy())
        ));
    }
    s.push(']');
    s
}
