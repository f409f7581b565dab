//! Offline tools on layer directories: library code shared with the daemon's
//! format module, driven by thin `ovlfs` subcommands.
//!
//! `diff` lists what an upper layer changes relative to its lowers. (fsck,
//! export/apply, commit and reset are not written yet.)

pub mod diff;
mod layers;

pub use layers::{ToolError, check_not_mounted};
