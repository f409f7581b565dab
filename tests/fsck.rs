//! `ovlfs fsck`: healthy layers written by the kernel overlay are clean; a
//! catalogue of corruptions, each made on purpose, is found with -n and
//! repaired with -y (exit codes as e2fsck), and the kernel then mounts the
//! repaired layers and shows the expected view.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::os::unix::fs::PermissionsExt;

use common::{
    Scratch, cstr, mount_kernel, ovlfs_bin, require_root_and_fuse, stack_dirs, tree, unmount,
    write_files,
};

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
    let [l1, l2, u, w, m] = stack_dirs(&d);
    write_files(
        &l2,
        &[("a/x", "x"), ("b/z", "z"), ("mv/m", "m"), ("gone", "g")],
    );
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

/// The kernel options the new tests mount with (and pass to fsck).
const FULL: &[&str] = &["redirect_dir=on", "index=on", "metacopy=on"];

struct Stack {
    lowers: Vec<PathBuf>,
    u: PathBuf,
    w: PathBuf,
    m: PathBuf,
}

impl Stack {
    /// Two lower layers, upper, work and mount point under `d`; `lower`
    /// builds the bottom lower layer.
    fn new(d: &Path, lower: impl FnOnce(&Path)) -> Stack {
        let s = Stack {
            lowers: vec![d.join("l1"), d.join("l2")],
            u: d.join("u"),
            w: d.join("w"),
            m: d.join("m"),
        };
        for p in s.lowers.iter().chain([&s.u, &s.w, &s.m]) {
            fs::create_dir_all(p).unwrap();
        }
        lower(&s.lowers[1]);
        s
    }

    fn opts(&self) -> String {
        format!(
            "lowerdir={}:{},upperdir={},workdir={},{}",
            self.lowers[0].display(),
            self.lowers[1].display(),
            self.u.display(),
            self.w.display(),
            FULL.join(",")
        )
    }

    fn mount(&self) {
        mount_kernel(&self.lowers, Some(&self.u), Some(&self.w), &self.m, FULL).unwrap();
    }

    fn unmount(&self) {
        unmount(&self.m).unwrap();
    }

    fn fsck(&self, flag: &str) -> (i32, String) {
        fsck(&self.opts(), flag)
    }

    /// The index entries' names (not the kernel's shared whiteout, `#N`).
    fn index(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.w.join("index"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('#'))
            .collect();
        v.sort();
        v
    }
}

fn found_at(out: &str, verb: &str, problem: &str, path: &Path) -> bool {
    out.lines()
        .any(|l| l.starts_with(&format!("{verb} {problem}: {}", path.display())))
}

fn nlink(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().nlink()
}

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().ino()
}

/// The kernel ignores (with a warning) origin handles that are malformed,
/// name a lower object that is gone, or name one of another type; fsck
/// removes them, and the kernel's view is the same before and after.
#[test]
fn origins_the_kernel_ignores_are_removed() {
    if !require_root_and_fuse() {
        return;
    }
    let scratch = Scratch::new().unwrap();
    let s = Stack::new(&scratch.subdir("o"), |l| {
        fs::create_dir_all(l.join("d")).unwrap();
        fs::write(l.join("replaced"), "old lower").unwrap();
        fs::write(l.join("meta"), "meta data").unwrap();
        fs::write(l.join("kept"), "kept").unwrap();
    });
    s.mount();
    fs::write(s.m.join("replaced"), "upper copy").unwrap();
    fs::set_permissions(s.m.join("meta"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(s.m.join("kept"), "kept, changed").unwrap();
    fs::write(s.m.join("d/new"), "new").unwrap();
    fs::write(s.m.join("added"), "added").unwrap();
    s.unmount();
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "kernel-written layers are clean: {out}");

    // The lower file replaced offline; a malformed handle on the metacopy
    // file; a directory's handle on a regular file.
    let l = &s.lowers[1];
    fs::remove_file(l.join("replaced")).unwrap();
    fs::write(l.join("replaced"), "new lower").unwrap();
    common::set_xattr(&s.u.join("meta"), "trusted.overlay.origin", b"garbage");
    let dir_origin = common::lxattr(&s.u.join("d"), "trusted.overlay.origin").unwrap();
    common::set_xattr(&s.u.join("added"), "trusted.overlay.origin", &dir_origin);
    s.mount();
    let before = tree::snapshot(&s.m, tree::SnapMode::Merged);
    let inos: Vec<u64> = ["replaced", "meta", "kept", "added", "d"]
        .iter()
        .map(|n| ino(&s.m.join(n)))
        .collect();
    s.unmount();

    let stale = ["replaced", "meta", "added"];
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 4, "{out}");
    for n in stale {
        assert!(
            found_at(&out, "found", "stale-origin", &s.u.join(n)),
            "{n}: {out}"
        );
    }
    assert_eq!(out.matches("stale-origin").count(), 3, "only those: {out}");
    assert!(common::lxattr(&s.u.join("meta"), "trusted.overlay.origin").is_some());

    let (code, out) = s.fsck("-y");
    assert_eq!(code, 1, "{out}");
    for n in stale {
        assert!(
            found_at(&out, "repaired", "stale-origin", &s.u.join(n)),
            "{n}: {out}"
        );
        assert_eq!(common::lxattr(&s.u.join(n), "trusted.overlay.origin"), None);
    }
    for n in ["kept", "d"] {
        assert!(common::lxattr(&s.u.join(n), "trusted.overlay.origin").is_some());
    }
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "clean after the repair: {out}");

    // The kernel shows the same view, inode numbers included.
    s.mount();
    let after = tree::snapshot(&s.m, tree::SnapMode::Merged);
    let inos_after: Vec<u64> = ["replaced", "meta", "kept", "added", "d"]
        .iter()
        .map(|n| ino(&s.m.join(n)))
        .collect();
    assert_eq!(
        fs::read_to_string(s.m.join("replaced")).unwrap(),
        "upper copy"
    );
    assert_eq!(fs::read_to_string(s.m.join("meta")).unwrap(), "meta data");
    s.unmount();
    let d = tree::diff(&before, &after, "before", "after");
    assert!(d.is_empty(), "the view changed: {d:#?}");
    assert_eq!(inos, inos_after);
}

/// Index entries of hard-linked lower files against the names that show
/// them: a wrong count is rewritten as the kernel writes it, entries no name
/// shows (or whose lower file is gone) are removed.
#[test]
fn index_entries_are_checked_against_the_view() {
    if !require_root_and_fuse() {
        return;
    }
    let scratch = Scratch::new().unwrap();
    let pairs = ["p", "q", "r", "s", "t"];
    let s = Stack::new(&scratch.subdir("i"), |l| {
        fs::create_dir_all(l.join("sub")).unwrap();
        for p in pairs {
            fs::write(l.join(format!("{p}1")), p).unwrap();
            fs::hard_link(l.join(format!("{p}1")), l.join(format!("sub/{p}2"))).unwrap();
        }
    });
    // Each pair copied up through its first name: indexed, the second name
    // still shown from below.
    s.mount();
    for p in pairs {
        fs::write(s.m.join(format!("{p}1")), format!("{p} changed")).unwrap();
    }
    fs::hard_link(s.m.join("p1"), s.m.join("p3")).unwrap();
    s.unmount();
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "kernel-written layers are clean: {out}");
    let entry = |p: &str| {
        let i = ino(&s.u.join(format!("{p}1")));
        s.index()
            .into_iter()
            .find(|n| ino(&s.w.join("index").join(n)) == i)
            .unwrap()
    };
    let (ip, iq, ir, is, it) = (entry("p"), entry("q"), entry("r"), entry("s"), entry("t"));
    let l = &s.lowers[1];
    // p: a count that is off (3 names show it: p1, p3, sub/p2).
    common::set_xattr(
        &s.w.join("index").join(&ip),
        "trusted.overlay.nlink",
        b"U+5",
    );
    // q: its upper name deleted offline and its lower names whited out:
    // no name shows it, yet its count says one does (the kernel keeps it).
    fs::remove_file(s.u.join("q1")).unwrap();
    mknod_whiteout(&s.u.join("q1"));
    fs::create_dir_all(s.u.join("sub")).unwrap();
    mknod_whiteout(&s.u.join("sub/q2"));
    common::set_xattr(
        &s.w.join("index").join(&iq),
        "trusted.overlay.nlink",
        b"U+1",
    );
    // r: the lower file deleted offline.
    fs::remove_file(l.join("r1")).unwrap();
    fs::remove_file(l.join("sub/r2")).unwrap();
    // s: the count missing.
    removexattr(&s.w.join("index").join(&is), "trusted.overlay.nlink");
    // t: its upper name deleted offline, one lower link left: the kernel
    // drops the entry at mount, and the lower file shows again.
    fs::remove_file(s.u.join("t1")).unwrap();
    fs::remove_file(l.join("sub/t2")).unwrap();

    let idx = |n: &str| s.w.join("index").join(n);
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 4, "{out}");
    assert!(found_at(&out, "found", "index-nlink", &idx(&ip)), "{out}");
    assert!(found_at(&out, "found", "index-nlink", &idx(&is)), "{out}");
    for i in [&iq, &ir, &it] {
        assert!(
            found_at(&out, "found", "index-orphan", &idx(i)),
            "{i}: {out}"
        );
    }
    // r's upper name keeps the gone file's handle: the kernel ignores it.
    assert!(
        found_at(&out, "found", "stale-origin", &s.u.join("r1")),
        "{out}"
    );
    assert_eq!(out.lines().count(), 6, "nothing else: {out}");
    assert_eq!(s.index().len(), 5, "-n changes nothing");

    let (code, out) = s.fsck("-y");
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("repaired").count(), 6, "{out}");
    assert_eq!(s.index(), {
        let mut v = vec![ip.clone(), is.clone()];
        v.sort();
        v
    });
    assert_eq!(
        common::lxattr(&idx(&ip), "trusted.overlay.nlink").unwrap(),
        b"U+0",
        "as the kernel writes it: 2 upper links (p1, p3) besides the entry, and sub/p2"
    );
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "clean after the repair: {out}");

    s.mount();
    let m = &s.m;
    assert_eq!(nlink(&m.join("p1")), 3);
    assert_eq!(ino(&m.join("p1")), ino(&m.join("sub/p2")));
    assert_eq!(fs::read_to_string(m.join("sub/p2")).unwrap(), "p changed");
    assert!(!m.join("q1").exists() && !m.join("sub/q2").exists());
    assert_eq!(fs::read_to_string(m.join("r1")).unwrap(), "r changed");
    assert_eq!(nlink(&m.join("r1")), 1);
    assert_eq!(nlink(&m.join("s1")), 2);
    assert_eq!(fs::read_to_string(m.join("sub/s2")).unwrap(), "s changed");
    assert_eq!(fs::read_to_string(m.join("t1")).unwrap(), "t");
    // Unlinking every name of p leaves no index entry behind.
    for n in ["p1", "p3", "sub/p2"] {
        fs::remove_file(m.join(n)).unwrap();
    }
    s.unmount();
    assert_eq!(s.index(), vec![is.clone()]);
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "{out}");
}

/// A directory moved with a redirect shows once: a missing whiteout at the
/// place it was moved from is made again; a second redirect to the same
/// lower directory, or an upper directory merged with it by name at the old
/// place, is reported and left.
#[test]
fn moved_directories_show_once() {
    if !require_root_and_fuse() {
        return;
    }
    let scratch = Scratch::new().unwrap();
    let s = Stack::new(&scratch.subdir("r"), |l| {
        for (d, f) in [("a", "x"), ("b", "y"), ("c/sub", "z")] {
            fs::create_dir_all(l.join(d)).unwrap();
            fs::write(l.join(d).join(f), f).unwrap();
        }
    });
    s.mount();
    fs::rename(s.m.join("a"), s.m.join("a2")).unwrap();
    fs::rename(s.m.join("b"), s.m.join("b2")).unwrap();
    fs::create_dir(s.m.join("n")).unwrap();
    fs::rename(s.m.join("c/sub"), s.m.join("n/sub")).unwrap();
    s.unmount();
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "kernel-written layers are clean: {out}");

    fs::remove_file(s.u.join("a")).unwrap();
    fs::remove_file(s.u.join("c/sub")).unwrap();
    fs::remove_file(s.u.join("b")).unwrap();
    fs::create_dir(s.u.join("b")).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(s.u.join("a2"))
        .arg(s.u.join("a3"))
        .status()
        .unwrap();
    assert!(cp.success());
    assert!(common::lxattr(&s.u.join("a3"), "trusted.overlay.redirect").is_some());
    // The kernel shows a's lower directory twice.
    s.mount();
    assert!(s.m.join("a/x").exists() && s.m.join("c/sub/z").exists());
    s.unmount();

    let (code, out) = s.fsck("-n");
    assert_eq!(code, 4, "{out}");
    for p in ["a", "b", "c/sub"] {
        assert!(
            found_at(&out, "found", "missing-redirect-whiteout", &s.u.join(p)),
            "{p}: {out}"
        );
    }
    assert!(
        found_at(&out, "found", "duplicate-redirect", &s.u.join("a3")),
        "{out}"
    );
    assert_eq!(out.lines().count(), 4, "nothing else: {out}");
    assert!(
        fs::symlink_metadata(s.u.join("a")).is_err(),
        "-n changes nothing"
    );

    let a3_before = tree::snapshot(&s.u.join("a3"), tree::SnapMode::Layer);
    let (code, out) = s.fsck("-y");
    assert_eq!(code, 4, "one has no safe repair: {out}");
    for p in ["a", "c/sub"] {
        assert!(
            found_at(&out, "repaired", "missing-redirect-whiteout", &s.u.join(p)),
            "{p}: {out}"
        );
    }
    assert!(
        found_at(&out, "found", "missing-redirect-whiteout", &s.u.join("b")),
        "{out}"
    );
    // The second redirect's directory is now a plain copy of what it showed.
    assert!(
        found_at(&out, "repaired", "duplicate-redirect", &s.u.join("a3")),
        "{out}"
    );
    assert!(common::lxattr(&s.u.join("a3"), "trusted.overlay.redirect").is_none());
    assert_eq!(
        common::lxattr(&s.u.join("a3"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read_to_string(s.u.join("a3/x")).unwrap(), "x");
    let a3_after = tree::snapshot(&s.u.join("a3"), tree::SnapMode::Layer);
    assert_eq!(a3_after.0[""].perm, a3_before.0[""].perm);
    assert_eq!(a3_after.0[""].mtime, a3_before.0[""].mtime);
    assert!(
        fs::read_dir(s.w.join("work")).unwrap().next().is_none(),
        "nothing left in W/work"
    );
    // What the user decides for the last: b should be hidden.
    fs::remove_dir(s.u.join("b")).unwrap();
    mknod_whiteout(&s.u.join("b"));
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "clean after the repair: {out}");

    s.mount();
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&s.m), ["a2", "a3", "b2", "c", "n"]);
    assert_eq!(fs::read_to_string(s.m.join("a3/x")).unwrap(), "x");
    assert_eq!(names(&s.m.join("c")), Vec::<String>::new());
    assert_eq!(fs::read_to_string(s.m.join("a2/x")).unwrap(), "x");
    assert_eq!(fs::read_to_string(s.m.join("b2/y")).unwrap(), "y");
    assert_eq!(fs::read_to_string(s.m.join("n/sub/z")).unwrap(), "z");
    s.unmount();
}

/// With an index, the upper root's origin names the first lower root: given
/// other lowers, fsck says so (the kernel refuses index=on) and judges no
/// origin handle against layers they were not made on.
#[test]
fn an_upper_tied_to_other_lowers_is_reported() {
    if !require_root_and_fuse() {
        return;
    }
    let scratch = Scratch::new().unwrap();
    let d = scratch.subdir("t");
    let s = Stack::new(&d, |l| fs::write(l.join("f"), "f").unwrap());
    s.mount();
    fs::write(s.m.join("f"), "changed").unwrap();
    s.unmount();
    let other = d.join("other");
    fs::create_dir_all(&other).unwrap();
    let lowers = vec![other.clone(), s.lowers[0].clone(), s.lowers[1].clone()];
    let opts = s
        .opts()
        .replacen("lowerdir=", &format!("lowerdir={}:", other.display()), 1);
    let (code, out) = fsck(&opts, "-n");
    assert_eq!(code, 4, "{out}");
    assert!(
        found_at(&out, "found", "root-origin-mismatch", &s.u),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "nothing else: {out}");
    let (code, out) = fsck(&opts, "-y");
    assert_eq!(code, 4, "no repair: {out}");
    assert!(mount_kernel(&lowers, Some(&s.u), Some(&s.w), &s.m, FULL).is_err());
    // index=off mounts them; the right lowers are clean.
    mount_kernel(&lowers, Some(&s.u), Some(&s.w), &s.m, &["index=off"]).unwrap();
    assert_eq!(fs::read_to_string(s.m.join("f")).unwrap(), "changed");
    s.unmount();
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "{out}");
}

/// A metacopy file the kernel moved (same directory: relative redirect;
/// elsewhere: absolute) finds its data through its redirect: not a problem.
#[test]
fn moved_metacopy_files_have_their_data() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let st = Stack::new(s.path(), |l2| {
        fs::create_dir_all(l2.join("d")).unwrap();
        fs::write(l2.join("d/same"), b"data of same").unwrap();
        fs::write(l2.join("d/away"), b"data of away").unwrap();
    });
    st.mount();
    for f in ["d/same", "d/away"] {
        let p = st.m.join(f);
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    fs::rename(st.m.join("d/same"), st.m.join("d/renamed")).unwrap();
    fs::rename(st.m.join("d/away"), st.m.join("moved")).unwrap();
    st.unmount();
    assert!(common::lxattr(&st.u.join("d/renamed"), "trusted.overlay.metacopy").is_some());
    let same = common::lxattr(&st.u.join("d/renamed"), "trusted.overlay.redirect");
    assert_eq!(
        same.as_deref(),
        Some(&b"same"[..]),
        "a relative redirect in place"
    );
    assert!(common::lxattr(&st.u.join("moved"), "trusted.overlay.redirect").is_some());
    let (code, out) = st.fsck("-n");
    assert!(!out.contains("metacopy-no-data"), "{out}");
    assert_eq!(code, 0, "{out}");
}

/// A redirect that leads nowhere: the mount shows the upper directory alone.
/// The repair keeps that view: where a lower directory of the same name
/// would merge once the redirect is gone, the directory becomes opaque.
#[test]
fn dangling_redirects_are_repaired_to_the_view_the_kernel_showed() {
    if !require_root_and_fuse() {
        return;
    }
    let scratch = Scratch::new().unwrap();
    let s = Stack::new(&scratch.subdir("d"), |l| {
        fs::create_dir_all(l.join("a/sub")).unwrap();
        fs::write(l.join("a/x"), "lower x").unwrap();
        fs::write(l.join("a/sub/y"), "lower y").unwrap();
        fs::write(l.join("f"), "f").unwrap();
    });
    s.mount();
    s.unmount();
    for (dir, target) in [("a", "/nowhere"), ("n", "/gone/too"), ("f2", "/f")] {
        fs::create_dir_all(s.u.join(dir)).unwrap();
        fs::write(s.u.join(dir).join("own"), dir).unwrap();
        common::set_xattr(
            &s.u.join(dir),
            "trusted.overlay.redirect",
            target.as_bytes(),
        );
    }
    s.mount();
    let before = tree::snapshot(&s.m, tree::SnapMode::Merged);
    s.unmount();
    assert!(
        !before.0.contains_key("a/x"),
        "the kernel merges nothing at a"
    );

    let (code, out) = s.fsck("-y");
    assert_eq!(code, 1, "all repaired: {out}");
    for dir in ["a", "n", "f2"] {
        assert!(
            found_at(&out, "repaired", "dangling-redirect", &s.u.join(dir)),
            "{dir}: {out}"
        );
        assert!(common::lxattr(&s.u.join(dir), "trusted.overlay.redirect").is_none());
    }
    let opaque = |d: &str| common::lxattr(&s.u.join(d), "trusted.overlay.opaque");
    assert_eq!(
        opaque("a").as_deref(),
        Some(&b"y"[..]),
        "a hides the lower a"
    );
    assert_eq!(opaque("n"), None, "nothing below n to hide");
    let (code, out) = s.fsck("-n");
    assert_eq!(code, 0, "clean after the repair: {out}");

    s.mount();
    let after = tree::snapshot(&s.m, tree::SnapMode::Merged);
    s.unmount();
    let d = tree::diff(&before, &after, "before", "after");
    assert!(d.is_empty(), "the view changed:\n{}", d.join("\n"));
}
