//! The command-line contract of the `ovlfs` binary: help and version, refusal of
//! bad input (exit status 1, a one-line message naming the cause, nothing mounted),
//! read-only mounts, Podman-style option strings, the mount.fuse3 calling
//! convention, daemonizing, and the daemon's end on (lazy) unmount.
//!
//! Tests that mount need root and /dev/fuse. Without them a test prints a loud
//! "SKIPPED: ..." and passes, except under CI=true, where it fails.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const OVLFS: &str = env!("CARGO_BIN_EXE_ovlfs");
/// How long a single ovlfs invocation may take to mount or to refuse.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Local helpers (deliberately independent of tests/common).
// ---------------------------------------------------------------------------

/// Whether this test can mount. If not: panic under CI=true, else say so loudly.
fn can_mount(test: &str) -> bool {
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

fn unescape_octal(s: &str) -> String {
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

fn is_mounted(path: &Path) -> bool {
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
fn daemons_for(mnt: &Path) -> Vec<u32> {
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

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

fn umount(args: &[&str], path: &Path) -> bool {
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
struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
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

    fn path(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Create directories (relative to the scratch root) and return their paths.
    fn dirs<const N: usize>(&self, rels: [&str; N]) -> [PathBuf; N] {
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
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn describe(&self) -> String {
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
fn run_ovlfs<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
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

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
fn mount_ok<S: AsRef<std::ffi::OsStr>>(args: &[S], mnt: &Path) {
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
fn unmount_and_wait(mnt: &Path, lazy: bool) {
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
fn assert_refused(scratch: &Scratch, args: &[String], mnt: &Path, needles: &[&str]) {
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

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("not an OS error: {e}"))
}

// ---------------------------------------------------------------------------
// --help and --version
// ---------------------------------------------------------------------------

#[test]
fn help_describes_usage_and_options() {
    let out = run_ovlfs(&["--help"]);
    assert!(out.status.success(), "--help:\n{}", out.describe());
    for word in ["lowerdir", "upperdir", "workdir"] {
        assert!(
            out.stdout.contains(word),
            "--help should mention {word}:\n{}",
            out.describe()
        );
    }
    assert!(
        out.stdout.to_lowercase().contains("usage"),
        "--help should show usage:\n{}",
        out.describe()
    );
}

#[test]
fn version_names_the_program_and_version() {
    let out = run_ovlfs(&["--version"]);
    assert!(out.status.success(), "--version:\n{}", out.describe());
    assert!(
        out.stdout.contains("ovlfs"),
        "--version:\n{}",
        out.describe()
    );
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version should print {}:\n{}",
        env!("CARGO_PKG_VERSION"),
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

/// A scratch tmpfs with lower, upper, work and mount point directories.
struct Layout {
    scratch: Scratch,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn layout() -> Layout {
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
    fn opts(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&self.lower),
            s(&self.upper),
            s(&self.work)
        )
    }

    /// `-o OPTS MNT`
    fn args(&self, opts: &str) -> Vec<String> {
        vec!["-o".into(), opts.into(), s(&self.mnt)]
    }

    fn refused(&self, opts: &str, needles: &[&str]) {
        assert_refused(&self.scratch, &self.args(opts), &self.mnt, needles);
    }
}

#[test]
fn refuses_missing_lowerdir() {
    if !can_mount("refuses_missing_lowerdir") {
        return;
    }
    let l = layout();
    l.refused(
        &format!("upperdir={},workdir={}", s(&l.upper), s(&l.work)),
        &["lowerdir"],
    );
    l.refused("ro", &["lowerdir"]);
}

#[test]
fn refuses_nonexistent_dirs() {
    if !can_mount("refuses_nonexistent_dirs") {
        return;
    }
    let l = layout();
    let nope = s(&l.scratch.path("does-not-exist"));
    let u = s(&l.upper);
    let w = s(&l.work);
    let lo = s(&l.lower);
    l.refused(&format!("lowerdir={nope}"), &[&nope]);
    l.refused(&format!("lowerdir={lo}:{nope}"), &[&nope]);
    l.refused(
        &format!("lowerdir={lo},upperdir={nope},workdir={w}"),
        &[&nope],
    );
    l.refused(
        &format!("lowerdir={lo},upperdir={u},workdir={nope}"),
        &[&nope],
    );
    // A missing mount point.
    let missing_mnt = l.scratch.path("no-mountpoint");
    assert_refused(
        &l.scratch,
        &["-o".into(), l.opts(), s(&missing_mnt)],
        &missing_mnt,
        &[&s(&missing_mnt)],
    );
    // A layer that is a file, not a directory.
    let file = l.scratch.path("a-file");
    fs::write(&file, b"x").unwrap();
    l.refused(&format!("lowerdir={}", s(&file)), &[&s(&file)]);
}

#[test]
fn refuses_upperdir_without_workdir() {
    if !can_mount("refuses_upperdir_without_workdir") {
        return;
    }
    let l = layout();
    l.refused(
        &format!("lowerdir={},upperdir={}", s(&l.lower), s(&l.upper)),
        &["workdir"],
    );
    l.refused(
        &format!("lowerdir={},workdir={}", s(&l.lower), s(&l.work)),
        &["upperdir"],
    );
}

#[test]
fn refuses_workdir_on_another_filesystem() {
    if !can_mount("refuses_workdir_on_another_filesystem") {
        return;
    }
    let l = layout();
    let other = Scratch::new();
    let [w2] = other.dirs(["work"]);
    l.refused(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&l.lower),
            s(&l.upper),
            s(&w2)
        ),
        &["workdir", &s(&w2)],
    );
}

#[test]
fn refuses_nested_upperdir_and_workdir() {
    if !can_mount("refuses_nested_upperdir_and_workdir") {
        return;
    }
    let l = layout();
    let [inner_w] = l.scratch.dirs(["upper/work"]);
    l.refused(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&l.lower),
            s(&l.upper),
            s(&inner_w)
        ),
        &["workdir", &s(&inner_w), &s(&l.upper)],
    );
    let [inner_u] = l.scratch.dirs(["work/upper"]);
    l.refused(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&l.lower),
            s(&inner_u),
            s(&l.work)
        ),
        &["upperdir", "workdir", &s(&inner_u), &s(&l.work)],
    );
    // The same directory for both.
    l.refused(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            s(&l.lower),
            s(&l.upper),
            s(&l.upper)
        ),
        &["workdir", "upperdir", &s(&l.upper)],
    );
}

#[test]
fn refuses_unknown_and_unsupported_options() {
    if !can_mount("refuses_unknown_and_unsupported_options") {
        return;
    }
    let l = layout();
    let base = l.opts();
    for (extra, needle) in [
        ("bogus_option", "bogus_option"),
        ("frobnicate=3", "frobnicate"),
        ("index=on", "index"),
        ("redirect_dir=sideways", "redirect_dir"),
        ("userxattr,redirect_dir=on", "redirect_dir"),
        ("metacopy=maybe", "metacopy"),
        ("metacopy=on,redirect_dir=follow", "metacopy"),
        ("xino=sometimes", "xino"),
        ("nfs_export=on", "nfs_export"),
        ("fsync=bogus", "fsync"),
        ("threads=0", "threads"),
        ("threads=many", "threads"),
    ] {
        l.refused(&format!("{base},{extra}"), &[needle]);
    }
    // A regular layer after a data-only one, and three colons, are malformed.
    l.refused(
        &format!("lowerdir={}::{}:{}", s(&l.lower), s(&l.lower), s(&l.lower)),
        &["lowerdir"],
    );
    l.refused(
        &format!("lowerdir={}:::{}", s(&l.lower), s(&l.lower)),
        &["lowerdir"],
    );
}

#[test]
fn accepts_the_supported_values_of_overlay_options() {
    if !can_mount("accepts_the_supported_values_of_overlay_options") {
        return;
    }
    let l = layout();
    let opts = format!(
        "{},index=off,metacopy=off,xino=off,nfs_export=off,redirect_dir=nofollow,fsync=strict,\
         nodev,nosuid,noexec,noatime,default_permissions,threads=2",
        l.opts()
    );
    mount_ok(&l.args(&opts), &l.mnt);
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    unmount_and_wait(&l.mnt, false);
    // fsync as 0/1, and volatile.
    for extra in ["fsync=0", "fsync=1", "fsync=auto", "volatile"] {
        let work2 = l.scratch.dirs([&format!("work-{extra}")])[0].clone();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},{extra}",
            s(&l.lower),
            s(&l.upper),
            s(&work2)
        );
        mount_ok(&l.args(&opts), &l.mnt);
        unmount_and_wait(&l.mnt, false);
    }
}

// ---------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------

#[test]
fn read_only_mount_with_only_lowers() {
    if !can_mount("read_only_mount_with_only_lowers") {
        return;
    }
    let scratch = Scratch::new();
    let [lower, mnt] = scratch.dirs(["lower", "mnt"]);
    fs::create_dir(lower.join("dir")).unwrap();
    fs::write(lower.join("dir/file"), b"hello from the lower\n").unwrap();
    fs::write(lower.join("top"), b"top\n").unwrap();

    mount_ok(
        &["-o".to_string(), format!("lowerdir={}", s(&lower)), s(&mnt)],
        &mnt,
    );
    assert_eq!(
        fs::read(mnt.join("dir/file")).unwrap(),
        b"hello from the lower\n"
    );
    let mut names: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "top"]);

    let erofs = |what: &str, r: std::io::Result<()>| match r {
        Ok(()) => panic!("{what} succeeded on a read-only mount"),
        Err(e) => assert_eq!(errno(&e), libc::EROFS, "{what}: expected EROFS, got {e}"),
    };
    erofs("create", File::create(mnt.join("new")).map(drop));
    erofs(
        "open for write",
        OpenOptions::new()
            .write(true)
            .open(mnt.join("top"))
            .map(drop),
    );
    erofs("mkdir", fs::create_dir(mnt.join("newdir")));
    erofs("unlink", fs::remove_file(mnt.join("top")));
    erofs("rename", fs::rename(mnt.join("top"), mnt.join("top2")));
    erofs(
        "symlink",
        std::os::unix::fs::symlink("top", mnt.join("link")),
    );
    erofs("chmod", {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(mnt.join("top"), fs::Permissions::from_mode(0o600))
    });
    // Nothing changed below.
    assert_eq!(fs::read(lower.join("top")).unwrap(), b"top\n");
    assert!(!lower.join("new").exists());
    unmount_and_wait(&mnt, false);
}

#[test]
fn ro_option_with_an_upper_layer_is_read_only() {
    if !can_mount("ro_option_with_an_upper_layer_is_read_only") {
        return;
    }
    let l = layout();
    mount_ok(&l.args(&format!("{},ro", l.opts())), &l.mnt);
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    let e = File::create(l.mnt.join("new")).unwrap_err();
    assert_eq!(errno(&e), libc::EROFS, "create on a ro mount: {e}");
    unmount_and_wait(&l.mnt, false);
    assert!(!l.upper.join("new").exists());
}

#[test]
fn podman_style_options_with_thirty_lowers() {
    if !can_mount("podman_style_options_with_thirty_lowers") {
        return;
    }
    let scratch = Scratch::new();
    let [upper, work, mnt] = scratch.dirs(["upper", "work", "merged"]);
    // Podman names layers with long ids, topmost first.
    let lowers: Vec<PathBuf> = (0..30)
        .map(|i| {
            let d = scratch.dirs([&format!(
                "layers/{i:02}-{:064x}/diff",
                i as u128 * 0x9e3779b97f4a7c15
            )])[0]
                .clone();
            fs::write(d.join(format!("only-in-{i:02}")), format!("{i}\n")).unwrap();
            fs::write(d.join("shared"), format!("layer {i}\n")).unwrap();
            fs::create_dir(d.join("etc")).unwrap();
            fs::write(d.join(format!("etc/conf-{i:02}")), b"x").unwrap();
            d
        })
        .collect();
    let lowerdir = lowers.iter().map(|p| s(p)).collect::<Vec<_>>().join(":");
    // Empty entries, leading and trailing commas, and generic flags, as Podman writes them.
    let opts = format!(
        ",lowerdir={lowerdir},,upperdir={},workdir={},,nodev,,metacopy=off,",
        s(&upper),
        s(&work)
    );
    mount_ok(&["-o".to_string(), opts, s(&mnt)], &mnt);

    let mut names: Vec<String> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("only-in-{i:02}")).collect();
    want.push("etc".into());
    want.push("shared".into());
    want.sort();
    assert_eq!(names, want, "the union of 30 lowers");
    assert_eq!(
        fs::read_to_string(mnt.join("shared")).unwrap(),
        "layer 0\n",
        "the topmost lower wins"
    );
    for i in [0, 13, 29] {
        assert_eq!(
            fs::read_to_string(mnt.join(format!("only-in-{i:02}"))).unwrap(),
            format!("{i}\n")
        );
    }
    assert_eq!(
        fs::read_dir(mnt.join("etc")).unwrap().count(),
        30,
        "etc/ merged from 30 layers"
    );

    // Writes land in the upper layer.
    fs::write(mnt.join("etc/new"), b"written\n").unwrap();
    fs::write(mnt.join("shared"), b"changed\n").unwrap();
    assert_eq!(fs::read(upper.join("etc/new")).unwrap(), b"written\n");
    assert_eq!(fs::read(upper.join("shared")).unwrap(), b"changed\n");
    assert_eq!(fs::read(lowers[0].join("shared")).unwrap(), b"layer 0\n");
    unmount_and_wait(&mnt, false);
}

#[test]
fn escaped_colon_in_lowerdir() {
    if !can_mount("escaped_colon_in_lowerdir") {
        return;
    }
    let scratch = Scratch::new();
    let [a, b, mnt] = scratch.dirs(["lay:er", "plain", "mnt"]);
    fs::write(a.join("a"), b"a").unwrap();
    fs::write(b.join("b"), b"b").unwrap();
    let lowerdir = format!("{}:{}", s(&a).replace(':', "\\:"), s(&b));
    mount_ok(
        &["-o".to_string(), format!("lowerdir={lowerdir}"), s(&mnt)],
        &mnt,
    );
    assert_eq!(fs::read(mnt.join("a")).unwrap(), b"a");
    assert_eq!(fs::read(mnt.join("b")).unwrap(), b"b");
    unmount_and_wait(&mnt, false);
}

#[test]
fn mount_fuse3_convention() {
    if !can_mount("mount_fuse3_convention") {
        return;
    }
    // mount.fuse3 runs `TYPE SOURCE MOUNTPOINT -o OPTIONS` (options after the mount point).
    let l = layout();
    let args = vec![
        "overlay".to_string(),
        s(&l.mnt),
        "-o".into(),
        format!("{},dev,suid", l.opts()),
    ];
    mount_ok(&args, &l.mnt);
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    fs::write(l.mnt.join("new"), b"new\n").unwrap();
    assert_eq!(fs::read(l.upper.join("new")).unwrap(), b"new\n");
    unmount_and_wait(&l.mnt, false);
}

#[test]
fn daemon_ends_on_lazy_unmount_and_data_is_in_upper() {
    if !can_mount("daemon_ends_on_lazy_unmount_and_data_is_in_upper") {
        return;
    }
    let l = layout();
    mount_ok(&l.args(&l.opts()), &l.mnt);
    assert!(
        !daemons_for(&l.mnt).is_empty(),
        "no ovlfs daemon found for {}",
        l.mnt.display()
    );
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    fs::write(l.mnt.join("big"), &data).unwrap();
    fs::create_dir(l.mnt.join("d")).unwrap();
    fs::write(l.mnt.join("d/small"), b"small\n").unwrap();
    // Copy-up of a lower file.
    OpenOptions::new()
        .append(true)
        .open(l.mnt.join("from-lower"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"appended\n"))
        .unwrap();

    unmount_and_wait(&l.mnt, true);
    assert!(!is_mounted(&l.mnt));
    assert_eq!(fs::read(l.upper.join("big")).unwrap(), data);
    assert_eq!(fs::read(l.upper.join("d/small")).unwrap(), b"small\n");
    assert_eq!(
        fs::read(l.upper.join("from-lower")).unwrap(),
        b"lower\nappended\n"
    );
    assert_eq!(fs::read(l.lower.join("from-lower")).unwrap(), b"lower\n");
}

#[test]
fn foreground_mode_stays_attached_until_unmount() {
    if !can_mount("foreground_mode_stays_attached_until_unmount") {
        return;
    }
    let l = layout();
    let mut child = Command::new(OVLFS)
        .args(["-f", "-o", &l.opts(), &s(&l.mnt)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ovlfs -f");
    let mounted = wait_until(COMMAND_TIMEOUT, || {
        is_mounted(&l.mnt) || matches!(child.try_wait(), Ok(Some(_)))
    });
    if !mounted || !is_mounted(&l.mnt) {
        let _ = child.kill();
        let st = child.wait();
        panic!("ovlfs -f did not mount within {COMMAND_TIMEOUT:?} (process: {st:?})");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "ovlfs -f must not detach"
    );
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    assert!(umount(&[], &l.mnt), "umount {}", l.mnt.display());
    let st = wait_child(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("ovlfs -f still running 10s after umount")
    });
    assert!(st.success(), "ovlfs -f exit status after umount: {st:?}");
}

#[test]
fn mount_point_shows_fuse_type_and_same_device_for_files() {
    if !can_mount("mount_point_shows_fuse_type_and_same_device_for_files") {
        return;
    }
    let l = layout();
    mount_ok(&l.args(&l.opts()), &l.mnt);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|line| line.split(' ').nth(4).map(unescape_octal).as_deref() == Some(&s(&l.mnt)))
        .expect("mountinfo line");
    let fstype = line
        .split(" - ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap_or("");
    assert!(fstype.starts_with("fuse"), "fstype {fstype:?} in {line}");
    let root_dev = fs::metadata(&l.mnt).unwrap().dev();
    assert_eq!(
        fs::metadata(l.mnt.join("from-lower")).unwrap().dev(),
        root_dev
    );
    match fs::metadata(l.mnt.join("nonexistent")) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound),
        Ok(_) => panic!("nonexistent file exists"),
    }
    unmount_and_wait(&l.mnt, false);
}

#[test]
fn mount_command_via_mount_fuse3() {
    if !can_mount("mount_command_via_mount_fuse3") {
        return;
    }
    let helper = ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"];
    if !helper.iter().any(|h| Path::new(h).exists()) {
        let msg = "mount_command_via_mount_fuse3 needs mount.fuse3 (apt-get install fuse3)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true: skipping is not allowed)");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
        return;
    }
    // mount(8) runs helpers with a fixed PATH (/usr/local/sbin:...:/bin), so an fstab
    // line `overlay MNT fuse.ovlfs OPTS 0 0` needs ovlfs installed there. The older
    // `-t fuse PROG#SOURCE` form takes the program's path, which lets this test run
    // the freshly built binary. mount.fuse3 then runs `PROG SOURCE MNT -o rw,...,dev,suid`.
    let l = layout();
    let st = Command::new("mount")
        .args(["-t", "fuse", &format!("{OVLFS}#overlay"), &s(&l.mnt), "-o"])
        .arg(format!("{},allow_other,noatime", l.opts()))
        .stdin(Stdio::null())
        .status()
        .expect("run mount");
    assert!(st.success(), "mount -t fuse {OVLFS}#overlay: {st}");
    assert!(
        is_mounted(&l.mnt),
        "mount(8) returned, but nothing is mounted"
    );
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    fs::write(l.mnt.join("via-mount"), b"ok\n").unwrap();
    unmount_and_wait(&l.mnt, false);
    assert_eq!(fs::read(l.upper.join("via-mount")).unwrap(), b"ok\n");
}
