//! `ovlfs fsck`: healthy layers written by the kernel overlay are clean; a
//! catalogue of corruptions, each made on purpose, is found with -n and
//! repaired with -y (exit codes as e2fsck), and the kernel then mounts the
//! repaired layers and shows the expected view.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Scratch, cstr, mount_kernel, ovlfs_bin, require_root_and_fuse, unmount};

fn removexattr(p: &Path, name: &str) {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe { libc::lremovexattr(cstr(p).as_ptr(), n.as_ptr()) };
    assert_eq!(r, 0, "removexattr {name} on {}", p.display());
}

fn mknod_whiteout(p: &Path) {
    // SAFETY: a valid path; a 0/0 character device.
    let r = unsafe { libc::mknod(cstr(p).as_ptr(), libc::S_IFCHR | 0o644, 0) };
    assert_eq!(r, 0, "mknod {}", p.display());
}

fn fsck(opts: &str, flag: &str) -> (i32, String) {
    let out = Command::new(ovlfs_bin())
        .args(["fsck", "-o", opts, flag])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn corruptions_are_found_and_repaired() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let d = s.subdir("f");
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
    for dir in ["a", "b", "mv"] {
        fs::create_dir_all(l2.join(dir)).unwrap();
    }
    for (p, c) in [("a/x", "x"), ("b/z", "z"), ("mv/m", "m"), ("gone", "g")] {
        fs::write(l2.join(p), c).unwrap();
    }
    fs::write(l1.join("a_w"), "w").unwrap();
    let lowers: Vec<PathBuf> = vec![l1.clone(), l2.clone()];
    // Healthy layers, as the kernel writes them: clean.
    mount_kernel(&lowers, Some(&u), Some(&w), &m, &["redirect_dir=on"]).unwrap();
    fs::write(m.join("a/x"), "changed").unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    fs::rename(m.join("mv"), m.join("moved")).unwrap();
    fs::create_dir(m.join("newdir")).unwrap();
    unmount(&m).unwrap();
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        l1.display(),
        l2.display(),
        u.display(),
        w.display()
    );
    let (code, out) = fsck(&opts, "-n");
    assert_eq!(code, 0, "healthy layers are clean: {out}");

    // The catalogue.
    mknod_whiteout(&u.join("nothing_below"));
    fs::write(u.join(".wh.a_w"), "").unwrap();
    fs::create_dir(u.join("b")).unwrap();
    fs::write(u.join("b/.wh..wh..opq"), "").unwrap();
    common::set_xattr(&u.join("moved"), "trusted.overlay.redirect", b"x/y");
    common::set_xattr(&u.join("newdir"), "trusted.overlay.redirect", b"/nowhere");
    removexattr(&u.join("a"), "trusted.overlay.impure");
    fs::write(u.join("meta_orphan"), "").unwrap();
    common::set_xattr(&u.join("meta_orphan"), "trusted.overlay.metacopy", b"");
    fs::create_dir_all(w.join("work/#42")).unwrap();
    fs::create_dir_all(w.join("work/incompat/volatile")).unwrap();
    fs::create_dir_all(w.join("index")).unwrap();
    fs::write(w.join("index/#7"), "").unwrap();
    fs::write(w.join("index/garbage"), "").unwrap();
    let stale = format!("00fb2100{}", "ab".repeat(29));
    fs::write(w.join("index").join(&stale), "").unwrap();
    common::set_xattr(
        &w.join("index").join(&stale),
        "trusted.overlay.origin",
        &[0, 0xfb, 5, 0, 1],
    );
    let problems = [
        "orphan-whiteout",
        "oci-whiteout-in-upper",
        "oci-opaque-in-upper",
        "invalid-redirect",
        "dangling-redirect",
        "missing-impure",
        "metacopy-no-data",
        "workdir-leftover",
        "volatile-dirty",
        "index-leftover",
        "index-bad-name",
        "index-stale",
    ];

    let (code, out) = fsck(&opts, "-n");
    assert_eq!(code, 4, "-n leaves them: {out}");
    for p in problems {
        assert!(out.contains(&format!("found {p}:")), "{p} found: {out}");
    }
    assert!(!out.contains("repaired"), "-n changes nothing: {out}");
    assert!(u.join(".wh.a_w").exists());

    let (code, out) = fsck(&opts, "-y");
    assert_eq!(code, 4, "metacopy-no-data cannot be repaired: {out}");
    for p in problems.iter().filter(|p| **p != "metacopy-no-data") {
        assert!(
            out.contains(&format!("repaired {p}:")),
            "{p} repaired: {out}"
        );
    }
    fs::remove_file(u.join("meta_orphan")).unwrap();
    let (code, out) = fsck(&opts, "-n");
    assert_eq!(code, 0, "clean after the repair: {out}");

    // A state with only repairable problems: exit 1.
    mknod_whiteout(&u.join("another_orphan"));
    let (code, out) = fsck(&opts, "-p");
    assert_eq!(code, 1, "{out}");

    // The kernel mounts the repaired layers and shows what the repairs mean.
    mount_kernel(&lowers, Some(&u), Some(&w), &m, &["redirect_dir=on"]).unwrap();
    assert!(
        !m.join("a_w").exists(),
        "the OCI whiteout became a real one"
    );
    assert_eq!(
        fs::read_dir(m.join("b")).unwrap().count(),
        0,
        "b became opaque"
    );
    assert!(!m.join("nothing_below").exists() && !m.join(".wh.a_w").exists());
    assert_eq!(fs::read_to_string(m.join("a/x")).unwrap(), "changed");
    unmount(&m).unwrap();

    // Mounted layers are refused (operational error, 8).
    mount_kernel(&lowers, Some(&u), Some(&w), &m, &["redirect_dir=on"]).unwrap();
    let (code, out) = fsck(&opts, "-n");
    unmount(&m).unwrap();
    assert_eq!(code, 8, "{out}");
    assert!(out.contains("in use"), "{out}");
}
