//! Opening layer directories for the tools, and refusing mounted ones.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::errno::Errno;
use crate::sys;

#[derive(Debug, Error)]
pub enum ToolError {
    #[error("{path}: {what}: {errno}")]
    Io {
        path: PathBuf,
        what: &'static str,
        errno: Errno,
    },
    #[error("{0}: in use by a mounted overlay ({1}); unmount it first, or pass --force")]
    Mounted(PathBuf, String),
    /// A layer archive that cannot be read or is refused (`entry` empty
    /// where the archive as a whole is at fault).
    #[error("{archive}: {}{why}", if entry.is_empty() { String::new() } else { format!("entry {entry:?}: ") })]
    Archive {
        archive: PathBuf,
        entry: String,
        why: String,
    },
}

pub(super) fn io_err<'a>(path: &'a Path, what: &'static str) -> impl Fn(Errno) -> ToolError + 'a {
    move |errno| ToolError::Io {
        path: path.to_path_buf(),
        what,
        errno,
    }
}

/// `(parent of path, ".NAME<suffix>")`: a name beside `path` on the same
/// filesystem, where a tool builds what it then renames into place.
pub(super) fn sibling(
    path: &Path,
    suffix: &str,
) -> Result<(PathBuf, std::ffi::OsString), ToolError> {
    let name = path.file_name().ok_or_else(|| ToolError::Io {
        path: path.to_path_buf(),
        what: "needs a name of its own (not / or ..)",
        errno: Errno::EINVAL,
    })?;
    let mut n = std::ffi::OsString::from(".");
    n.push(name);
    n.push(suffix);
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent.to_path_buf(), n))
}

/// Open a layer directory (O_PATH, not following a final symlink).
pub(super) fn open_dir(path: &Path) -> Result<OwnedFd, ToolError> {
    let cwd = std::fs::File::open(".").map_err(|e| ToolError::Io {
        path: path.to_path_buf(),
        what: "cannot open the working directory",
        errno: Errno::from(e),
    })?;
    let fd = sys::openat(
        cwd.as_fd(),
        path.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(io_err(path, "cannot open the layer directory"))?;
    Ok(fd)
}

/// Refuse layers a mounted overlay uses: a kernel overlay names them in its
/// mount options; an ovlfs daemon holds a lock on its upper and work dirs.
pub fn check_not_mounted(paths: &[&Path]) -> Result<(), ToolError> {
    let mounts = crate::mountinfo::mounts();
    for path in paths {
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let uses = mounts.iter().any(|m| {
            m.fstype == "overlay"
                && crate::mountinfo::overlay_layers(&m.super_options)
                    .iter()
                    .any(|(_, p)| *p == canon)
        });
        if uses {
            return Err(ToolError::Mounted(canon, "kernel overlay".into()));
        }
        // The lock is dropped with the file at once.
        if let Ok(dir) = std::fs::File::open(&canon)
            && sys::flock_exclusive(dir.as_fd()).is_err()
        {
            return Err(ToolError::Mounted(canon, "ovlfs daemon".into()));
        }
    }
    Ok(())
}

/// Owner, mode and every xattr of directory `from` onto directory `to`.
pub(super) fn copy_dir_meta(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    st: &sys::Stat,
) -> Result<(), Errno> {
    sys::fchown(to, Some(st.st_uid), Some(st.st_gid))?;
    sys::fchmod(to, st.st_mode & 0o7777)?;
    for x in sys::listxattr(from)? {
        let v = sys::getxattr(from, &x)?;
        sys::setxattr(to, &x, &v, 0)?;
    }
    Ok(())
}

/// `from/name` into `to/name` on the same filesystem: hard links for
/// everything but directories, which are recreated with their owner, mode,
/// xattrs and times. Non-directories already at `to` are left alone.
pub(super) fn link_tree(
    from: BorrowedFd<'_>,
    name: &OsStr,
    to: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let st = sys::fstatat(from, name)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        if sys::fstatat(to, name).is_ok() {
            return Ok(());
        }
        return sys::linkat(from, name, to, name);
    }
    let open = |d: BorrowedFd<'_>| {
        sys::openat(
            d,
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
    };
    let src = open(from)?;
    match sys::mkdirat(to, name, 0o700) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let dst = open(to)?;
    copy_dir_meta(src.as_fd(), dst.as_fd(), &st)?;
    for e in sys::read_dir(src.as_fd())? {
        link_tree(src.as_fd(), &e.name, dst.as_fd())?;
    }
    sys::utimensat(
        to,
        name,
        Some(sys::timespec(st.st_atime, st.st_atime_nsec)),
        Some(sys::timespec(st.st_mtime, st.st_mtime_nsec)),
    )
}

/// The layers a tool reads: an upper over its lowers, with the upper's
/// workdir where index=on hard links need its index.
#[derive(Debug, Clone, Copy)]
pub struct Stack<'a> {
    pub upper: &'a Path,
    pub work: Option<&'a Path>,
    /// Topmost first.
    pub lowers: &'a [PathBuf],
    pub userxattr: bool,
}

impl Stack<'_> {
    /// The workdir, if it holds an index (index=on was used).
    pub(super) fn index_work(&self) -> Option<&Path> {
        self.work.filter(|w| w.join("index").is_dir())
    }

    /// The merged view, as a mount of the stack shows it.
    pub(super) fn view(&self) -> Result<super::view::View, ToolError> {
        if let Some(w) = self.index_work() {
            return super::view::View::with_index(self.upper, w, self.lowers, self.userxattr);
        }
        let mut layers = vec![self.upper.to_path_buf()];
        layers.extend_from_slice(self.lowers);
        super::view::View::new(&layers, self.userxattr)
    }
}
