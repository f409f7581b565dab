//! Refusal of bad input: exit status 1, a one-line message, nothing mounted.

use super::support::*;
use std::fs::{self};

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

#[test]
fn refuses_missing_lowerdir() {
    if !can_mount("refuses_missing_lowerdir") {
        return;
    }
    let l = layout();
    l.refused(
        &format!("upperdir={},workdir={}", s(&l.upper), s(&l.work)),
        &["lowerdir"],
    );
    l.refused("ro", &["lowerdir"]);
}

#[test]
fn refuses_nonexistent_dirs() {
    if !can_mount("refuses_nonexistent_dirs") {
        return;
    }
    let l = layout();
    let nope = s(&l.scratch.path("does-not-exist"));
    let u = s(&l.upper);
    let w = s(&l.work);
    let lo = s(&l.lower);
    l.refused(&format!("lowerdir={nope}"), &[&nope]);
    l.refused(&format!("lowerdir={lo}:{nope}"), &[&nope]);
    l.refused(
        &format!("lowerdir={lo},upperdir={nope},workdir={w}"),
        &[&nope],
    );
    l.refused(
        &format!("lowerdir={lo},upperdir={u},workdir={nope}"),
        &[&nope],
    );
    // A missing mount point.
    let missing_mnt = l.scratch.path("no-mountpoint");
    assert_refused(
        &l.scratch,
        &["-o".into(), l.opts(), s(&missing_mnt)],
        &missing_mnt,
        &[&s(&missing_mnt)],
    );
    // A layer that is a file, not a directory.
    let file = l.scratch.path("a-file");
    fs::write(&file, b"x").unwrap();
    l.refused(&format!("lowerdir={}", s(&file)), &[&s(&file)]);
}

#[test]
fn refuses_upperdir_without_workdir() {
    if !can_mount("refuses_upperdir_without_workdir") {
        return;
    }
    let l = layout();
    l.refused(
        &format!("lowerdir={},upperdir={}", s(&l.lower), s(&l.upper)),
        &["workdir"],
    );
    l.refused(
        &format!("lowerdir={},workdir={}", s(&l.lower), s(&l.work)),
        &["upperdir"],
    );
}

#[test]
fn refuses_workdir_on_another_filesystem() {
    if !can_mount("refuses_workdir_on_another_filesystem") {
        return;
    }
    let l = layout();
    let other = Scratch::new();
    let [w2] = other.dirs(["work"]);
    l.refused(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&l.lower),
            s(&l.upper),
            s(&w2)
        ),
        &["workdir", &s(&w2)],
    );
}

#[test]
fn refuses_nested_upperdir_and_workdir() {
    if !can_mount("refuses_nested_upperdir_and_workdir") {
        return;
    }
    let l = layout();
    let [inner_w] = l.scratch.dirs(["upper/work"]);
    l.refused(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&l.lower),
            s(&l.upper),
            s(&inner_w)
        ),
        &["workdir", &s(&inner_w), &s(&l.upper)],
    );
    let [inner_u] = l.scratch.dirs(["work/upper"]);
    l.refused(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&l.lower),
            s(&inner_u),
            s(&l.work)
        ),
        &["upperdir", "workdir", &s(&inner_u), &s(&l.work)],
    );
    // The same directory for both.
    l.refused(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&l.lower),
            s(&l.upper),
            s(&l.upper)
        ),
        &["workdir", "upperdir", &s(&l.upper)],
    );
}

#[test]
fn refuses_unknown_and_unsupported_options() {
    if !can_mount("refuses_unknown_and_unsupported_options") {
        return;
    }
    let l = layout();
    let base = l.opts();
    for (extra, needle) in [
        ("bogus_option", "bogus_option"),
        ("frobnicate=3", "frobnicate"),
        ("index=sometimes", "index"),
        ("redirect_dir=sideways", "redirect_dir"),
        ("userxattr,redirect_dir=on", "redirect_dir"),
        ("metacopy=maybe", "metacopy"),
        ("metacopy=on,redirect_dir=follow", "metacopy"),
        ("xino=sometimes", "xino"),
        ("nfs_export=on", "nfs_export"),
        ("fsync=bogus", "fsync"),
        ("threads=0", "threads"),
        ("threads=many", "threads"),
    ] {
        l.refused(&format!("{base},{extra}"), &[needle]);
    }
    // A regular layer after a data-only one, and three colons, are malformed.
    l.refused(
        &format!("lowerdir={}::{}:{}", s(&l.lower), s(&l.lower), s(&l.lower)),
        &["lowerdir"],
    );
    l.refused(
        &format!("lowerdir={}:::{}", s(&l.lower), s(&l.lower)),
        &["lowerdir"],
    );
}

#[test]
fn accepts_the_supported_values_of_overlay_options() {
    if !can_mount("accepts_the_supported_values_of_overlay_options") {
        return;
    }
    let l = layout();
    let opts = format!(
        "{},index=off,metacopy=off,xino=off,nfs_export=off,redirect_dir=nofollow,fsync=strict,\
         nodev,nosuid,noexec,noatime,default_permissions,threads=2",
        l.opts()
    );
    mount_ok(&l.args(&opts), &l.mnt);
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    unmount_and_wait(&l.mnt, false);
    // fsync as 0/1, and volatile.
    for extra in ["fsync=0", "fsync=1", "fsync=auto", "volatile"] {
        let work2 = l.scratch.dirs([&format!("work-{extra}")])[0].clone();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},{extra}",
            s(&l.lower),
            s(&l.upper),
            s(&work2)
        );
        mount_ok(&l.args(&opts), &l.mnt);
        unmount_and_wait(&l.mnt, false);
    }
}
