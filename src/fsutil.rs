//! File helpers that are not overlay semantics, shared by the engine and the tools.

use std::ffi::OsStr;
use std::os::fd::AsFd;

use crate::errno::{Errno, Result};
use crate::sys;

/// Remove `dir/name` and everything below it, without following symlinks.
pub fn remove_tree(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    match sys::unlinkat(dir, name, false) {
        Ok(()) => return Ok(()),
        Err(e) if e == Errno::EISDIR || e == Errno::EPERM => {}
        Err(e) if e == Errno::ENOENT => return Ok(()),
        Err(e) => return Err(e),
    }
    let sub = sys::openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    for ent in sys::read_dir(sub.as_fd())? {
        remove_tree(sub.as_fd(), &ent.name)?;
    }
    sys::unlinkat(dir, name, true)
}
