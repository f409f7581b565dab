//! Hostile layers, compared with the kernel overlay.
//!
//! A [`Case`] builds a stack of layers. For each option set, the case is
//! built twice (one copy per implementation), the kernel overlay is mounted
//! on one and ovlfs on the other, and both merged views are walked (depth
//! and entry bounded: a redirect loop must not walk forever) and compared
//! entry by entry: type, mode, owner, size, content, link target, xattrs,
//! errno of every failing lstat, readdir and read. Then the upper layers are
//! compared. Mount refusals must agree too.
//!
//! Besides agreement, every case checks what no layer may cause: a hang (a
//! walk that does not end in [`WALK_TIMEOUT`]: the FUSE connection is then
//! aborted), a read outside the layers (a sentinel file beside them, whose
//! name or contents must never show through the mount), a daemon death.

use super::super::common::tree::{self, SnapMode, Tree};
use super::super::common::{
    Scratch, cstr, errno_name, mount_kernel, mount_ovlfs, set_xattr, unmount,
};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// A walk of one merged view longer than this is a hang.
pub const WALK_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_DEPTH: usize = 10;
const MAX_ENTRIES: usize = 4000;
/// Name and contents of the file beside the layers that must never show.
pub const SENTINEL_NAME: &str = "outside_sentinel";
pub const SENTINEL_DATA: &[u8] = b"SENTINEL: outside every layer";

/// The layer directories of one built case.
pub struct Layers {
    /// Lower layers, topmost first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Beside the layers: holds the sentinel; escaping redirects aim here.
    pub outside: PathBuf,
    /// `user.overlay.` with userxattr, else `trusted.overlay.`.
    pub prefix: &'static str,
}

impl Layers {
    pub fn l(&self, i: usize) -> &Path {
        &self.lowers[i]
    }

    /// Set overlay xattr `short` (e.g. `redirect`) on `p` in this option set's namespace.
    pub fn ovl(&self, p: &Path, short: &str, v: &[u8]) {
        set_xattr(p, &format!("{}{short}", self.prefix), v);
    }
}

/// Files `(path, contents)` below `root`; a path ending in `/` is a directory.
pub fn put(root: &Path, entries: &[(&str, &str)]) {
    for (p, c) in entries {
        let full = root.join(p);
        if p.ends_with('/') {
            std::fs::create_dir_all(&full).unwrap();
        } else {
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, c).unwrap();
        }
    }
}

/// Directories `comps` below `root`, one `mkdirat` at a time (the whole
/// path may be longer than PATH_MAX).
pub fn mkdirs_at(root: &Path, comps: &[String]) {
    use std::ffi::CString;
    let mut fd = unsafe { libc::open(cstr(root).as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
    assert!(fd >= 0);
    for c in comps {
        let n = CString::new(c.as_str()).unwrap();
        unsafe { libc::mkdirat(fd, n.as_ptr(), 0o755) };
        let next = unsafe { libc::openat(fd, n.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
        assert!(
            next >= 0,
            "mkdirat {c}: {}",
            std::io::Error::last_os_error()
        );
        unsafe { libc::close(fd) };
        fd = next;
    }
    unsafe { libc::close(fd) };
}

/// A 0/0 character device (the whiteout) at `p`.
pub fn whiteout(p: &Path) {
    mknod(p, libc::S_IFCHR, 0, 0);
}

pub fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let r = unsafe { libc::mknod(cstr(p).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn symlink(target: &str, p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

type Build = Box<dyn Fn(&Layers) + Send + Sync>;
type LowerPaths = Box<dyn Fn(&Layers) -> Vec<PathBuf> + Send + Sync>;

/// One hostile stack.
pub struct Case {
    pub name: String,
    pub lowers: usize,
    pub build: Build,
    /// Paths (relative to the mount) looked up on their own as well, for
    /// names a walk does not reach (a listing may not show them).
    pub probes: Vec<String>,
    /// The lowerdir paths given to both mounts, if not the layer directories
    /// themselves (symlinks to them, say).
    pub mount_lowers: Option<LowerPaths>,
    /// Paths not compared: names of a lower file another one's origin or
    /// metacopy redirect names. The kernel hashes both by that lower inode,
    /// so whichever is looked up second shows the first one's inode (its
    /// number, size and data); ovlfs shows each its own (README).
    pub kernel_alias: Vec<String>,
}

impl Case {
    pub fn new(
        name: impl Into<String>,
        lowers: usize,
        build: impl Fn(&Layers) + Send + Sync + 'static,
    ) -> Case {
        Case {
            name: name.into(),
            lowers,
            build: Box::new(build),
            probes: Vec::new(),
            mount_lowers: None,
            kernel_alias: Vec::new(),
        }
    }

    pub fn lowerdirs(
        mut self,
        f: impl Fn(&Layers) -> Vec<PathBuf> + Send + Sync + 'static,
    ) -> Case {
        self.mount_lowers = Some(Box::new(f));
        self
    }

    pub fn kernel_alias(mut self, paths: &[&str]) -> Case {
        self.kernel_alias
            .extend(paths.iter().map(|p| p.to_string()));
        self
    }

    pub fn probe(mut self, paths: &[&str]) -> Case {
        self.probes.extend(paths.iter().map(|p| p.to_string()));
        self
    }
}

/// A mount option set both implementations are given.
pub struct OptionSet {
    pub name: &'static str,
    pub opts: &'static [&'static str],
    pub userxattr: bool,
}

pub const FOLLOW: OptionSet = OptionSet {
    name: "follow",
    opts: &["redirect_dir=follow"],
    userxattr: false,
};
pub const ALL_ON: OptionSet = OptionSet {
    name: "all-on",
    opts: &["redirect_dir=on", "index=on", "xino=on", "metacopy=on"],
    userxattr: false,
};
pub const USERXATTR: OptionSet = OptionSet {
    name: "userxattr",
    opts: &["userxattr"],
    userxattr: true,
};
pub const ALL_SETS: [&OptionSet; 3] = [&FOLLOW, &ALL_ON, &USERXATTR];

/// What one implementation showed.
struct View {
    mounted: Result<(), String>,
    merged: Tree,
    /// For each path, the first path (in order) with the same st_ino: which
    /// names share an inode number (hard links, origins), not the numbers.
    same_ino: BTreeMap<String, String>,
    probes: BTreeMap<String, String>,
    upper: Tree,
    hang: bool,
}

/// Totals of one class run.
#[derive(Default)]
pub struct Report {
    pub runs: usize,
    pub failures: Vec<String>,
    pub failed_runs: usize,
    /// Paths not compared: the kernel said ESTALE (see [`kernel_stale`]).
    pub kernel_stale: usize,
}

/// Run every case in every option set; panic with all failures at the end.
pub fn run_class(class: &str, cases: Vec<Case>, sets: &[&OptionSet]) {
    // OVLFS_HOSTILE_CASE=TEXT: only the cases whose name holds TEXT.
    let cases: Vec<Case> = match std::env::var("OVLFS_HOSTILE_CASE") {
        Ok(f) => cases.into_iter().filter(|c| c.name.contains(&f)).collect(),
        Err(_) => cases,
    };
    let s = Scratch::new().expect("scratch");
    let sentinel_hash = tree::hash_bytes(SENTINEL_DATA);
    let mut report = Report::default();
    for set in sets {
        for (i, case) in cases.iter().enumerate() {
            let base = s.path().join(format!("{}-{i}", set.name));
            report.runs += 1;
            let k = run_one(&base.join("k"), case, set, true);
            let o = run_one(&base.join("o"), case, set, false);
            let what = format!("[{class}/{}/{}]", set.name, case.name);
            report.kernel_stale += kernel_stale(&k.merged, &k.probes).len();
            let failed = compare(&what, &k, &o, sentinel_hash, &case.kernel_alias);
            report.failed_runs += usize::from(!failed.is_empty());
            report.failures.extend(failed);
            // Never through a mount left behind: that would reach the layers.
            if !super::super::common::mount_points()
                .iter()
                .any(|m| m.starts_with(&base))
            {
                let _ = std::fs::remove_dir_all(&base);
            }
        }
    }
    eprintln!(
        "{class}: {} runs ({} cases x {} option sets), {} failing, {} paths not compared (kernel ESTALE)",
        report.runs,
        cases.len(),
        sets.len(),
        report.failed_runs,
        report.kernel_stale
    );
    assert!(
        report.failures.is_empty(),
        "{class}: {} of {} runs differ from the kernel or broke a rule:\n{}",
        report.failed_runs,
        report.runs,
        report.failures.join("\n")
    );
}

fn layers(base: &Path, case: &Case, set: &OptionSet) -> (Layers, PathBuf) {
    let mk = |p: PathBuf| {
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let l = Layers {
        lowers: (1..=case.lowers)
            .map(|i| mk(base.join(format!("L{i}"))))
            .collect(),
        upper: mk(base.join("U")),
        work: mk(base.join("W")),
        outside: mk(base.join("OUT")),
        prefix: if set.userxattr {
            "user.overlay."
        } else {
            "trusted.overlay."
        },
    };
    std::fs::write(l.outside.join(SENTINEL_NAME), SENTINEL_DATA).unwrap();
    (l, mk(base.join("M")))
}

fn run_one(base: &Path, case: &Case, set: &OptionSet, kernel: bool) -> View {
    let (l, mnt) = layers(base, case, set);
    (case.build)(&l);
    let lowers = match &case.mount_lowers {
        Some(f) => f(&l),
        None => l.lowers.clone(),
    };
    let mount = if kernel { mount_kernel } else { mount_ovlfs };
    let mounted = mount(&lowers, Some(&l.upper), Some(&l.work), &mnt, set.opts);
    let mut v = View {
        mounted,
        merged: Tree::default(),
        same_ino: BTreeMap::new(),
        probes: BTreeMap::new(),
        upper: Tree::default(),
        hang: false,
    };
    if v.mounted.is_err() {
        return v;
    }
    match walk_bounded(&mnt, &case.probes) {
        Some((merged, probes)) => {
            v.same_ino = same_ino(&mnt, &merged);
            v.merged = merged;
            v.probes = probes;
        }
        None => {
            v.hang = true;
            abort_fuse(&mnt);
        }
    }
    if !kernel
        && !v.hang
        && let Err(e) = std::fs::metadata(&mnt)
    {
        v.probes
            .insert("<daemon>".into(), format!("dead after the walk: {e}"));
    }
    if let Err(e) = unmount(&mnt) {
        v.probes.insert("<unmount>".into(), e);
    }
    v.upper = tree::snapshot(&l.upper, SnapMode::Layer);
    v
}

fn same_ino(mnt: &Path, t: &Tree) -> BTreeMap<String, String> {
    let mut first: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (p, e) in &t.0 {
        if e.error.is_some() {
            continue;
        }
        if let Ok(md) = std::fs::symlink_metadata(mnt.join(p)) {
            let f = first.entry(md.ino()).or_insert_with(|| p.clone());
            out.insert(p.clone(), f.clone());
        }
    }
    out
}

/// The walk and the probes, in a thread; `None` if they did not end in time.
fn walk_bounded(mnt: &Path, probes: &[String]) -> Option<(Tree, BTreeMap<String, String>)> {
    let (tx, rx) = mpsc::channel();
    let (mnt, probes) = (mnt.to_path_buf(), probes.to_vec());
    std::thread::spawn(move || {
        let t = tree::snapshot_bounded(&mnt, SnapMode::Merged, MAX_DEPTH, MAX_ENTRIES);
        let p = probes
            .iter()
            .map(|p| (p.clone(), probe(&mnt.join(p))))
            .collect();
        let _ = tx.send((t, p));
    });
    rx.recv_timeout(WALK_TIMEOUT).ok()
}

/// One path looked up on its own: type, size and contents, or the errno.
fn probe(p: &Path) -> String {
    match std::fs::symlink_metadata(p) {
        Err(e) => format!("lstat: {}", os_err(&e)),
        Ok(md) => {
            let mut s = format!(
                "mode {:o} size {} nlink {}",
                md.mode(),
                md.size(),
                md.nlink()
            );
            if md.is_file() {
                s += &match std::fs::read(p) {
                    Ok(d) => format!(" data {:016x}", tree::hash_bytes(&d)),
                    Err(e) => format!(" read: {}", os_err(&e)),
                };
            }
            if md.is_dir() {
                s += &match std::fs::read_dir(p) {
                    Ok(rd) => {
                        let mut n: Vec<String> = rd
                            .filter_map(|d| d.ok())
                            .map(|d| d.file_name().to_string_lossy().into_owned())
                            .collect();
                        n.sort();
                        format!(" [{}]", n.join(" "))
                    }
                    Err(e) => format!(" opendir: {}", os_err(&e)),
                };
            }
            s
        }
    }
}

fn os_err(e: &std::io::Error) -> String {
    e.raw_os_error().map(errno_name).unwrap_or(e.to_string())
}

/// A hung FUSE mount: abort its connection so the walk's thread returns
/// (fusectl is mounted first where the system has not).
fn abort_fuse(mnt: &Path) {
    let ctl = Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(ctl).is_ok_and(|mut d| d.next().is_none()) {
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(ctl)
            .status();
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let m = mnt.to_string_lossy();
    for l in info.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() > 4 && f[4] == m {
            let minor = f[2].split(':').nth(1).unwrap_or("0");
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
        }
    }
}

/// Paths where the kernel answered ESTALE: a second overlay directory over
/// one lower directory (a redirect's uncovered origin, two redirects to one
/// place) finds the inode the first one left in the kernel's inode cache.
/// ovlfs shows both (README: deliberate differences); these paths and what
/// is below them are not compared.
fn kernel_stale(t: &Tree, probes: &BTreeMap<String, String>) -> Vec<String> {
    let stale = |e: &Option<String>| e.as_deref().is_some_and(|e| e.ends_with("ESTALE"));
    let mut v: Vec<String> =
        t.0.iter()
            .filter(|(_, e)| stale(&e.error))
            .map(|(p, _)| p.clone())
            .collect();
    v.extend(
        probes
            .iter()
            .filter(|(_, r)| r.ends_with("ESTALE"))
            .map(|(p, _)| p.clone()),
    );
    v
}

fn only(t: &Tree, keep: impl Fn(&str) -> bool + Copy) -> Tree {
    Tree(
        t.0.iter()
            .filter(|(p, _)| keep(p))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect(),
    )
}

fn compare(what: &str, k: &View, o: &View, sentinel_hash: u64, alias: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if o.hang {
        out.push(format!(
            "{what} ovlfs HUNG (walk longer than {WALK_TIMEOUT:?})"
        ));
    }
    for (p, e) in &o.merged.0 {
        if p.ends_with(SENTINEL_NAME) || matches!(e.content, Some(Ok(h)) if h == sentinel_hash) {
            out.push(format!(
                "{what} ovlfs shows what is outside the layers at {p}"
            ));
        }
    }
    match (&k.mounted, &o.mounted) {
        (Ok(()), Err(e)) => out.push(format!("{what} kernel mounts, ovlfs refuses: {e}")),
        (Err(e), Ok(())) => out.push(format!("{what} kernel refuses ({e}), ovlfs mounts")),
        _ => {}
    }
    if k.mounted.is_err() || o.mounted.is_err() || o.hang {
        return out;
    }
    let mut stale = kernel_stale(&k.merged, &k.probes);
    stale.extend(alias.iter().cloned());
    let keep = |p: &str| {
        !stale
            .iter()
            .any(|s| p == s || p.starts_with(&format!("{s}/")))
    };
    let (kt, ot) = (only(&k.merged, keep), only(&o.merged, keep));
    let d = tree::diff(&kt, &ot, "kernel", "ovlfs");
    out.extend(d.into_iter().map(|l| format!("{what} merged: {l}")));
    for (p, kf) in k.same_ino.iter().filter(|(p, _)| keep(p)) {
        if let Some(of) = o.same_ino.get(p)
            && of != kf
        {
            out.push(format!(
                "{what} st_ino of {p}: kernel shares it with {kf:?}, ovlfs with {of:?}"
            ));
        }
    }
    for (p, kv) in k.probes.iter().filter(|(p, _)| keep(p)) {
        let ov = o
            .probes
            .get(p)
            .map(String::as_str)
            .unwrap_or("<not probed>");
        if kv != ov {
            out.push(format!("{what} probe {p}: kernel {kv} / ovlfs {ov}"));
        }
    }
    for (p, ov) in &o.probes {
        if !k.probes.contains_key(p) {
            out.push(format!("{what} {p}: {ov}"));
        }
    }
    let d = tree::diff(&k.upper, &o.upper, "kernel", "ovlfs");
    out.extend(d.into_iter().map(|l| format!("{what} upper: {l}")));
    out
}
