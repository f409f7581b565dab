//! Hostile layers: every class of bad on-disk input, run through the kernel
//! overlay and ovlfs with the same options and compared (see
//! hostile/harness.rs). Needs root, /dev/fuse and the kernel overlay.

mod common;

// Inside the inline module, `mod x;` resolves to tests/hostile/x.rs.
mod hostile {
    pub mod harness;
    mod metacopy;
    mod origins;
    mod redirects;
    mod shapes;
    mod whiteouts;

    use super::common::require_root_and_fuse;
    use harness::{ALL_SETS, FOLLOW, run_class};

    #[test]
    fn redirects_answer_as_the_kernel() {
        if !require_root_and_fuse() {
            return;
        }
        run_class("redirects", redirects::cases(), &ALL_SETS);
    }

    #[test]
    fn metacopy_answers_as_the_kernel() {
        if !require_root_and_fuse() {
            return;
        }
        run_class("metacopy", metacopy::cases(), &ALL_SETS);
    }

    #[test]
    fn whiteouts_and_opaque_marks_answer_as_the_kernel() {
        if !require_root_and_fuse() {
            return;
        }
        run_class("whiteouts", whiteouts::cases(), &ALL_SETS);
    }

    #[test]
    fn origin_impure_nlink_uuid_answer_as_the_kernel() {
        if !require_root_and_fuse() {
            return;
        }
        run_class("xattrs", shapes::xattrs(), &ALL_SETS);
        run_class("origins", origins::cases(), &ALL_SETS);
    }

    #[test]
    fn workdir_and_index_answer_as_the_kernel() {
        if !require_root_and_fuse() {
            return;
        }
        run_class("workdir", shapes::workdir(), &ALL_SETS);
    }

    #[test]
    fn layer_shapes_answer_as_the_kernel() {
        if !require_root_and_fuse() {
            return;
        }
        run_class("shapes", shapes::shapes(), &ALL_SETS);
        run_class("wide", vec![shapes::wide(100_000)], &[&FOLLOW]);
    }
}
