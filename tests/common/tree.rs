//! Directory tree snapshots and diffs.
//!
//! [`snapshot`] walks a tree without following symlinks and records, per
//! entry (keyed by its path relative to the root, `""` being the root):
//! file type, permission bits (`mode & 07777`), uid, gid, size and a content
//! hash for regular files, symlink target, rdev for devices, nlink for
//! non-directories, xattrs (names and values) and a normalised mtime.
//!
//! Ignored entirely: atime, ctime, st_ino/st_dev, st_blocks, directory sizes
//! and directory nlink (all legitimately implementation-specific).
//!
//! mtime normalisation: a test cannot predict "now", so an mtime is recorded
//! as `Known(sec, nsec)` if it is one of the values the fixture or an explicit
//! utimes operation sets ([`FIXTURE_MTIME`], [`UTIMES_POOL`]), else `Recent`.
//! Directory mtimes (merged view and layers) are normalised the same way.
//!
//! Errors met while walking (a failing readdir, read or getxattr) are
//! recorded in the entry instead of aborting the snapshot, so two broken
//! views can still be compared and reported.
use super::{cstr, errno, errno_name};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// mtime given to every fixture entry (seconds, nanoseconds 0).
pub const FIXTURE_MTIME: i64 = 1_000_000_000;
/// The only explicit times utimes operations in tests may use, so they can be
/// told apart from "recent" times.
pub const UTIMES_POOL: &[(i64, i64)] = &[
    (0, 0),
    (1_234_567_890, 0),
    (1_500_000_000, 123_456_789),
    (2_000_000_000, 999_999_999),
    (4_102_444_800, 1),
];

/// Layer xattrs that are not compared between the two implementations.
/// Nothing is ignored any more: `trusted.overlay.origin` holds file handles,
/// which differ between two copies of a fixture, so it is compared as "a
/// handle", "empty" or absent; `trusted.overlay.uuid` (random, on the upper
/// root) as "16 bytes" or its raw value.
pub const IGNORED_LAYER_XATTRS: &[&str] = &[];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mtime {
    Known(i64, i64),
    Recent,
}

pub fn norm_mtime(sec: i64, nsec: i64) -> Mtime {
    if (sec == FIXTURE_MTIME && nsec == 0) || UTIMES_POOL.contains(&(sec, nsec)) {
        Mtime::Known(sec, nsec)
    } else {
        Mtime::Recent
    }
}

impl fmt::Display for Mtime {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Mtime::Known(s, 0) => write!(f, "{s}"),
            Mtime::Known(s, n) => write!(f, "{s}.{n:09}"),
            Mtime::Recent => write!(f, "recent"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            _ => Kind::Socket,
        }
    }
    pub fn from_ft(ft: std::fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else {
            Kind::Socket
        }
    }
    pub fn letter(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Fifo => 'p',
            Kind::Char => 'c',
            Kind::Block => 'b',
            Kind::Socket => 's',
        }
    }
}

/// One recorded entry. `None` fields do not apply to the entry's type.
#[derive(Clone, PartialEq, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
    /// Content hash of a regular file, or the error reading it.
    pub content: Option<Result<u64, String>>,
    pub target: Option<String>,
    pub rdev: Option<(u32, u32)>,
    pub nlink: Option<u64>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub mtime: Mtime,
    /// The first path of the walk with this entry's (st_dev, st_ino), if
    /// another: which names share an inode number (hard links, copy-up
    /// origins), not the numbers themselves.
    pub same_ino: Option<String>,
    /// Errors met on this entry (readdir of a directory, listxattr, lstat).
    pub error: Option<String>,
}

/// What is being snapshotted: a merged (mounted) view or a layer directory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SnapMode {
    /// A mount point: all listed xattrs are recorded.
    Merged,
    /// A layer: trusted.overlay.* are recorded too, except
    /// [`IGNORED_LAYER_XATTRS`]; whiteout nlink is ignored (the kernel
    /// hard-links all whiteouts to one shared inode in the work dir).
    Layer,
}

#[derive(Clone, PartialEq, Debug, Default)]
pub struct Tree(pub BTreeMap<String, Entry>);

/// Fast non-cryptographic 64-bit hash for file contents and outcomes.
pub fn hash_bytes(data: &[u8]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ (data.len() as u64);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        h = (h ^ w).wrapping_mul(0xA076_1D64_78BD_642F).rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x1000_0000_01B3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^ (h >> 33)
}

/// Reads all xattrs of `p` (not following symlinks), sorted by name.
pub fn read_xattrs(p: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let c = cstr(p);
    let mut out = BTreeMap::new();
    let names = loop {
        let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(format!("llistxattr: {}", errno_name(errno())));
        }
        let mut buf = vec![0u8; n as usize];
        let m = unsafe {
            libc::llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len())
        };
        if m < 0 && errno() == libc::ERANGE {
            continue;
        }
        if m < 0 {
            return Err(format!("llistxattr: {}", errno_name(errno())));
        }
        buf.truncate(m as usize);
        break buf;
    };
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_s = String::from_utf8_lossy(name).into_owned();
        let cname = std::ffi::CString::new(name).unwrap();
        let val = loop {
            let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
            if n < 0 {
                break format!("<lgetxattr: {}>", errno_name(errno())).into_bytes();
            }
            let mut buf = vec![0u8; n as usize];
            let m = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    buf.as_mut_ptr() as *mut _,
                    buf.len(),
                )
            };
            if m < 0 && errno() == libc::ERANGE {
                continue;
            }
            if m < 0 {
                break format!("<lgetxattr: {}>", errno_name(errno())).into_bytes();
            }
            buf.truncate(m as usize);
            break buf;
        };
        out.insert(name_s, val);
    }
    Ok(out)
}

fn hash_file(p: &Path) -> Result<u64, String> {
    std::fs::read(p).map(|d| hash_bytes(&d)).map_err(|e| {
        format!(
            "read: {}",
            e.raw_os_error().map(errno_name).unwrap_or(e.to_string())
        )
    })
}

/// Records a single entry (lstat + xattrs + content).
pub fn entry_of(p: &Path, mode: SnapMode) -> Result<Entry, String> {
    let md = std::fs::symlink_metadata(p)
        .map_err(|e| e.raw_os_error().map(errno_name).unwrap_or(e.to_string()))?;
    let kind = Kind::from_mode(md.mode());
    let mut e = Entry {
        kind,
        perm: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: None,
        content: None,
        target: None,
        rdev: None,
        nlink: None,
        xattrs: BTreeMap::new(),
        mtime: norm_mtime(md.mtime(), md.mtime_nsec()),
        same_ino: None,
        error: None,
    };
    match kind {
        Kind::File => {
            e.size = Some(md.size());
            e.content = Some(hash_file(p));
        }
        Kind::Symlink => {
            e.size = Some(md.size());
            e.target = Some(match std::fs::read_link(p) {
                Ok(t) => String::from_utf8_lossy(t.as_os_str().as_bytes()).into_owned(),
                Err(err) => format!("<readlink: {err}>"),
            });
        }
        Kind::Char | Kind::Block => {
            e.rdev = Some((libc::major(md.rdev()) as u32, libc::minor(md.rdev()) as u32));
        }
        _ => {}
    }
    let whiteout = kind == Kind::Char && e.rdev == Some((0, 0));
    if kind != Kind::Dir && !(mode == SnapMode::Layer && whiteout) {
        e.nlink = Some(md.nlink());
    }
    match read_xattrs(p) {
        Ok(mut x) => {
            if mode == SnapMode::Layer {
                x.retain(|k, _| !IGNORED_LAYER_XATTRS.contains(&k.as_str()));
                for name in ["trusted.overlay.origin", "user.overlay.origin"] {
                    if let Some(v) = x.get_mut(name)
                        && v.starts_with(&[0x00, 0xfb])
                    {
                        *v = b"<file handle>".to_vec();
                    }
                }
                for name in ["trusted.overlay.uuid", "user.overlay.uuid"] {
                    if let Some(v) = x.get_mut(name)
                        && v.len() == 16
                    {
                        *v = b"<16 random bytes>".to_vec();
                    }
                }
            }
            e.xattrs = x;
        }
        Err(err) => e.error = Some(err),
    }
    Ok(e)
}

/// Snapshots the tree rooted at `root` (see the module documentation).
/// The root itself is recorded under the key `""`.
pub fn snapshot(root: &Path, mode: SnapMode) -> Tree {
    snapshot_bounded(root, mode, usize::MAX, usize::MAX)
}

/// [`snapshot`] going at most `max_depth` levels down and recording at most
/// `max_entries` entries (a tree that loops must not be walked forever).
pub fn snapshot_bounded(root: &Path, mode: SnapMode, max_depth: usize, max_entries: usize) -> Tree {
    let mut t = Tree::default();
    let mut w = Walk {
        mode,
        max_depth,
        budget: max_entries,
        first: HashMap::new(),
    };
    w.walk(root, "", 0, &mut t);
    t
}

struct Walk {
    mode: SnapMode,
    max_depth: usize,
    budget: usize,
    /// The first path met with each (st_dev, st_ino).
    first: HashMap<(u64, u64), String>,
}

impl Walk {
    fn walk(&mut self, p: &Path, rel: &str, depth: usize, t: &mut Tree) {
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        let mode = self.mode;
        let mut e = match entry_of(p, mode) {
            Ok(e) => e,
            Err(err) => {
                let mut e = error_entry();
                e.error = Some(format!("lstat: {err}"));
                t.0.insert(rel.to_string(), e);
                return;
            }
        };
        self.note_ino(p, rel, &mut e);
        if e.kind != Kind::Dir || depth >= self.max_depth {
            t.0.insert(rel.to_string(), e);
            return;
        }
        let mut names = Vec::new();
        match std::fs::read_dir(p) {
            Ok(rd) => {
                for de in rd {
                    match de {
                        Ok(de) => names.push(de.file_name()),
                        Err(err) => {
                            e.error = Some(format!("readdir: {err}"));
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                e.error = Some(format!(
                    "opendir: {}",
                    err.raw_os_error()
                        .map(errno_name)
                        .unwrap_or(err.to_string())
                ))
            }
        }
        t.0.insert(rel.to_string(), e);
        names.sort();
        for n in names {
            let n = n.to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            self.walk(&p.join(&n), &child_rel, depth + 1, t);
        }
    }
}

impl Walk {
    /// Which earlier path shares this entry's inode number. Not for layer
    /// whiteouts: the kernel links all it makes to one inode.
    fn note_ino(&mut self, p: &Path, rel: &str, e: &mut Entry) {
        let whiteout = e.kind == Kind::Char && e.rdev == Some((0, 0));
        if self.mode == SnapMode::Layer && whiteout {
            return;
        }
        if let Ok(md) = std::fs::symlink_metadata(p) {
            let first = self.first.entry((md.dev(), md.ino()));
            let first = first.or_insert_with(|| rel.to_string());
            e.same_ino = (first != rel).then(|| first.clone());
        }
    }
}

/// The st_ino of every path of a merged view (the numbers themselves: the
/// same layers must show the same numbers under either implementation).
pub fn inode_numbers(root: &Path) -> BTreeMap<String, u64> {
    fn walk(p: &Path, rel: String, out: &mut BTreeMap<String, u64>) {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            return;
        };
        out.insert(rel.clone(), md.ino());
        if !md.is_dir() {
            return;
        }
        for de in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let n = de.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                n
            } else {
                format!("{rel}/{n}")
            };
            walk(&de.path(), child, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, String::new(), &mut out);
    out
}

/// Where two [`inode_numbers`] maps differ, one line each.
pub fn inode_numbers_diff(
    a: &BTreeMap<String, u64>,
    b: &BTreeMap<String, u64>,
    an: &str,
    bn: &str,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("st_ino of {k:?}: {an}={:?} {bn}={:?}", a.get(k), b.get(k)))
        .collect()
}

fn error_entry() -> Entry {
    Entry {
        kind: Kind::Socket,
        perm: 0,
        uid: 0,
        gid: 0,
        size: None,
        content: None,
        target: None,
        rdev: None,
        nlink: None,
        xattrs: BTreeMap::new(),
        mtime: Mtime::Recent,
        same_ino: None,
        error: None,
    }
}

fn show_bytes(v: &[u8]) -> String {
    let mut s = String::new();
    for &b in v {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s += &format!("\\x{b:02x}");
        }
    }
    s
}

/// One-line description of an entry.
pub fn describe(e: &Entry) -> String {
    let mut s = format!(
        "{} {:04o} {}:{} mtime={}",
        e.kind.letter(),
        e.perm,
        e.uid,
        e.gid,
        e.mtime
    );
    if let Some(sz) = e.size {
        s += &format!(" size={sz}");
    }
    if let Some(n) = e.nlink {
        s += &format!(" nlink={n}");
    }
    if let Some(f) = &e.same_ino {
        s += &format!(" ino-of={f:?}");
    }
    match &e.content {
        Some(Ok(h)) => s += &format!(" hash={h:016x}"),
        Some(Err(err)) => s += &format!(" content=<{err}>"),
        None => {}
    }
    if let Some(t) = &e.target {
        s += &format!(" -> {t:?}");
    }
    if let Some((a, b)) = e.rdev {
        s += &format!(" rdev={a}:{b}");
    }
    if !e.xattrs.is_empty() {
        let x: Vec<String> = e
            .xattrs
            .iter()
            .map(|(k, v)| format!("{k}={}", show_bytes(v)))
            .collect();
        s += &format!(" xattrs[{}]", x.join(", "));
    }
    if let Some(err) = &e.error {
        s += &format!(" ERROR({err})");
    }
    s
}

/// Lists the differences between two snapshots, one readable line each
/// (empty: identical). `an`/`bn` name the two sides in the messages.
pub fn diff(a: &Tree, b: &Tree, an: &str, bn: &str) -> Vec<String> {
    let mut out = Vec::new();
    let show = |p: &str| {
        if p.is_empty() {
            "/".to_string()
        } else {
            p.to_string()
        }
    };
    for (p, ea) in &a.0 {
        match b.0.get(p) {
            None => out.push(format!("only in {an}: {}  ({})", show(p), describe(ea))),
            Some(eb) if ea != eb => {
                let mut fields = Vec::new();
                macro_rules! cmp {
                    ($f:ident, $fmt:expr) => {
                        if ea.$f != eb.$f {
                            fields.push(format!(
                                concat!("{}: {}=", $fmt, " {}=", $fmt),
                                stringify!($f),
                                an,
                                ea.$f,
                                bn,
                                eb.$f
                            ));
                        }
                    };
                }
                cmp!(kind, "{:?}");
                cmp!(perm, "{:04o}");
                cmp!(uid, "{}");
                cmp!(gid, "{}");
                cmp!(size, "{:?}");
                cmp!(content, "{:x?}");
                cmp!(target, "{:?}");
                cmp!(rdev, "{:?}");
                cmp!(nlink, "{:?}");
                cmp!(same_ino, "{:?}");
                cmp!(mtime, "{}");
                cmp!(error, "{:?}");
                if ea.xattrs != eb.xattrs {
                    let keys: std::collections::BTreeSet<&String> =
                        ea.xattrs.keys().chain(eb.xattrs.keys()).collect();
                    for k in keys {
                        let (va, vb) = (ea.xattrs.get(k), eb.xattrs.get(k));
                        if va != vb {
                            let f = |v: Option<&Vec<u8>>| {
                                v.map(|v| show_bytes(v))
                                    .unwrap_or_else(|| "<absent>".into())
                            };
                            fields.push(format!("xattr {k}: {an}={} {bn}={}", f(va), f(vb)));
                        }
                    }
                }
                out.push(format!("differs: {}: {}", show(p), fields.join("; ")));
            }
            _ => {}
        }
    }
    for (p, eb) in &b.0 {
        if !a.0.contains_key(p) {
            out.push(format!("only in {bn}: {}  ({})", show(p), describe(eb)));
        }
    }
    out
}

/// Renders a whole tree, one entry a line (for debugging output).
pub fn render(t: &Tree) -> String {
    t.0.iter()
        .map(|(p, e)| {
            format!(
                "  {:<40} {}\n",
                if p.is_empty() { "/" } else { p },
                describe(e)
            )
        })
        .collect()
}

/// The index directory of a workdir (`index=on`), comparable across two
/// copies of a fixture: entry names are file handles, which differ between
/// copies, so each entry is keyed by the upper paths that are hard links to
/// it (`index[a/b+c]`), or by its content when no upper name links to it.
/// `#` entries (temporaries, the kernel's shared whiteout) are left out.
pub fn index_snapshot(index: &Path, upper: &Path) -> Tree {
    let mut by_inode: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for (rel, _) in snapshot(upper, SnapMode::Layer).0 {
        if let Ok(md) = std::fs::symlink_metadata(upper.join(&rel))
            && !md.is_dir()
        {
            by_inode.entry((md.dev(), md.ino())).or_default().push(rel);
        }
    }
    let mut t = Tree::default();
    let Ok(rd) = std::fs::read_dir(index) else {
        return t;
    };
    let mut names: Vec<_> = rd.flatten().map(|d| d.file_name()).collect();
    names.sort();
    for n in names {
        if n.as_bytes().starts_with(b"#") {
            continue;
        }
        let p = index.join(&n);
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let e = entry_of(&p, SnapMode::Layer).unwrap_or_else(|err| {
            let mut e = error_entry();
            e.error = Some(err);
            e
        });
        let key = match by_inode.get(&(md.dev(), md.ino())) {
            Some(paths) => format!("index[{}]", paths.join("+")),
            None => {
                let base = format!("index[unlinked {:?}]", e.content);
                let mut key = base.clone();
                let mut i = 1;
                while t.0.contains_key(&key) {
                    i += 1;
                    key = format!("{base} #{i}");
                }
                key
            }
        };
        t.0.insert(key, e);
    }
    t
}
