//! The command-line contract of the `ovlfs` binary: help and version, refusal of
//! bad input (exit status 1, a one-line message naming the cause, nothing mounted),
//! read-only mounts, Podman-style option strings, the mount.fuse3 calling
//! convention, daemonizing, and the daemon's end on (lazy) unmount.
//!
//! Tests that mount need root and /dev/fuse. Without them a test prints a loud
//! "SKIPPED: ..." and passes, except under CI=true, where it fails.

// This file is the crate root, so a `mod x;` here would resolve to tests/x.rs;
// inside the inline module below it resolves to tests/cli/x.rs instead.
mod cli {
    mod help;
    mod mounts;
    mod refusals;
    mod support;
}
