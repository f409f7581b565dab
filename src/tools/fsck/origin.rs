//! Origin handles: the upper root's, which ties the upper to the first lower
//! root once index=on was used, and each copied-up entry's.
//!
//! The kernel decodes an upper entry's origin to give it the lower object's
//! inode number; a value that is no valid handle, names an object gone from
//! its layer, or names an object of another type is ignored with a warning
//! ("invalid origin"), so removing it changes nothing in the view. Handles
//! are only judged when the layer they name is among the given lowers.

use crate::format::xattr::OvlXattr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::Fsck;
use crate::engine::{Undecodable, decode_origin_in};
use crate::format::fh::{HEADER, OvlFb, to_hex};
use crate::sys::{self, Stat};

fn type_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFREG => "a regular file",
        libc::S_IFLNK => "a symlink",
        _ => "a special file",
    }
}

/// Why an origin value names no lower object of type `mode`, if it does not.
pub(super) enum Verdict {
    Live(Stat),
    /// The kernel ignores it: the reason, for the report.
    Stale(String),
    /// Cannot be judged with these layers.
    Unknown,
}

impl Fsck<'_> {
    /// Judge an origin value for an object of type `mode` as the kernel's
    /// lookup would.
    pub(super) fn judge_origin(&self, value: &[u8], mode: u32) -> Verdict {
        if !self.origins_checked || value.is_empty() {
            // Empty: "copied up, origin unknown", as the kernel writes it.
            return Verdict::Unknown;
        }
        // The kernel reads a handle by its length byte; bytes after it are ignored.
        let len = value.get(2).map_or(0, |l| *l as usize);
        let value = if len >= HEADER && len < value.len() {
            &value[..len]
        } else {
            value
        };
        match decode_origin_in(&self.lowers, self.uuid_off, false, value) {
            Ok(st) if st.st_mode & libc::S_IFMT != mode & libc::S_IFMT => Verdict::Stale(format!(
                "names {} in the lower layers, not {}",
                type_name(st.st_mode),
                type_name(mode)
            )),
            Ok(st) => Verdict::Live(st),
            Err(e @ (Undecodable::Malformed | Undecodable::Stale)) => Verdict::Stale(e.to_string()),
            Err(Undecodable::NoLayer | Undecodable::Failed(_)) => Verdict::Unknown,
        }
    }

    /// An upper entry's origin: report one the kernel ignores, and remove it
    /// (unless the index still holds the inode by that handle: the index
    /// entry must go first, or the kernel would refuse to mount). Returns
    /// whether the entry keeps an origin its parent must be impure for.
    pub(super) fn check_origin(&mut self, fd: BorrowedFd<'_>, st: &Stat, path: &Path) -> bool {
        let name = self.x.get(OvlXattr::Origin);
        let Ok(value) = sys::getxattr(fd, name) else {
            return false;
        };
        let Verdict::Stale(why) = self.judge_origin(&value, st.st_mode) else {
            return true;
        };
        let index = self.index_dir.as_ref().and_then(|d| d.try_clone().ok());
        let indexed = st.st_mode & libc::S_IFMT != libc::S_IFDIR && st.st_nlink > 1;
        let iname = std::ffi::OsString::from(to_hex(&value));
        let key = (st.st_dev, st.st_ino);
        self.found(
            path.to_path_buf(),
            "stale-origin",
            format!("its origin handle is ignored by the kernel: {why}"),
            || {
                if indexed
                    && let Some(index) = &index
                    && sys::fstatat(index.as_fd(), &iname)
                        .is_ok_and(|s| (s.st_dev, s.st_ino) == key)
                {
                    return Err(crate::engine::Errno::EBUSY);
                }
                sys::removexattr(fd, name)
            },
        );
        false
    }

    /// The upper root's origin, once index=on was used, is the first lower
    /// root's handle; if it is another, these are not the lowers the upper
    /// was made on: the kernel refuses index=on, and no handle is judged.
    pub(super) fn check_root_origin(&mut self, root: BorrowedFd<'_>, work: Option<&Path>) {
        let Ok(value) = sys::getxattr(root, self.x.get(OvlXattr::Origin)) else {
            return;
        };
        let Some(first) = self.lowers.first() else {
            return;
        };
        let uuid = if self.uuid_off { [0; 16] } else { first.uuid };
        let Ok(expected) = sys::name_to_handle(first.root.as_fd())
            .map(|h| OvlFb::new(uuid, h).encode().unwrap_or_default())
        else {
            return;
        };
        if value == expected {
            return;
        }
        self.origins_checked = false;
        if let Some(w) = work.filter(|w| w.join("index").is_dir()) {
            self.unfixable(
                self.upper_path.to_path_buf(),
                "root-origin-mismatch",
                format!(
                    "the upper root's origin is not the first lower layer's root: these are not the \
                     lower layers the upper was used with under index=on (the kernel refuses \
                     index=on; mount with index=off, or the right lowers); origin handles and {} \
                     are not checked",
                    w.join("index").display()
                ),
            );
        }
    }
}
