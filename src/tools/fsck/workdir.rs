//! The workdir: `W/work` leftovers, a dirty volatile mount, and the index
//! entries' names and origins, as the kernel's ovl_indexdir_cleanup reads
//! them at mount. Entries that pass are kept for `index` to judge against
//! the view.

use crate::format::xattr::OvlXattr;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Fsck;
use super::index::IndexEntry;
use super::origin::Verdict;
use crate::engine::remove_tree;
use crate::format::fh::OvlFb;
use crate::format::whiteout;
use crate::sys;
use crate::tools::layers::{ToolError, io_err, open_dir};

impl Fsck<'_> {
    pub(super) fn check_workdir(&mut self, work: &Path) -> Result<(), ToolError> {
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
        let mut entries =
            sys::read_dir(index.as_fd()).map_err(io_err(work, "cannot read the index"))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            let path = work.join("index").join(&e.name);
            let n: OsString = e.name.clone();
            let idx = index.as_fd();
            if n.as_bytes().starts_with(b"#") {
                // With index=on the kernel keeps its shared whiteout here
                // between mounts (and drops it at the next one).
                if sys::fstatat(idx, &n).is_ok_and(|st| whiteout::is_whiteout_stat(&st)) {
                    continue;
                }
                self.found(
                    path,
                    "index-leftover",
                    "left by an interrupted index update".into(),
                    || remove_tree(idx, &n),
                );
                continue;
            }
            let fh = crate::format::fh::index_name_bytes(n.as_bytes())
                .filter(|fh| OvlFb::decode(fh).is_ok());
            let Some(fh) = fh else {
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
                .and_then(|fd| sys::getxattr(fd.as_fd(), self.x.get(OvlXattr::Origin)));
            if origin.as_deref() != Ok(&fh[..]) {
                self.found(
                    path,
                    "index-stale",
                    "an index entry whose origin is not the handle its name says".into(),
                    || sys::unlinkat(idx, &n, false),
                );
                continue;
            }
            match self.judge_origin(&fh, st.st_mode) {
                Verdict::Stale(why) => self.found(
                    path,
                    "index-orphan",
                    format!("the lower file it stands for is gone ({why})"),
                    || sys::unlinkat(idx, &n, false),
                ),
                Verdict::Live(lower) => {
                    let key = (lower.st_dev, lower.st_ino);
                    self.aliases.entry(key).or_default();
                    self.indexed.push(IndexEntry {
                        name: n,
                        path,
                        lower: key,
                        lower_nlink: lower.st_nlink,
                        upper_nlink: st.st_nlink,
                    });
                }
                Verdict::Unknown => {}
            }
        }
        self.index_dir = Some(index);
        Ok(())
    }
}
