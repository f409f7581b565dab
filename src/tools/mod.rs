//! Offline tools on layer directories: library code shared with the daemon's
//! format module, driven by thin `ovlfs` subcommands.
//!
//! `diff` lists what an upper layer changes relative to its lowers; `commit`
//! turns an upper into a lower layer (or flattens a stack); `reset` returns
//! an overlay to its factory state; `fsck` checks and repairs layers;
//! `export` writes an upper as an OCI layer and `apply` unpacks one.

pub mod apply;
mod archive;
pub mod commit;
pub mod commit_in_place;
pub mod diff;
pub mod export;
pub mod fsck;
mod layers;
mod progress;
pub mod reset;
mod view;

pub use archive::Compression;
pub use layers::{Stack, ToolError, check_not_mounted};

/// A JSON string literal for `v` (the tools' `--json` output).
pub fn json_string(v: &str) -> String {
    let mut s = String::from("\"");
    for ch in v.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}
