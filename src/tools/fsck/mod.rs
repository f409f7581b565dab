//! `ovlfs fsck`: the offline checker fsck.overlay began and never finished.
//!
//! The upper layer is walked against the lower view at each path (the same
//! lookups `diff` makes), the workdir and the index are read, and each
//! problem is reported with its path; with repair on, the ones that have a
//! safe repair are repaired. Exit codes as e2fsck: 0 clean, 1 repaired, 4
//! left uncorrected, 8 operational error.
//!
//! Checked so far: orphan whiteouts; OCI `.wh.` whiteouts and opaque markers
//! in the upper (which no overlay honours there); invalid and dangling
//! redirects; `impure` missing on a directory holding entries with an
//! origin or redirect; metacopy files whose data is gone; workdir leftovers
//! of an interrupted copy-up; a volatile mount left dirty; index temporaries,
//! entries whose names are not handles, and stale entries.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::diff::{Diff, LowerDir, root_dirs};
use super::layers::{ToolError, io_err, open_dir};
use crate::engine::{Errno, remove_tree};
use crate::format::whiteout::{self, WH_OPAQUE};
use crate::format::xattr::XattrNames;
use crate::sys;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    /// A stable short name, e.g. `orphan-whiteout`.
    pub problem: &'static str,
    pub detail: String,
    pub repaired: bool,
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub findings: Vec<Finding>,
}

impl FsckReport {
    /// e2fsck's exit codes: 0 clean, 1 all repaired, 4 some left.
    pub fn exit_code(&self) -> i32 {
        if self.findings.is_empty() {
            0
        } else if self.findings.iter().all(|f| f.repaired) {
            1
        } else {
            4
        }
    }
}

struct Fsck<'a> {
    view: Diff<'a>,
    x: XattrNames,
    repair: bool,
    upper_path: &'a Path,
    report: FsckReport,
}

impl Fsck<'_> {
    fn found(
        &mut self,
        path: PathBuf,
        problem: &'static str,
        detail: String,
        fix: impl FnOnce() -> Result<(), Errno>,
    ) {
        let repaired = self.repair
            && match fix() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(path = %path.display(), %e, "repair failed");
                    false
                }
            };
        self.report.findings.push(Finding {
            path,
            problem,
            detail,
            repaired,
        });
    }

    fn unfixable(&mut self, path: PathBuf, problem: &'static str, detail: String) {
        self.report.findings.push(Finding {
            path,
            problem,
            detail,
            repaired: false,
        });
    }

    fn walk(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        view: &[LowerDir],
    ) -> Result<(), ToolError> {
        let at = self.upper_path.join(rel);
        let mut entries = sys::read_dir(dir).map_err(io_err(&at, "cannot read the directory"))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut needs_impure = false;
        for e in &entries {
            let name = e.name.as_os_str();
            let path = at.join(name);
            let Ok(st) = sys::fstatat(dir, name) else {
                continue;
            };
            if name == OsStr::new(WH_OPAQUE) {
                let opaque = self.x.opaque();
                self.found(
                    path,
                    "oci-opaque-in-upper",
                    "an OCI opaque marker in the upper layer: no overlay honours it there".into(),
                    || {
                        sys::setxattr(dir, &opaque, b"y", 0)
                            .and_then(|()| sys::unlinkat(dir, name, false))
                    },
                );
                continue;
            }
            if let Some(target) = whiteout::wh_target(name) {
                let below = self.view.lower_has(view, target);
                let clash = sys::fstatat(dir, target).is_ok();
                let t = target.to_os_string();
                self.found(
                    path,
                    "oci-whiteout-in-upper",
                    "an OCI .wh. whiteout in the upper layer: no overlay honours it there".into(),
                    || {
                        if below && !clash {
                            sys::mknodat(dir, &t, libc::S_IFCHR, 0)?;
                        }
                        sys::unlinkat(dir, name, false)
                    },
                );
                continue;
            }
            if whiteout::is_whiteout_stat(&st) {
                if !self.view.lower_has(view, name) {
                    self.found(
                        path,
                        "orphan-whiteout",
                        "a whiteout with nothing below it".into(),
                        || sys::unlinkat(dir, name, false),
                    );
                }
                continue;
            }
            let Ok(fd) = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0) else {
                continue;
            };
            if sys::getxattr(fd.as_fd(), &self.x.name("origin")).is_ok() {
                needs_impure = true;
            }
            let kind = st.st_mode & libc::S_IFMT;
            if kind == libc::S_IFREG && sys::getxattr(fd.as_fd(), &self.x.name("metacopy")).is_ok()
            {
                let data = match sys::getxattr(fd.as_fd(), &self.x.name("redirect")) {
                    Ok(v) if v.first() == Some(&b'/') => self.data_at(&v),
                    _ => self.view.lower_has(view, name),
                };
                if !data {
                    self.unfixable(
                        path.clone(),
                        "metacopy-no-data",
                        "a metacopy file whose data is in no lower layer".into(),
                    );
                }
            }
            if kind != libc::S_IFDIR {
                continue;
            }
            let redirect = sys::getxattr(fd.as_fd(), &self.x.name("redirect")).ok();
            let mut sub_view = self.view.lower_children(view, name);
            if let Some(v) = &redirect {
                needs_impure = true;
                let valid = !v.is_empty() && (v[0] == b'/' || !v.contains(&b'/'));
                let rname = self.x.name("redirect");
                if !valid {
                    let shown = String::from_utf8_lossy(v).into_owned();
                    self.found(
                        path.clone(),
                        "invalid-redirect",
                        format!("redirect \"{shown}\" is neither a name nor an absolute path"),
                        || sys::removexattr(fd.as_fd(), &rname),
                    );
                } else {
                    let target = if v[0] == b'/' {
                        self.view.redirected(v)
                    } else {
                        self.view.lower_children(view, OsStr::from_bytes(v))
                    };
                    if target.is_empty() {
                        let shown = String::from_utf8_lossy(v).into_owned();
                        self.found(
                            path.clone(),
                            "dangling-redirect",
                            format!("redirect \"{shown}\" leads to no lower directory"),
                            || sys::removexattr(fd.as_fd(), &rname),
                        );
                    } else {
                        sub_view = target;
                    }
                }
            }
            let sub = sys::openat(
                dir,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(io_err(&path, "cannot open"))?;
            let opaque = self.view.is_opaque(sub.as_fd(), false);
            let below = if opaque { Vec::new() } else { sub_view };
            self.walk(sub.as_fd(), &rel.join(name), &below)?;
        }
        if needs_impure && sys::getxattr(dir, &self.x.name("impure")).is_err() {
            let impure = self.x.name("impure");
            self.found(
                at,
                "missing-impure",
                "holds entries with an origin or redirect but is not marked impure".into(),
                || sys::setxattr(dir, &impure, b"y", 0),
            );
        }
        Ok(())
    }

    /// Whether an absolute path leads to a regular file in some lower layer.
    fn data_at(&self, target: &[u8]) -> bool {
        let comps: Vec<&[u8]> = target
            .split(|c| *c == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let Some((last, dirs)) = comps.split_last() else {
            return false;
        };
        let mut joined = Vec::new();
        for d in dirs {
            joined.push(b'/');
            joined.extend_from_slice(d);
        }
        let parents = self.view.redirected(&joined);
        self.view.lower_has(&parents, OsStr::from_bytes(last))
    }

    fn check_workdir(&mut self, work: &Path) -> Result<(), ToolError> {
        let w = open_dir(work)?;
        let wd = sys::openat(
            w.as_fd(),
            OsStr::new("work"),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        );
        if let Ok(wd) = wd {
            for e in sys::read_dir(wd.as_fd()).map_err(io_err(work, "cannot read"))? {
                let path = work.join("work").join(&e.name);
                if e.name == OsStr::new("incompat") {
                    if sys::fstatat(wd.as_fd(), OsStr::new("incompat/volatile")).is_ok() {
                        self.found(path, "volatile-dirty", "a volatile mount was not shut down cleanly: the upper may miss data written since its last sync; repairing accepts it".into(), || {
                            remove_tree(wd.as_fd(), OsStr::new("incompat"))
                        });
                    }
                    continue;
                }
                // The kernel keeps its shared whiteout here between mounts.
                if sys::fstatat(wd.as_fd(), &e.name).is_ok_and(|st| whiteout::is_whiteout_stat(&st))
                {
                    continue;
                }
                let n = e.name.clone();
                self.found(
                    path,
                    "workdir-leftover",
                    "left by an interrupted copy-up or removal".into(),
                    || remove_tree(wd.as_fd(), &n),
                );
            }
        }
        let Ok(index) = sys::openat(
            w.as_fd(),
            OsStr::new("index"),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        ) else {
            return Ok(());
        };
        for e in sys::read_dir(index.as_fd()).map_err(io_err(work, "cannot read the index"))? {
            let path = work.join("index").join(&e.name);
            let n: OsString = e.name.clone();
            let idx = index.as_fd();
            if n.as_bytes().starts_with(b"#") {
                self.found(
                    path,
                    "index-leftover",
                    "left by an interrupted index update".into(),
                    || remove_tree(idx, &n),
                );
                continue;
            }
            let Some(fh) = crate::format::fh::index_name_bytes(n.as_bytes()) else {
                self.found(
                    path,
                    "index-bad-name",
                    "an index entry whose name is not a file handle (the kernel refuses to mount)"
                        .into(),
                    || remove_tree(idx, &n),
                );
                continue;
            };
            let Ok(st) = sys::fstatat(idx, &n) else {
                continue;
            };
            if whiteout::is_whiteout_stat(&st) || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                continue;
            }
            let origin = sys::openat(idx, &n, libc::O_PATH | libc::O_NOFOLLOW, 0)
                .and_then(|fd| sys::getxattr(fd.as_fd(), &self.x.name("origin")));
            if origin.as_deref() != Ok(&fh[..]) {
                self.found(
                    path,
                    "index-stale",
                    "an index entry whose origin is not the handle its name says".into(),
                    || sys::unlinkat(idx, &n, false),
                );
            }
        }
        Ok(())
    }
}

/// Check (and with `repair`, repair) a stack's upper layer and workdir.
pub fn fsck(
    upper: &Path,
    work: Option<&Path>,
    lowers: &[PathBuf],
    userxattr: bool,
    repair: bool,
) -> Result<FsckReport, ToolError> {
    let lower_roots = lowers
        .iter()
        .map(|l| open_dir(l))
        .collect::<Result<Vec<_>, _>>()?;
    let mut f = Fsck {
        view: Diff::new(userxattr, &lower_roots, upper),
        x: XattrNames::new(userxattr),
        repair,
        upper_path: upper,
        report: FsckReport::default(),
    };
    if let Some(w) = work {
        f.check_workdir(w)?;
    }
    let root = std::fs::File::open(upper).map_err(|e| ToolError::Io {
        path: upper.to_path_buf(),
        what: "cannot open the upper layer",
        errno: Errno::from(e),
    })?;
    let view = root_dirs(&lower_roots);
    f.walk(root.as_fd(), Path::new(""), &view)?;
    Ok(f.report)
}
