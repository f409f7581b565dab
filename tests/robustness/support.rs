//! Shared helpers: environment checks, small system wrappers, deterministic
//! data, the scratch tmpfs, overlay stacks and the kernel overlay.

use std::collections::BTreeSet;
use std::ffi::{CString, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const OVLFS: &str = env!("CARGO_BIN_EXE_ovlfs");
pub(crate) const MIB: usize = 1 << 20;

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
pub(crate) fn usable(test: &str, need_kernel_overlay: bool) -> bool {
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

pub(crate) fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(crate) fn os_err(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

pub(crate) fn ename(e: i32) -> String {
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

pub(crate) fn io_res<T>(r: std::io::Result<T>) -> String {
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

pub(crate) fn is_mounted(p: &Path) -> bool {
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
pub(crate) fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

pub(crate) fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub(crate) fn sigkill(pid: i32) {
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

pub(crate) fn umount_lazy(p: &Path) {
    unsafe { libc::umount2(cstr(p).as_ptr(), libc::MNT_DETACH) };
}

/// Run `f` on another thread; panic if it does not finish within `secs` (a hang).
pub(crate) fn timed<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
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

pub(crate) fn tail(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n    ")
}

/// `ls -laR MNT` completes (exit 0) within 60 s.
pub(crate) fn ls_lar_ok(mnt: &Path, log: &Path, ctx: &str) {
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

pub(crate) fn lsetxattr(p: &Path, name: &str, val: &[u8]) -> i32 {
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

pub(crate) fn lgetxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
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

pub(crate) fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let r = unsafe { libc::mknod(cstr(p).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}: {}", p.display(), ename(errno()));
}

pub(crate) fn renameat2(a: &Path, b: &Path, flags: u32) -> Result<(), i32> {
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

pub(crate) fn write_file(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

pub(crate) fn dir_names(p: &Path) -> BTreeSet<OsString> {
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// Compare two files chunk by chunk (fast even in a debug build: slice == is memcmp).
pub(crate) fn files_equal(a: &Path, b: &Path) -> Result<(), String> {
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

pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
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
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `len` pseudo-random bytes determined by `seed`.
pub(crate) fn pgen(seed: u64, len: usize) -> Vec<u8> {
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
pub(crate) struct Scratch {
    pub(crate) path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
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

    pub(crate) fn dir(&self, rel: &str) -> PathBuf {
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
pub(crate) struct Stack {
    pub(crate) lowers: Vec<PathBuf>,
    pub(crate) upper: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) mnt: PathBuf,
    pub(crate) log: PathBuf,
    /// More mount options, e.g. ",allow_other".
    pub(crate) extra: String,
}

impl Stack {
    /// `root/{u,w,m}` with the given lowers.
    pub(crate) fn new(root: &Path, lowers: Vec<PathBuf>) -> Stack {
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
    pub(crate) fn mount(&self) -> i32 {
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
    pub(crate) fn spawn_fg(&self) -> Child {
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
    pub(crate) fn umount(&self, pid: i32) {
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

    pub(crate) fn work_entries(&self) -> BTreeSet<OsString> {
        dir_names(&self.work.join("work"))
    }
}

/// Mount the kernel overlay (index=off) on `mnt`.
pub(crate) fn mount_kernel(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    mnt: &Path,
) -> Result<(), String> {
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

/// Unmount a kernel overlay. EBUSY is retried for up to 2 s: a process
/// another test thread is starting holds copies of this thread's fds from
/// its fork to its exec (CI saw one catch a just-closed directory fd here).
pub(crate) fn umount_kernel(mnt: &Path) {
    for _ in 0..40 {
        if unsafe { libc::umount2(cstr(mnt).as_ptr(), 0) } == 0 {
            return;
        }
        if errno() != libc::EBUSY {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("umount {}: {}", mnt.display(), ename(errno()));
}
