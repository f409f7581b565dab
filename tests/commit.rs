//! `ovlfs commit` on layers written through the kernel overlay: the new
//! layer stacked on the lowers shows exactly the overlay's merged view (the
//! kernel mounts both), with redirects, metacopy files, opaque directories,
//! whiteouts and hard links; `--flatten` gives the merged view as one tree.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tree::{SnapMode, diff, snapshot};
use common::{Scratch, mount_kernel, ovlfs_bin, require_root_and_fuse, unmount};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(ovlfs_bin()).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn commit_and_flatten_show_the_same_view_as_the_overlay() {
    if !require_root_and_fuse() {
        return;
    }
    let sc = Scratch::new().unwrap();
    let d = sc.subdir("c");
    let (l1, l2, u, w, m) = (
        d.join("l1"),
        d.join("l2"),
        d.join("u"),
        d.join("w"),
        d.join("m"),
    );
    for p in [&l1, &l2, &u, &w, &m] {
        fs::create_dir_all(p).unwrap();
    }
    for dir in ["a/deep", "opq/sub", "mv/inner", "meta"] {
        fs::create_dir_all(l2.join(dir)).unwrap();
    }
    for (p, c) in [
        ("a/x", "x"),
        ("a/deep/y", "y"),
        ("opq/old", "old"),
        ("opq/sub/s", "s"),
        ("mv/m", "m"),
        ("mv/inner/i", "i"),
        ("meta/big", "metacopy data"),
        ("gone", "g"),
    ] {
        fs::write(l2.join(p), c).unwrap();
    }
    fs::write(l1.join("top"), "t").unwrap();
    let lowers: Vec<PathBuf> = vec![l1.clone(), l2.clone()];
    mount_kernel(
        &lowers,
        Some(&u),
        Some(&w),
        &m,
        &["redirect_dir=on", "metacopy=on"],
    )
    .unwrap();
    fs::write(m.join("a/deep/y"), "changed").unwrap();
    fs::write(m.join("a/new"), "new").unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    fs::remove_dir_all(m.join("opq")).unwrap();
    fs::create_dir(m.join("opq")).unwrap();
    fs::write(m.join("opq/fresh"), "f").unwrap();
    // Below an opaque dir, a dir the lower has too shows only the upper's.
    fs::create_dir(m.join("opq/sub")).unwrap();
    fs::write(m.join("opq/sub/t"), "t").unwrap();
    fs::rename(m.join("mv"), m.join("moved")).unwrap();
    fs::write(m.join("moved/added"), "a").unwrap();
    // A dir inside the moved one, copied up: it still brings its lower entries.
    fs::write(m.join("moved/inner/j"), "j").unwrap();
    std::os::unix::fs::chown(m.join("meta/big"), Some(1000), Some(1000)).unwrap();
    fs::write(m.join("h1"), "linked").unwrap();
    fs::hard_link(m.join("h1"), m.join("a/h2")).unwrap();
    let before = snapshot(&m, SnapMode::Merged);
    unmount(&m).unwrap();
    assert!(
        fs::symlink_metadata(u.join("meta/big")).unwrap().len() > 0,
        "the fixture has a metacopy file"
    );

    let lowerdir = format!("{}:{}", s(&l1), s(&l2));
    let new = d.join("new");
    let out = run(&[
        "commit",
        "--upper",
        s(&u),
        "--lower",
        &lowerdir,
        "--into",
        s(&new),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No overlay bookkeeping left in the new layer.
    let layer = snapshot(&new, SnapMode::Layer);
    for (p, e) in &layer.0 {
        for x in e.xattrs.keys() {
            assert!(
                !["redirect", "metacopy", "origin", "impure", "nlink"]
                    .iter()
                    .any(|n| x == &format!("trusted.overlay.{n}")),
                "{p}: {x} left in the committed layer"
            );
        }
    }
    let stacked: Vec<PathBuf> = vec![new.clone(), l1.clone(), l2.clone()];
    mount_kernel(&stacked, None, None, &m, &[]).unwrap();
    let after = snapshot(&m, SnapMode::Merged);
    unmount(&m).unwrap();
    let dd = diff(&before, &after, "overlay", "committed");
    assert!(
        dd.is_empty(),
        "NEW:L1:L2 differs from the overlay:\n{}",
        dd.join("\n")
    );

    // Flatten the committed stack: one tree, the same view, no whiteouts.
    let flat = d.join("flat");
    let all = format!("{}:{}", s(&new), lowerdir);
    let out = run(&["commit", "--flatten", "--lower", &all, "--into", s(&flat)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (The kernel wants two lowers without an upper: an empty one below.)
    let empty = d.join("empty");
    fs::create_dir(&empty).unwrap();
    mount_kernel(&[flat.clone(), empty], None, None, &m, &[]).unwrap();
    let flat_view = snapshot(&m, SnapMode::Merged);
    unmount(&m).unwrap();
    let dd = diff(&before, &flat_view, "overlay", "flattened");
    assert!(
        dd.is_empty(),
        "the flattened tree differs:\n{}",
        dd.join("\n")
    );

    // An existing target is refused, untouched.
    let out = run(&["commit", "--flatten", "--lower", &all, "--into", s(&flat)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
}
