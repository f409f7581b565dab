//! The merged view, walked as the kernel shows it: each upper directory
//! against the lower directories shown through it, then what shows from
//! below only. Problems of single entries are reported on the way; what
//! needs the whole view (who shows a lower directory, who shows an indexed
//! file) is recorded for `redirects` and `index`.

use crate::format::xattr::{OvlXattr, is_yes};
use std::ffi::OsStr;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use super::redirects::{Place, Shown};
use super::{Fsck, Key};
use crate::format::redirect::{Redirect, check_component};
use crate::format::whiteout::{self, WH_OPAQUE};
use crate::sys;
use crate::tools::diff::LowerDir;
use crate::tools::layers::{ToolError, io_err};

/// The identity of the topmost of some lower directories.
fn top_key(lowers: &[LowerDir]) -> Option<Key> {
    let st = sys::fstat(lowers.first()?.fd.as_fd()).ok()?;
    Some((st.st_dev, st.st_ino))
}

impl Fsck<'_> {
    /// Walk the upper directory `dir`, at `rel` in the merged view, which
    /// shows the lower directories `view` through it.
    pub(super) fn walk(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        view: &[LowerDir],
    ) -> Result<(), ToolError> {
        let at = self.upper_path.join(rel);
        let mut entries = sys::read_dir(dir).map_err(io_err(&at, "cannot read the directory"))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut needs_impure = false;
        self.progress.inc(entries.len() as u64);
        for e in &entries {
            let name = e.name.as_os_str();
            let path = at.join(name);
            let Ok(st) = sys::fstatat(dir, name) else {
                continue;
            };
            if name == OsStr::new(WH_OPAQUE) {
                let opaque = self.x.get(OvlXattr::Opaque);
                self.found(
                    path,
                    "oci-opaque-in-upper",
                    "an OCI opaque marker in the upper layer: no overlay honours it there".into(),
                    || {
                        sys::setxattr(dir, opaque, b"y", 0)
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
            if self.check_origin(fd.as_fd(), &st, &path) {
                needs_impure = true;
            }
            let kind = st.st_mode & libc::S_IFMT;
            if kind == libc::S_IFREG
                && sys::getxattr(fd.as_fd(), self.x.get(OvlXattr::Metacopy)).is_ok()
            {
                // Found where its redirect says (a moved metacopy file), else by name.
                let data = match Redirect::read(&self.x, fd.as_fd()) {
                    Ok(Some(Redirect::Absolute(comps))) => self.data_at(&comps),
                    Ok(Some(Redirect::Relative(n))) => self.view.lower_has(view, &n),
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
            let redirect = sys::getxattr(fd.as_fd(), self.x.get(OvlXattr::Redirect)).ok();
            let mut sub_view = self.view.lower_children(view, name);
            let mut redirected = false;
            if let Some(v) = &redirect {
                needs_impure = true;
                let rname = self.x.get(OvlXattr::Redirect);
                let parsed =
                    Redirect::parse(v)
                        .map_err(|_| ())
                        .and_then(|r| match r.stays_inside() {
                            true => Ok(r),
                            false => Err(()),
                        });
                if parsed.is_err() {
                    let shown = String::from_utf8_lossy(v).into_owned();
                    self.found(
                        path.clone(),
                        "invalid-redirect",
                        format!(
                            "redirect \"{shown}\" is neither a name nor an absolute path inside the layers"
                        ),
                        || sys::removexattr(fd.as_fd(), rname),
                    );
                } else {
                    let target = match parsed {
                        Ok(Redirect::Absolute(comps)) => self.view.redirected(&comps),
                        Ok(Redirect::Relative(n)) => self.view.lower_children(view, &n),
                        Err(_) => Vec::new(),
                    };
                    if target.is_empty() {
                        let shown = String::from_utf8_lossy(v).into_owned();
                        // The mount shows the upper directory alone; without
                        // the redirect a lower one of its name would merge:
                        // then it becomes opaque (set first: with both, the
                        // view is the same).
                        let hides = !sub_view.is_empty();
                        let opaque = self.x.get(OvlXattr::Opaque);
                        self.found(
                            path.clone(),
                            "dangling-redirect",
                            format!("redirect \"{shown}\" leads to no lower directory"),
                            || {
                                if hides {
                                    sys::setxattr(fd.as_fd(), opaque, b"y", 0)?;
                                }
                                sys::removexattr(fd.as_fd(), rname)
                            },
                        );
                        sub_view = Vec::new();
                    } else {
                        sub_view = target;
                        redirected = true;
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
            let shown = if redirected {
                Shown::Redirect
            } else {
                Shown::UpperByName
            };
            self.record_place(&below, rel.join(name), shown);
            self.walk(sub.as_fd(), &rel.join(name), &below)?;
        }
        let impure_set = sys::getxattr(dir, self.x.get(OvlXattr::Impure)).is_ok_and(|v| is_yes(&v));
        if needs_impure && !impure_set {
            let impure = self.x.get(OvlXattr::Impure);
            self.found(
                at,
                "missing-impure",
                "holds entries with an origin or redirect but is not marked impure".into(),
                || sys::setxattr(dir, impure, b"y", 0),
            );
        }
        // What shows from below: names the upper directory does not have.
        let covered: std::collections::BTreeSet<_> = entries.into_iter().map(|e| e.name).collect();
        for name in self.view.lower_names(view) {
            if !covered.contains(&name) {
                self.lower_entry(view, rel, &name, Some(rel))?;
            }
        }
        Ok(())
    }

    /// A name shown from the lower directories `view` at `rel`; `upper_dir`:
    /// the upper directory at `rel`, where there is one.
    fn lower_entry(
        &mut self,
        view: &[LowerDir],
        rel: &Path,
        name: &OsStr,
        upper_dir: Option<&Path>,
    ) -> Result<(), ToolError> {
        let sub = self.view.lower_children(view, name);
        if !sub.is_empty() {
            let shown = Shown::LowerOnly {
                upper_parent: upper_dir.map(Path::to_path_buf),
            };
            self.record_place(&sub, rel.join(name), shown);
            for n in self.view.lower_names(&sub) {
                self.lower_entry(&sub, &rel.join(name), &n, None)?;
            }
            return Ok(());
        }
        if self.indexed.is_empty() {
            return Ok(());
        }
        // The topmost lower entry of that name is the one shown.
        let st = view
            .iter()
            .find_map(|l| sys::fstatat(l.fd.as_fd(), name).ok());
        if let Some(st) = st.filter(|st| st.st_nlink > 1) {
            let key = (st.st_dev, st.st_ino);
            if let Some(dirs) = self.aliases.get_mut(&key) {
                dirs.push(rel.to_path_buf());
            }
        }
        Ok(())
    }

    /// Note that the merged directory `rel` shows the lower directories `lowers`.
    fn record_place(&mut self, lowers: &[LowerDir], rel: PathBuf, shown: Shown) {
        if let Some(key) = top_key(lowers) {
            self.places
                .entry(key)
                .or_default()
                .push(Place { path: rel, shown });
        }
    }

    /// Whether an absolute path leads to a regular file in some lower layer.
    fn data_at(&self, comps: &[OsString]) -> bool {
        let Some((last, dirs)) = comps.split_last() else {
            return false;
        };
        let parents = self.view.redirected(dirs);
        check_component(last).is_ok() && self.view.lower_has(&parents, last)
    }
}
