//! Hostile layers: every class of bad on-disk input, run through the kernel
//! overlay and ovlfs with the same options and compared (see
//! hostile/harness.rs). Needs root, /dev/fuse and the kernel overlay.

mod common;

// Inside the inline module, `mod x;` resolves to tests/hostile/x.rs.
mod hostile {
    pub mod harness;
    mod redirects;

    use super::common::require_root_and_fuse;
    use harness::{ALL_SETS, run_class};

    #[test]
    fn redirects_answer_as_the_kernel() {
        if !require_root_and_fuse() {
            return;
        }
        run_class("redirects", redirects::cases(), &ALL_SETS);
    }
}
