//! Robustness of the ovlfs daemon: crashes (SIGKILL) during copy-up and rename,
//! clean unmounts, bad on-disk input, layers changed under a live mount, and
//! concurrent requests.
//!
//! Self-contained: the helpers below do not depend on tests/common. Every test
//! mounts a private tmpfs scratch (lazily unmounted, with any daemon left
//! below it killed, on drop), so the tests can run in parallel.
//!
//! Needs root and /dev/fuse (tests 2 and 4 also the kernel overlay). Without
//! them a test prints `SKIPPED: ...` and passes, or fails under `CI=true`.

// This file is the crate root, so a `mod x;` here would resolve to tests/x.rs;
// inside the inline module below it resolves to tests/robustness/x.rs instead.
mod robustness {
    mod bad_input;
    mod concurrency;
    mod crash;
    mod injected;
    mod layers;
    mod support;
    mod tree;
    mod unmount;
}
