//! ovlfs: Linux OverlayFS in userspace.
//!
//! `engine` owns the semantics and knows nothing of FUSE; `fuse` translates
//! kernel requests into engine calls; `format` is the kernel's on-disk format;
//! `sys` holds every raw syscall and all `unsafe`.

pub mod daemon;
pub mod engine;
pub mod errno;
pub mod format;
pub mod fsutil;
pub mod fuse;
pub mod mountinfo;
pub mod params;
pub mod sys;
pub mod tools;
