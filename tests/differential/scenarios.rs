//! Scripted scenarios for the differential test: named operation sequences
//! over the fixture (see common/fixture.rs), each step with an expectation
//! that is checked against the ORACLE (kernel) side. A failing expectation
//! means the test's model of the kernel is wrong, not that ovlfs is; the
//! subject is only ever compared with the oracle.
use crate::common::fixture::{ABS_TARGET, FIXTURE_PATHS};
use crate::common::ops::{Data, NodeKind, Op, OpenMode};
use crate::common::tree::UTIMES_POOL;

#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    Any,
    Ok,
    Err(&'static str),
}

#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    pub expect: Expect,
}

pub struct Scenario {
    pub name: &'static str,
    /// Mount without upper/work (read-only) on both sides.
    pub read_only: bool,
    pub steps: Vec<Step>,
}

fn ok(op: Op) -> Step {
    Step {
        op,
        expect: Expect::Ok,
    }
}
fn er(op: Op, e: &'static str) -> Step {
    Step {
        op,
        expect: Expect::Err(e),
    }
}
fn any(op: Op) -> Step {
    Step {
        op,
        expect: Expect::Any,
    }
}
fn s(p: &str) -> String {
    p.to_string()
}
fn d(len: usize, seed: u8) -> Data {
    Data { len, seed }
}

// Short constructors.
fn read(p: &str) -> Op {
    Op::Read { p: s(p) }
}
fn stat(p: &str) -> Op {
    Op::Stat {
        p: s(p),
        follow: true,
    }
}
fn lstat(p: &str) -> Op {
    Op::Stat {
        p: s(p),
        follow: false,
    }
}
fn readdir(p: &str) -> Op {
    Op::Readdir { p: s(p) }
}
fn create(p: &str) -> Op {
    Op::Create {
        p: s(p),
        mode: 0o644,
    }
}
fn write(p: &str, len: usize) -> Op {
    Op::WriteTrunc {
        p: s(p),
        data: d(len, len as u8),
        creat: false,
    }
}
fn write_creat(p: &str, len: usize) -> Op {
    Op::WriteTrunc {
        p: s(p),
        data: d(len, 3),
        creat: true,
    }
}
fn pwrite(p: &str, off: u64, len: usize) -> Op {
    Op::Pwrite {
        p: s(p),
        off,
        data: d(len, 5),
    }
}
fn append(p: &str, len: usize) -> Op {
    Op::Append {
        p: s(p),
        data: d(len, 6),
    }
}
fn truncate(p: &str, len: u64) -> Op {
    Op::Truncate { p: s(p), len }
}
fn mkdir(p: &str, mode: u32) -> Op {
    Op::Mkdir { p: s(p), mode }
}
fn rmdir(p: &str) -> Op {
    Op::Rmdir { p: s(p) }
}
fn unlink(p: &str) -> Op {
    Op::Unlink { p: s(p) }
}
fn rename(a: &str, b: &str) -> Op {
    Op::Rename {
        from: s(a),
        to: s(b),
        flags: 0,
    }
}
fn rename_f(a: &str, b: &str, flags: u32) -> Op {
    Op::Rename {
        from: s(a),
        to: s(b),
        flags,
    }
}
const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
fn symlink(t: &str, p: &str) -> Op {
    Op::Symlink {
        target: s(t),
        p: s(p),
    }
}
fn readlink(p: &str) -> Op {
    Op::Readlink { p: s(p) }
}
fn link(a: &str, b: &str) -> Op {
    Op::Link {
        from: s(a),
        to: s(b),
    }
}
fn chmod(p: &str, mode: u32) -> Op {
    Op::Chmod { p: s(p), mode }
}
fn chown(p: &str, uid: u32, gid: u32) -> Op {
    Op::Chown {
        p: s(p),
        uid,
        gid,
        nofollow: false,
    }
}
fn lchown(p: &str, uid: u32, gid: u32) -> Op {
    Op::Chown {
        p: s(p),
        uid,
        gid,
        nofollow: true,
    }
}
fn utimes(p: &str, i: usize, nofollow: bool) -> Op {
    Op::Utimes {
        p: s(p),
        atime: UTIMES_POOL[(i + 1) % UTIMES_POOL.len()],
        mtime: UTIMES_POOL[i],
        nofollow,
    }
}
fn setx(p: &str, n: &str, v: &str, flags: i32) -> Op {
    Op::SetXattr {
        p: s(p),
        name: s(n),
        value: s(v),
        flags,
        nofollow: false,
    }
}
fn lsetx(p: &str, n: &str, v: &str) -> Op {
    Op::SetXattr {
        p: s(p),
        name: s(n),
        value: s(v),
        flags: 0,
        nofollow: true,
    }
}
fn getx(p: &str, n: &str) -> Op {
    Op::GetXattr {
        p: s(p),
        name: s(n),
        nofollow: false,
    }
}
fn listx(p: &str) -> Op {
    Op::ListXattr {
        p: s(p),
        nofollow: true,
    }
}
fn rmx(p: &str, n: &str) -> Op {
    Op::RemoveXattr {
        p: s(p),
        name: s(n),
        nofollow: false,
    }
}
fn mkfifo(p: &str) -> Op {
    Op::Mknod {
        p: s(p),
        mode: 0o644,
        kind: NodeKind::Fifo,
    }
}
fn mkchr(p: &str, a: u32, b: u32) -> Op {
    Op::Mknod {
        p: s(p),
        mode: 0o644,
        kind: NodeKind::Char(a, b),
    }
}
fn access(p: &str, mode: i32) -> Op {
    Op::Access { p: s(p), mode }
}
fn rmrf(p: &str) -> Op {
    Op::RmRf { p: s(p) }
}
fn fdopen(slot: usize, p: &str, mode: OpenMode) -> Op {
    Op::FdOpen {
        slot,
        p: s(p),
        mode,
    }
}
fn fdread(slot: usize) -> Op {
    Op::FdRead { slot }
}
fn fdwrite(slot: usize, off: u64, len: usize) -> Op {
    Op::FdWrite {
        slot,
        off,
        data: d(len, 9),
    }
}
fn fdstat(slot: usize) -> Op {
    Op::FdStat { slot }
}

/// Stat, lstat, readdir, read and listxattr of every fixture path.
fn look_at_everything() -> Vec<Step> {
    let mut v = Vec::new();
    for p in FIXTURE_PATHS {
        v.push(any(stat(p)));
        v.push(any(lstat(p)));
        v.push(any(readdir(p)));
        v.push(any(listx(p)));
        v.push(any(read(p)));
    }
    v
}

#[rustfmt::skip]
pub fn scenarios() -> Vec<Scenario> {
    use OpenMode::*;
    let rw = |name, steps| Scenario {
        name,
        read_only: false,
        steps,
    };
    vec![
        rw("look_at_everything", look_at_everything()),
        rw(
            "read",
            vec![
                ok(read("big.bin")), ok(read("sparse.bin")), ok(read("sym_rel")), ok(read("merged/common")),
                ok(read("a/b/c/up")), ok(read("dirorfile/child")), ok(read("fifo")), ok(read("mode0000")),
                er(read("sym_abs"), "ENOENT"), er(read("sym_dangling"), "ENOENT"), er(read("sym_loop"), "ELOOP"),
                er(read("hidden.txt"), "ENOENT"), er(read("hiddendir/f"), "ENOENT"), er(read("opq/old1"), "ENOENT"),
                er(read("fileordir/inner"), "ENOTDIR"), er(read("a"), "EISDIR"), er(read("@LONG"), "ENAMETOOLONG"),
                ok(readdir("")), ok(readdir("opq")), ok(readdir("merged")), ok(readdir("a/b")),
                ok(readdir("dirorfile")), er(stat("hiddendir"), "ENOENT"), er(readdir("merged/common"), "ENOTDIR"),
                er(stat("merged/common/x"), "ENOTDIR"), er(stat("merged/@LONG"), "ENAMETOOLONG"),
                ok(stat("links/hl_a")), ok(stat("hl1")), ok(stat("a")),
            ],
        ),
        rw(
            "create",
            vec![
                ok(create("new1")), er(create("new1"), "EEXIST"), er(create("merged/common"), "EEXIST"),
                ok(create("merged/new")), ok(create("a/b/c/new")), ok(create("a/b/c/d/new")),
                ok(create("l1deep/x/y/new")), ok(create("opq/old1")), ok(readdir("opq")), ok(create("hidden.txt")),
                ok(read("hidden.txt")), er(create("nonexist/child"), "ENOENT"), er(create("fileordir/x"), "ENOTDIR"),
                er(create("@LONG"), "ENAMETOOLONG"), ok(create("sgid_dir/new")), ok(stat("sgid_dir/new")),
                ok(create("ro_dir/new")), ok(create("dir0700/new")), er(create("sym_abs"), "EEXIST"),
                ok(write_creat("sym_dangling", 10)), ok(stat("nowhere")), er(write_creat("sym_abs", 10), "ENOENT"),
                ok(write_creat("merged/sub/new", 100)), ok(Op::Create {p: s("mode_odd"), mode: 0o4777 }),
                ok(stat("mode_odd")), ok(readdir("")), ok(readdir("merged")), ok(readdir("a/b/c")), ok(stat("a/b/c")),
                ok(stat("a")),
            ],
        ),
        rw(
            "write_copy_up",
            vec![
                ok(write("merged/common", 100)), ok(read("merged/common")), ok(stat("merged/common")),
                ok(pwrite("big.bin", 1 << 20, 5000)), ok(read("big.bin")), ok(stat("big.bin")),
                ok(append("a/b/c/deep.txt", 17)), ok(read("a/b/c/deep.txt")), ok(stat("a/b/c")), ok(stat("a/b")),
                ok(truncate("merged/l2file", 10)), ok(stat("merged/l2file")), ok(truncate("sparse.bin", 5 << 20)),
                ok(read("sparse.bin")), ok(pwrite("sparse.bin", 100, 10)), ok(read("sparse.bin")),
                ok(truncate("empty.txt", 0)), ok(pwrite("empty.txt", 70_000, 3)), ok(read("empty.txt")),
                er(write("a", 1), "EISDIR"), er(truncate("a", 0), "EISDIR"), er(truncate("nonexist", 0), "ENOENT"),
                er(write("fifo", 1), "ENXIO"), ok(write("owned1000", 5)), ok(stat("owned1000")), ok(write("setuid", 5)),
                ok(stat("setuid")), ok(write("mode0000", 5)), ok(stat("mode0000")), ok(write("sym_rel", 33)),
                ok(read("a/b/c/deep.txt")), ok(write("ro_dir/file", 2)), ok(append("shadowed", 4)),
                ok(read("shadowed")), ok(stat("shadowed")), ok(write("merged/sub/x", 0)), ok(stat("merged/sub/x")),
            ],
        ),
        rw(
            "hardlinks",
            vec![
                ok(stat("hl1")), ok(write("hl1", 9)), ok(read("hl2")), ok(stat("hl1")), ok(stat("hl2")),
                ok(unlink("links/hl_a")), ok(stat("links/hl_b")), ok(link("links/hl_b", "links/hl_c")),
                ok(stat("links/hl_b")), ok(stat("links/hl_c")), ok(append("links/hl_c", 3)), ok(read("links/hl_b")),
            ],
        ),
        rw(
            "hardlink_rename_same_inode",
            vec![
                any(rename("links/hl_a", "links/hl_b")), ok(readdir("links")), any(rename("hl1", "hl2")),
                ok(readdir("")), any(stat("hl2")), any(chmod("hl1", 0o600)), ok(stat("hl2")), any(stat("hl1")),
            ],
        ),
        rw(
            "mkdir_rmdir",
            vec![
                ok(mkdir("newdir", 0o755)), er(mkdir("newdir", 0o755), "EEXIST"), er(mkdir("merged", 0o755), "EEXIST"),
                ok(mkdir("newdir/sub", 0o700)), er(rmdir("newdir"), "ENOTEMPTY"), ok(rmdir("newdir/sub")),
                ok(rmdir("newdir")), er(rmdir("newdir"), "ENOENT"), er(rmdir("merged"), "ENOTEMPTY"),
                er(rmdir("merged/common"), "ENOTDIR"), er(rmdir("sym_dir"), "ENOTDIR"), ok(rmdir("empty_dir")),
                er(stat("empty_dir"), "ENOENT"), ok(mkdir("empty_dir", 0o711)), ok(stat("empty_dir")),
                ok(rmdir("xdir")), ok(mkdir("hidden.txt", 0o755)), ok(readdir("hidden.txt")),
                ok(mkdir("hiddendir", 0o755)), ok(readdir("hiddendir")), ok(mkdir("merged/l2dir/newsub", 0o755)),
                ok(mkdir("ro_dir/sub", 0o755)), ok(mkdir("sgid_dir/sub", 0o755)), ok(stat("sgid_dir/sub")),
                ok(mkdir("odd", 0o3777)), ok(stat("odd")), er(mkdir("@LONG", 0o755), "ENAMETOOLONG"),
                er(mkdir("nonexist/child", 0o755), "ENOENT"), er(mkdir("fileordir/x", 0o755), "ENOTDIR"),
                er(rmdir("dirorfile"), "ENOTEMPTY"), ok(unlink("dirorfile/child")), ok(rmdir("dirorfile")),
                er(stat("dirorfile"), "ENOENT"), ok(mkdir("dirorfile", 0o755)), ok(readdir("dirorfile")),
                ok(unlink("merged/sub/x")), ok(unlink("merged/sub/y")), ok(readdir("merged/sub")),
                ok(rmdir("merged/sub")), ok(mkdir("merged/sub", 0o755)), ok(readdir("merged/sub")),
                er(rmdir(""), "EBUSY"), ok(readdir("")), ok(readdir("merged")),
            ],
        ),
        rw(
            "unlink",
            vec![
                ok(unlink("merged/common")), er(read("merged/common"), "ENOENT"), ok(readdir("merged")),
                ok(unlink("a/b/c/deep.txt")), ok(unlink("sym_rel")), ok(unlink("fifo")), ok(unlink("l2fifo")),
                er(unlink("a"), "EISDIR"), er(unlink("nonexist"), "ENOENT"), er(unlink("hidden.txt"), "ENOENT"),
                er(unlink("opq/old1"), "ENOENT"), ok(create("merged/common")), ok(read("merged/common")),
                ok(unlink("shadowed")), er(stat("shadowed"), "ENOENT"), ok(unlink("fileordir")),
                er(stat("fileordir"), "ENOENT"), ok(mkdir("fileordir", 0o755)), ok(readdir("fileordir")),
                er(unlink("fileordir/inner"), "ENOENT"), er(unlink("@LONG"), "ENAMETOOLONG"), ok(unlink("ro_dir/file")),
                ok(unlink("sticky/f1000")), ok(readdir("sticky")), ok(create("new1")), ok(unlink("new1")),
                er(stat("new1"), "ENOENT"), ok(readdir("")), ok(stat("a/b/c")),
            ],
        ),
        rw(
            "rename_files",
            vec![
                ok(rename("merged/common", "merged/renamed")), er(read("merged/common"), "ENOENT"),
                ok(read("merged/renamed")), ok(rename("a/l1only.txt", "merged/l2file")), ok(read("merged/l2file")),
                ok(stat("merged/l2file")), er(rename_f("merged/l1file", "merged/l2file", NOREPLACE), "EEXIST"),
                ok(rename_f("merged/l1file", "merged/nr", NOREPLACE)),
                ok(rename_f("merged/sub/x", "merged/sub/y", EXCHANGE)), ok(read("merged/sub/x")),
                ok(read("merged/sub/y")), er(rename_f("merged/sub/x", "merged/nonexist", EXCHANGE), "ENOENT"),
                ok(rename("sym_rel", "a/sym_moved")), ok(readlink("a/sym_moved")), ok(rename("hl1", "newname")),
                ok(stat("hl2")), ok(stat("newname")), er(rename("nonexist", "x"), "ENOENT"),
                er(rename("merged/renamed", "nonexist/x"), "ENOENT"), er(rename("merged/renamed", "a"), "EISDIR"),
                ok(rename("secret", "opq/secret")), ok(readdir("opq")), ok(rename("opq/new1", "hidden.txt")),
                ok(read("hidden.txt")), ok(rename("exec.sh", "exec.sh")),
                er(rename("merged/renamed", "@LONG"), "ENAMETOOLONG"),
                er(rename_f("xattr.txt", "x2", libc::RENAME_WHITEOUT), "EINVAL"),
                er(rename_f("a", "b", NOREPLACE | EXCHANGE), "EINVAL"), ok(rename("fifo", "fifo2")),
                ok(rename_f("owned1000", "setuid", EXCHANGE)), ok(stat("owned1000")), ok(stat("setuid")),
                ok(rename("xattr.txt", "merged/sub/xattr.txt")), ok(listx("merged/sub/xattr.txt")),
                ok(rename("a/b/c/d/leaf.txt", "leaf")), ok(readdir("a/b/c/d")), ok(create("a/b/c/d/leaf.txt")),
                ok(readdir("")), ok(readdir("merged")), ok(readdir("a")),
            ],
        ),
        rw(
            "rename_dirs",
            vec![
                er(rename("a", "a2"), "EXDEV"), er(rename("l1deep", "l1deep2"), "EXDEV"),
                er(rename("merged/l2dir", "merged/l2dir2"), "EXDEV"), er(rename("empty_dir", "empty2"), "EXDEV"),
                er(rename("dirorfile", "d4"), "EXDEV"), er(rename("opq", "opq2"), "EXDEV"),
                er(rename_f("a", "merged", EXCHANGE), "EXDEV"), ok(mkdir("newdir", 0o755)), ok(create("newdir/f")),
                ok(mkdir("newdir/sub", 0o755)), ok(rename("newdir", "newdir2")), ok(readdir("newdir2")),
                er(rename("newdir2", "newdir2/sub/inside"), "EINVAL"), ok(mkdir("newdir", 0o755)),
                ok(rename("newdir", "newdir2/sub")), er(rename("newdir2", "merged"), "ENOTEMPTY"),
                ok(mkdir("d3", 0o755)), er(rename("d3", "merged/common"), "ENOTDIR"), ok(rename("d3", "empty_dir")),
                ok(readdir("")), ok(rename("newdir2", "a/b/c/moved")), ok(readdir("a/b/c")), ok(readdir("a/b/c/moved")),
                ok(mkdir("x1", 0o755)), ok(mkdir("x2", 0o700)), ok(rename_f("x1", "x2", EXCHANGE)), ok(stat("x1")),
                ok(stat("x2")), ok(mkdir("hiddendir", 0o755)), ok(rename("hiddendir", "hd2")), ok(mkdir("x3", 0o755)),
                er(rename_f("x3", "x2", NOREPLACE), "EEXIST"), ok(create("x2/f")), er(rename("x3", "x2"), "ENOTEMPTY"),
                er(rename_f("x3", "a", EXCHANGE), "EXDEV"), ok(readdir("")),
            ],
        ),
        rw(
            "symlinks",
            vec![
                ok(symlink("merged/common", "newsym")), ok(readlink("newsym")), ok(read("newsym")),
                er(symlink("x", "merged/common"), "EEXIST"), ok(readlink("sym_abs")), ok(readlink("sym_l2")),
                ok(readlink("a/b/c/up")), er(readlink("merged/common"), "EINVAL"), er(readlink("nonexist"), "ENOENT"),
                er(symlink("x", "@LONG"), "ENAMETOOLONG"), ok(symlink("@LONG", "longtarget")),
                ok(readlink("longtarget")), ok(symlink(ABS_TARGET, "abs2")), ok(lstat("abs2")),
                ok(symlink("x", "hidden.txt")), ok(lchown("sym_rel", 1000, 1000)), ok(lstat("sym_rel")),
                ok(stat("sym_rel")), ok(utimes("sym_dir", 1, true)), ok(lstat("sym_dir")), ok(stat("sym_dir")),
                ok(symlink("merged", "a/b/c/d/dirlink")), ok(readdir("a/b/c/d")), ok(create("sym_dir/viasym")),
                ok(readdir("merged")), ok(readlink("sym_dir")),
            ],
        ),
        rw(
            "links",
            vec![
                ok(link("merged/common", "merged/common_link")), ok(stat("merged/common")),
                ok(stat("merged/common_link")), ok(write("merged/common_link", 7)), ok(read("merged/common")),
                er(link("a", "alink"), "EPERM"), er(link("merged/l1file", "merged/l2file"), "EEXIST"),
                er(link("nonexist", "x"), "ENOENT"), ok(link("sym_rel", "symlink_link")), ok(lstat("symlink_link")),
                ok(lstat("sym_rel")), ok(link("fifo", "fifo_link")), ok(link("links/hl_a", "links/hl_c")),
                ok(stat("links/hl_a")), ok(stat("links/hl_b")), ok(stat("links/hl_c")),
                er(link("merged/common", "@LONG"), "ENAMETOOLONG"), ok(link("owned1000", "opq/owned")),
                ok(stat("owned1000")), ok(link("big.bin", "a/b/c/d/big2")), ok(read("a/b/c/d/big2")),
                er(link("hidden.txt", "h2"), "ENOENT"), ok(unlink("merged/common")), ok(stat("merged/common_link")),
                ok(readdir("merged")),
            ],
        ),
        rw(
            "attrs",
            vec![
                ok(chmod("merged/common", 0o600)), ok(stat("merged/common")), ok(chmod("a", 0o700)), ok(stat("a")),
                ok(chmod("merged/sub", 0o1777)), ok(stat("merged/sub")), ok(chmod("sym_rel", 0o640)),
                ok(stat("a/b/c/deep.txt")), ok(chown("owned1000", 0, 0)), ok(stat("owned1000")),
                ok(chown("merged/l2file", 65534, 65534)), ok(stat("merged/l2file")),
                ok(chown("setuid", 1000, u32::MAX)), ok(stat("setuid")), ok(chown("exec.sh", u32::MAX, 1000)),
                ok(stat("exec.sh")), ok(chmod("sgid_dir", 0o755)), ok(stat("sgid_dir")),
                ok(utimes("merged/l2file", 1, false)), ok(stat("merged/l2file")), ok(utimes("a/b", 2, false)),
                ok(stat("a/b")), ok(utimes("fifo", 3, false)), ok(lstat("fifo")),
                er(chmod("nonexist", 0o644), "ENOENT"), er(chmod("sym_abs", 0o644), "ENOENT"),
                ok(chmod("ro_dir", 0o755)), ok(chown("a/b/c/d", 1000, 1000)), ok(stat("a/b/c/d")), ok(stat("a/b/c")),
                ok(stat("a/b")), ok(chmod("mode0000", 0o644)), ok(chmod("", 0o700)), ok(stat("")),
                ok(utimes("", 4, false)), ok(stat("")), er(access("merged/common", libc::X_OK), "EACCES"),
                ok(access("exec.sh", libc::X_OK)), ok(access("mode0000", libc::R_OK)),
                ok(access("dir0700", libc::W_OK)), ok(utimes("dir0700/f", 0, false)), ok(stat("dir0700/f")),
                ok(stat("dir0700")), ok(chmod("dir0700/f", 0o2755)), ok(stat("dir0700/f")),
                ok(chown("dir0700/f", 1000, 1000)), ok(stat("dir0700/f")),
            ],
        ),
        rw(
            "xattrs",
            vec![
                ok(getx("xattr.txt", "user.test")), ok(getx("xattr.txt", "user.empty")), ok(listx("xattr.txt")),
                er(getx("xattr.txt", "user.nope"), "ENODATA"), ok(setx("merged/common", "user.new", "v", 0)),
                ok(getx("merged/common", "user.new")), ok(listx("merged/common")),
                er(setx("merged/common", "user.new", "w", libc::XATTR_CREATE), "EEXIST"),
                er(setx("merged/common", "user.other", "w", libc::XATTR_REPLACE), "ENODATA"),
                ok(setx("merged/common", "user.new", "w", libc::XATTR_REPLACE)), ok(getx("merged/common", "user.new")),
                ok(rmx("xattr.txt", "user.test")), er(rmx("xattr.txt", "user.test"), "ENODATA"), ok(listx("xattr.txt")),
                ok(setx("a", "user.dir", "1", 0)), ok(listx("a")), ok(getx("xdir", "user.dirattr")),
                ok(setx("opq", "user.o", "1", 0)), ok(listx("opq")), er(lsetx("sym_rel", "user.x", "1"), "EPERM"),
                ok(setx("sym_rel", "user.x", "1", 0)), ok(getx("a/b/c/deep.txt", "user.x")),
                er(setx("fifo", "user.x", "1", 0), "EPERM"), any(getx("opq", "trusted.overlay.opaque")),
                any(setx("merged/l2file", "trusted.overlay.opaque", "y", 0)),
                any(setx("merged/l2file", "trusted.overlay.foo", "y", 0)),
                any(setx("merged/l2file", "trusted.foo", "bar", 0)), any(listx("merged/l2file")),
                er(getx("nonexist", "user.a"), "ENOENT"), ok(setx("big.bin", "user.big", "b", 0)), ok(read("big.bin")),
                ok(stat("big.bin")), any(setx("merged/sub/x", &format!("user.{}", "n".repeat(256)), "v", 0)),
                ok(rmx("a", "user.dir")), ok(listx("a")), ok(setx("merged/sub/x", "user.big", &"v".repeat(4000), 0)),
                ok(getx("merged/sub/x", "user.big")),
            ],
        ),
        rw(
            "mknod",
            vec![
                ok(mkfifo("newfifo")), ok(stat("newfifo")), er(mkfifo("merged/common"), "EEXIST"),
                ok(mkfifo("hidden.txt")), ok(lstat("hidden.txt")), ok(mkchr("newnull", 1, 3)), ok(stat("newnull")),
                er(mkchr("wh", 0, 0), "EPERM"), ok(read("newfifo")), er(write("newfifo", 1), "ENXIO"),
                ok(mkfifo("a/b/c/d/fifo")), ok(readdir("a/b/c/d")),
            ],
        ),
        rw(
            "fd_copy_up",
            vec![
                ok(fdopen(0, "merged/common", RdOnly)), ok(fdopen(1, "merged/common", WrOnly)), ok(fdwrite(1, 0, 50)),
                ok(fdread(0)), ok(fdstat(0)), ok(Op::FdClose {slot: 1 }), ok(fdread(0)), ok(read("merged/common")),
                ok(fdopen(2, "big.bin", RdOnly)), ok(fdopen(3, "big.bin", RdWr)), ok(fdwrite(3, 1 << 20, 10)),
                ok(fdread(2)), ok(Op::FdTruncate {slot: 3, len: 100 }), ok(fdread(2)), ok(fdstat(2)),
                ok(fdopen(0, "a/b/l1file", RdOnly)), ok(unlink("a/b/l1file")), ok(fdread(0)), any(fdstat(0)),
                ok(fdopen(1, "merged/l2file", RdWr)), ok(rename("merged/l2file", "merged/moved")),
                ok(fdwrite(1, 0, 20)), ok(fdread(1)), ok(read("merged/moved")), ok(fdopen(0, "opq/new1", Append)),
                ok(fdwrite(0, 0, 5)), ok(read("opq/new1")), ok(fdopen(1, "a", RdOnly)), er(fdread(1), "EISDIR"),
                ok(fdopen(2, "fifo", RdOnly)), er(fdread(2), "ESPIPE"), ok(fdopen(3, "shadowed", RdOnly)),
                ok(chmod("shadowed", 0o640)), ok(fdstat(3)), ok(fdopen(3, "newfile", RdWrCreat)),
                ok(fdwrite(3, 10, 10)), ok(fdread(3)), ok(fdopen(2, "hl1", RdOnly)), ok(write("hl2", 30)),
                ok(fdread(2)),
            ],
        ),
        rw(
            "rmrf_recreate",
            vec![
                ok(rmrf("merged")), er(stat("merged"), "ENOENT"), ok(mkdir("merged", 0o755)), ok(readdir("merged")),
                ok(create("merged/x")), ok(readdir("merged")), ok(rmrf("a")), ok(mkdir("a", 0o755)),
                ok(mkdir("a/b", 0o755)), ok(readdir("a/b")), ok(rmrf("opq")), ok(mkdir("opq", 0o755)),
                ok(readdir("opq")), ok(rmrf("l1deep")), ok(rmrf("fileordir")), ok(mkdir("fileordir", 0o755)),
                ok(readdir("fileordir")), ok(rmrf("links")), ok(readdir("")), ok(create("links")), ok(readdir("")),
            ],
        ),
        rw(
            "device_node",
            vec![
                ok(stat("nulldev")), ok(read("nulldev")), ok(write("nulldev", 10)), ok(chmod("nulldev", 0o600)),
                ok(stat("nulldev")),
            ],
        ),
        Scenario {
            name: "read_only",
            read_only: true,
            steps: {
                let mut v = vec![
                    er(create("new1"), "EROFS"), er(mkdir("newdir", 0o755), "EROFS"),
                    er(unlink("merged/common"), "EROFS"), er(rmdir("empty_dir"), "EROFS"),
                    er(rename("merged/common", "x"), "EROFS"), er(symlink("x", "s"), "EROFS"),
                    er(link("merged/common", "l"), "EROFS"), er(chmod("merged/common", 0o600), "EROFS"),
                    er(chown("merged/common", 1, 1), "EROFS"), er(utimes("merged/common", 1, false), "EROFS"),
                    er(setx("merged/common", "user.a", "1", 0), "EROFS"), er(rmx("xattr.txt", "user.test"), "EROFS"),
                    er(mkfifo("f"), "EROFS"), er(write("merged/common", 3), "EROFS"),
                    er(truncate("merged/common", 0), "EROFS"), er(fdopen(0, "merged/common", RdWr), "EROFS"),
                    er(access("merged/common", libc::W_OK), "EROFS"), er(create("hidden.txt"), "EROFS"),
                    er(stat("hidden.txt"), "ENOENT"), any(write("nulldev", 1)), any(unlink("nonexist")),
                    any(mkdir("merged", 0o755)), ok(getx("xattr.txt", "user.test")),
                    ok(fdopen(0, "merged/common", RdOnly)), ok(fdread(0)), er(rmrf("a"), "EROFS"),
                ];
                v.extend(look_at_everything());
                v
            },
        },
    ]
}
