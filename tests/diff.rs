//! `ovlfs diff` on layers written through real mounts: the same changes made
//! through the kernel overlay and through ovlfs give the same report, which
//! is the docker-diff reading of what changed in the merged view.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    Scratch, mount_kernel, mount_ovlfs, ovlfs_bin, require_root_and_fuse, stack_dirs, unmount,
    write_files,
};

fn build_lowers(l1: &Path, l2: &Path) {
    write_files(
        l2,
        &[
            ("a/x", "x"),
            ("a/y", "y"),
            ("b/z", "z"),
            ("gone", "g"),
            ("dir_rm/p", "p"),
            ("dir_rm/q", "q"),
            ("mv_src/m1", "m"),
            ("mv_src/sub/s", "s"),
        ],
    );
    fs::write(l1.join("a_w"), "w").unwrap();
}

/// The changes, made through a mount at `m`.
fn change(m: &Path) {
    let append = |p: &str| {
        let mut f = fs::OpenOptions::new().append(true).open(m.join(p)).unwrap();
        std::io::Write::write_all(&mut f, b"more").unwrap();
    };
    append("a/x");
    fs::write(m.join("a/new"), "n").unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    fs::remove_dir_all(m.join("dir_rm")).unwrap();
    fs::create_dir(m.join("dir_rm")).unwrap();
    fs::write(m.join("dir_rm/q"), "q2").unwrap();
    fs::rename(m.join("mv_src"), m.join("moved")).unwrap();
    fs::remove_file(m.join("moved/m1")).unwrap();
    fs::create_dir_all(m.join("newdir/deep")).unwrap();
    fs::write(m.join("newdir/deep/f"), "f").unwrap();
}

const EXPECTED: &str = "\
C /a
A /a/new
C /a/x
C /dir_rm
D /dir_rm/p
C /dir_rm/q
D /gone
A /moved
A /moved/sub
A /moved/sub/s
D /mv_src
A /newdir
A /newdir/deep
A /newdir/deep/f
";

fn diff(upper: &Path, lowers: &str, extra: &[&str]) -> std::process::Output {
    Command::new(ovlfs_bin())
        .args(["diff", "--upper"])
        .arg(upper)
        .args(["--lower", lowers])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn diff_reports_what_changed_through_either_overlay() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    for kernel in [true, false] {
        let d = s.subdir(if kernel { "k" } else { "o" });
        let [l1, l2, u, w, m] = stack_dirs(&d);
        build_lowers(&l1, &l2);
        let lowers: Vec<PathBuf> = vec![l1.clone(), l2.clone()];
        let mount = if kernel { mount_kernel } else { mount_ovlfs };
        mount(&lowers, Some(&u), Some(&w), &m, &["redirect_dir=on"]).unwrap();
        change(&m);
        let lowerdir = format!("{}:{}", l1.display(), l2.display());
        // Mounted: refused unless --force.
        let busy = diff(&u, &lowerdir, &[]);
        assert!(
            !busy.status.success(),
            "kernel={kernel}: a mounted upper is refused"
        );
        let err = String::from_utf8_lossy(&busy.stderr);
        assert!(err.contains("in use"), "kernel={kernel}: says why: {err}");
        let forced = diff(&u, &lowerdir, &["--force"]);
        assert!(forced.status.success());
        unmount(&m).unwrap();

        let out = diff(&u, &lowerdir, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            EXPECTED,
            "kernel={kernel}: the report"
        );
        assert_eq!(
            forced.stdout, out.stdout,
            "--force on a live mount reads the same"
        );
        let json = diff(&u, &lowerdir, &["--json"]);
        let j = String::from_utf8_lossy(&json.stdout);
        assert!(j.starts_with("[{\"kind\":\"C\",\"path\":\"/a\"},"), "{j}");
        assert_eq!(j.matches("\"kind\"").count(), EXPECTED.lines().count());
    }
    // Bad input: a missing lower is named.
    let out = diff(
        Path::new("/nonexistent-upper"),
        "/nonexistent-lower",
        &["--force"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-upper"));
}

/// Names in hostile layers read as the mount reads them: `.wh.` names in an
/// upper are plain names (never `.wh..` deleting the directory itself), an
/// invalid redirect is refused with the path, `..` redirects stay inside.
#[test]
fn diff_reads_hostile_names_as_the_mount() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let [l1, _l2, u, _w, _m] = stack_dirs(s.path());
    write_files(&l1, &[("d/x", "x"), ("e/y", "y"), ("f/z", "z")]);
    write_files(
        &u,
        &[
            ("d/.wh..", "dot dot"),
            ("d/.wh...", "dot"),
            ("d/.wh.x", "plain"),
        ],
    );
    let lowerdir = l1.display().to_string();
    let out = diff(&u, &lowerdir, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "C /d\nA /d/.wh..\nA /d/.wh...\nA /d/.wh.x\n"
    );
    // Redirects the mount refuses (EINVAL, or EACCES on the way out of the
    // layers) are refused naming the directory.
    for (dir, value) in [("e", &b"/../.."[..]), ("f", b"/a//b"), ("g", b"..")] {
        fs::create_dir_all(u.join(dir)).unwrap();
        common::set_xattr(&u.join(dir), "trusted.overlay.redirect", value);
        let out = diff(&u, &lowerdir, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        let named = err.contains(&format!("/{dir}")) && err.contains("invalid redirect");
        assert!(!out.status.success() && named, "{dir}: {err}");
        fs::remove_dir(u.join(dir)).unwrap();
    }
}
