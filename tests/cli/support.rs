//! Local helpers (deliberately independent of tests/common): scratch tmpfs,
//! running ovlfs, mount bookkeeping, and the lower/upper/work layout.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub(crate) const OVLFS: &str = env!("CARGO_BIN_EXE_ovlfs");
/// How long a single ovlfs invocation may take to mount or to refuse.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Local helpers (deliberately independent of tests/common).
// ---------------------------------------------------------------------------

/// Whether this test can mount. If not: panic under CI=true, else say so loudly.
pub(crate) fn can_mount(test: &str) -> bool {
    let mut missing = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root");
    }
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse");
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test} needs {}", missing.join(" and "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: skipping is not allowed)");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    false
}

/// Mount points in our mount namespace, unescaped (`\040` etc.).
fn mount_points() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .collect()
}

pub(crate) fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
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

pub(crate) fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Mounts at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Pids of live ovlfs processes that were given `mnt` as an argument.
pub(crate) fn daemons_for(mnt: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A zombie has an empty cmdline, so only live processes match.
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&c| c == 0).collect();
        let is_ovlfs = fs::read_link(e.path().join("exe"))
            .map(|p| p.file_name().is_some_and(|n| n == "ovlfs"))
            .unwrap_or(false)
            || args.first().is_some_and(|a0| {
                Path::new(std::str::from_utf8(a0).unwrap_or("")).ends_with("ovlfs")
            });
        if is_ovlfs && args.contains(&mnt.as_os_str().as_encoded_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}

pub(crate) fn umount(args: &[&str], path: &Path) -> bool {
    Command::new("umount")
        .args(args)
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A tmpfs mounted on a fresh temporary directory. On drop, everything mounted
/// below it and then the tmpfs itself are lazily unmounted.
pub(crate) struct Scratch {
    pub(crate) dir: Option<tempfile::TempDir>,
    pub(crate) path: PathBuf,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("ovlfs-cli.")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().canonicalize().expect("canonicalize tempdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755", "ovlfs-cli-scratch"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", path.display());
        Scratch {
            dir: Some(dir),
            path,
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Create directories (relative to the scratch root) and return their paths.
    pub(crate) fn dirs<const N: usize>(&self, rels: [&str; N]) -> [PathBuf; N] {
        rels.map(|r| {
            let p = self.path(r);
            fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
            p
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut mounts = mounts_under(&self.path);
        // Deepest first, the scratch tmpfs itself last.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            if !umount(&[], &m) {
                umount(&["-l"], &m);
            }
        }
        // The directory is empty again once the tmpfs is detached.
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

/// What one ovlfs invocation did.
pub(crate) struct Outcome {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    pub(crate) fn describe(&self) -> String {
        format!(
            "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Run ovlfs to completion. Its output goes to files, not pipes, so that a
/// daemon child that keeps stdout/stderr open cannot make this wait forever.
pub(crate) fn run_ovlfs<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    let out_dir = tempfile::tempdir().expect("tempdir for output");
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let mut child = Command::new(OVLFS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn ovlfs");
    let status = wait_child(&mut child, COMMAND_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "ovlfs {:?} did not exit within {COMMAND_TIMEOUT:?}",
            args.iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<_>>()
        )
    });
    let read = |p: &Path| {
        let mut s = String::new();
        let _ = File::open(p).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    Outcome {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait for ovlfs") {
            return Some(st);
        }
        if start.elapsed() > timeout {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Mount with ovlfs and require success: exit 0 and the mount live at once.
pub(crate) fn mount_ok<S: AsRef<std::ffi::OsStr>>(args: &[S], mnt: &Path) {
    let out = run_ovlfs(args);
    assert!(
        out.status.success(),
        "ovlfs should have mounted on {}:\n{}",
        mnt.display(),
        out.describe()
    );
    // The contract: exit 0 only once the mount is live, so no waiting here.
    assert!(
        is_mounted(mnt),
        "ovlfs exited 0 but nothing is mounted on {}",
        mnt.display()
    );
    let st = fs::metadata(mnt).unwrap_or_else(|e| panic!("stat {}: {e}", mnt.display()));
    assert!(st.is_dir());
}

/// Unmount `mnt` and wait for its daemon to exit.
pub(crate) fn unmount_and_wait(mnt: &Path, lazy: bool) {
    let ok = umount(if lazy { &["-l"] } else { &[] }, mnt);
    assert!(
        ok,
        "umount {}{} failed",
        if lazy { "-l " } else { "" },
        mnt.display()
    );
    assert!(
        wait_until(Duration::from_secs(10), || daemons_for(mnt).is_empty()),
        "ovlfs daemon(s) {:?} for {} still running 10s after umount",
        daemons_for(mnt),
        mnt.display()
    );
}

/// Require a refusal: exit status 1, exactly one non-empty stderr line that
/// contains one of `needles`, nothing new mounted under the scratch dir, no daemon.
pub(crate) fn assert_refused(scratch: &Scratch, args: &[String], mnt: &Path, needles: &[&str]) {
    let before = mounts_under(&scratch.path);
    let out = run_ovlfs(args);
    let ctx = format!("ovlfs {}", args.join(" "));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{ctx}: expected exit status 1\n{}",
        out.describe()
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{ctx}: expected a one-line error on stderr\n{}",
        out.describe()
    );
    assert!(
        needles.iter().any(|n| lines[0].contains(n)),
        "{ctx}: the error should name one of {needles:?}\n{}",
        out.describe()
    );
    assert!(
        !is_mounted(mnt),
        "{ctx}: refused, yet {} is mounted",
        mnt.display()
    );
    assert_eq!(
        mounts_under(&scratch.path),
        before,
        "{ctx}: refused, yet the mounts changed"
    );
    assert!(
        wait_until(Duration::from_secs(2), || daemons_for(mnt).is_empty()),
        "{ctx}: refused, yet an ovlfs process for {} remains",
        mnt.display()
    );
}

pub(crate) fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

pub(crate) fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("not an OS error: {e}"))
}

/// A scratch tmpfs with lower, upper, work and mount point directories.
pub(crate) struct Layout {
    pub(crate) scratch: Scratch,
    pub(crate) lower: PathBuf,
    pub(crate) upper: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) mnt: PathBuf,
}

pub(crate) fn layout() -> Layout {
    let scratch = Scratch::new();
    let [lower, upper, work, mnt] = scratch.dirs(["lower", "upper", "work", "mnt"]);
    fs::write(lower.join("from-lower"), b"lower\n").unwrap();
    Layout {
        scratch,
        lower,
        upper,
        work,
        mnt,
    }
}

impl Layout {
    pub(crate) fn opts(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&self.lower),
            s(&self.upper),
            s(&self.work)
        )
    }

    /// `-o OPTS MNT`
    pub(crate) fn args(&self, opts: &str) -> Vec<String> {
        vec!["-o".into(), opts.into(), s(&self.mnt)]
    }

    pub(crate) fn refused(&self, opts: &str, needles: &[&str]) {
        assert_refused(&self.scratch, &self.args(opts), &self.mnt, needles);
    }
}
