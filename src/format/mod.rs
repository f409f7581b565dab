//! The kernel overlay's on-disk format, shared by the daemon and the tools.

pub mod whiteout;
pub mod xattr;
