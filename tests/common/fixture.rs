//! The deterministic two-lower-layer fixture used by the differential test.
//!
//! [`build`] creates `BASE/{L1,L2,U,W,M}`: L1 is the top lower, L2 the bottom
//! lower, U/W an empty upper and work dir, M the mount point. Calling it twice
//! gives byte-for-byte identical layers (owners, modes, xattrs, contents,
//! mtimes; only inode numbers and ctimes differ). Every entry, including the
//! layer roots and U, gets mtime = atime = [`FIXTURE_MTIME`].
//!
//! `perm/` (mostly L1, some in L2) holds what permission tests need:
//! directories 0700/0755/0555/1777 owned by root (`_r`) and uid 1000 (`_u`),
//! files 0600/0644/0666/0755/4755/2755 of both, set-group-ID directories
//! (group 2000: `sgid` 2775, `sgid_open` 2777) and files owned by 1001.
//!
//! Layer directory names are upper case and fixture names lower case, so a
//! relative symlink that climbs out of a mount cannot resolve to a layer.
//!
//! AUFS/OCI whiteout forms (`.wh.NAME`, `.wh..wh..opq`) are NOT in the
//! fixture: the kernel overlay does not honour them (they show up as ordinary
//! files named `.wh.*` in the merged view; container tools convert them to
//! 0/0 char devices and opaque xattrs before mounting). Checked on 6.18.
use super::ops::SplitMix64;
use super::tree::FIXTURE_MTIME;
use super::{cstr, errno, errno_name};
use std::path::{Path, PathBuf};

/// Paths of one fixture copy.
#[derive(Clone, Debug)]
pub struct Layout {
    pub base: PathBuf,
    /// Top first: `[L1, L2]`.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

/// Absolute symlink target used in the fixture and by tests: it must not
/// exist on the host, so nothing written through it can escape the scratch.
pub const ABS_TARGET: &str = "/nonexistent-ovlfs-diff/target";

/// Deterministic pseudo-random content.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut r = SplitMix64(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

struct B(PathBuf);

impl B {
    fn p(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    fn check(&self, r: i32, what: &str, rel: &str) {
        if r != 0 {
            panic!(
                "fixture: {what} {}: {}",
                self.p(rel).display(),
                errno_name(errno())
            );
        }
    }
    fn dir(&self, rel: &str, mode: u32) {
        std::fs::create_dir_all(self.p(rel)).unwrap_or_else(|e| panic!("fixture mkdir {rel}: {e}"));
        self.chmod(rel, mode);
    }
    fn chmod(&self, rel: &str, mode: u32) {
        let r = unsafe { libc::chmod(cstr(&self.p(rel)).as_ptr(), mode) };
        self.check(r, "chmod", rel);
    }
    fn file(&self, rel: &str, mode: u32, data: &[u8]) {
        std::fs::write(self.p(rel), data).unwrap_or_else(|e| panic!("fixture write {rel}: {e}"));
        self.chmod(rel, mode);
    }
    /// A file with owner and mode (chmod after chown: chown clears set-id bits).
    fn fo(&self, rel: &str, mode: u32, uid: u32, gid: u32, data: &[u8]) {
        self.file(rel, mode, data);
        self.owner(rel, uid, gid);
        self.chmod(rel, mode);
    }
    /// A directory with owner and mode.
    fn diro(&self, rel: &str, mode: u32, uid: u32, gid: u32) {
        self.dir(rel, 0o755);
        self.owner(rel, uid, gid);
        self.chmod(rel, mode);
    }
    fn owner(&self, rel: &str, uid: u32, gid: u32) {
        let r = unsafe { libc::lchown(cstr(&self.p(rel)).as_ptr(), uid, gid) };
        self.check(r, "lchown", rel);
    }
    fn sym(&self, rel: &str, target: &str) {
        std::os::unix::fs::symlink(target, self.p(rel))
            .unwrap_or_else(|e| panic!("fixture symlink {rel}: {e}"));
    }
    fn node(&self, rel: &str, mode: u32, dev: libc::dev_t) {
        let r = unsafe { libc::mknod(cstr(&self.p(rel)).as_ptr(), mode, dev) };
        self.check(r, "mknod", rel);
    }
    fn whiteout(&self, rel: &str) {
        self.node(rel, libc::S_IFCHR, libc::makedev(0, 0));
    }
    fn hardlink(&self, existing: &str, rel: &str) {
        std::fs::hard_link(self.p(existing), self.p(rel))
            .unwrap_or_else(|e| panic!("fixture link {rel}: {e}"));
    }
    fn xattr(&self, rel: &str, name: &str, val: &[u8]) {
        let n = std::ffi::CString::new(name).unwrap();
        let r = unsafe {
            libc::lsetxattr(
                cstr(&self.p(rel)).as_ptr(),
                n.as_ptr(),
                val.as_ptr() as *const _,
                val.len(),
                0,
            )
        };
        self.check(r, "lsetxattr", rel);
    }
}

/// Sets atime and mtime of everything below (and including) `root` to
/// [`FIXTURE_MTIME`], children before parents, not following symlinks.
pub fn set_fixture_times(root: &Path) {
    fn rec(p: &Path) {
        let md = std::fs::symlink_metadata(p).unwrap();
        if md.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for c in names {
                rec(&c);
            }
        }
        let ts = libc::timespec {
            tv_sec: FIXTURE_MTIME,
            tv_nsec: 0,
        };
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                cstr(p).as_ptr(),
                [ts, ts].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(
            r,
            0,
            "fixture utimensat {}: {}",
            p.display(),
            errno_name(errno())
        );
    }
    rec(root);
}

/// Builds the fixture under `base` (which must exist and be empty).
pub fn build(base: &Path) -> Layout {
    let l = Layout {
        base: base.to_path_buf(),
        lowers: vec![base.join("L1"), base.join("L2")],
        upper: base.join("U"),
        work: base.join("W"),
        mnt: base.join("M"),
    };
    for d in [&l.lowers[0], &l.lowers[1], &l.upper, &l.work, &l.mnt] {
        std::fs::create_dir(d).unwrap_or_else(|e| panic!("fixture mkdir {}: {e}", d.display()));
    }
    build_l2(&B(l.lowers[1].clone()));
    build_l1(&B(l.lowers[0].clone()));
    for d in [&l.lowers[0], &l.lowers[1], &l.upper] {
        let r = unsafe { libc::chmod(cstr(d).as_ptr(), 0o755) };
        assert_eq!(r, 0);
        set_fixture_times(d);
    }
    l
}

/// Bottom lower layer.
fn build_l2(b: &B) {
    // Nested dirs, depth 4, merged with L1's a/ and a/b/.
    b.dir("a/b/c/d", 0o755);
    b.file("a/b/c/deep.txt", 0o644, b"deep in l2\n");
    b.file("a/b/c/d/leaf.txt", 0o644, b"leaf\n");
    b.sym("a/b/c/up", "../../../merged/common");
    b.file("a/b/l2file", 0o644, b"l2 file in a/b\n");
    b.file("a/l2only.txt", 0o640, b"only in l2\n");
    b.owner("a/l2only.txt", 1000, 1000);
    // Merged dir with entries on both sides and a name in both.
    b.dir("merged/sub", 0o755);
    b.dir("merged/l2dir", 0o750);
    b.file("merged/common", 0o644, b"common from l2\n");
    b.file("merged/l2file", 0o644, &content(2, 3000));
    b.owner("merged/l2file", 1000, 100);
    b.file("merged/sub/x", 0o644, b"x\n");
    b.file("merged/l2dir/f", 0o644, b"f\n");
    // File in L1 over a dir in L2, and a dir in L1 over a file in L2.
    b.dir("fileordir", 0o755);
    b.file("fileordir/inner", 0o644, b"inner\n");
    b.file("dirorfile", 0o644, b"file below a dir\n");
    // Hidden by whiteouts in L1.
    b.file("hidden.txt", 0o644, b"you should not see this\n");
    b.dir("hiddendir", 0o755);
    b.file("hiddendir/f", 0o644, b"hidden too\n");
    // Hidden below an opaque dir in L1.
    b.dir("opq/olddir", 0o755);
    b.file("opq/old1", 0o644, b"old\n");
    b.file("opq/olddir/x", 0o644, b"old x\n");
    b.file("opq/shared", 0o644, b"shared from l2\n");
    // Big (>= 1 MiB) and sparse files.
    b.file("big.bin", 0o644, &content(7, 1_572_864 + 123));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(b.p("sparse.bin")).unwrap();
        f.write_all_at(&content(8, 4096), 0).unwrap();
        f.write_all_at(&content(9, 4096), 3 << 20).unwrap();
        b.chmod("sparse.bin", 0o644);
    }
    // Hard links (nlink 2).
    b.dir("links", 0o755);
    b.file("links/hl_a", 0o644, b"l2 hardlinked content\n");
    b.hardlink("links/hl_a", "links/hl_b");
    b.node("l2fifo", libc::S_IFIFO | 0o644, 0);
    b.dir("ro_dir", 0o755);
    b.file("ro_dir/file", 0o444, b"in a 0555 dir\n");
    b.chmod("ro_dir", 0o555);
    b.sym("sym_l2", "merged/common");
    b.file("empty.txt", 0o644, b"");
    b.file("setuid", 0o4755, b"#!/bin/sh\n");
    b.file("shadowed", 0o600, b"l2 version\n");
    b.owner("shadowed", 1000, 1000);
    // Permission tree, part in L2 (so perm/ and perm/d0755_u are merged).
    b.dir("perm", 0o755);
    b.diro("perm/d0755_u", 0o755, 1000, 1000);
    b.fo(
        "perm/d0755_u/l2f",
        0o644,
        0,
        0,
        b"l2 root file in 1000's dir\n",
    );
    b.diro("perm/l2_d0755_u", 0o755, 1000, 1000);
    b.fo("perm/l2_d0755_u/f_u", 0o644, 1000, 1000, b"l2 f_u\n");
    b.fo("perm/l2_f0644_r", 0o644, 0, 0, b"l2 root 0644\n");
    b.fo("perm/l2_f0600_u", 0o600, 1000, 1000, b"l2 1000 0600\n");
}

/// The permission tree of L1: directories and files of every interesting
/// mode owned by root (`_r`), uid 1000 (`_u`), uid 1001 (`_u1`), group 2000.
fn build_perm_l1(b: &B) {
    b.dir("perm", 0o755);
    for (d, mode, uid) in [
        ("d0700_r", 0o700, 0),
        ("d0700_u", 0o700, 1000),
        ("d0755_r", 0o755, 0),
        ("d0755_u", 0o755, 1000),
        ("d0555_r", 0o555, 0),
        ("d0555_u", 0o555, 1000),
        ("sticky_r", 0o1777, 0),
        ("sticky_u", 0o1777, 1000),
    ] {
        let (f, fm) = match d {
            "d0555_r" | "d0555_u" | "d0700_r" | "d0700_u" => ("f", 0o644),
            _ => (
                "f_r",
                if d.starts_with("sticky_u") {
                    0o666
                } else {
                    0o644
                },
            ),
        };
        let dir = format!("perm/{d}");
        b.dir(&dir, 0o755);
        let fu = if f == "f" { uid } else { 0 };
        b.fo(&format!("{dir}/{f}"), fm, fu, fu, d.as_bytes());
        match d {
            "d0755_r" => b.fo(&format!("{dir}/f_u"), 0o644, 1000, 1000, b"f_u\n"),
            "d0755_u" => {
                b.fo(&format!("{dir}/f_u"), 0o644, 1000, 1000, b"f_u\n");
                b.fo(&format!("{dir}/f_u1"), 0o644, 1001, 1001, b"f_u1\n");
            }
            "d0555_r" => b.dir(&format!("{dir}/sub"), 0o755),
            "sticky_r" => {
                b.fo(&format!("{dir}/f_u"), 0o666, 1000, 1000, b"f_u\n");
                b.fo(&format!("{dir}/f_u1"), 0o666, 1001, 1001, b"f_u1\n");
                b.diro(&format!("{dir}/d_u"), 0o777, 1000, 1000);
            }
            "sticky_u" => b.fo(&format!("{dir}/f_u1"), 0o644, 1001, 1001, b"f_u1\n"),
            _ => {}
        }
        b.owner(&dir, uid, uid);
        b.chmod(&dir, mode);
    }
    b.diro("perm/sgid", 0o2775, 0, 2000);
    b.fo("perm/sgid/f", 0o664, 0, 2000, b"in sgid\n");
    b.diro("perm/sgid/sub", 0o2775, 0, 2000);
    b.diro("perm/sgid_open", 0o2777, 0, 2000);
    for (mode, name) in [
        (0o600, "0600"),
        (0o644, "0644"),
        (0o666, "0666"),
        (0o755, "0755"),
        (0o4755, "4755"),
        (0o2755, "2755"),
    ] {
        let g = if mode == 0o2755 { 2000 } else { 0 };
        b.fo(&format!("perm/f{name}_r"), mode, 0, g, name.as_bytes());
        let g = if mode == 0o2755 { 2000 } else { 1000 };
        b.fo(&format!("perm/f{name}_u"), mode, 1000, g, name.as_bytes());
    }
    b.fo("perm/f0660_g", 0o660, 0, 2000, b"group 2000 rw\n");
    b.fo("perm/f0644_u_g0", 0o644, 1000, 0, b"1000 in group 0\n");
    b.xattr("perm/f0644_r", "user.p", b"1");
    b.xattr("perm/f0644_u", "user.p", b"1");
}

/// Top lower layer.
fn build_l1(b: &B) {
    b.dir("a/b", 0o755);
    b.file("a/b/l1file", 0o644, b"l1 file in a/b\n");
    b.file("a/l1only.txt", 0o644, b"only in l1\n");
    b.dir("merged/sub", 0o755);
    b.file("merged/common", 0o644, b"common from l1\n");
    b.file("merged/l1file", 0o600, &content(1, 5000));
    b.file("merged/sub/y", 0o644, b"y\n");
    b.file("fileordir", 0o644, b"a file over a dir\n");
    b.dir("dirorfile", 0o755);
    b.file("dirorfile/child", 0o644, b"child\n");
    b.whiteout("hidden.txt");
    b.whiteout("hiddendir");
    b.dir("opq", 0o755);
    b.xattr("opq", "trusted.overlay.opaque", b"y");
    b.file("opq/new1", 0o644, b"new1\n");
    b.file("opq/shared", 0o644, b"shared from l1\n");
    b.file("xattr.txt", 0o644, b"has xattrs\n");
    b.xattr("xattr.txt", "user.test", b"hello");
    b.xattr("xattr.txt", "user.empty", b"");
    b.dir("xdir", 0o755);
    b.xattr("xdir", "user.dirattr", b"1");
    b.file("owned1000", 0o644, b"owned by 1000\n");
    b.owner("owned1000", 1000, 1000);
    b.file("secret", 0o600, b"secret\n");
    b.file("exec.sh", 0o755, b"#!/bin/sh\necho hi\n");
    b.file("mode0000", 0o000, b"no perms\n");
    b.dir("dir0700", 0o700);
    b.owner("dir0700", 1000, 1000);
    b.file("dir0700/f", 0o644, b"f\n");
    b.dir("sgid_dir", 0o2775);
    b.owner("sgid_dir", 0, 1000);
    b.dir("sticky", 0o1777);
    b.file("sticky/f1000", 0o644, b"sticky child\n");
    b.owner("sticky/f1000", 1000, 1000);
    b.file("hl1", 0o644, b"l1 hardlinked content\n");
    b.hardlink("hl1", "hl2");
    b.node("fifo", libc::S_IFIFO | 0o644, 0);
    b.node("nulldev", libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    b.sym("sym_rel", "a/b/c/deep.txt");
    b.sym("sym_abs", ABS_TARGET);
    b.sym("sym_dangling", "nowhere");
    b.sym("sym_dir", "merged");
    b.sym("sym_loop", "sym_loop");
    b.file("shadowed", 0o644, b"l1 version\n");
    b.dir("l1deep/x/y/z", 0o755);
    b.file("l1deep/x/y/z/file", 0o644, b"deep in l1\n");
    b.dir("empty_dir", 0o755);
    build_perm_l1(b);
}

/// Paths that exist (or are hidden) in the fixture, for random sequences.
/// `nulldev` is left out on purpose (see the `device_node` scenario).
pub const FIXTURE_PATHS: &[&str] = &[
    "",
    "a",
    "a/b",
    "a/b/c",
    "a/b/c/deep.txt",
    "a/b/c/d",
    "a/b/c/d/leaf.txt",
    "a/b/c/up",
    "a/b/l2file",
    "a/b/l1file",
    "a/l2only.txt",
    "a/l1only.txt",
    "merged",
    "merged/common",
    "merged/l2file",
    "merged/l1file",
    "merged/sub",
    "merged/sub/x",
    "merged/sub/y",
    "merged/l2dir",
    "merged/l2dir/f",
    "fileordir",
    "fileordir/inner",
    "dirorfile",
    "dirorfile/child",
    "hidden.txt",
    "hiddendir",
    "hiddendir/f",
    "opq",
    "opq/new1",
    "opq/shared",
    "opq/old1",
    "opq/olddir",
    "big.bin",
    "sparse.bin",
    "links",
    "links/hl_a",
    "links/hl_b",
    "l2fifo",
    "ro_dir",
    "ro_dir/file",
    "sym_l2",
    "empty.txt",
    "setuid",
    "shadowed",
    "xattr.txt",
    "xdir",
    "owned1000",
    "secret",
    "exec.sh",
    "mode0000",
    "dir0700",
    "dir0700/f",
    "sgid_dir",
    "sticky",
    "sticky/f1000",
    "hl1",
    "hl2",
    "fifo",
    "sym_rel",
    "sym_abs",
    "sym_dangling",
    "sym_dir",
    "sym_loop",
    "l1deep",
    "l1deep/x/y/z/file",
    "empty_dir",
    "perm",
    "perm/d0700_r",
    "perm/d0700_r/f",
    "perm/d0700_u",
    "perm/d0700_u/f",
    "perm/d0755_r",
    "perm/d0755_r/f_r",
    "perm/d0755_r/f_u",
    "perm/d0755_u",
    "perm/d0755_u/f_r",
    "perm/d0755_u/f_u",
    "perm/d0755_u/f_u1",
    "perm/d0755_u/l2f",
    "perm/d0555_r",
    "perm/d0555_r/f",
    "perm/d0555_r/sub",
    "perm/d0555_u",
    "perm/d0555_u/f",
    "perm/sticky_r",
    "perm/sticky_r/f_r",
    "perm/sticky_r/f_u",
    "perm/sticky_r/f_u1",
    "perm/sticky_r/d_u",
    "perm/sticky_u",
    "perm/sticky_u/f_r",
    "perm/sticky_u/f_u1",
    "perm/sgid",
    "perm/sgid/f",
    "perm/sgid/sub",
    "perm/sgid_open",
    "perm/f0600_r",
    "perm/f0644_r",
    "perm/f0666_r",
    "perm/f0755_r",
    "perm/f4755_r",
    "perm/f2755_r",
    "perm/f0600_u",
    "perm/f0644_u",
    "perm/f0666_u",
    "perm/f0755_u",
    "perm/f4755_u",
    "perm/f2755_u",
    "perm/f0660_g",
    "perm/f0644_u_g0",
    "perm/l2_d0755_u",
    "perm/l2_d0755_u/f_u",
    "perm/l2_f0644_r",
    "perm/l2_f0600_u",
];

/// Names that do not exist in the fixture (so creations succeed and most
/// other operations fail). `@LONG` expands to a 256-byte name.
pub const NEW_PATHS: &[&str] = &[
    "new1",
    "new2",
    "a/new",
    "a/b/c/new",
    "merged/new",
    "merged/sub/new",
    "opq/new",
    "newdir",
    "newdir/f",
    "newdir/sub",
    "newdir/sub/g",
    "newdir2",
    "sgid_dir/new",
    "nowhere",
    "sym_dir/viasym",
    "fileordir/x",
    "nonexist/child",
    "@LONG",
    "merged/@LONG",
    "perm/new",
    "perm/d0755_r/new",
    "perm/d0755_u/new",
    "perm/d0555_r/new",
    "perm/d0555_u/new",
    "perm/d0700_r/new",
    "perm/d0700_u/new",
    "perm/sticky_r/new",
    "perm/sticky_u/new",
    "perm/sgid/new",
    "perm/sgid/sub/new",
    "perm/sgid_open/new",
    "perm/l2_d0755_u/new",
];
