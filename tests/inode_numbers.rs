//! Inode numbers and redirects through real mounts, across remounts and
//! across the kernel overlay: st_ino of copied-up files stays the lower
//! file's, moved directories keep their contents after a remount on either.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{Scratch, mount_kernel, mount_ovlfs, require_root_and_fuse, unmount};

struct Layers {
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

impl Layers {
    fn new(s: &Scratch, name: &str) -> Layers {
        let d = s.subdir(name);
        let l = Layers {
            lower: d.join("l"),
            upper: d.join("u"),
            work: d.join("w"),
            mnt: d.join("m"),
        };
        for p in [&l.lower, &l.upper, &l.work, &l.mnt] {
            fs::create_dir_all(p).unwrap();
        }
        l
    }

    fn ovlfs(&self) {
        mount_ovlfs(
            std::slice::from_ref(&self.lower),
            Some(&self.upper),
            Some(&self.work),
            &self.mnt,
            &[],
        )
        .unwrap();
    }

    fn kernel(&self) {
        let opts = ["redirect_dir=on"];
        mount_kernel(
            std::slice::from_ref(&self.lower),
            Some(&self.upper),
            Some(&self.work),
            &self.mnt,
            &opts,
        )
        .unwrap();
    }

    fn umount(&self) {
        unmount(&self.mnt).unwrap();
    }
}

/// st_ino of every regular file below `root`, by relative path.
fn inos(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(root).unwrap().to_path_buf(), md.ino());
            }
        }
    }
    out
}

#[test]
fn st_ino_survives_copy_up_and_remount() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let l = Layers::new(&s, "ino");
    for d in 0..10 {
        fs::create_dir(l.lower.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            fs::write(l.lower.join(format!("d{d}/f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let lower_inos = inos(&l.lower);
    l.ovlfs();
    let before = inos(&l.mnt);
    assert_eq!(before.len(), 1000);
    assert_eq!(
        before, lower_inos,
        "lower files show their own inode numbers"
    );
    // Copy every file up, in several ways.
    for (i, p) in before.keys().enumerate() {
        let full = l.mnt.join(p);
        match i % 4 {
            0 => fs::write(&full, b"rewritten").unwrap(),
            1 => fs::set_permissions(&full, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap(),
            2 => std::os::unix::fs::chown(&full, Some(1000), None).unwrap(),
            _ => fs::OpenOptions::new()
                .append(true)
                .open(&full)
                .unwrap()
                .set_len(1)
                .unwrap(),
        }
    }
    assert_eq!(inos(&l.mnt), before, "copy-up keeps the inode numbers");
    for p in before.keys() {
        assert!(l.upper.join(p).exists(), "{} was copied up", p.display());
    }
    l.umount();
    l.ovlfs();
    assert_eq!(inos(&l.mnt), before, "a remount keeps them (origin xattrs)");
    let root_ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(
        root_ino(&l.mnt),
        root_ino(&l.upper),
        "the root shows the upper root's number"
    );
    let dotdot = fs::symlink_metadata(l.mnt.join("d0/..")).unwrap().ino();
    assert_eq!(dotdot, root_ino(&l.upper), "and so does `..` below it");
    l.umount();
    l.kernel();
    assert_eq!(
        inos(&l.mnt),
        before,
        "the kernel overlay shows the same numbers"
    );
    l.umount();
}

#[test]
fn moved_directories_keep_their_contents_across_remounts() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let l = Layers::new(&s, "mv");
    for p in ["a/b/c/d", "x/y", "z"] {
        fs::create_dir_all(l.lower.join(p)).unwrap();
    }
    for (p, c) in [
        ("a/1", "1"),
        ("a/b/2", "2"),
        ("a/b/c/3", "3"),
        ("a/b/c/d/4", "4"),
        ("x/y/5", "5"),
    ] {
        fs::write(l.lower.join(p), c).unwrap();
    }
    l.ovlfs();
    let m = &l.mnt;
    // Populated merged directories at several depths, in place and across parents,
    // and a chain a→b, b→c, c→a.
    fs::write(m.join("a/b/new"), "n").unwrap();
    fs::rename(m.join("a/b/c"), m.join("x/c2")).unwrap();
    fs::rename(m.join("x/c2/d"), m.join("z/d2")).unwrap();
    fs::rename(m.join("a"), m.join("tmp")).unwrap();
    fs::rename(m.join("x"), m.join("a")).unwrap();
    fs::rename(m.join("tmp"), m.join("x")).unwrap();
    let expect: Vec<(&str, &str)> = vec![
        ("x/1", "1"),
        ("x/b/2", "2"),
        ("x/b/new", "n"),
        ("a/c2/3", "3"),
        ("z/d2/4", "4"),
        ("a/y/5", "5"),
    ];
    let check = |what: &str| {
        for (p, c) in &expect {
            assert_eq!(
                fs::read_to_string(m.join(p)).unwrap_or_default(),
                *c,
                "{what}: {p}"
            );
        }
        assert!(
            !m.join("a/b").exists() && !m.join("x/c2").exists(),
            "{what}: old names gone"
        );
    };
    check("ovlfs");
    let tree = inos(m);
    l.umount();
    l.ovlfs();
    check("ovlfs after remount");
    assert_eq!(inos(m), tree, "inode numbers after remount");
    l.umount();
    l.kernel();
    check("kernel overlay on the same layers");
    assert_eq!(inos(m), tree, "the kernel shows the same inode numbers");
    l.umount();
}

#[test]
fn a_move_too_long_for_a_redirect_brings_the_tree_up() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let l = Layers::new(&s, "long");
    let deep = format!("{}/{}/{}", "a".repeat(100), "b".repeat(100), "c".repeat(60));
    for p in ["moved/sub", "moved/gone"] {
        fs::create_dir_all(l.lower.join(&deep).join(p)).unwrap();
    }
    fs::write(l.lower.join(&deep).join("moved/f"), "f").unwrap();
    fs::write(l.lower.join(&deep).join("moved/sub/g"), "g").unwrap();
    fs::write(l.lower.join(&deep).join("moved/hidden"), "h").unwrap();
    l.ovlfs();
    let m = &l.mnt;
    fs::remove_file(m.join(&deep).join("moved/hidden")).unwrap();
    fs::remove_dir(m.join(&deep).join("moved/gone")).unwrap();
    // "/aaa…/bbb…/ccc…/moved" is over the kernel's 256-byte redirect limit: the
    // kernel says EXDEV; ovlfs copies the tree up and moves it without a redirect.
    fs::rename(m.join(&deep).join("moved"), m.join("top")).unwrap();
    let check = |what: &str| {
        let mut names: Vec<_> = fs::read_dir(m.join("top"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["f", "sub"], "{what}: entries of the moved dir");
        assert_eq!(
            fs::read_to_string(m.join("top/sub/g")).unwrap(),
            "g",
            "{what}"
        );
        assert!(
            !m.join(&deep).join("moved").exists(),
            "{what}: old name gone"
        );
    };
    check("ovlfs");
    l.umount();
    assert!(
        common::lxattr(&l.upper.join("top"), "trusted.overlay.redirect").is_none(),
        "no redirect was written"
    );
    assert_eq!(
        common::lxattr(&l.upper.join("top"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    l.ovlfs();
    check("ovlfs after remount");
    l.umount();
    l.kernel();
    check("kernel overlay");
    l.umount();
}

#[test]
fn xino_numbers_match_the_kernel_across_filesystems() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    // Lower on its own tmpfs, upper and work on the scratch tmpfs; one copy
    // of the layers for each side.
    let lowerfs = s.subdir("lowerfs");
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&lowerfs)
        .status();
    assert!(st.unwrap().success());
    let mut seen = Vec::new();
    for side in ["kernel", "ovlfs"] {
        let lower = lowerfs.join(side);
        for p in ["d/e", "x"] {
            fs::create_dir_all(lower.join(p)).unwrap();
        }
        for p in ["f", "d/g", "d/e/h"] {
            fs::write(lower.join(p), p).unwrap();
        }
        let d = s.subdir(side);
        let (u, w, m) = (d.join("u"), d.join("w"), d.join("m"));
        for p in [&u, &w, &m] {
            fs::create_dir_all(p).unwrap();
        }
        let lowers = [lower.clone()];
        if side == "kernel" {
            mount_kernel(
                &lowers,
                Some(&u),
                Some(&w),
                &m,
                &["xino=on", "redirect_dir=on"],
            )
            .unwrap();
        } else {
            mount_ovlfs(&lowers, Some(&u), Some(&w), &m, &["xino=on"]).unwrap();
        }
        fs::write(m.join("new"), "n").unwrap();
        fs::write(m.join("d/g"), "changed").unwrap();
        // Numbers relative to each side's own layers: the id bits and the real
        // numbers must combine the same way.
        let real = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
        let mut v = Vec::new();
        for p in ["f", "d", "d/g", "d/e/h", "x"] {
            v.push((
                p,
                fs::symlink_metadata(m.join(p)).unwrap().ino() ^ real(&lower.join(p)),
            ));
        }
        v.push((
            "new",
            fs::symlink_metadata(m.join("new")).unwrap().ino() ^ real(&u.join("new")),
        ));
        unmount(&m).unwrap();
        seen.push(v);
    }
    assert_eq!(seen[0], seen[1], "high bits (kernel, ovlfs) per path");
    assert!(
        seen[0].iter().any(|(_, bits)| *bits != 0),
        "the lower filesystem got an id"
    );
}

#[test]
fn a_walk_over_more_inodes_than_open_files_allowed() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let l = Layers::new(&s, "walk");
    // More files than the usual open-file limit (20,000 here): leaves must not
    // each pin a file descriptor in the daemon.
    for d in 0..60 {
        let dir = l.lower.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..500 {
            fs::write(dir.join(format!("f{f}")), b"").unwrap();
        }
    }
    l.ovlfs();
    let seen = inos(&l.mnt);
    assert_eq!(seen.len(), 30_000, "every file stat-ed through the mount");
    // And changed: copy-ups hold no descriptors either.
    for (i, p) in seen.keys().enumerate().filter(|(i, _)| i % 3 == 0) {
        std::os::unix::fs::chown(l.mnt.join(p), Some(1000 + (i % 7) as u32), None).unwrap();
    }
    assert_eq!(inos(&l.mnt), seen, "inode numbers unchanged");
    l.umount();
}
