//! The kernel overlay's on-disk format, shared by the daemon and the tools.

pub mod fh;
pub mod metacopy;
pub mod nlink;
pub mod redirect;
pub mod whiteout;
pub mod xattr;
