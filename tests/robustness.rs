//! Robustness of the ovlfs daemon: crashes (SIGKILL) during copy-up and rename,
//! clean unmounts, bad on-disk input, layers changed under a live mount, and
//! concurrent requests.
//!
//! Self-contained: the helpers below do not depend on tests/common. Every test
//! mounts a private tmpfs scratch (lazily unmounted, with any daemon left
//! below it killed, on drop), so the tests can run in parallel.
//!
//! Needs root and /dev/fuse (tests 2 and 4 also the kernel overlay). Without
//! them a test prints `SKIPPED: ...` and passes, or fails under `CI=true`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

const OVLFS: &str = env!("CARGO_BIN_EXE_ovlfs");
const MIB: usize = 1 << 20;

// ============================================================================
// Environment
// ============================================================================

fn kernel_overlay_available() -> bool {
    let listed = || {
        fs::read_to_string("/proc/filesystems")
            .map(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().last() == Some("overlay"))
            })
            .unwrap_or(false)
    };
    if listed() {
        return true;
    }
    let _ = Command::new("modprobe")
        .arg("overlay")
        .stderr(Stdio::null())
        .status();
    listed()
}

/// Whether this test can run; prints a loud SKIPPED (or panics under CI=true) if not.
fn usable(test: &str, need_kernel_overlay: bool) -> bool {
    let mut why = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        why.push("not running as root");
    }
    if !Path::new("/dev/fuse").exists() {
        why.push("/dev/fuse is missing");
    }
    if need_kernel_overlay && !kernel_overlay_available() {
        why.push("the kernel overlay filesystem is not available");
    }
    if why.is_empty() {
        unsafe { libc::umask(0o022) };
        return true;
    }
    let msg = why.join("; ");
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("CI=true and {test} cannot run: {msg}");
    }
    eprintln!("\n************************************************************");
    eprintln!("SKIPPED: {test}: {msg}");
    eprintln!("************************************************************\n");
    false
}

// ============================================================================
// Small system helpers
// ============================================================================

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn os_err(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn ename(e: i32) -> String {
    let n = match e {
        0 => "OK",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ESTALE => "ESTALE",
        libc::ERANGE => "ERANGE",
        _ => return format!("E{e}"),
    };
    n.to_string()
}

fn io_res<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => ename(os_err(&e)),
    }
}

fn unescape_mountinfo(f: &str) -> PathBuf {
    let b = f.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect()
}

fn is_mounted(p: &Path) -> bool {
    mount_points().iter().any(|m| m == p)
}

/// The process's arguments from /proc, or None if it is gone.
fn cmdline(pid: i32) -> Option<Vec<Vec<u8>>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| a.to_vec())
            .collect(),
    )
}

/// ovlfs processes with an argument matching `f`.
fn ovlfs_pids(f: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(args) = cmdline(pid) else { continue };
        let is_ovlfs = args
            .first()
            .map(|a0| a0.ends_with(b"/ovlfs") || a0 == b"ovlfs")
            .unwrap_or(false);
        if is_ovlfs && args.iter().skip(1).any(|a| f(a)) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn sigkill(pid: i32) {
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn umount_lazy(p: &Path) {
    unsafe { libc::umount2(cstr(p).as_ptr(), libc::MNT_DETACH) };
}

/// Run `f` on another thread; panic if it does not finish within `secs` (a hang).
fn timed<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("HANG: `{what}` did not finish within {secs} s")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("`{what}` panicked"),
    }
}

/// Run a command with stdout/stderr into `log`; Err on timeout (the process is killed).
fn run_timeout(cmd: &mut Command, secs: u64, log: &Path) -> Result<ExitStatus, String> {
    let f = fs::File::create(log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("HANG: {cmd:?} did not finish within {secs} s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tail(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n    ")
}

/// `ls -laR MNT` completes (exit 0) within 60 s.
fn ls_lar_ok(mnt: &Path, log: &Path, ctx: &str) {
    let st = run_timeout(
        Command::new("ls").arg("-laR").arg(mnt).env("LC_ALL", "C"),
        60,
        log,
    )
    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert!(
        st.success(),
        "{ctx}: ls -laR {} exited with {st}:\n    {}",
        mnt.display(),
        tail(log, 10)
    );
}

fn lsetxattr(p: &Path, name: &str, val: &[u8]) -> i32 {
    let n = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            cstr(p).as_ptr(),
            n.as_ptr(),
            val.as_ptr().cast(),
            val.len(),
            0,
        )
    };
    if r == 0 { 0 } else { errno() }
}

fn lgetxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    let r = unsafe {
        libc::lgetxattr(
            cstr(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let r = unsafe { libc::mknod(cstr(p).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}: {}", p.display(), ename(errno()));
}

fn renameat2(a: &Path, b: &Path, flags: u32) -> Result<(), i32> {
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cstr(a).as_ptr(),
            libc::AT_FDCWD,
            cstr(b).as_ptr(),
            flags,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

fn write_file(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn dir_names(p: &Path) -> BTreeSet<OsString> {
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// Compare two files chunk by chunk (fast even in a debug build: slice == is memcmp).
fn files_equal(a: &Path, b: &Path) -> Result<(), String> {
    let mut fa = fs::File::open(a).map_err(|e| format!("open {}: {e}", a.display()))?;
    let mut fb = fs::File::open(b).map_err(|e| format!("open {}: {e}", b.display()))?;
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    if la != lb {
        return Err(format!(
            "{} has {la} bytes, {} has {lb}",
            a.display(),
            b.display()
        ));
    }
    let (mut ba, mut bb) = (vec![0u8; 4 * MIB], vec![0u8; 4 * MIB]);
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| format!("read {}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| format!("read {}: {e}", b.display()))?;
        if na != nb || ba[..na] != bb[..nb] {
            let at = ba[..na]
                .iter()
                .zip(&bb[..nb])
                .position(|(x, y)| x != y)
                .unwrap_or(na.min(nb));
            return Err(format!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                off + at as u64
            ));
        }
        if na == 0 {
            return Ok(());
        }
        off += na as u64;
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

// ============================================================================
// Deterministic data
// ============================================================================

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `len` pseudo-random bytes determined by `seed`.
fn pgen(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

// ============================================================================
// Scratch tmpfs and overlay stacks
// ============================================================================

/// A private tmpfs on a new temporary directory. On drop: every ovlfs daemon
/// naming a path below it is SIGKILLed, everything mounted below it lazily
/// unmounted, then the tmpfs itself.
struct Scratch {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ovlfs-rob-{tag}-"))
            .tempdir()
            .expect("tempdir");
        let path = fs::canonicalize(dir.path()).unwrap();
        let data = CString::new("mode=0755,size=6g").unwrap();
        let t = CString::new("tmpfs").unwrap();
        let r = unsafe {
            libc::mount(
                t.as_ptr(),
                cstr(&path).as_ptr(),
                t.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            r,
            0,
            "mount tmpfs on {}: {}",
            path.display(),
            ename(errno())
        );
        Scratch { path, _dir: dir }
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let prefix = self.path.as_os_str().as_bytes().to_vec();
        for pid in ovlfs_pids(|a| a.starts_with(&prefix)) {
            sigkill(pid);
        }
        let mut below: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&self.path) && *m != self.path)
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in below {
            umount_lazy(&m);
        }
        umount_lazy(&self.path);
    }
}

/// One overlay stack: lowers (topmost first), upper, work, mount point.
struct Stack {
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
    /// More mount options, e.g. ",allow_other".
    extra: String,
}

impl Stack {
    /// `root/{u,w,m}` with the given lowers.
    fn new(root: &Path, lowers: Vec<PathBuf>) -> Stack {
        let st = Stack {
            lowers,
            upper: root.join("u"),
            work: root.join("w"),
            mnt: root.join("m"),
            log: root.join("ovlfs.log"),
            extra: String::new(),
        };
        for d in [&st.upper, &st.work, &st.mnt] {
            fs::create_dir_all(d).unwrap();
        }
        st
    }

    fn opts(&self) -> String {
        let l: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.to_str().unwrap().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}{}",
            l.join(":"),
            self.upper.display(),
            self.work.display(),
            self.extra
        )
    }

    fn logf(&self) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap()
    }

    /// `ovlfs -o OPTS MNT` (daemonizes); returns the daemon's pid.
    fn mount(&self) -> i32 {
        let log = self.logf();
        let mut child = Command::new(OVLFS)
            .arg("-o")
            .arg(self.opts())
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ovlfs");
        let deadline = Instant::now() + Duration::from_secs(30);
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "ovlfs mount of {} did not return in 30 s",
                    self.mnt.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            st.success() && is_mounted(&self.mnt),
            "ovlfs -o {} {}: {st}, mounted={}\n    {}",
            self.opts(),
            self.mnt.display(),
            is_mounted(&self.mnt),
            tail(&self.log, 15)
        );
        let m = self.mnt.as_os_str().as_bytes().to_vec();
        let pids = ovlfs_pids(|a| a == m.as_slice());
        assert_eq!(
            pids.len(),
            1,
            "daemon pids for {}: {pids:?}",
            self.mnt.display()
        );
        pids[0]
    }

    /// `ovlfs -f -o OPTS MNT`: the foreground daemon, once its mount is live.
    fn spawn_fg(&self) -> Child {
        let log = self.logf();
        let mut child = Command::new(OVLFS)
            .arg("-f")
            .arg("-o")
            .arg(self.opts())
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ovlfs -f");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&self.mnt) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "ovlfs -f exited with {st} before mounting:\n    {}",
                    tail(&self.log, 15)
                );
            }
            assert!(Instant::now() < deadline, "ovlfs -f: no mount in 30 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The first request waits for INIT; make sure the daemon answers.
        let m = self.mnt.clone();
        timed("first stat of a fresh mount", 30, move || fs::metadata(&m))
            .expect("stat of the fresh mount");
        child
    }

    /// Plain `umount MNT` (retrying EBUSY briefly), then wait for `pid` to exit.
    fn umount(&self, pid: i32) {
        let mut tries = 0;
        loop {
            let out = Command::new("umount").arg(&self.mnt).output().unwrap();
            if out.status.success() {
                break;
            }
            tries += 1;
            let msg = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                tries < 40 && msg.contains("busy"),
                "umount {}: {msg}",
                self.mnt.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            wait_gone(pid, Duration::from_secs(15)),
            "daemon {pid} still running 15 s after umount {}",
            self.mnt.display()
        );
    }

    fn work_entries(&self) -> BTreeSet<OsString> {
        dir_names(&self.work.join("work"))
    }
}

/// Mount the kernel overlay (index=off) on `mnt`.
fn mount_kernel(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> Result<(), String> {
    fs::create_dir_all(mnt).unwrap();
    fs::create_dir_all(work).unwrap();
    let l: Vec<&str> = lowers.iter().map(|p| p.to_str().unwrap()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        l.join(":"),
        upper.display(),
        work.display()
    );
    let ov = CString::new("overlay").unwrap();
    let data = CString::new(opts.clone()).unwrap();
    let r = unsafe {
        libc::mount(
            ov.as_ptr(),
            cstr(mnt).as_ptr(),
            ov.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(format!("kernel overlay -o {opts}: {}", ename(errno())));
    }
    Ok(())
}

fn umount_kernel(mnt: &Path) {
    let r = unsafe { libc::umount2(cstr(mnt).as_ptr(), 0) };
    assert_eq!(r, 0, "umount {}: {}", mnt.display(), ename(errno()));
}

// ============================================================================
// Trees: snapshots through a mount, and the merge recomputed from the layers
// ============================================================================

#[derive(Clone, PartialEq, Eq)]
enum Ent {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        data: Vec<u8>,
    },
    Link {
        uid: u32,
        gid: u32,
        target: Vec<u8>,
    },
    Other {
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
    },
}

impl std::fmt::Debug for Ent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ent::Dir { mode, uid, gid } => write!(f, "dir {mode:o} {uid}:{gid}"),
            Ent::File {
                mode,
                uid,
                gid,
                data,
            } => {
                let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
                });
                write!(
                    f,
                    "file {mode:o} {uid}:{gid} {} bytes fnv {h:016x}",
                    data.len()
                )
            }
            Ent::Link { uid, gid, target } => {
                write!(
                    f,
                    "symlink {uid}:{gid} -> {:?}",
                    String::from_utf8_lossy(target)
                )
            }
            Ent::Other {
                mode,
                uid,
                gid,
                rdev,
            } => {
                write!(f, "special {mode:o} {uid}:{gid} rdev {rdev:x}")
            }
        }
    }
}

type Tree = BTreeMap<Vec<u8>, Ent>;

fn ent_of(p: &Path, md: &fs::Metadata) -> Result<Ent, String> {
    let ft = md.file_type();
    let (mode, uid, gid) = (md.mode() & 0o7777, md.uid(), md.gid());
    Ok(if ft.is_dir() {
        Ent::Dir { mode, uid, gid }
    } else if ft.is_file() {
        let data = fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
        Ent::File {
            mode,
            uid,
            gid,
            data,
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(p)
            .map_err(|e| format!("readlink {}: {e}", p.display()))?
            .into_os_string()
            .into_vec();
        Ent::Link { uid, gid, target }
    } else {
        Ent::Other {
            mode: md.mode(),
            uid,
            gid,
            rdev: md.rdev(),
        }
    })
}

fn rel_join(rel: &[u8], name: &OsStr) -> Vec<u8> {
    let mut v = rel.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name.as_bytes());
    v
}

/// Everything below `root`, not following symlinks.
fn snapshot(root: &Path) -> Result<Tree, String> {
    let mut t = Tree::new();
    snap_dir(root, &[], &mut t)?;
    Ok(t)
}

fn snap_dir(dir: &Path, rel: &[u8], t: &mut Tree) -> Result<(), String> {
    let rd = fs::read_dir(dir).map_err(|e| format!("readdir {}: {e}", dir.display()))?;
    for e in rd {
        let e = e.map_err(|e| format!("readdir {}: {e}", dir.display()))?;
        let p = e.path();
        let md = fs::symlink_metadata(&p).map_err(|e| format!("lstat {}: {e}", p.display()))?;
        let r = rel_join(rel, &e.file_name());
        t.insert(r.clone(), ent_of(&p, &md)?);
        if md.is_dir() {
            snap_dir(&p, &r, t)?;
        }
    }
    Ok(())
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    lgetxattr(p, "trusted.overlay.opaque").as_deref() == Some(b"y")
}

/// The merged tree the kernel's rules give for these layers (whiteouts,
/// opaque dirs; no `.wh.` markers are used where this is called).
fn expected_merge(upper: &Path, lowers: &[PathBuf]) -> Tree {
    let mut stack = vec![upper.to_path_buf()];
    if !is_opaque(upper) {
        stack.extend(lowers.iter().cloned());
    }
    let mut t = Tree::new();
    merge_dir(&stack, &[], &mut t);
    t
}

fn merge_dir(stack: &[PathBuf], rel: &[u8], t: &mut Tree) {
    let mut seen = HashSet::new();
    for (i, d) in stack.iter().enumerate() {
        for name in dir_names(d) {
            if !seen.insert(name.clone()) {
                continue;
            }
            let p = d.join(&name);
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if is_whiteout(&md) {
                continue;
            }
            let r = rel_join(rel, &name);
            t.insert(r.clone(), ent_of(&p, &md).unwrap());
            if md.is_dir() {
                let mut child = vec![p.clone()];
                if !is_opaque(&p) {
                    for below in &stack[i + 1..] {
                        let q = below.join(&name);
                        match fs::symlink_metadata(&q) {
                            Err(_) => continue,
                            Ok(m) if m.is_dir() => {
                                child.push(q.clone());
                                if is_opaque(&q) {
                                    break;
                                }
                            }
                            Ok(_) => break, // a whiteout or non-directory ends the merge
                        }
                    }
                }
                merge_dir(&child, &r, t);
            }
        }
    }
}

/// Human-readable differences (at most 25).
fn tree_diff(an: &str, a: &Tree, bn: &str, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push(format!(
                "{:?}: {an}={x:?} {bn}={y:?}",
                String::from_utf8_lossy(k)
            ));
        }
        if out.len() >= 25 {
            out.push("...".into());
            break;
        }
    }
    out
}

// ============================================================================
// 1. SIGKILL during copy-up
// ============================================================================

const BIG: usize = 256 * MIB;

/// A 256 MiB lower file, all data (no holes): a 1 MiB random block with the
/// block number stamped in front, so misplaced blocks are caught too.
fn write_big(p: &Path) {
    let block = pgen(0xB16, MIB);
    let mut f = fs::File::create(p).unwrap();
    let mut b = block.clone();
    for i in 0..(BIG / MIB) {
        b[..8].copy_from_slice(&(i as u64 ^ 0xA5A5_A5A5).to_le_bytes());
        f.write_all(&b).unwrap();
    }
    f.sync_all().unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Anchor {
    /// Delay counted from the open(2) that triggers the copy-up.
    Open,
    /// Delay counted from the moment a `#` entry shows up in W/work.
    Temp,
}

#[test]
fn crash_during_copy_up_never_leaves_a_partial_file() {
    if !usable("crash_during_copy_up", false) {
        return;
    }
    let s = Scratch::new("copyup");
    let lower = s.dir("lower");
    let big = lower.join("big");
    write_big(&big);
    let plan: &[(Anchor, u64)] = &[
        (Anchor::Open, 0),
        (Anchor::Open, 2),
        (Anchor::Temp, 0),
        (Anchor::Temp, 2),
        (Anchor::Temp, 5),
        (Anchor::Temp, 10),
        (Anchor::Temp, 20),
        (Anchor::Temp, 50),
        (Anchor::Temp, 100),
        (Anchor::Temp, 200),
        (Anchor::Temp, 400),
        (Anchor::Open, 3000),
    ];
    let mut mid_copy = 0;
    let mut complete = 0;
    for (round, &(anchor, ms)) in plan.iter().enumerate() {
        let root = s.dir(&format!("r{round}"));
        let st = Stack::new(&root, vec![lower.clone()]);
        let mut child = st.spawn_fg();
        let pid = child.id() as i32;
        let target = st.mnt.join("big");
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let r = fs::OpenOptions::new()
                .append(true) // O_WRONLY|O_APPEND: copy-up
                .open(&target)
                .map(drop)
                .map_err(|e| os_err(&e));
            let _ = tx.send(r);
        });
        let mut open_result = None;
        if let Anchor::Temp = anchor {
            let work = st.work.join("work");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if dir_names(&work)
                    .iter()
                    .any(|n| n.as_bytes().starts_with(b"#"))
                {
                    break;
                }
                if let Ok(r) = rx.try_recv() {
                    open_result = Some(r); // the copy-up finished before we saw it
                    break;
                }
                assert!(Instant::now() < deadline, "no copy-up started in 20 s");
                std::thread::yield_now();
            }
        }
        std::thread::sleep(Duration::from_millis(ms));
        sigkill(pid);
        let _ = child.wait();
        let killed_at = t0.elapsed();
        let open_result = match open_result {
            Some(r) => r,
            None => rx
                .recv_timeout(Duration::from_secs(30))
                .expect("HANG: open(2) did not return after the daemon was killed"),
        };
        umount_lazy(&st.mnt);
        let leftovers = st.work_entries();
        if !leftovers.is_empty() {
            mid_copy += 1;
        }
        let up = st.upper.join("big");
        let ctx = format!(
            "round {round} ({anchor:?}+{ms} ms, killed after {killed_at:?}, open: {}, W/work: {leftovers:?})",
            open_result.map_or_else(ename, |_| "OK".into())
        );
        match fs::symlink_metadata(&up) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    open_result.is_err(),
                    "{ctx}: open for write succeeded but the upper has no copy"
                );
            }
            Err(e) => panic!("{ctx}: lstat upper: {e}"),
            Ok(md) => {
                assert!(md.is_file(), "{ctx}: upper big is not a regular file");
                assert_eq!(
                    md.len(),
                    BIG as u64,
                    "{ctx}: PARTIAL COPY at the visible upper path"
                );
                files_equal(&up, &big).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                complete += 1;
            }
        }
        // The leftover must be confined to W/work: nothing else in the upper.
        let extra: Vec<OsString> = dir_names(&st.upper)
            .into_iter()
            .filter(|n| n != "big")
            .collect();
        assert!(extra.is_empty(), "{ctx}: stray upper entries {extra:?}");

        // Remount: W/work is emptied, the merged file is complete, and a
        // copy-up after the crash works.
        let pid = st.mount();
        let left = st.work_entries();
        assert!(
            left.is_empty(),
            "{ctx}: W/work not emptied at mount: {left:?}"
        );
        files_equal(&st.mnt.join("big"), &big)
            .unwrap_or_else(|e| panic!("{ctx}: merged view after remount: {e}"));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(st.mnt.join("big"))
            .unwrap_or_else(|e| panic!("{ctx}: open for append after remount: {e}"));
        f.write_all(b"tail!").unwrap();
        drop(f);
        st.umount(pid);
        let md = fs::metadata(&up).unwrap();
        assert_eq!(md.len(), BIG as u64 + 5, "{ctx}: size after the append");
        let mut t = [0u8; 5];
        fs::File::open(&up)
            .unwrap()
            .read_exact_at(&mut t, BIG as u64)
            .unwrap();
        assert_eq!(&t, b"tail!", "{ctx}");
        eprintln!("copy-up crash {ctx}: ok");
        let _ = fs::remove_dir_all(&root);
    }
    eprintln!(
        "copy-up crash: {mid_copy} kills left a temp in W/work, {complete} left a complete copy"
    );
    assert!(
        mid_copy > 0,
        "no kill landed during a copy-up (W/work always empty): the crash window was not exercised"
    );
}

// ============================================================================
// 2. SIGKILL during renames
// ============================================================================

/// 32 names: d{0,1}/{f,g}{0..7}; the f names exist in the lower layer.
const NNAMES: usize = 32;

fn rname(i: usize) -> String {
    format!(
        "d{}/{}{}",
        i / 16,
        if (i % 16) < 8 { "f" } else { "g" },
        i % 8
    )
}

fn rcontent(id: u32) -> Vec<u8> {
    let mut v = format!("content #{id} ").into_bytes();
    let n = 100 + (id as usize * 997) % 6000;
    while v.len() < n {
        v.extend_from_slice(format!("[{id}]").as_bytes());
    }
    v
}

type RModel = BTreeMap<usize, u32>;

#[derive(Clone, Copy, Debug)]
enum ROp {
    Move {
        src: usize,
        dst: usize,
        noreplace: bool,
    },
    Replace {
        src: usize,
        dst: usize,
    },
    Exchange {
        a: usize,
        b: usize,
    },
}

fn rapply(m: &RModel, op: ROp) -> RModel {
    let mut m = m.clone();
    match op {
        ROp::Move { src, dst, .. } | ROp::Replace { src, dst } => {
            let c = m.remove(&src).unwrap();
            m.insert(dst, c);
        }
        ROp::Exchange { a, b } => {
            let (ca, cb) = (m[&a], m[&b]);
            m.insert(a, cb);
            m.insert(b, ca);
        }
    }
    m
}

fn rpick(m: &RModel, rng: &mut Rng) -> ROp {
    let names: Vec<usize> = m.keys().copied().collect();
    let src = names[rng.below(names.len() as u64) as usize];
    let mut dst = rng.below(NNAMES as u64) as usize;
    while dst == src {
        dst = rng.below(NNAMES as u64) as usize;
    }
    if !m.contains_key(&dst) {
        ROp::Move {
            src,
            dst,
            noreplace: rng.below(2) == 0,
        }
    } else if rng.below(2) == 0 || m.len() <= 12 {
        ROp::Exchange { a: src, b: dst }
    } else {
        ROp::Replace { src, dst }
    }
}

fn rdo(mnt: &Path, op: ROp) -> Result<(), i32> {
    let p = |i: usize| mnt.join(rname(i));
    match op {
        ROp::Move {
            src,
            dst,
            noreplace,
        } => renameat2(
            &p(src),
            &p(dst),
            if noreplace { libc::RENAME_NOREPLACE } else { 0 },
        ),
        ROp::Replace { src, dst } => renameat2(&p(src), &p(dst), 0),
        ROp::Exchange { a, b } => renameat2(&p(a), &p(b), libc::RENAME_EXCHANGE),
    }
}

/// Files of d0/d1 as seen in a tree, by name index → content.
fn rstate(t: &Tree) -> Result<BTreeMap<usize, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for (k, e) in t {
        let k = String::from_utf8_lossy(k).into_owned();
        if k == "d0" || k == "d1" {
            continue;
        }
        let Some(i) = (0..NNAMES).find(|i| rname(*i) == k) else {
            return Err(format!("unexpected entry {k:?}: {e:?}"));
        };
        match e {
            Ent::File { data, .. } => {
                out.insert(i, data.clone());
            }
            other => return Err(format!("{k}: not a regular file: {other:?}")),
        }
    }
    Ok(out)
}

fn rrender(m: &RModel) -> BTreeMap<usize, Vec<u8>> {
    m.iter().map(|(k, c)| (*k, rcontent(*c))).collect()
}

fn rdescribe(m: &BTreeMap<usize, Vec<u8>>) -> String {
    m.iter()
        .map(|(k, v)| {
            let id = String::from_utf8_lossy(&v[..v.len().min(16)]).into_owned();
            format!("{}={}", rname(*k), id.trim_end())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn crash_during_renames_keeps_every_name_old_or_new() {
    if !usable("crash_during_renames", true) {
        return;
    }
    let s = Scratch::new("rename");
    let lower = s.dir("lower");
    let mut model = RModel::new();
    for i in 0..NNAMES {
        if (i % 16) < 8 {
            write_file(&lower.join(rname(i)), &rcontent(i as u32));
            model.insert(i, i as u32);
        }
    }
    let st = Stack::new(&s.path.join("ovl"), vec![lower.clone()]);
    let kmnt = s.path.join("kmnt");
    let kwork = s.path.join("kwork");
    let delays = [3u64, 10, 25, 50, 100, 200, 7, 15, 40, 75, 150, 1, 5, 30];
    let mut applied = 0;
    let mut total_ops = 0usize;
    for (round, &delay) in delays.iter().enumerate() {
        let mut child = st.spawn_fg();
        let pid = child.id() as i32;
        if round == 0 {
            // Copy up most lower files (d1/f4..f7 stay lower-only: their
            // renames copy up first), and add upper-only files.
            for i in 0..NNAMES {
                if (i % 16) < 8 && !(16 + 4..16 + 8).contains(&i) {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(st.mnt.join(rname(i)))
                        .unwrap_or_else(|e| panic!("copy-up {}: {e}", rname(i)));
                }
            }
            for i in [8usize, 9, 10, 11, 24, 25, 26, 27] {
                fs::write(st.mnt.join(rname(i)), rcontent(100 + i as u32)).unwrap();
                model.insert(i, 100 + i as u32);
            }
        }
        let start = model.clone();
        let mnt = st.mnt.clone();
        let seed = 1000 + round as u64;
        let worker = std::thread::spawn(move || {
            let mut m = start;
            let mut rng = Rng::new(seed);
            let mut done = 0usize;
            loop {
                let op = rpick(&m, &mut rng);
                match rdo(&mnt, op) {
                    Ok(()) => {
                        m = rapply(&m, op);
                        done += 1;
                    }
                    Err(e) if e == libc::ENOTCONN || e == libc::ECONNABORTED => {
                        return (m, op, None, done);
                    }
                    Err(e) => {
                        return (m, op, Some(format!("{op:?}: {}", ename(e))), done);
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(delay));
        sigkill(pid);
        let _ = child.wait();
        let (m_done, inflight, err, done) = timed("joining the rename loop", 30, move || {
            worker.join().unwrap()
        });
        umount_lazy(&st.mnt);
        total_ops += done;
        assert!(
            err.is_none(),
            "round {round}: rename failed: {}",
            err.unwrap()
        );
        let m_next = rapply(&m_done, inflight);

        // A fresh ovlfs mount shows either the state before or after the op in flight.
        let pid = st.mount();
        let tree_ovl = snapshot(&st.mnt).unwrap_or_else(|e| panic!("round {round}: {e}"));
        st.umount(pid);
        let seen = rstate(&tree_ovl).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let (before, after) = (rrender(&m_done), rrender(&m_next));
        let ctx = format!(
            "round {round} (kill after {delay} ms, {done} renames done, in flight {inflight:?})"
        );
        model = if seen == before {
            m_done
        } else if seen == after {
            applied += 1;
            m_next
        } else {
            panic!(
                "{ctx}: merged state is neither before nor after the rename in flight\n  seen:   {}\n  before: {}\n  after:  {}",
                rdescribe(&seen),
                rdescribe(&before),
                rdescribe(&after)
            );
        };

        // No partial objects in the upper: exactly the model's files, complete;
        // whiteouts only where nothing is shown.
        for d in ["d0", "d1"] {
            for name in dir_names(&st.upper.join(d)) {
                let rel = format!("{d}/{}", name.to_string_lossy());
                let p = st.upper.join(&rel);
                let md = fs::symlink_metadata(&p).unwrap();
                let idx = (0..NNAMES).find(|i| rname(*i) == rel);
                if is_whiteout(&md) {
                    assert!(
                        idx.is_none_or(|i| !model.contains_key(&i)),
                        "{ctx}: whiteout at shown name {rel}"
                    );
                    continue;
                }
                let i = idx.unwrap_or_else(|| panic!("{ctx}: stray upper entry {rel} ({md:?})"));
                assert!(md.is_file(), "{ctx}: upper {rel} is not a regular file");
                let want = model
                    .get(&i)
                    .unwrap_or_else(|| panic!("{ctx}: upper {rel} exists but is not shown"));
                assert!(
                    fs::read(&p).unwrap() == rcontent(*want),
                    "{ctx}: upper {rel} has partial or wrong content"
                );
            }
        }

        // The kernel overlay mounts the same layers and shows the same tree.
        mount_kernel(std::slice::from_ref(&lower), &st.upper, &kwork, &kmnt)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let tree_k = snapshot(&kmnt);
        umount_kernel(&kmnt);
        let tree_k = tree_k.unwrap_or_else(|e| panic!("{ctx}: kernel overlay: {e}"));
        let d = tree_diff("ovlfs", &tree_ovl, "kernel", &tree_k);
        assert!(
            d.is_empty(),
            "{ctx}: ovlfs and kernel overlay differ:\n  {}",
            d.join("\n  ")
        );
        eprintln!("rename crash {ctx}: ok");
    }
    eprintln!(
        "rename crash: {total_ops} renames over {} rounds; the rename in flight had taken effect in {applied}",
        delays.len()
    );
}

// ============================================================================
// 3. A clean umount loses nothing
// ============================================================================

const SIZES: &[usize] = &[0, 1, 100, 4095, 4096, 4097, 65535, 65536, 131073, 300_001];

fn write_strategy(f: &fs::File, i: usize, data: &[u8]) {
    let mut f = f;
    match i % 4 {
        0 => f.write_all(data).unwrap(),
        1 => {
            for c in data.chunks(1000) {
                f.write_all(c).unwrap();
            }
        }
        2 => {
            // Back to front, positioned.
            let chunks: Vec<(usize, &[u8])> = data
                .chunks(65536)
                .enumerate()
                .map(|(k, c)| (k * 65536, c))
                .collect();
            for (off, c) in chunks.into_iter().rev() {
                f.write_all_at(c, off as u64).unwrap();
            }
        }
        _ => {
            f.set_len(data.len() as u64).unwrap();
            for (k, c) in data.chunks(7777).enumerate() {
                f.write_all_at(c, (k * 7777) as u64).unwrap();
            }
        }
    }
}

fn clean_umount_case(lazy: bool) {
    let s = Scratch::new(if lazy { "umountl" } else { "umount" });
    let lower = s.dir("lower");
    let mut lower_files = Vec::new();
    for j in 0..40usize {
        let rel = format!("ld{}/lf{j}", j % 2);
        let data = pgen(5000 + j as u64, SIZES[j % SIZES.len()] + j);
        write_file(&lower.join(&rel), &data);
        lower_files.push((rel, data));
    }
    let st = Stack::new(&s.path.join("ovl"), vec![lower.clone()]);
    let pid = st.mount();
    let mut expect: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (j, (rel, data)) in lower_files.iter().enumerate() {
        let add = pgen(6000 + j as u64, 1 + j * 1013);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(st.mnt.join(rel))
            .unwrap_or_else(|e| panic!("append {rel}: {e}"));
        let (a, b) = add.split_at(add.len() / 2);
        f.write_all(a).unwrap();
        f.write_all(b).unwrap();
        let mut all = data.clone();
        all.extend_from_slice(&add);
        expect.insert(rel.clone(), all);
    }
    for d in ["n0", "n1", "n2"] {
        fs::create_dir(st.mnt.join(d)).unwrap();
    }
    let dirs = ["n0", "n1", "n2", "ld0", "ld1"];
    for i in 0..1000usize {
        let rel = format!("{}/f{i}", dirs[i % dirs.len()]);
        let size = if i % 97 == 0 {
            3 * MIB + i
        } else {
            SIZES[i % SIZES.len()] + (i % 3)
        };
        let data = pgen(i as u64, size);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(st.mnt.join(&rel))
            .unwrap_or_else(|e| panic!("create {rel}: {e}"));
        write_strategy(&f, i, &data);
        expect.insert(rel, data);
    }

    if lazy {
        // A child holds a file open across `umount -l` and writes after it.
        let src = s.path.join("held-src");
        let held_data = pgen(777, 2 * MIB + 3);
        fs::write(&src, &held_data).unwrap();
        let mut holder = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3>>"$1" || exit 9; echo open; read x; cat "$2" >&3 || exit 8; exec 3>&-; exit 0"#)
            .arg("sh")
            .arg(st.mnt.join("n0/held"))
            .arg(&src)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "open\n", "the holder could not open n0/held");
        umount_lazy(&st.mnt);
        assert!(!is_mounted(&st.mnt), "still mounted after umount -l");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            alive(pid),
            "daemon exited while a file was still open after umount -l"
        );
        holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let hst = timed("holder writing after umount -l", 60, move || holder.wait()).unwrap();
        assert!(hst.success(), "holder writing after umount -l: {hst}");
        expect.insert("n0/held".into(), held_data);
        assert!(
            wait_gone(pid, Duration::from_secs(15)),
            "daemon still running 15 s after the last file closed (umount -l)"
        );
    } else {
        st.umount(pid);
    }

    // Every byte is in the upper, and nothing else is.
    let mut bad = Vec::new();
    for (rel, want) in &expect {
        match fs::read(st.upper.join(rel)) {
            Ok(got) if got == *want => {}
            Ok(got) => {
                let at = got.iter().zip(want).position(|(a, b)| a != b);
                bad.push(format!(
                    "{rel}: {} bytes, want {} (first difference at {at:?})",
                    got.len(),
                    want.len()
                ))
            }
            Err(e) => bad.push(format!("{rel}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} files wrong in the upper after umount{}:\n  {}",
        bad.len(),
        expect.len(),
        if lazy { " -l" } else { "" },
        bad[..bad.len().min(20)].join("\n  ")
    );
    let up = snapshot(&st.upper).unwrap();
    let files: BTreeSet<String> = up
        .iter()
        .filter(|(_, e)| matches!(e, Ent::File { .. }))
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    let want: BTreeSet<String> = expect.keys().cloned().collect();
    assert_eq!(files, want, "regular files in the upper");
    let left = st.work_entries();
    assert!(
        left.is_empty(),
        "W/work not empty after a clean unmount: {left:?}"
    );
}

#[test]
fn clean_umount_loses_nothing() {
    if !usable("clean_umount_loses_nothing", false) {
        return;
    }
    clean_umount_case(false);
}

#[test]
fn lazy_umount_with_open_file_loses_nothing() {
    if !usable("lazy_umount_with_open_file_loses_nothing", false) {
        return;
    }
    clean_umount_case(true);
}

// ============================================================================
// 4. Bad on-disk input
// ============================================================================

#[test]
fn bad_on_disk_input_never_kills_the_daemon() {
    if !usable("bad_on_disk_input", true) {
        return;
    }
    let s = Scratch::new("badinput");
    let l1 = s.dir("layers/l1");
    let l2 = s.dir("layers/l2");
    let root = s.dir("m");
    let st = Stack::new(&root, vec![l1.clone(), l2.clone()]);
    let (u, m) = (st.upper.clone(), st.mnt.clone());

    // Garbage opaque values (lower and upper directories); none is "y".
    let junk = pgen(4, 4096);
    let opq: Vec<(&str, Vec<u8>)> = vec![
        ("opq_empty", vec![]),
        ("opq_n", b"n".to_vec()),
        ("opq_yes", b"yes".to_vec()),
        ("opq_junk", junk.clone()),
    ];
    for (d, v) in &opq {
        write_file(&l1.join(d).join("top"), b"top");
        write_file(&l2.join(d).join("below"), b"below");
        assert_eq!(lsetxattr(&l1.join(d), "trusted.overlay.opaque", v), 0);
    }
    for (d, v) in [("uopq_empty", vec![]), ("uopq_junk", junk.clone())] {
        fs::create_dir_all(u.join(d)).unwrap();
        write_file(&l1.join(d).join("below"), b"below");
        assert_eq!(lsetxattr(&u.join(d), "trusted.overlay.opaque", &v), 0);
    }
    // Whiteouts of the wrong type: a real device (1/3) and a 0/0 block device.
    write_file(&l1.join("wh_wrong"), b"lower wh_wrong");
    mknod(&u.join("wh_wrong"), libc::S_IFCHR | 0o644, 1, 3);
    write_file(&l1.join("wh_blk"), b"lower wh_blk");
    mknod(&u.join("wh_blk"), libc::S_IFBLK | 0o600, 0, 0);
    // `.wh.` names in the upper are ordinary names there.
    write_file(&l1.join("foo"), b"lower foo");
    write_file(&u.join(".wh.foo"), b"upper .wh.foo");
    write_file(&l1.join("dm/x"), b"lower dm/x");
    write_file(&u.join("dm/.wh..wh..opq"), b"marker");
    // Symlinks: dangling, absolute outside, relative escapes.
    let tag_layer = s.path.join("layers/tag");
    let tag_mount = s.path.join("m/tag");
    fs::write(&tag_layer, b"layer-side").unwrap();
    fs::write(&tag_mount, b"mount-side").unwrap();
    let victim = s.path.join("victim");
    fs::write(&victim, b"victim").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
    let victim_md = fs::metadata(&victim).unwrap();
    let sl = |t: &str, n: &str| std::os::unix::fs::symlink(t, l1.join(n)).unwrap();
    sl("/nonexistent-ovlfs-robustness/x", "dangling");
    sl("/etc/passwd", "passwd");
    sl("../../..", "updir");
    sl("../tag", "esc");
    sl(victim.to_str().unwrap(), "victim");
    sl("loop", "loop");
    // A lower directory with no permissions, merged with one below.
    write_file(&l1.join("noperm/inner"), b"inner");
    write_file(&l2.join("noperm/below"), b"below");
    write_file(&l1.join("nopermfile"), b"secret");
    fs::set_permissions(l1.join("nopermfile"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(l1.join("noperm"), fs::Permissions::from_mode(0o000)).unwrap();
    // Awkward names.
    let long = OsString::from("a".repeat(255));
    write_file(&l1.join(&long), b"long");
    let nl = OsString::from("new\nline");
    write_file(&l1.join(&nl), b"newline");
    let bad = OsString::from_vec(b"bad\xff\xfename".to_vec());
    write_file(&l1.join(&bad), b"not utf-8");
    write_file(
        &l2.join("names").join(OsStr::from_bytes(b"\x01\x7f\xc3(")),
        b"ctl",
    );

    // The kernel overlay is the reference for what these layers show.
    let kmnt = s.path.join("m/kmnt");
    mount_kernel(&st.lowers, &u, &s.path.join("kwork"), &kmnt).unwrap();
    let tk = snapshot(&kmnt);
    umount_kernel(&kmnt);
    let tk = tk.expect("kernel overlay snapshot");

    let pid = st.mount();
    let to = snapshot(&m).unwrap_or_else(|e| panic!("ovlfs snapshot: {e}"));
    let d = tree_diff("ovlfs", &to, "kernel", &tk);
    assert!(
        d.is_empty(),
        "ovlfs and the kernel overlay differ:\n  {}",
        d.join("\n  ")
    );

    let mut n_checks = 0;
    let mut check = |name: &str, f: &mut dyn FnMut()| {
        f();
        assert!(alive(pid), "{name}: the daemon died");
        let mm = m.clone();
        timed(&format!("{name}: stat of the mount"), 30, move || {
            fs::metadata(&mm)
        })
        .unwrap_or_else(|e| panic!("{name}: stat of the mount: {e}"));
        ls_lar_ok(&m, &s.path.join("ls.log"), name);
        n_checks += 1;
    };

    check("garbage opaque values", &mut || {
        for (d, _) in &opq {
            let names = dir_names(&m.join(d));
            assert!(
                names.contains(OsStr::new("top")) && names.contains(OsStr::new("below")),
                "{d}: garbage opaque value must not hide the lower: {names:?}"
            );
            // Copy-up of such a directory keeps it transparent.
            fs::write(m.join(d).join("new"), b"n").unwrap();
            let names = dir_names(&m.join(d));
            assert!(
                names.contains(OsStr::new("below")),
                "{d} after copy-up: {names:?}"
            );
        }
        for d in ["uopq_empty", "uopq_junk"] {
            assert!(dir_names(&m.join(d)).contains(OsStr::new("below")), "{d}");
        }
    });
    check("whiteout of the wrong type", &mut || {
        let md = fs::symlink_metadata(m.join("wh_wrong")).unwrap();
        assert!(md.file_type().is_char_device(), "wh_wrong: {md:?}");
        assert_eq!(md.rdev(), libc::makedev(1, 3), "wh_wrong rdev");
        let md = fs::symlink_metadata(m.join("wh_blk")).unwrap();
        assert!(
            md.file_type().is_block_device(),
            "wh_blk is shown as a block device"
        );
        // Removing the device leaves a real whiteout: the lower file stays hidden.
        fs::remove_file(m.join("wh_wrong")).unwrap();
        let e = fs::symlink_metadata(m.join("wh_wrong")).unwrap_err();
        assert_eq!(os_err(&e), libc::ENOENT, "wh_wrong after unlink");
        let md = fs::symlink_metadata(u.join("wh_wrong")).unwrap();
        assert!(
            is_whiteout(&md),
            "upper wh_wrong after unlink is not a whiteout"
        );
    });
    check(".wh. names in the upper", &mut || {
        assert_eq!(fs::read(m.join(".wh.foo")).unwrap(), b"upper .wh.foo");
        assert_eq!(fs::read(m.join("foo")).unwrap(), b"lower foo");
        assert_eq!(fs::read(m.join("dm/x")).unwrap(), b"lower dm/x");
        fs::remove_file(m.join(".wh.foo")).unwrap();
        assert_eq!(fs::read(m.join("foo")).unwrap(), b"lower foo");
        fs::write(m.join(".wh.bar"), b"made through the mount").unwrap();
        assert!(dir_names(&m).contains(OsStr::new(".wh.bar")));
    });
    check("symlinks are resolved by the caller", &mut || {
        let e = fs::read(m.join("dangling")).unwrap_err();
        assert_eq!(os_err(&e), libc::ENOENT, "dangling");
        assert_eq!(
            fs::read(m.join("passwd")).unwrap(),
            fs::read("/etc/passwd").unwrap(),
            "passwd -> /etc/passwd"
        );
        let e = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(m.join("passwd"))
            .unwrap_err();
        assert_eq!(os_err(&e), libc::ELOOP, "O_NOFOLLOW on a symlink");
        assert_eq!(
            fs::canonicalize(m.join("updir")).unwrap(),
            fs::canonicalize(m.join("../../..")).unwrap(),
            "updir -> ../../.. relative to the mount"
        );
        assert_eq!(
            fs::read(m.join("esc")).unwrap(),
            b"mount-side",
            "esc -> ../tag"
        );
        let e = fs::metadata(m.join("loop")).unwrap_err();
        assert_eq!(os_err(&e), libc::ELOOP, "loop -> loop");
        // Changing the link itself (copy-up of a symlink) must not touch its target.
        let p = cstr(&m.join("victim"));
        assert_eq!(
            unsafe { libc::lchown(p.as_ptr(), 4242, 4343) },
            0,
            "lchown: {}",
            ename(errno())
        );
        let times = [
            libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
        ];
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                p.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(r, 0, "utimensat(AT_SYMLINK_NOFOLLOW): {}", ename(errno()));
        let xr = lsetxattr(&m.join("victim"), "trusted.robustness", b"v");
        let md = fs::symlink_metadata(m.join("victim")).unwrap();
        assert!(md.file_type().is_symlink());
        assert_eq!(
            (md.uid(), md.gid()),
            (4242, 4343),
            "lchown through the mount"
        );
        assert_eq!(md.mtime(), 1_000_000, "lutimes through the mount");
        let vm = fs::metadata(&victim).unwrap();
        assert_eq!(
            (vm.uid(), vm.gid(), vm.mode(), vm.mtime(), vm.mtime_nsec()),
            (
                victim_md.uid(),
                victim_md.gid(),
                victim_md.mode(),
                victim_md.mtime(),
                victim_md.mtime_nsec()
            ),
            "THE DAEMON FOLLOWED THE SYMLINK: the target outside the layers changed"
        );
        assert_eq!(
            lgetxattr(&victim, "trusted.robustness"),
            None,
            "THE DAEMON FOLLOWED THE SYMLINK: setxattr (result {}) reached the target",
            ename(xr)
        );
        if xr == 0 {
            assert_eq!(
                lgetxattr(&u.join("victim"), "trusted.robustness").as_deref(),
                Some(b"v".as_slice()),
                "setxattr on the symlink succeeded but the upper symlink lacks it"
            );
        }
        eprintln!("lsetxattr on a symlink through the mount: {}", ename(xr));
        let um = fs::symlink_metadata(u.join("victim")).unwrap();
        assert!(
            um.file_type().is_symlink(),
            "upper copy of victim is not a symlink"
        );
        assert_eq!(fs::read_link(u.join("victim")).unwrap(), victim);
    });
    check("directory with no permissions", &mut || {
        let names = dir_names(&m.join("noperm"));
        let want: BTreeSet<OsString> = ["inner", "below"].iter().map(OsString::from).collect();
        assert_eq!(names, want, "noperm listing");
        assert_eq!(fs::read(m.join("noperm/inner")).unwrap(), b"inner");
        fs::write(m.join("noperm/new"), b"new").unwrap();
        assert_eq!(fs::read(m.join("noperm/new")).unwrap(), b"new");
        let md = fs::metadata(m.join("noperm")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0, "noperm keeps mode 0 after copy-up");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.join("nopermfile"))
            .unwrap();
        f.write_all(b"+").unwrap();
        drop(f);
        assert_eq!(fs::read(m.join("nopermfile")).unwrap(), b"secret+");
    });
    check("long, newline and non-UTF-8 names", &mut || {
        assert_eq!(fs::read(m.join(&long)).unwrap(), b"long");
        assert_eq!(fs::read(m.join(&nl)).unwrap(), b"newline");
        assert_eq!(fs::read(m.join(&bad)).unwrap(), b"not utf-8");
        let b255 = OsString::from("b".repeat(255));
        fs::write(m.join(&b255), b"255").unwrap();
        assert_eq!(fs::read(m.join(&b255)).unwrap(), b"255");
        let e = fs::write(m.join("c".repeat(256)), b"x").unwrap_err();
        assert_eq!(os_err(&e), libc::ENAMETOOLONG, "256-byte name");
        let e = fs::metadata(m.join("d".repeat(256))).unwrap_err();
        assert_eq!(os_err(&e), libc::ENAMETOOLONG, "lookup of a 256-byte name");
        let odd = OsString::from_vec(b"x\ny\xff\x80z".to_vec());
        fs::write(m.join(&odd), b"odd").unwrap();
        let odd2 = OsString::from_vec(b"\xfe\n".to_vec());
        fs::rename(m.join(&odd), m.join(&odd2)).unwrap();
        assert_eq!(fs::read(m.join(&odd2)).unwrap(), b"odd");
        fs::rename(m.join(&long), m.join(&odd)).unwrap(); // lower file: copy-up + whiteout
        assert!(fs::symlink_metadata(m.join(&long)).is_err());
        fs::remove_file(m.join(&nl)).unwrap();
        fs::remove_file(m.join(&bad)).unwrap();
        let names = dir_names(&m);
        for n in [&b255, &odd, &odd2] {
            assert!(
                names.contains(n.as_os_str()),
                "{n:?} missing from the listing"
            );
        }
        for n in [&long, &nl, &bad] {
            assert!(!names.contains(n.as_os_str()), "{n:?} still listed");
        }
    });
    assert_eq!(n_checks, 6);
    st.umount(pid);
}

// ============================================================================
// 5. Layers changed under a live mount
// ============================================================================

type Op = Box<dyn FnOnce() -> String + Send>;

fn op(f: impl FnOnce() -> String + Send + 'static) -> Op {
    Box::new(f)
}

#[test]
fn layers_changed_under_the_mount() {
    if !usable("layers_changed_under_the_mount", false) {
        return;
    }
    let s = Scratch::new("changed");
    let l1 = s.dir("l1");
    for (p, c) in [
        ("a/f1", "lower a/f1"),
        ("a/f2", "lower a/f2"),
        ("a/f3", "lower a/f3"),
        ("dirA/x", "lower dirA/x"),
        ("dirA/y", "lower dirA/y"),
        ("keep/k", "lower keep/k"),
        ("sub/lowz", "lower sub/lowz"),
    ] {
        write_file(&l1.join(p), c.as_bytes());
    }
    let st = Stack::new(&s.path.join("ovl"), vec![l1.clone()]);
    let (u, m) = (st.upper.clone(), st.mnt.clone());
    for (p, c) in [
        ("u/p", "upper u/p"),
        ("u/q", "upper u/q"),
        ("sub/deep/z", "upper sub/deep/z"),
        ("up_only", "upper only"),
    ] {
        write_file(&u.join(p), c.as_bytes());
    }
    let pid = st.mount();
    // Warm the kernel's and the daemon's caches, hold some objects open.
    snapshot(&m).expect("initial snapshot");
    let held_read = Arc::new(fs::File::open(m.join("a/f1")).unwrap());
    let held_write = Arc::new(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.join("u/p"))
            .unwrap(),
    );
    let held_dir = Arc::new(fs::File::open(m.join("dirA")).unwrap());
    let held_sub = Arc::new(fs::File::open(m.join("sub/deep")).unwrap());

    // Change the layers directly.
    fs::remove_file(l1.join("a/f1")).unwrap();
    fs::write(l1.join("a/f1"), b"re-created lower a/f1").unwrap();
    fs::remove_file(l1.join("a/f2")).unwrap();
    fs::write(l1.join("a/new_lower"), b"appeared").unwrap();
    fs::rename(l1.join("dirA"), l1.join("dirA2")).unwrap();
    fs::remove_file(u.join("u/p")).unwrap();
    fs::create_dir(u.join("u/p")).unwrap();
    fs::remove_file(u.join("u/q")).unwrap();
    fs::write(u.join("u/q"), b"re-created upper u/q").unwrap();
    fs::remove_dir_all(u.join("sub")).unwrap();

    let mp = |r: &str| m.join(r);
    let append = |p: PathBuf| -> Op {
        Box::new(move || {
            io_res(
                fs::OpenOptions::new()
                    .append(true)
                    .open(p)
                    .and_then(|mut f| f.write_all(b"more")),
            )
        })
    };
    let (hr, hw, hd, hs) = (
        held_read.clone(),
        held_write.clone(),
        held_dir.clone(),
        held_sub.clone(),
    );
    let ops: Vec<(&str, Op)> = vec![
        (
            "stat a/f1",
            op({
                let p = mp("a/f1");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "read a/f1",
            op({
                let p = mp("a/f1");
                move || io_res(fs::read(p))
            }),
        ),
        (
            "read held a/f1",
            op(move || {
                let mut b = vec![0u8; 64];
                io_res(hr.read_at(&mut b, 0))
            }),
        ),
        (
            "stat a/f2",
            op({
                let p = mp("a/f2");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "read a/f2",
            op({
                let p = mp("a/f2");
                move || io_res(fs::read(p))
            }),
        ),
        ("append a/f2", append(mp("a/f2"))),
        (
            "ls a",
            op({
                let p = mp("a");
                move || io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "read a/new_lower",
            op({
                let p = mp("a/new_lower");
                move || io_res(fs::read(p))
            }),
        ),
        (
            "stat dirA",
            op({
                let p = mp("dirA");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "ls dirA",
            op({
                let p = mp("dirA");
                move || io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "ls held dirA",
            op(move || {
                let p = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&*hd)
                ));
                io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "read dirA/x",
            op({
                let p = mp("dirA/x");
                move || io_res(fs::read(p))
            }),
        ),
        ("append dirA/x", append(mp("dirA/x"))),
        (
            "create dirA/n",
            op({
                let p = mp("dirA/n");
                move || io_res(fs::write(p, b"n"))
            }),
        ),
        (
            "ls dirA2",
            op({
                let p = mp("dirA2");
                move || io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "rmdir dirA",
            op({
                let p = mp("dirA");
                move || io_res(fs::remove_dir(p))
            }),
        ),
        (
            "stat u/p",
            op({
                let p = mp("u/p");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "write held u/p",
            op(move || io_res(hw.write_all_at(b"held write", 0))),
        ),
        (
            "read held u/p",
            op(move || {
                let mut b = vec![0u8; 64];
                io_res(held_write.read_at(&mut b, 0))
            }),
        ),
        (
            "unlink u/p",
            op({
                let p = mp("u/p");
                move || io_res(fs::remove_file(p))
            }),
        ),
        (
            "rmdir u/p",
            op({
                let p = mp("u/p");
                move || io_res(fs::remove_dir(p))
            }),
        ),
        (
            "read u/q",
            op({
                let p = mp("u/q");
                move || io_res(fs::read(p))
            }),
        ),
        ("append u/q", append(mp("u/q"))),
        (
            "ls sub",
            op({
                let p = mp("sub");
                move || io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "stat sub/deep/z",
            op({
                let p = mp("sub/deep/z");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "read sub/deep/z",
            op({
                let p = mp("sub/deep/z");
                move || io_res(fs::read(p))
            }),
        ),
        (
            "create sub/deep/new",
            op({
                let p = mp("sub/deep/new");
                move || io_res(fs::write(p, b"x"))
            }),
        ),
        (
            "ls held sub/deep",
            op(move || {
                let p = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&*hs)
                ));
                io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "unlink sub/deep/z",
            op({
                let p = mp("sub/deep/z");
                move || io_res(fs::remove_file(p))
            }),
        ),
        (
            "mkdir sub/nd",
            op({
                let p = mp("sub/nd");
                move || io_res(fs::create_dir(p))
            }),
        ),
        ("append sub/lowz", append(mp("sub/lowz"))),
        (
            "rename a/f3 a/f3b",
            op({
                let (a, b) = (mp("a/f3"), mp("a/f3b"));
                move || io_res(fs::rename(a, b))
            }),
        ),
        (
            "unlink a/f1",
            op({
                let p = mp("a/f1");
                move || io_res(fs::remove_file(p))
            }),
        ),
        (
            "snapshot",
            op({
                let p = m.clone();
                move || match snapshot(&p) {
                    Ok(t) => format!("OK ({} entries)", t.len()),
                    Err(e) => e,
                }
            }),
        ),
    ];
    let mut results = Vec::new();
    for (name, op) in ops {
        let r = timed(name, 20, op);
        assert!(alive(pid), "the daemon died during `{name}` (result {r})");
        results.push(format!("{name}: {r}"));
    }
    ls_lar_ok(&m, &s.path.join("ls.log"), "after the layer changes");
    eprintln!(
        "layers changed under the mount:\n  {}",
        results.join("\n  ")
    );
    drop((held_read, held_dir, held_sub));
    st.umount(pid);

    // A fresh mount shows exactly what the layers now hold, and works.
    let pid = st.mount();
    assert!(st.work_entries().is_empty(), "W/work not emptied at mount");
    ls_lar_ok(&m, &s.path.join("ls2.log"), "after remount");
    let got = snapshot(&m).unwrap_or_else(|e| panic!("after remount: {e}"));
    let want = expected_merge(&u, std::slice::from_ref(&l1));
    let d = tree_diff("mount", &got, "layers", &want);
    assert!(
        d.is_empty(),
        "after remount the mount does not show the layers:\n  {}",
        d.join("\n  ")
    );
    fs::write(m.join("a/after"), b"after remount").unwrap();
    assert_eq!(fs::read(m.join("a/after")).unwrap(), b"after remount");
    fs::write(m.join("keep/k"), b"rewritten").unwrap();
    assert_eq!(fs::read(m.join("keep/k")).unwrap(), b"rewritten");
    st.umount(pid);
    assert_eq!(fs::read(u.join("keep/k")).unwrap(), b"rewritten");
}

// ============================================================================
// 6. Concurrency
// ============================================================================

const CU_FILES: usize = 16;
const CU_SIZE: usize = MIB;
const CU_OFF: [u64; 2] = [100, 700_000];

fn cu_marker(t: usize, k: usize) -> Vec<u8> {
    format!("<thread {t} wrote file {k}>").into_bytes()
}

/// A model thread: private names in its own directory and in `shared`.
fn model_thread(
    mnt: PathBuf,
    t: usize,
    lower_file: Vec<u8>,
    deadline: Instant,
) -> (BTreeMap<String, Vec<u8>>, Vec<u8>, Vec<String>, usize) {
    let mut rng = Rng::new(77 + t as u64);
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut lowf = lower_file; // shared/lowf{t}, appended by this thread only
    let mut errs = Vec::new();
    let mut n = 0usize;
    let mut ops = 0usize;
    let own = format!("t{t}");
    let pick_dir = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            own.clone()
        } else {
            "shared".to_string()
        }
    };
    let fail = |what: String, e: std::io::Error, errs: &mut Vec<String>| {
        errs.push(format!("thread {t}: {what}: {e}"));
    };
    while Instant::now() < deadline && errs.len() < 5 {
        ops += 1;
        let names: Vec<String> = model.keys().cloned().collect();
        let any = |rng: &mut Rng| names[rng.below(names.len() as u64) as usize].clone();
        match rng.below(100) {
            0..=24 => {
                n += 1;
                let rel = format!("{}/t{t}_{n}", pick_dir(&mut rng));
                let data = pgen((t as u64) << 32 | n as u64, rng.below(20000) as usize);
                let r = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(mnt.join(&rel))
                    .and_then(|mut f| f.write_all(&data));
                match r {
                    Ok(()) => {
                        model.insert(rel, data);
                    }
                    Err(e) => fail(format!("create {rel}"), e, &mut errs),
                }
            }
            25..=34 if !names.is_empty() => {
                let rel = any(&mut rng);
                n += 1;
                let data = pgen((t as u64) << 32 | n as u64, rng.below(20000) as usize);
                match fs::write(mnt.join(&rel), &data) {
                    Ok(()) => {
                        model.insert(rel, data);
                    }
                    Err(e) => fail(format!("overwrite {rel}"), e, &mut errs),
                }
            }
            35..=44 if !names.is_empty() => {
                let rel = any(&mut rng);
                let add = pgen(n as u64 + 999, 1 + rng.below(5000) as usize);
                let r = fs::OpenOptions::new()
                    .append(true)
                    .open(mnt.join(&rel))
                    .and_then(|mut f| f.write_all(&add));
                match r {
                    Ok(()) => model.get_mut(&rel).unwrap().extend_from_slice(&add),
                    Err(e) => fail(format!("append {rel}"), e, &mut errs),
                }
            }
            45..=64 if !names.is_empty() => {
                let src = any(&mut rng);
                let dst = if rng.below(3) == 0 {
                    any(&mut rng) // onto an existing own file (maybe itself)
                } else {
                    n += 1;
                    format!("{}/t{t}_{n}", pick_dir(&mut rng))
                };
                match fs::rename(mnt.join(&src), mnt.join(&dst)) {
                    Ok(()) => {
                        let c = model.remove(&src).unwrap();
                        model.insert(dst, c);
                    }
                    Err(e) => fail(format!("rename {src} {dst}"), e, &mut errs),
                }
            }
            65..=74 if !names.is_empty() => {
                let rel = any(&mut rng);
                match fs::remove_file(mnt.join(&rel)) {
                    Ok(()) => {
                        model.remove(&rel);
                    }
                    Err(e) => fail(format!("unlink {rel}"), e, &mut errs),
                }
            }
            75..=84 => {
                for d in [own.as_str(), "shared"] {
                    match fs::read_dir(mnt.join(d)) {
                        Ok(rd) => {
                            let prefix = format!("t{t}_");
                            let mut seen = BTreeSet::new();
                            for e in rd {
                                match e {
                                    Ok(e) => {
                                        let nm = e.file_name().to_string_lossy().into_owned();
                                        if nm.starts_with(&prefix) {
                                            seen.insert(format!("{d}/{nm}"));
                                        }
                                    }
                                    Err(e) => fail(format!("readdir {d}"), e, &mut errs),
                                }
                            }
                            let want: BTreeSet<String> = model
                                .keys()
                                .filter(|k| k.starts_with(&format!("{d}/")))
                                .cloned()
                                .collect();
                            if seen != want {
                                errs.push(format!(
                                    "thread {t}: readdir {d}: listed but not in the model {:?}, in the model but not listed {:?}",
                                    seen.difference(&want).collect::<Vec<_>>(),
                                    want.difference(&seen).collect::<Vec<_>>()
                                ));
                            }
                        }
                        Err(e) => fail(format!("opendir {d}"), e, &mut errs),
                    }
                }
            }
            85..=94 if !names.is_empty() => {
                let rel = any(&mut rng);
                match fs::read(mnt.join(&rel)) {
                    Ok(got) if got == model[&rel] => {}
                    Ok(got) => errs.push(format!(
                        "thread {t}: read {rel}: {} bytes, model has {}",
                        got.len(),
                        model[&rel].len()
                    )),
                    Err(e) => fail(format!("read {rel}"), e, &mut errs),
                }
            }
            95..=99 => {
                let rel = format!("shared/lowf{t}");
                let add = pgen(n as u64 + 555, 1 + rng.below(3000) as usize);
                let r = fs::OpenOptions::new()
                    .append(true)
                    .open(mnt.join(&rel))
                    .and_then(|mut f| f.write_all(&add));
                match r {
                    Ok(()) => lowf.extend_from_slice(&add),
                    Err(e) => fail(format!("append {rel}"), e, &mut errs),
                }
            }
            _ => {}
        }
    }
    (model, lowf, errs, ops)
}

/// Racing on shared names: only ENOENT/EEXIST may come back.
fn race_thread(mnt: PathBuf, t: usize, deadline: Instant) -> (Vec<String>, usize) {
    let mut rng = Rng::new(500 + t as u64);
    let mut errs = Vec::new();
    let mut ops = 0;
    let name = |rng: &mut Rng| mnt.join(format!("shared/race_{}", rng.below(6)));
    while Instant::now() < deadline && errs.len() < 5 {
        ops += 1;
        let (what, r): (&str, std::io::Result<()>) = match rng.below(6) {
            0 => (
                "create",
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(name(&mut rng))
                    .and_then(|mut f| f.write_all(&pgen(ops as u64, 3000))),
            ),
            1 => (
                "truncate+write",
                fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(name(&mut rng))
                    .and_then(|mut f| f.write_all(&pgen(ops as u64, 2000))),
            ),
            2 => ("unlink", fs::remove_file(name(&mut rng))),
            3 => {
                let (a, b) = (name(&mut rng), name(&mut rng));
                ("rename", fs::rename(a, b))
            }
            4 => ("stat", fs::metadata(name(&mut rng)).map(drop)),
            _ => ("read", fs::read(name(&mut rng)).map(drop)),
        };
        if let Err(e) = r {
            let c = os_err(&e);
            if c != libc::ENOENT && c != libc::EEXIST {
                errs.push(format!("race thread {t}: {what}: {e}"));
            }
        }
    }
    (errs, ops)
}

/// Two of these open the same lower files for write at the same moment,
/// then list and stat until the deadline.
fn copy_up_race_thread(
    mnt: PathBuf,
    t: usize,
    barrier: Arc<Barrier>,
    deadline: Instant,
) -> (Vec<u64>, Vec<String>) {
    let mut inos = Vec::new();
    let mut errs = Vec::new();
    for k in 0..CU_FILES {
        barrier.wait();
        let p = mnt.join(format!("cu/big{k}"));
        let f = fs::OpenOptions::new().write(true).open(&p);
        match &f {
            Ok(f) => {
                if let Err(e) = f.write_all_at(&cu_marker(t, k), CU_OFF[t]) {
                    errs.push(format!("copy-up race {t}: write big{k}: {e}"));
                }
                inos.push(f.metadata().map(|m| m.ino()).unwrap_or(0));
            }
            Err(e) => {
                errs.push(format!("copy-up race {t}: open big{k} for write: {e}"));
                inos.push(0);
            }
        }
        barrier.wait(); // both fds open and written before either closes
        drop(f);
    }
    while Instant::now() < deadline {
        for d in ["shared", "", "cu"] {
            let Ok(rd) = fs::read_dir(mnt.join(d)) else {
                errs.push(format!("copy-up race {t}: opendir {d:?} failed"));
                continue;
            };
            for ent in rd.flatten() {
                if let Err(e) = fs::symlink_metadata(ent.path())
                    && os_err(&e) != libc::ENOENT
                {
                    errs.push(format!("copy-up race {t}: lstat {:?}: {e}", ent.path()));
                }
            }
        }
    }
    (inos, errs)
}

#[test]
fn concurrent_operations_stay_consistent() {
    if !usable("concurrent_operations", false) {
        return;
    }
    let s = Scratch::new("concur");
    let lower = s.dir("lower");
    let mut lowf = Vec::new();
    for t in 0..4 {
        let d = pgen(9000 + t as u64, 1000 + t * 777);
        write_file(&lower.join(format!("shared/lowf{t}")), &d);
        lowf.push(d);
    }
    write_file(&lower.join("shared/other"), b"untouched");
    for k in 0..CU_FILES {
        write_file(
            &lower.join(format!("cu/big{k}")),
            &pgen(4000 + k as u64, CU_SIZE),
        );
    }
    let st = Stack::new(&s.path.join("ovl"), vec![lower.clone()]);
    let pid = st.mount();
    for t in 0..4 {
        fs::create_dir(st.mnt.join(format!("t{t}"))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let barrier = Arc::new(Barrier::new(2));
    let (tx, rx) = mpsc::channel::<(usize, Box<dyn std::any::Any + Send>)>();
    for t in 0..8usize {
        let mnt = st.mnt.clone();
        let tx = tx.clone();
        let lf = lowf.get(t).cloned();
        let b = barrier.clone();
        std::thread::spawn(move || {
            let r: Box<dyn std::any::Any + Send> = match t {
                0..=3 => Box::new(model_thread(mnt, t, lf.unwrap(), deadline)),
                4 | 5 => Box::new(race_thread(mnt, t, deadline)),
                _ => Box::new(copy_up_race_thread(mnt, t - 6, b, deadline)),
            };
            let _ = tx.send((t, r));
        });
    }
    drop(tx);
    let mut results: BTreeMap<usize, Box<dyn std::any::Any + Send>> = BTreeMap::new();
    let hang_deadline = Instant::now() + Duration::from_secs(90);
    while results.len() < 8 {
        let left = hang_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, r)) => {
                results.insert(t, r);
            }
            Err(_) => {
                let missing: Vec<usize> = (0..8).filter(|t| !results.contains_key(t)).collect();
                panic!(
                    "HANG or thread panic: threads {missing:?} did not finish (daemon alive: {})",
                    alive(pid)
                );
            }
        }
    }
    assert!(alive(pid), "the daemon died");

    let mut errs = Vec::new();
    let mut models = Vec::new();
    let mut total_ops = 0;
    for t in 0..4 {
        let (model, lowf_now, e, ops) = *results
            .remove(&t)
            .unwrap()
            .downcast::<(BTreeMap<String, Vec<u8>>, Vec<u8>, Vec<String>, usize)>()
            .unwrap();
        errs.extend(e);
        total_ops += ops;
        models.push((model, lowf_now));
    }
    for t in 4..6 {
        let (e, ops) = *results
            .remove(&t)
            .unwrap()
            .downcast::<(Vec<String>, usize)>()
            .unwrap();
        errs.extend(e);
        total_ops += ops;
    }
    let mut inos = Vec::new();
    for t in 6..8 {
        let (i, e) = *results
            .remove(&t)
            .unwrap()
            .downcast::<(Vec<u64>, Vec<String>)>()
            .unwrap();
        errs.extend(e);
        inos.push(i);
    }
    assert!(
        errs.is_empty(),
        "unexpected errors:\n  {}",
        errs.join("\n  ")
    );

    // Both racing openers got the one copy-up: same inode, both writes kept.
    for (k, (ino0, ino1)) in inos[0].iter().zip(&inos[1]).enumerate() {
        assert_eq!(
            ino0, ino1,
            "cu/big{k}: the two openers saw different inodes"
        );
        let mut want = pgen(4000 + k as u64, CU_SIZE);
        for (t, off) in CU_OFF.iter().enumerate() {
            let mk = cu_marker(t, k);
            let o = *off as usize;
            want[o..o + mk.len()].copy_from_slice(&mk);
        }
        let got = fs::read(st.mnt.join(format!("cu/big{k}"))).unwrap();
        assert!(
            got == want,
            "cu/big{k}: a concurrent writer's data was lost (two copy-ups?)"
        );
        assert!(
            fs::read(st.upper.join(format!("cu/big{k}"))).unwrap() == want,
            "cu/big{k}: upper copy differs"
        );
    }
    // Every file a thread created and kept has its last content.
    let check_models = |root: &Path, what: &str| {
        for (t, (model, lowf_now)) in models.iter().enumerate() {
            for (rel, data) in model {
                match fs::read(root.join(rel)) {
                    Ok(got) => assert!(
                        got == *data,
                        "{what}: {rel} (thread {t}) has {} bytes, expected {}",
                        got.len(),
                        data.len()
                    ),
                    Err(e) => panic!("{what}: {rel} (thread {t}): {e}"),
                }
            }
            let own: BTreeSet<OsString> = dir_names(&root.join(format!("t{t}")));
            let want: BTreeSet<OsString> = model
                .keys()
                .filter_map(|k| k.strip_prefix(&format!("t{t}/")).map(OsString::from))
                .collect();
            assert_eq!(own, want, "{what}: t{t}/ listing");
            let got = fs::read(root.join(format!("shared/lowf{t}"))).unwrap();
            assert!(got == *lowf_now, "{what}: shared/lowf{t}");
        }
    };
    check_models(&st.mnt, "through the mount");
    // The whole merged tree equals the merge recomputed from the layers.
    let got = snapshot(&st.mnt).unwrap();
    let want = expected_merge(&st.upper, std::slice::from_ref(&lower));
    let d = tree_diff("mount", &got, "layers", &want);
    assert!(
        d.is_empty(),
        "merged tree differs from the layers:\n  {}",
        d.join("\n  ")
    );
    st.umount(pid);
    check_models(&st.upper, "in the upper");
    assert!(
        st.work_entries().is_empty(),
        "W/work not empty after umount"
    );
    eprintln!("concurrency: {total_ops} operations by 6 threads + 2×{CU_FILES} racing copy-ups");
}

// ============================================================================
// 1b/2b. Kills injected at an exact syscall (strace), between two steps
// ============================================================================
//
// A random SIGKILL rarely lands between two syscalls of one request. strace
// can kill the daemon on entry to the Nth call of a syscall in a thread
// (`-e inject=SYSCALL:signal=SIGKILL:when=N`, counted per thread from the
// attach): the call itself is not executed. One request runs on one thread,
// so N counts within the operation under test.

fn strace_usable(test: &str) -> bool {
    if !usable(test, true) {
        return false;
    }
    let ok = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        return true;
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("CI=true and {test} cannot run: strace is not installed (apt-get install strace)");
    }
    eprintln!("\n************************************************************");
    eprintln!("SKIPPED: {test}: strace is not installed");
    eprintln!("************************************************************\n");
    false
}

/// Attach strace to every thread of `pid`, armed to SIGKILL it on entry to
/// the `nth` call of `syscall` in one thread. Returns once all are traced;
/// the caller waits for the returned strace.
#[allow(clippy::zombie_processes)]
fn arm_kill(pid: i32, syscall: &str, nth: u32, log: &Path) -> Child {
    let mut child = Command::new("strace")
        .args(["-q", "-f", "-o"])
        .arg(log)
        .arg("-p")
        .arg(pid.to_string())
        .arg("-e")
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:signal=SIGKILL:when={nth}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strace");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tasks: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        let traced = tasks.iter().all(|t| {
            fs::read_to_string(format!("/proc/{pid}/task/{t}/status"))
                .map(|s| {
                    s.lines()
                        .find(|l| l.starts_with("TracerPid:"))
                        .map(|l| l.split_whitespace().nth(1) != Some("0"))
                        .unwrap_or(false)
                })
                .unwrap_or(false)
        });
        if traced && !tasks.is_empty() {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("strace did not attach to {pid} in 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run `op` through the mount with the kill armed; the daemon must die
/// (else the injection point was never reached: a test bug). Then clear the
/// dead mount. Returns the op's result.
fn crash_at(
    st: &Stack,
    pid: i32,
    syscall: &str,
    nth: u32,
    what: &str,
    op: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> String {
    let slog = st.log.with_extension("strace");
    let mut tracer = arm_kill(pid, syscall, nth, &slog);
    let r = timed(what, 30, op);
    let died = wait_gone(pid, Duration::from_secs(10));
    if !died {
        let _ = tracer.kill();
    }
    let _ = timed("strace exit", 30, move || tracer.wait());
    assert!(
        died,
        "{what}: the daemon was not killed at {syscall} #{nth} (the operation made fewer calls); strace log:\n    {}",
        tail(&slog, 20)
    );
    umount_lazy(&st.mnt);
    io_res(r)
}

/// Paths below `p/` in a tree (names only, with a / suffix for directories).
fn names_under(t: &Tree, p: &str) -> BTreeSet<String> {
    t.iter()
        .filter_map(|(k, e)| {
            let k = String::from_utf8_lossy(k).into_owned();
            let rest = k.strip_prefix(&format!("{p}/"))?.to_string();
            Some(if matches!(e, Ent::Dir { .. }) {
                rest + "/"
            } else {
                rest
            })
        })
        .collect()
}

fn set_of(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// After a crash: ovlfs and the kernel overlay show the same tree; returns it.
fn merged_after_crash(st: &Stack, s: &Scratch, ctx: &str) -> Tree {
    let pid = st.mount();
    let left = st.work_entries();
    assert!(
        left.is_empty(),
        "{ctx}: W/work not emptied at mount: {left:?}"
    );
    let t = snapshot(&st.mnt).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    st.umount(pid);
    let kmnt = s.path.join("kmnt");
    mount_kernel(&st.lowers, &st.upper, &s.path.join("kwork"), &kmnt)
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let tk = snapshot(&kmnt);
    umount_kernel(&kmnt);
    let d = tree_diff("ovlfs", &t, "kernel", &tk.unwrap());
    assert!(
        d.is_empty(),
        "{ctx}: ovlfs and the kernel overlay differ:\n  {}",
        d.join("\n  ")
    );
    t
}

#[test]
fn injected_kill_around_copy_up_rename() {
    if !strace_usable("injected_kill_around_copy_up_rename") {
        return;
    }
    let s = Scratch::new("injcu");
    let lower = s.dir("lower");
    let data = pgen(31, 8 * MIB + 5);
    write_file(&lower.join("big"), &data);
    // In the root (already upper) only the file is copied up: renameat2 #1 is
    // its rename into place (killed just before it); utimensat #1 sets the
    // copy's times in W/work, #2 restores the parent's times just after the rename.
    for (i, (sys, nth, placed)) in [("renameat2", 1, false), ("utimensat", 2, true)]
        .into_iter()
        .enumerate()
    {
        let st = Stack::new(&s.path.join(format!("r{i}")), vec![lower.clone()]);
        let pid = st.mount();
        let p = st.mnt.join("big");
        let r = crash_at(&st, pid, sys, nth, "open for write (copy-up)", move || {
            fs::OpenOptions::new().write(true).open(p).map(drop)
        });
        let ctx = format!("kill at {sys} #{nth} during copy-up (open: {r})");
        let up = st.upper.join("big");
        if placed {
            let got = fs::read(&up).unwrap_or_else(|e| panic!("{ctx}: upper big: {e}"));
            assert!(
                got == data,
                "{ctx}: the upper copy is not complete after the rename"
            );
        } else {
            assert!(
                fs::symlink_metadata(&up).is_err(),
                "{ctx}: upper copy exists"
            );
            let tmp: Vec<OsString> = st.work_entries().into_iter().collect();
            assert_eq!(tmp.len(), 1, "{ctx}: W/work {tmp:?}");
        }
        let t = merged_after_crash(&st, &s, &ctx);
        assert!(
            matches!(t.get(b"big".as_slice()), Some(Ent::File { data: d, .. }) if *d == data),
            "{ctx}: merged big is not the complete file"
        );
    }
}

#[test]
fn injected_kill_in_rename_over_merged_empty_dir() {
    if !strace_usable("injected_kill_in_rename_over_merged_empty_dir") {
        return;
    }
    let s = Scratch::new("injrd");
    let lower = s.dir("lower");
    write_file(&lower.join("p/t/a"), b"deleted lower a");
    write_file(&lower.join("p/t/b"), b"deleted lower b");
    write_file(&lower.join("p/keep"), b"keep");
    // rename(p/s, p/t) over the merged, empty p/t: renameat2 #1 swaps p/t for
    // an empty directory from W/work, setxattr #1 marks p/s opaque, renameat
    // #1 (glibc's renameat2 with flags 0) moves p/s over. Kill between them.
    for (i, (sys, nth)) in [("setxattr", 1), ("renameat", 1)].into_iter().enumerate() {
        let st = Stack::new(&s.path.join(format!("r{i}")), vec![lower.clone()]);
        let pid = st.mount();
        let m = st.mnt.clone();
        fs::remove_file(m.join("p/t/a")).unwrap();
        fs::remove_file(m.join("p/t/b")).unwrap();
        fs::create_dir(m.join("p/s")).unwrap();
        fs::write(m.join("p/s/mine"), b"mine").unwrap();
        let r = crash_at(&st, pid, sys, nth, "rename p/s p/t", move || {
            fs::rename(m.join("p/s"), m.join("p/t"))
        });
        let ctx = format!(
            "kill at {sys} #{nth} of rename(p/s, p/t) over a merged empty dir (rename: {r})"
        );
        let t = merged_after_crash(&st, &s, &ctx);
        let got = names_under(&t, "p");
        let old = set_of(&["keep", "s/", "s/mine", "t/"]);
        let new = set_of(&["keep", "t/", "t/mine"]);
        assert!(
            got == old || got == new,
            "{ctx}: p/ shows neither the old nor the new state: {got:?}\n  old: {old:?}\n  new: {new:?}"
        );
    }
}

#[test]
fn injected_kill_in_exchange_before_opaque() {
    if !strace_usable("injected_kill_in_exchange_before_opaque") {
        return;
    }
    let s = Scratch::new("injex");
    let lower = s.dir("lower");
    write_file(&lower.join("p/x/leak"), b"lower p/x/leak");
    write_file(&lower.join("p/keep"), b"keep");
    let mut st = Stack::new(&s.path.join("ovl"), vec![lower.clone()]);
    // With redirect_dir=on, mkdir in a merged dir already marks p/y opaque, and
    // the exchange would have nothing to mark: use the kernel's default mode.
    st.extra = ",redirect_dir=follow".into();
    let pid = st.mount();
    let m = st.mnt.clone();
    // p/x: an upper file over a (hidden) lower directory; p/y: a pure upper dir.
    fs::remove_file(m.join("p/x/leak")).unwrap();
    fs::remove_dir(m.join("p/x")).unwrap();
    fs::write(m.join("p/x"), b"file").unwrap();
    fs::create_dir(m.join("p/y")).unwrap();
    fs::write(m.join("p/y/mine"), b"mine").unwrap();
    // Exchanging them puts the pure upper dir at p/x, over the lower p/x/:
    // it must be opaque there. Kill at the first setxattr of the request.
    let r = crash_at(&st, pid, "setxattr", 1, "exchange p/y p/x", move || {
        renameat2(&m.join("p/y"), &m.join("p/x"), libc::RENAME_EXCHANGE)
            .map_err(std::io::Error::from_raw_os_error)
    });
    let ctx = format!("kill at setxattr #1 of renameat2(p/y, p/x, RENAME_EXCHANGE) (result: {r})");
    let t = merged_after_crash(&st, &s, &ctx);
    let got = names_under(&t, "p");
    let old = set_of(&["keep", "x", "y/", "y/mine"]);
    let new = set_of(&["keep", "x/", "x/mine", "y"]);
    assert!(
        got == old || got == new,
        "{ctx}: p/ shows neither the old nor the new state: {got:?}\n  old: {old:?}\n  new: {new:?}"
    );
}

#[test]
fn injected_kill_in_create_by_unprivileged_user() {
    if !strace_usable("injected_kill_in_create_by_unprivileged_user") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let s = Scratch::new("injcr");
    let lower = s.dir("lower");
    fs::create_dir(lower.join("pub")).unwrap();
    fs::set_permissions(lower.join("pub"), fs::Permissions::from_mode(0o1777)).unwrap();
    let mut bad = Vec::new();
    for (i, (kind, cmd)) in [
        ("file", r#": > "$1""#),
        ("directory", r#"mkdir "$1""#),
        ("symlink", r#"ln -s target "$1""#),
        ("fifo", r#"mkfifo "$1""#),
    ]
    .into_iter()
    .enumerate()
    {
        let mut st = Stack::new(&s.path.join(format!("r{i}")), vec![lower.clone()]);
        st.extra = ",allow_other".into();
        let pid = st.mount();
        // Copy pub/ up first (its copy-up has an fchownat of its own).
        fs::set_permissions(st.mnt.join("pub"), fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(st.upper.join("pub").is_dir());
        // A user (uid/gid 1000) creates an object; the kill comes at the first
        // fchownat of the request.
        let target = st.mnt.join("pub/new");
        let cmd = cmd.to_string();
        let r = crash_at(
            &st,
            pid,
            "fchownat",
            1,
            &format!("create a {kind} as uid 1000"),
            move || {
                let st = Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .arg("sh")
                    .arg(&target)
                    .uid(1000)
                    .gid(1000)
                    .stderr(Stdio::null())
                    .status()?;
                if st.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::from_raw_os_error(libc::EIO))
                }
            },
        );
        let ctx = format!("kill at fchownat #1 while uid 1000 creates a {kind} (result: {r})");
        // Either no object, or one that belongs to its creator.
        if let Ok(md) = fs::symlink_metadata(st.upper.join("pub/new"))
            && (md.uid(), md.gid()) != (1000, 1000)
        {
            bad.push(format!(
                "{ctx}: the {kind} is visible with owner {}:{}, not 1000:1000",
                md.uid(),
                md.gid()
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
