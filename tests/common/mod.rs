//! Shared helpers for the ovlfs integration tests.
//!
//! * [`require_root_and_fuse`]: environment gate (root, /dev/fuse, kernel overlay).
//! * [`Scratch`]: a private tmpfs mounted on a temporary directory; everything
//!   mounted below it is lazily unmounted when it is dropped.
//! * [`mount_ovlfs`], [`mount_kernel`], [`unmount`]: mount helpers returning
//!   `Result<(), String>` with readable messages.
//! * [`tree`]: directory snapshots and diffs (the comparison primitive).
//! * [`fixture`], [`ops`], [`exec`], [`io`], [`creds`]: the layer fixture,
//!   the operation set used by the differential test and how operations are
//!   run (as root or, in a forked child, as another identity).
//!
//! Every test binary that does `mod common;` compiles all of this, so unused
//! items are expected.
#![allow(dead_code)]

pub mod creds;
pub mod exec;
pub mod fixture;
pub mod io;
pub mod ops;
pub mod stack;
pub mod tree;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the ovlfs binary built by cargo for this test run.
pub const OVLFS_BIN: &str = env!("CARGO_BIN_EXE_ovlfs");

/// The ovlfs binary [`mount_ovlfs`] runs: `$OVLFS_BIN` if set (e.g. one
/// built from a pinned commit), else [`OVLFS_BIN`].
pub fn ovlfs_bin() -> String {
    std::env::var("OVLFS_BIN").unwrap_or_else(|_| OVLFS_BIN.to_string())
}

/// Checks that the test can mount things: running as root, `/dev/fuse`
/// present and the kernel `overlay` filesystem available.
///
/// Returns `true` when the environment is usable. Otherwise: under `CI=true`
/// it panics (a CI job must not silently skip), else it prints a loud
/// `SKIPPED: reason` to stderr and returns `false`; the caller should return.
pub fn require_root_and_fuse() -> bool {
    let mut reasons = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        reasons.push("not running as root".to_string());
    }
    if !Path::new("/dev/fuse").exists() {
        reasons.push("/dev/fuse is missing".to_string());
    }
    if !overlay_available() {
        reasons.push("the kernel overlay filesystem is not available".to_string());
    }
    if reasons.is_empty() {
        set_umask_once();
        return true;
    }
    let msg = reasons.join("; ");
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("CI=true and the test environment is unusable: {msg}");
    }
    // Written to the stderr handle directly: libtest captures eprintln!
    // output of passing tests, and a skip must be seen.
    use std::io::Write;
    let line = "*".repeat(60);
    let _ = writeln!(std::io::stderr(), "\n{line}\nSKIPPED: {msg}\n{line}\n");
    false
}

fn overlay_available() -> bool {
    let listed = || {
        std::fs::read_to_string("/proc/filesystems")
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

/// The tests compare two mounts from the same process, so the umask is the
/// same on both sides anyway; fix it so results do not depend on the caller.
fn set_umask_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| unsafe {
        libc::umask(0o022);
    });
}

/// lsetxattr, asserting success (tests build on-disk states with it).
#[allow(dead_code)] // not every test binary uses it
pub fn set_xattr(p: &Path, name: &str, v: &[u8]) {
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(cstr(p).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// `d/{l1,l2,u,w,m}`, created: two lowers, an upper, a workdir, a mount point.
pub fn stack_dirs(d: &Path) -> [PathBuf; 5] {
    ["l1", "l2", "u", "w", "m"].map(|n| {
        let p = d.join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    })
}

/// Files `(path, contents)` written below `root`, parent directories made.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, c).unwrap();
    }
}

/// Whether strace is there for a test that injects faults with it; under
/// CI its absence is a failure, elsewhere the test is skipped, loudly.
pub fn require_strace(test: &str) -> bool {
    if Command::new("strace").arg("-V").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "{test}: strace is needed under CI"
    );
    eprintln!("SKIPPED: {test}: strace not installed");
    false
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL byte")
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A fresh tmpfs mounted on a new temporary directory. Layers, work dirs and
/// mount points of a test live below [`Scratch::path`]. On drop, everything
/// still mounted below it is lazily unmounted (deepest first), then the tmpfs
/// itself, then the directory is removed. ovlfs daemons whose command line
/// names a path below the scratch are killed if they linger.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    pub fn new() -> Result<Scratch, String> {
        let dir = tempfile::Builder::new()
            .prefix("ovlfs-test-")
            .tempdir()
            .map_err(|e| format!("creating a temporary directory: {e}"))?;
        let path = dir.path().to_path_buf();
        let c = cstr(&path);
        let data = CString::new("mode=0755,size=2g").unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        let r = unsafe {
            libc::mount(
                fstype.as_ptr(),
                c.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr() as *const _,
            )
        };
        if r != 0 {
            return Err(format!(
                "mount -t tmpfs on {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Scratch {
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (and returns) a subdirectory, e.g. one per test sequence.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let prefix = self.path.clone();
        let pids = daemon_pids_under(&prefix);
        let mut below: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&prefix) && *m != prefix)
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in below {
            unsafe { libc::umount2(cstr(&m).as_ptr(), libc::MNT_DETACH) };
        }
        wait_pids_gone(&pids, Duration::from_secs(3), true);
        unsafe { libc::umount2(cstr(&prefix).as_ptr(), libc::MNT_DETACH) };
        drop(self.dir.take());
    }
}

/// Mount points currently listed in /proc/self/mountinfo (octal escapes decoded).
pub fn mount_points() -> Vec<PathBuf> {
    let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    s.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape_mountinfo(f)))
        .collect()
}

pub fn is_mounted(mnt: &Path) -> bool {
    let mnt = std::fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    mount_points().contains(&mnt)
}

fn unescape_mountinfo(f: &str) -> String {
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
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes a layer path for the overlay option string (`\` and `:`); commas
/// cannot be expressed and are rejected.
fn opt_path(p: &Path) -> Result<String, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", p.display()))?;
    if s.contains(',') {
        return Err(format!("layer path {s} contains a comma"));
    }
    Ok(s.replace('\\', "\\\\").replace(':', "\\:"))
}

/// Builds `lowerdir=..[,upperdir=..,workdir=..][,extra..]`. Without an upper
/// the mount is read-only.
pub fn overlay_options(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    work: Option<&Path>,
    extra_opts: &[&str],
) -> Result<String, String> {
    // An explicit `lowerdir=` among the extra options (data-only layers) replaces the list.
    let explicit = extra_opts.iter().any(|o| o.starts_with("lowerdir="));
    if lowers.is_empty() && !explicit {
        return Err("at least one lower layer is needed".into());
    }
    let lowers: Result<Vec<String>, String> = lowers.iter().map(|p| opt_path(p)).collect();
    let mut opts = if explicit {
        String::new()
    } else {
        format!("lowerdir={}", lowers?.join(":"))
    };
    match (upper, work) {
        (Some(u), Some(w)) => {
            opts += &format!(",upperdir={},workdir={}", opt_path(u)?, opt_path(w)?)
        }
        (None, None) => {}
        _ => return Err("upperdir and workdir go together".into()),
    }
    for e in extra_opts {
        if !opts.is_empty() {
            opts.push(',');
        }
        opts.push_str(e);
    }
    Ok(opts)
}

/// Mounts the kernel overlay (the oracle) with default options plus `extra_opts`.
pub fn mount_kernel(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    work: Option<&Path>,
    mnt: &Path,
    extra_opts: &[&str],
) -> Result<(), String> {
    // Atime flags are the mount's, not the overlay's options.
    let atime_flag = |o: &str| match o {
        "noatime" => Some(libc::MS_NOATIME),
        "relatime" => Some(libc::MS_RELATIME),
        "strictatime" => Some(libc::MS_STRICTATIME),
        "nodiratime" => Some(libc::MS_NODIRATIME),
        _ => None,
    };
    let mount_flags: libc::c_ulong = extra_opts.iter().filter_map(|o| atime_flag(o)).sum();
    let extra: Vec<&str> = extra_opts
        .iter()
        .copied()
        .filter(|o| atime_flag(o).is_none())
        .collect();
    let extra_opts = &extra[..];
    let opts = overlay_options(lowers, upper, work, extra_opts)?;
    // mount(2) takes one page of options: more layers go one by one.
    if opts.len() >= 4096 {
        return fsmount_overlay(lowers, upper, work, mnt, extra_opts);
    }
    let data = CString::new(opts.clone()).unwrap();
    let ov = CString::new("overlay").unwrap();
    let flags = mount_flags | if upper.is_none() { libc::MS_RDONLY } else { 0 };
    let r = unsafe {
        libc::mount(
            ov.as_ptr(),
            cstr(mnt).as_ptr(),
            ov.as_ptr(),
            flags,
            data.as_ptr() as *const _,
        )
    };
    if r != 0 {
        return Err(format!(
            "kernel overlay mount on {} with -o {opts}: {}",
            mnt.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The kernel overlay mounted through the new mount API, one `lowerdir+`
/// per layer (no page-size limit on the option string).
fn fsmount_overlay(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    work: Option<&Path>,
    mnt: &Path,
    opts: &[&str],
) -> Result<(), String> {
    const SET_FLAG: libc::c_long = 0;
    const SET_STRING: libc::c_long = 1;
    const CMD_CREATE: libc::c_long = 6;
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), 1) } as libc::c_long;
    if fs < 0 {
        return Err(format!(
            "fsopen overlay: {}",
            std::io::Error::last_os_error()
        ));
    }
    let config = |cmd: libc::c_long, k: &str, v: Option<&str>| -> Result<(), String> {
        let kc = CString::new(k).unwrap();
        let vc = v.map(|v| CString::new(v).unwrap());
        let vp = vc.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        let kp = if cmd == CMD_CREATE {
            std::ptr::null()
        } else {
            kc.as_ptr()
        };
        let r = unsafe { libc::syscall(libc::SYS_fsconfig, fs, cmd, kp, vp, 0) };
        if r < 0 {
            return Err(format!(
                "fsconfig {k}={v:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    };
    let result = (|| {
        for l in lowers {
            config(SET_STRING, "lowerdir+", Some(&l.to_string_lossy()))?;
        }
        if let (Some(u), Some(w)) = (upper, work) {
            config(SET_STRING, "upperdir", Some(&u.to_string_lossy()))?;
            config(SET_STRING, "workdir", Some(&w.to_string_lossy()))?;
        }
        for o in opts {
            match o.split_once('=') {
                Some((k, v)) => config(SET_STRING, k, Some(v))?,
                None => config(SET_FLAG, o, None)?,
            }
        }
        config(CMD_CREATE, "", None)?;
        let m = unsafe { libc::syscall(libc::SYS_fsmount, fs, 1, 0) } as libc::c_long;
        if m < 0 {
            return Err(format!("fsmount: {}", std::io::Error::last_os_error()));
        }
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                m,
                c"".as_ptr(),
                libc::AT_FDCWD,
                cstr(mnt).as_ptr(),
                4, // MOVE_MOUNT_F_EMPTY_PATH
            )
        };
        unsafe { libc::close(m as i32) };
        if r < 0 {
            return Err(format!("move_mount: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    })();
    unsafe { libc::close(fs as i32) };
    result
}

/// Mounts ovlfs: runs `ovlfs -o OPTS MNT`, which daemonizes and returns once
/// the mount is live. Its stderr goes to `MNT.ovlfs.log` (sibling of the mount
/// point), quoted in the error message on failure.
pub fn mount_ovlfs(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    work: Option<&Path>,
    mnt: &Path,
    extra_opts: &[&str],
) -> Result<(), String> {
    let opts = overlay_options(lowers, upper, work, extra_opts)?;
    let log_path = PathBuf::from(format!("{}.ovlfs.log", mnt.display()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let bin = ovlfs_bin();
    let mut child = Command::new(&bin)
        .arg("-o")
        .arg(&opts)
        .arg(mnt)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawning {bin}: {e}"))?;
    let log_tail = || {
        let s = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\n  daemon log ({}):\n    {tail}", log_path.display())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "ovlfs -o {opts} {}: did not return within 20 s{}",
                    mnt.display(),
                    log_tail()
                ));
            }
            Err(e) => return Err(format!("waiting for ovlfs: {e}")),
        }
    };
    if !status.success() {
        return Err(format!(
            "ovlfs -o {opts} {}: exited with {status}{}",
            mnt.display(),
            log_tail()
        ));
    }
    if !is_mounted(mnt) {
        return Err(format!(
            "ovlfs -o {opts} {}: exited 0 but the mount point is not mounted{}",
            mnt.display(),
            log_tail()
        ));
    }
    Ok(())
}

/// Unmounts `mnt`: retries on EBUSY for about 2 s, then falls back to a lazy
/// unmount (`umount -l`), polls /proc/self/mountinfo until the mount is gone,
/// and waits (up to 5 s) for any daemon whose command line names `mnt` to
/// exit, so its writes to the layers are complete when this returns.
pub fn unmount(mnt: &Path) -> Result<(), String> {
    let pids = daemon_pids_for(mnt);
    let c = cstr(mnt);
    let mut lazy = false;
    let mut attempt = 0;
    loop {
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            break;
        }
        let e = errno();
        if e == libc::EBUSY && attempt < 40 {
            attempt += 1;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if e == libc::EBUSY || e == libc::ENOTCONN {
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(format!(
                    "umount -l {}: {}",
                    mnt.display(),
                    std::io::Error::last_os_error()
                ));
            }
            lazy = true;
            break;
        }
        return Err(format!(
            "umount {}: {}",
            mnt.display(),
            std::io::Error::from_raw_os_error(e)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_mounted(mnt) {
        if Instant::now() > deadline {
            return Err(format!(
                "{} still listed in mountinfo after umount",
                mnt.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !wait_pids_gone(&pids, Duration::from_secs(5), false) {
        return Err(format!(
            "daemon for {} (pids {pids:?}) did not exit within 5 s of umount",
            mnt.display()
        ));
    }
    if lazy {
        return Err(format!(
            "{} stayed busy; had to fall back to umount -l",
            mnt.display()
        ));
    }
    Ok(())
}

/// Pids of processes (other than us) whose command line has an argument
/// equal to `mnt` (what `pgrep -f MNT` would find).
pub fn daemon_pids_for(mnt: &Path) -> Vec<i32> {
    let m = mnt.as_os_str().as_bytes();
    pids_matching(|args| args.iter().any(|a| AsRef::<[u8]>::as_ref(a) == m))
}

/// Pids of processes (other than us) with an argument below `dir`.
pub fn daemon_pids_under(dir: &Path) -> Vec<i32> {
    let d = dir.as_os_str().as_bytes();
    pids_matching(|args| args.iter().any(|a| a.starts_with(d)))
}

fn pids_matching(f: impl Fn(&[&[u8]]) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if f(&args) {
            out.push(pid);
        }
    }
    out
}

/// Waits until none of `pids` is alive (zombies count as gone). With `kill`,
/// SIGKILLs whatever is left at the deadline. Returns whether all are gone.
pub fn wait_pids_gone(pids: &[i32], timeout: Duration, kill: bool) -> bool {
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| !r.trim_start().starts_with('Z'))
                    .unwrap_or(false)
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            if kill {
                for p in left {
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Returns the errno name ("ENOENT", ...) for the errno values a file system
/// test can meet; unknown values print as "E<number>".
pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        libc::EDQUOT => "EDQUOT",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return format!("E{e}"),
    };
    n.to_string()
}

/// An xattr of `p` itself (symlinks not followed), or None.
pub fn lxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = cstr(p);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the given size.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}
