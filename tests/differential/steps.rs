//! Steps of the differential test: an operation, who runs it, and what the
//! kernel is expected to answer; plus short constructors for scripting them.
use crate::common::ops::{Data, NodeKind, Op, OpenMode, Who};
use crate::common::tree::UTIMES_POOL;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    Any,
    Ok,
    Err(&'static str),
}

#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    /// Who runs it (non-root: in a forked child; see common/creds.rs).
    pub who: Who,
    pub expect: Expect,
}

impl Step {
    /// The same step run by `who`.
    pub fn by(self, who: Who) -> Step {
        Step { who, ..self }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.who != Who::Root {
            write!(f, "[as {:?}] ", self.who)?;
        }
        write!(f, "{:?}", self.op)
    }
}

pub fn ok(op: Op) -> Step {
    Step {
        op,
        who: Who::Root,
        expect: Expect::Ok,
    }
}
pub fn er(op: Op, e: &'static str) -> Step {
    Step {
        op,
        who: Who::Root,
        expect: Expect::Err(e),
    }
}
pub fn any(op: Op) -> Step {
    Step {
        op,
        who: Who::Root,
        expect: Expect::Any,
    }
}
pub fn s(p: &str) -> String {
    p.to_string()
}
pub fn d(len: usize, seed: u8) -> Data {
    Data { len, seed }
}

// Short constructors.
pub fn read(p: &str) -> Op {
    Op::Read { p: s(p) }
}
pub fn stat(p: &str) -> Op {
    Op::Stat {
        p: s(p),
        follow: true,
    }
}
pub fn lstat(p: &str) -> Op {
    Op::Stat {
        p: s(p),
        follow: false,
    }
}
pub fn readdir(p: &str) -> Op {
    Op::Readdir { p: s(p) }
}
pub fn create(p: &str) -> Op {
    Op::Create {
        p: s(p),
        mode: 0o644,
    }
}
pub fn write(p: &str, len: usize) -> Op {
    Op::WriteTrunc {
        p: s(p),
        data: d(len, len as u8),
        creat: false,
    }
}
pub fn write_creat(p: &str, len: usize) -> Op {
    Op::WriteTrunc {
        p: s(p),
        data: d(len, 3),
        creat: true,
    }
}
pub fn pwrite(p: &str, off: u64, len: usize) -> Op {
    Op::Pwrite {
        p: s(p),
        off,
        data: d(len, 5),
    }
}
pub fn append(p: &str, len: usize) -> Op {
    Op::Append {
        p: s(p),
        data: d(len, 6),
    }
}
pub fn truncate(p: &str, len: u64) -> Op {
    Op::Truncate { p: s(p), len }
}
pub fn mkdir(p: &str, mode: u32) -> Op {
    Op::Mkdir { p: s(p), mode }
}
pub fn rmdir(p: &str) -> Op {
    Op::Rmdir { p: s(p) }
}
pub fn unlink(p: &str) -> Op {
    Op::Unlink { p: s(p) }
}
pub fn rename(a: &str, b: &str) -> Op {
    Op::Rename {
        from: s(a),
        to: s(b),
        flags: 0,
    }
}
pub fn rename_f(a: &str, b: &str, flags: u32) -> Op {
    Op::Rename {
        from: s(a),
        to: s(b),
        flags,
    }
}
pub const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
pub const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
pub fn symlink(t: &str, p: &str) -> Op {
    Op::Symlink {
        target: s(t),
        p: s(p),
    }
}
pub fn readlink(p: &str) -> Op {
    Op::Readlink { p: s(p) }
}
pub fn link(a: &str, b: &str) -> Op {
    Op::Link {
        from: s(a),
        to: s(b),
    }
}
pub fn chmod(p: &str, mode: u32) -> Op {
    Op::Chmod { p: s(p), mode }
}
pub fn chown(p: &str, uid: u32, gid: u32) -> Op {
    Op::Chown {
        p: s(p),
        uid,
        gid,
        nofollow: false,
    }
}
pub fn lchown(p: &str, uid: u32, gid: u32) -> Op {
    Op::Chown {
        p: s(p),
        uid,
        gid,
        nofollow: true,
    }
}
pub fn utimes(p: &str, i: usize, nofollow: bool) -> Op {
    Op::Utimes {
        p: s(p),
        atime: UTIMES_POOL[(i + 1) % UTIMES_POOL.len()],
        mtime: UTIMES_POOL[i],
        nofollow,
    }
}
pub fn setx(p: &str, n: &str, v: &str, flags: i32) -> Op {
    Op::SetXattr {
        p: s(p),
        name: s(n),
        value: s(v),
        flags,
        nofollow: false,
    }
}
pub fn lsetx(p: &str, n: &str, v: &str) -> Op {
    Op::SetXattr {
        p: s(p),
        name: s(n),
        value: s(v),
        flags: 0,
        nofollow: true,
    }
}
pub fn getx(p: &str, n: &str) -> Op {
    Op::GetXattr {
        p: s(p),
        name: s(n),
        nofollow: false,
    }
}
pub fn listx(p: &str) -> Op {
    Op::ListXattr {
        p: s(p),
        nofollow: true,
    }
}
pub fn rmx(p: &str, n: &str) -> Op {
    Op::RemoveXattr {
        p: s(p),
        name: s(n),
        nofollow: false,
    }
}
pub fn mkfifo(p: &str) -> Op {
    Op::Mknod {
        p: s(p),
        mode: 0o644,
        kind: NodeKind::Fifo,
    }
}
pub fn mkchr(p: &str, a: u32, b: u32) -> Op {
    Op::Mknod {
        p: s(p),
        mode: 0o644,
        kind: NodeKind::Char(a, b),
    }
}
pub fn access(p: &str, mode: i32) -> Op {
    Op::Access { p: s(p), mode }
}
pub fn rmrf(p: &str) -> Op {
    Op::RmRf { p: s(p) }
}
pub fn fdopen(slot: usize, p: &str, mode: OpenMode) -> Op {
    Op::FdOpen {
        slot,
        p: s(p),
        mode,
    }
}
pub fn fdread(slot: usize) -> Op {
    Op::FdRead { slot }
}
pub fn fdwrite(slot: usize, off: u64, len: usize) -> Op {
    Op::FdWrite {
        slot,
        off,
        data: d(len, 9),
    }
}
pub fn fdstat(slot: usize) -> Op {
    Op::FdStat { slot }
}
pub fn touch_now(p: &str) -> Op {
    Op::TouchNow { p: s(p) }
}
pub fn statfs(p: &str) -> Op {
    Op::Statfs { p: s(p) }
}
pub fn mmap_read(p: &str) -> Op {
    Op::MmapRead { p: s(p) }
}
pub fn mmap_write(p: &str, off: u64, len: usize) -> Op {
    Op::MmapWrite {
        p: s(p),
        off,
        data: d(len, 11),
    }
}
pub fn fsync(slot: usize) -> Op {
    Op::Fsync {
        slot,
        data_only: false,
    }
}
pub fn fdatasync(slot: usize) -> Op {
    Op::Fsync {
        slot,
        data_only: true,
    }
}
pub fn falloc(slot: usize, off: u64, len: u64) -> Op {
    Op::Fallocate {
        slot,
        punch: false,
        off,
        len,
    }
}
pub fn punch(slot: usize, off: u64, len: u64) -> Op {
    Op::Fallocate {
        slot,
        punch: true,
        off,
        len,
    }
}
pub fn seek_data(slot: usize, off: u64) -> Op {
    Op::Lseek {
        slot,
        off,
        hole: false,
    }
}
pub fn seek_hole(slot: usize, off: u64) -> Op {
    Op::Lseek {
        slot,
        off,
        hole: true,
    }
}
pub fn cfr(from: usize, to: usize, off_in: u64, off_out: u64, len: u64) -> Op {
    Op::CopyRange {
        from,
        to,
        off_in,
        off_out,
        len,
    }
}
