//! Whiteouts and opaque directories: how they look on disk.
//!
//! A whiteout is a 0/0 character device, or (the kernel's xattr whiteouts,
//! 6.7) an empty regular file carrying the `whiteout` xattr: a lookup in any
//! layer takes either as a whiteout, a listing filters the xattr form only
//! in lower directories marked `opaque=x`. In lower layers the AUFS/OCI
//! forms are honoured too: a `.wh.NAME` entry hides NAME, and `.wh..wh..opq`
//! makes its directory opaque.

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::xattr::{OvlXattr, XattrNames};
use crate::sys;

pub const WH_PREFIX: &[u8] = b".wh.";
pub const WH_OPAQUE: &str = ".wh..wh..opq";

/// True for the stat of a 0/0 character device.
pub fn is_whiteout_stat(st: &libc::stat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && st.st_rdev == 0
}

/// Whether `dir/name`, whose stat is `st`, is a whiteout to a lookup.
pub fn is_whiteout_at(x: &XattrNames, dir: BorrowedFd<'_>, name: &OsStr, st: &libc::stat) -> bool {
    is_whiteout_stat(st) || is_xattr_whiteout(x, dir, name, st)
}

/// An empty regular file with the `whiteout` xattr.
pub fn is_xattr_whiteout(
    x: &XattrNames,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &libc::stat,
) -> bool {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size != 0 {
        return false;
    }
    // The kernel's ovl_path_check_xwhiteout_xattr: any value; no error counts.
    sys::getxattr_at(dir, name, x.get(OvlXattr::Whiteout)).is_ok()
}

/// What a directory's `opaque` xattr says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opaque {
    No,
    /// `y`: nothing below shows.
    Yes,
    /// `x`: not opaque, but holds xattr whiteouts its listing must filter.
    XWhiteouts,
}

/// The kernel reads one byte: a longer value is no mark at all.
pub fn opaque_value(v: &[u8]) -> Opaque {
    match v {
        b"y" => Opaque::Yes,
        b"x" => Opaque::XWhiteouts,
        _ => Opaque::No,
    }
}

/// The opaque mark of a directory.
pub fn opaque_of(x: &XattrNames, dir: BorrowedFd<'_>) -> Opaque {
    sys::getxattr(dir, x.get(OvlXattr::Opaque)).map_or(Opaque::No, |v| opaque_value(&v))
}

/// `.wh.NAME` for NAME.
pub fn wh_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsString::from_vec(v)
}

/// For a `.wh.NAME` entry, the NAME it hides (the opaque marker is not one,
/// nor `.wh..` or `.wh...`: no name that could leave a directory).
pub fn wh_target(name: &OsStr) -> Option<&OsStr> {
    let b = name.as_bytes();
    if b == WH_OPAQUE.as_bytes() {
        return None;
    }
    b.strip_prefix(WH_PREFIX)
        .map(OsStr::from_bytes)
        .filter(|r| super::redirect::check_component(r).is_ok())
}

/// The value of the opaque xattr that marks a directory opaque.
pub fn is_opaque_value(v: &[u8]) -> bool {
    super::xattr::is_yes(v)
}
