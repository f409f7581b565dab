//! Whiteouts and opaque directories: how they look on disk.
//!
//! A whiteout is a 0/0 character device. In lower layers the AUFS/OCI forms are
//! honoured too: a `.wh.NAME` entry hides NAME, and `.wh..wh..opq` makes its
//! directory opaque.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub const WH_PREFIX: &[u8] = b".wh.";
pub const WH_OPAQUE: &str = ".wh..wh..opq";

/// True for the stat of a 0/0 character device.
pub fn is_whiteout_stat(st: &libc::stat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && st.st_rdev == 0
}

/// `.wh.NAME` for NAME.
pub fn wh_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsString::from_vec(v)
}

/// For a `.wh.NAME` entry, the NAME it hides (the opaque marker is not one).
pub fn wh_target(name: &OsStr) -> Option<&OsStr> {
    let b = name.as_bytes();
    if b == WH_OPAQUE.as_bytes() {
        return None;
    }
    b.strip_prefix(WH_PREFIX)
        .filter(|r| !r.is_empty())
        .map(OsStr::from_bytes)
}

/// The value of the opaque xattr that marks a directory opaque.
pub fn is_opaque_value(v: &[u8]) -> bool {
    v == b"y"
}
