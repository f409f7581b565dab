//! The operation set of the differential test (what an operation is, who
//! runs it) and a seeded PRNG. They are run by [`super::exec::Exec`].
//!
//! Each [`Op`] names paths relative to the mount root; `@LONG` as a path
//! component expands to a 256-byte name (ENAMETOOLONG). Running one gives an
//! [`Outcome`]: `Ok(summary)` with a mount-independent description of the
//! result, or `Err(errno name)`. Two implementations agree on an operation
//! iff their outcomes are equal.
//!
//! Every open uses O_NONBLOCK so that opening a FIFO never blocks (a FIFO
//! opened O_WRONLY then fails with ENXIO on both sides).

/// splitmix64: tiny, seedable, good enough for test generation.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    /// True with probability `pct`/100.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Data to write, generated deterministically from `(len, seed)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Data {
    pub len: usize,
    pub seed: u8,
}

impl Data {
    pub fn bytes(&self) -> Vec<u8> {
        super::fixture::content(0xDA7A_0000 + self.seed as u64, self.len)
    }
}

/// What a node created by [`Op::Mknod`] is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NodeKind {
    Fifo,
    Char(u32, u32),
}

/// Open modes for the fd operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OpenMode {
    RdOnly,
    WrOnly,
    RdWr,
    WrTrunc,
    Append,
    RdWrCreat,
}

impl OpenMode {
    pub fn flags(self) -> i32 {
        match self {
            OpenMode::RdOnly => libc::O_RDONLY,
            OpenMode::WrOnly => libc::O_WRONLY,
            OpenMode::RdWr => libc::O_RDWR,
            OpenMode::WrTrunc => libc::O_WRONLY | libc::O_TRUNC,
            OpenMode::Append => libc::O_WRONLY | libc::O_APPEND,
            OpenMode::RdWrCreat => libc::O_RDWR | libc::O_CREAT,
        }
    }
}

pub type Outcome = Result<String, String>;

/// One operation. Paths are relative to the mount root.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// open O_RDONLY, read(2) to EOF: `len=N hash=H`.
    Read {
        p: String,
    },
    /// open O_CREAT|O_EXCL|O_WRONLY with `mode` (umask 022 applies).
    Create {
        p: String,
        mode: u32,
    },
    /// open O_WRONLY|O_TRUNC (|O_CREAT 0644 if `creat`) and write `data`.
    WriteTrunc {
        p: String,
        data: Data,
        creat: bool,
    },
    /// open O_RDWR and pwrite `data` at `off`.
    Pwrite {
        p: String,
        off: u64,
        data: Data,
    },
    /// open O_WRONLY|O_APPEND and write `data`.
    Append {
        p: String,
        data: Data,
    },
    Truncate {
        p: String,
        len: u64,
    },
    Mkdir {
        p: String,
        mode: u32,
    },
    Rmdir {
        p: String,
    },
    Unlink {
        p: String,
    },
    /// renameat2 with `flags` (0, RENAME_NOREPLACE, RENAME_EXCHANGE, ...).
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Symlink {
        target: String,
        p: String,
    },
    Readlink {
        p: String,
    },
    Link {
        from: String,
        to: String,
    },
    Chmod {
        p: String,
        mode: u32,
    },
    /// fchownat; `u32::MAX` leaves an id unchanged.
    Chown {
        p: String,
        uid: u32,
        gid: u32,
        nofollow: bool,
    },
    /// utimensat with explicit (sec, nsec) times (use values from UTIMES_POOL).
    Utimes {
        p: String,
        atime: (i64, i64),
        mtime: (i64, i64),
        nofollow: bool,
    },
    SetXattr {
        p: String,
        name: String,
        value: String,
        flags: i32,
        nofollow: bool,
    },
    GetXattr {
        p: String,
        name: String,
        nofollow: bool,
    },
    /// Sorted names.
    ListXattr {
        p: String,
        nofollow: bool,
    },
    RemoveXattr {
        p: String,
        name: String,
        nofollow: bool,
    },
    Mknod {
        p: String,
        mode: u32,
        kind: NodeKind,
    },
    /// stat (follow) or lstat: type, mode, uid, gid, size/nlink for non-dirs, rdev, mtime class.
    Stat {
        p: String,
        follow: bool,
    },
    /// Sorted `name:typeletter` list (without `.` and `..`).
    Readdir {
        p: String,
    },
    /// faccessat(mode) with the real ids.
    Access {
        p: String,
        mode: i32,
    },
    /// `rm -rf`: depth first, sorted; stops at the first error.
    RmRf {
        p: String,
    },
    /// Opens `p` into fd slot `slot` (closing what was there).
    FdOpen {
        slot: usize,
        p: String,
        mode: OpenMode,
    },
    /// pread from 0 to EOF through the slot's fd (ESPIPE on a FIFO).
    FdRead {
        slot: usize,
    },
    FdWrite {
        slot: usize,
        off: u64,
        data: Data,
    },
    FdStat {
        slot: usize,
    },
    FdTruncate {
        slot: usize,
        len: u64,
    },
    FdClose {
        slot: usize,
    },
    /// fsync, or fdatasync if `data_only`, of the slot's fd.
    Fsync {
        slot: usize,
        data_only: bool,
    },
    /// fallocate on the slot's fd: mode 0 (allocate, may extend the file)
    /// or, if `punch`, FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE; then fstat:
    /// `ok size=N`.
    Fallocate {
        slot: usize,
        punch: bool,
        off: u64,
        len: u64,
    },
    /// lseek(off, SEEK_HOLE if `hole` else SEEK_DATA): `at N`. Both sides
    /// sit on tmpfs, so the offsets (page-granular holes) compare exactly.
    Lseek {
        slot: usize,
        off: u64,
        hole: bool,
    },
    /// copy_file_range from slot `from` at `off_in` to slot `to` at
    /// `off_out`, repeated until `len` bytes or a 0 return: `copied N`.
    CopyRange {
        from: usize,
        to: usize,
        off_in: u64,
        off_out: u64,
        len: u64,
    },
    /// open O_RDONLY, mmap MAP_SHARED|PROT_READ the whole file, hash it.
    /// Runs in a forked child (a SIGBUS cannot take the harness down).
    MmapRead {
        p: String,
    },
    /// open O_RDWR, mmap MAP_SHARED|PROT_READ|PROT_WRITE, copy `data` in at
    /// `off` (clipped to the file size: a mapping cannot extend a file),
    /// msync(MS_SYNC), munmap, close, then read the file back by path.
    /// Runs in a forked child.
    MmapWrite {
        p: String,
        off: u64,
        data: Data,
    },
    /// statfs: `namemax=N bsize>0=B` (block counts are not compared).
    Statfs {
        p: String,
    },
    /// utimensat with NULL times (both "now"): allowed to anyone with write
    /// access, unlike explicit times (owner only).
    TouchNow {
        p: String,
    },
}

impl Op {
    /// Whether the op works on fd slots (then it runs as root only: the
    /// slots belong to the test process).
    pub fn uses_slots(&self) -> bool {
        use Op::*;
        matches!(
            self,
            FdOpen { .. }
                | FdRead { .. }
                | FdWrite { .. }
                | FdStat { .. }
                | FdTruncate { .. }
                | FdClose { .. }
                | Fsync { .. }
                | Fallocate { .. }
                | Lseek { .. }
                | CopyRange { .. }
        )
    }
    /// Whether the op always runs in a forked child, even as root.
    pub fn forked(&self) -> bool {
        matches!(self, Op::MmapRead { .. } | Op::MmapWrite { .. })
    }
}

/// Who runs an operation. Non-root identities run the operation in a forked
/// child (fork, setgroups, setresgid, setresuid, op, outcome sent back
/// through a pipe, _exit), so the test process keeps root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Root,
    /// uid 1000, gid 1000, supplementary group 2000.
    U1000,
    /// uid 1001, gid 1001, no supplementary groups.
    U1001,
    /// uid 0 (all capabilities), gid 2000, no supplementary groups.
    RootG2000,
}

impl Who {
    /// (uid, gid, supplementary groups), or `None` for plain root.
    pub fn creds(self) -> Option<(u32, u32, &'static [u32])> {
        match self {
            Who::Root => None,
            Who::U1000 => Some((1000, 1000, &[2000])),
            Who::U1001 => Some((1001, 1001, &[])),
            Who::RootG2000 => Some((0, 2000, &[])),
        }
    }
    /// Short tag for reports ("" for root).
    pub fn tag(self) -> &'static str {
        match self {
            Who::Root => "",
            Who::U1000 => "@u1000",
            Who::U1001 => "@u1001",
            Who::RootG2000 => "@root:g2000",
        }
    }
}

pub const FD_SLOTS: usize = 4;

/// Expands `@LONG` components to a 256-byte name.
pub fn expand(rel: &str) -> String {
    rel.split('/')
        .map(|c| {
            if c == "@LONG" {
                "l".repeat(256)
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
