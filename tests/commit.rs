//! `ovlfs commit` on layers written through the kernel overlay: the new
//! layer stacked on the lowers shows exactly the overlay's merged view (the
//! kernel mounts both), with redirects, metacopy files, opaque directories,
//! whiteouts and hard links; `--flatten` gives the merged view as one tree.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::stack::{LOWER2, changed_stack};
use common::tree::{SnapMode, Tree, diff, snapshot};
use common::{
    Scratch, mount_kernel, ovlfs_bin, require_root_and_fuse, require_strace, stack_dirs, unmount,
    write_files,
};

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
    let (lowers, u, before) = changed_stack(&d);
    let (l1, l2, m) = (lowers[0].clone(), lowers[1].clone(), d.join("m"));
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

/// Two lowers and an upper written through the kernel overlay, with changes
/// that an in-place merge into l1 must get right: an l1 file changed, an
/// l1-only file deleted (no whiteout needed), a dir recreated where l1 had
/// a whiteout of l2's dir (it must hide l2's again), an l1 dir replaced by
/// a file, a moved dir, a metacopy chown, an opaque dir, hard links.
/// Returns (d, the overlay's merged view, inode of an unchanged l1 file).
fn in_place_stack(d: &Path) -> (Tree, u64) {
    let [l1, l2, u, w, m] = stack_dirs(d);
    write_files(&l2, LOWER2);
    write_files(&l2, &[("hidden/z/zz", "z")]);
    write_files(
        &l1,
        &[
            ("top", "t"),
            ("a/keep", "k"),
            ("l1only", "o"),
            ("l1dir/f", "f"),
        ],
    );
    let hidden = std::ffi::CString::new(l1.join("hidden").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mknod(hidden.as_ptr(), libc::S_IFCHR, 0) }, 0);
    let keep_ino = fs::metadata(l1.join("a/keep")).unwrap().ino();
    let lowers = vec![l1.clone(), l2.clone()];
    mount_kernel(
        &lowers,
        Some(&u),
        Some(&w),
        &m,
        &["redirect_dir=on", "metacopy=on"],
    )
    .unwrap();
    fs::write(m.join("a/deep/y"), "changed").unwrap();
    fs::write(m.join("top"), "top changed").unwrap();
    fs::remove_file(m.join("l1only")).unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    fs::create_dir(m.join("hidden")).unwrap();
    fs::write(m.join("hidden/new"), "n").unwrap();
    fs::remove_dir_all(m.join("l1dir")).unwrap();
    fs::write(m.join("l1dir"), "now a file").unwrap();
    fs::remove_dir_all(m.join("opq")).unwrap();
    fs::create_dir(m.join("opq")).unwrap();
    fs::create_dir(m.join("opq/sub")).unwrap();
    fs::write(m.join("opq/sub/t"), "t").unwrap();
    fs::rename(m.join("mv"), m.join("moved")).unwrap();
    fs::write(m.join("moved/inner/j"), "j").unwrap();
    std::os::unix::fs::chown(m.join("meta/big"), Some(1000), Some(1000)).unwrap();
    fs::write(m.join("h1"), "linked").unwrap();
    fs::hard_link(m.join("h1"), m.join("a/h2")).unwrap();
    common::set_xattr(&m.join("a"), "user.dir", b"x");
    let before = snapshot(&m, SnapMode::Merged);
    unmount(&m).unwrap();
    (before, keep_ino)
}

fn view_of(d: &Path, with_upper: bool) -> Tree {
    let m = d.join("m");
    let lowers = vec![d.join("l1"), d.join("l2")];
    if with_upper {
        mount_kernel(
            &lowers,
            Some(&d.join("u")),
            Some(&d.join("w")),
            &m,
            &["redirect_dir=on", "metacopy=on"],
        )
        .unwrap();
    } else {
        mount_kernel(&lowers, None, None, &m, &[]).unwrap();
    }
    let t = snapshot(&m, SnapMode::Merged);
    unmount(&m).unwrap();
    t
}

fn in_place_args(d: &Path) -> Vec<String> {
    [
        "commit",
        "--in-place",
        "--upper",
        s(&d.join("u")),
        "--workdir",
        s(&d.join("w")),
        "--lower",
        &format!("{}:{}", s(&d.join("l1")), s(&d.join("l2"))),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

fn assert_same(a: &Tree, b: &Tree, what: &str) {
    let dd = diff(a, b, "overlay", what);
    assert!(dd.is_empty(), "{what} differs:\n{}", dd.join("\n"));
}

#[test]
fn commit_in_place_merges_the_upper_into_the_top_lower() {
    if !require_root_and_fuse() {
        return;
    }
    let sc = Scratch::new().unwrap();
    let d = sc.subdir("ip");
    let (before, keep_ino) = in_place_stack(&d);
    let args = in_place_args(&d);
    let out = Command::new(ovlfs_bin()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_dir(d.join("u")).unwrap().count(),
        0,
        "the upper is emptied"
    );
    let mut names: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["l1", "l2", "m", "u", "w"],
        "nothing left beside the layers"
    );
    assert_eq!(
        common::lxattr(&d.join("l1"), "trusted.ovlfs.commit-in-place"),
        None
    );
    assert!(
        fs::symlink_metadata(d.join("l1/l1only")).is_err(),
        "no whiteout where nothing below needs one"
    );
    assert_eq!(
        fs::metadata(d.join("l1/a/keep")).unwrap().ino(),
        keep_ino,
        "unchanged files keep their inodes"
    );
    assert_same(&before, &view_of(&d, false), "l1:l2 after the merge");
    assert_same(&before, &view_of(&d, true), "the overlay remounted");
    let out = run(&[
        "fsck",
        "-n",
        "-o",
        &format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            s(&d.join("l1")),
            s(&d.join("l2")),
            s(&d.join("u")),
            s(&d.join("w"))
        ),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn commit_in_place_interrupted_is_finished_by_a_rerun_or_fsck() {
    if !require_root_and_fuse() {
        return;
    }
    if !require_strace("commit_in_place_interrupted") {
        return;
    }
    let sc = Scratch::new().unwrap();
    let killed_at = |d: &Path, when: u32| {
        let out = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!("inject=renameat2:signal=SIGKILL:when={when}"))
            .arg(ovlfs_bin())
            .args(in_place_args(d))
            .output()
            .unwrap();
        assert!(!out.status.success(), "not killed at renameat2 #{when}");
    };
    // Killed at the swap: the old state, and a leftover the rerun removes.
    let d = sc.subdir("at-swap");
    let (before, _) = in_place_stack(&d);
    killed_at(&d, 1);
    assert!(d.join(".l1.commit-new").exists());
    // (The leftover's hard links count in l1's files' nlink until removed.)
    let no_nlink = |t: &Tree| {
        let mut t = t.clone();
        t.0.values_mut().for_each(|e| e.nlink = None);
        t
    };
    assert_same(
        &no_nlink(&before),
        &no_nlink(&view_of(&d, true)),
        "the old state",
    );
    let out = Command::new(ovlfs_bin())
        .args(in_place_args(&d))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.join(".l1.commit-new").exists());
    assert_same(&before, &view_of(&d, false), "l1:l2 after the rerun");

    // Killed after the swap, while the upper is emptied: the mark is found
    // by fsck -n (nothing changed) and the job finished by fsck -y.
    let d = sc.subdir("after-swap");
    let (before, _) = in_place_stack(&d);
    killed_at(&d, 2);
    assert!(common::lxattr(&d.join("l1"), "trusted.ovlfs.commit-in-place").is_some());
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        s(&d.join("l1")),
        s(&d.join("l2")),
        s(&d.join("u")),
        s(&d.join("w"))
    );
    let out = run(&["fsck", "-n", "-o", &opts]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("commit-interrupted"));
    let out = run(&["fsck", "-y", "-o", &opts]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fs::read_dir(d.join("u")).unwrap().count(), 0);
    assert!(!d.join(".l1.commit-new").exists());
    assert_same(
        &before,
        &view_of(&d, false),
        "l1:l2 after fsck finished the merge",
    );
    assert_same(&before, &view_of(&d, true), "the overlay after fsck");
}
