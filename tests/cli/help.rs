//! --help and --version.

use super::support::*;

// ---------------------------------------------------------------------------
// --help and --version
// ---------------------------------------------------------------------------

#[test]
fn help_describes_usage_and_options() {
    let out = run_ovlfs(&["--help"]);
    assert!(out.status.success(), "--help:\n{}", out.describe());
    for word in ["lowerdir", "upperdir", "workdir"] {
        assert!(
            out.stdout.contains(word),
            "--help should mention {word}:\n{}",
            out.describe()
        );
    }
    assert!(
        out.stdout.to_lowercase().contains("usage"),
        "--help should show usage:\n{}",
        out.describe()
    );
}

#[test]
fn version_names_the_program_and_version() {
    let out = run_ovlfs(&["--version"]);
    assert!(out.status.success(), "--version:\n{}", out.describe());
    assert!(
        out.stdout.contains("ovlfs"),
        "--version:\n{}",
        out.describe()
    );
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version should print {}:\n{}",
        env!("CARGO_PKG_VERSION"),
        out.describe()
    );
}
