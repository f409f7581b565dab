//! 1b/2b. Kills injected at an exact syscall (strace), between two steps.

use super::support::*;
use super::tree::*;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    // an empty directory from W/work, setxattr #1 marks p/s opaque (the
    // daemon tries fsetxattr first: either is the first xattr change), renameat
    // #1 (glibc's renameat2 with flags 0) moves p/s over. Kill between them.
    for (i, (sys, nth)) in [("setxattr,fsetxattr", 1), ("renameat", 1)]
        .into_iter()
        .enumerate()
    {
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
    let r = crash_at(
        &st,
        pid,
        "setxattr,fsetxattr",
        1,
        "exchange p/y p/x",
        move || {
            renameat2(&m.join("p/y"), &m.join("p/x"), libc::RENAME_EXCHANGE)
                .map_err(std::io::Error::from_raw_os_error)
        },
    );
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
