//! Mounts: read-only, Podman-style options, mount.fuse3, daemonizing, unmount.

use super::support::*;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
fn relative_paths_are_taken_from_the_current_directory() {
    if !can_mount("relative_paths_are_taken_from_the_current_directory") {
        return;
    }
    // As mount(8) and the kernel overlay: layers and mount point relative to
    // where ovlfs is started (the daemon leaves that directory).
    let l = layout();
    let base = l.lower.parent().unwrap();
    let st = Command::new(OVLFS)
        .current_dir(base)
        .args(["-o", "lowerdir=lower,upperdir=upper,workdir=work", "mnt"])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ovlfs with relative paths: {st}");
    assert!(is_mounted(&l.mnt), "nothing mounted on {}", l.mnt.display());
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    fs::write(l.mnt.join("new"), b"new").unwrap();
    assert_eq!(fs::read(l.upper.join("new")).unwrap(), b"new");
    unmount_and_wait(&l.mnt, false);
    let out = Command::new(OVLFS)
        .current_dir(base)
        .args([
            "-o",
            "lowerdir=lower,upperdir=upper,workdir=work",
            "nowhere",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nowhere"),
        "missing mount point: {err}"
    );
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
fn remount_read_only_and_back() {
    if !can_mount("remount_read_only_and_back") {
        return;
    }
    // mount(8) -o remount,ro runs the helper, which runs `ovlfs SOURCE MNT -o remount,ro`.
    let l = layout();
    mount_ok(&l.args(&l.opts()), &l.mnt);
    let remount =
        |opts: &str| run_ovlfs(&["overlay".to_string(), s(&l.mnt), "-o".into(), opts.into()]);
    let out = remount("remount,ro");
    assert!(out.status.success(), "remount,ro: {}", out.stderr);
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|m| m.contains(&s(&l.mnt)))
        .expect("still mounted");
    assert!(
        line.split(' ')
            .nth(3)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{line}"
    );
    let err = fs::write(l.mnt.join("refused"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    // Overlay options are ignored on a remount, silently, as by the kernel
    // through mount(2) (helpers pass the whole list again).
    let out = remount("remount,ro,lowerdir=/elsewhere");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        out.stderr
    );
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    let out = remount("remount,rw");
    assert!(out.status.success(), "remount,rw: {}", out.stderr);
    fs::write(l.mnt.join("after"), b"rw again\n").unwrap();
    unmount_and_wait(&l.mnt, false);
    assert_eq!(fs::read(l.upper.join("after")).unwrap(), b"rw again\n");
    assert!(!l.upper.join("refused").exists());
}

/// name_to_handle_at's errno on `p` (0: a handle was given).
fn handle_errno(p: &Path) -> i32 {
    let mut buf = vec![0u64; 32];
    let fh = buf.as_mut_ptr() as *mut libc::file_handle;
    let mut mount_id = 0;
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a 256-byte buffer with handle_bytes set to what follows the header.
    unsafe {
        (*fh).handle_bytes = 128;
        if libc::name_to_handle_at(libc::AT_FDCWD, c.as_ptr(), fh, &mut mount_id, 0) == 0 {
            return 0;
        }
    }
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

#[test]
fn file_handles_are_refused_as_by_the_kernel_overlay() {
    if !can_mount("file_handles_are_refused_as_by_the_kernel_overlay") {
        return;
    }
    // Without nfs_export the kernel overlay gives no handles (EOPNOTSUPP);
    // handles that decode only while cached would go stale under NFS or
    // open_by_handle_at users.
    let l = layout();
    mount_ok(&l.args(&l.opts()), &l.mnt);
    fs::write(l.mnt.join("upper-file"), b"u").unwrap();
    for p in [
        l.mnt.join("from-lower"),
        l.mnt.join("upper-file"),
        l.mnt.clone(),
    ] {
        assert_eq!(handle_errno(&p), libc::EOPNOTSUPP, "{}", p.display());
    }
    unmount_and_wait(&l.mnt, false);
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("{},redirect_dir=follow", l.opts()))
        .arg(&l.mnt)
        .status()
        .expect("run mount");
    assert!(st.success(), "kernel overlay mount: {st}");
    let kernel = handle_errno(&l.mnt.join("from-lower"));
    let _ = Command::new("umount").arg(&l.mnt).status();
    assert_eq!(
        kernel,
        libc::EOPNOTSUPP,
        "the kernel overlay's answer changed"
    );
}

#[test]
fn an_upper_a_kernel_overlay_uses_is_shared_as_the_kernel_shares_it() {
    if !can_mount("an_upper_a_kernel_overlay_uses_is_shared_as_the_kernel_shares_it") {
        return;
    }
    // The kernel: a second overlay on an upper in use is refused with
    // index=on, allowed (with a warning) without.
    let l = layout();
    let kmnt = l.mnt.with_extension("kernel");
    fs::create_dir_all(&kmnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &l.opts()])
        .arg(&kmnt)
        .status()
        .expect("run mount");
    assert!(st.success(), "kernel overlay mount: {st}");
    let out = run_ovlfs(&l.args(&format!("{},index=on", l.opts())));
    let named = out.stderr.contains("kernel overlay") && out.stderr.contains(&s(&kmnt));
    assert!(!out.status.success() && named, "index=on: {}", out.stderr);
    assert!(!is_mounted(&l.mnt));
    mount_ok(&l.args(&l.opts()), &l.mnt);
    assert_eq!(fs::read(l.mnt.join("from-lower")).unwrap(), b"lower\n");
    unmount_and_wait(&l.mnt, false);
    let _ = Command::new("umount").arg(&kmnt).status();
}

/// Set atime to 2000-01-01 (an old atime: relatime would update it).
fn age_atime(p: &Path) {
    let times = [
        libc::timespec {
            tv_sec: 946_684_800,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

#[test]
fn reads_change_atimes_where_the_kernel_overlay_changes_them() {
    if !can_mount("reads_change_atimes_where_the_kernel_overlay_changes_them") {
        return;
    }
    // The kernel overlay never changes a lower layer, atimes included (it
    // reads with O_NOATIME); upper files and directories get theirs as usual.
    let run = |kernel: bool| -> Vec<i64> {
        let l = layout();
        fs::create_dir_all(l.lower.join("dir")).unwrap();
        fs::create_dir_all(l.upper.join("updir")).unwrap();
        fs::write(l.upper.join("upfile"), b"up").unwrap();
        let layer_paths = [
            l.lower.join("from-lower"),
            l.lower.join("dir"),
            l.upper.join("upfile"),
            l.upper.join("updir"),
        ];
        for p in &layer_paths {
            age_atime(p);
        }
        if kernel {
            let st = Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &l.opts()])
                .arg(&l.mnt)
                .status()
                .unwrap();
            assert!(st.success());
        } else {
            mount_ok(&l.args(&l.opts()), &l.mnt);
        }
        fs::read(l.mnt.join("from-lower")).unwrap();
        fs::read(l.mnt.join("upfile")).unwrap();
        fs::read_dir(l.mnt.join("dir")).unwrap().for_each(drop);
        fs::read_dir(l.mnt.join("updir")).unwrap().for_each(drop);
        let atimes = layer_paths
            .iter()
            .map(|p| fs::metadata(p).unwrap().atime())
            .collect();
        if kernel {
            let _ = Command::new("umount").arg(&l.mnt).status();
        } else {
            unmount_and_wait(&l.mnt, false);
        }
        atimes
    };
    let (k, o) = (run(true), run(false));
    let old = |v: &[i64]| v.iter().map(|t| *t == 946_684_800).collect::<Vec<_>>();
    assert_eq!(
        old(&k),
        [true, true, false, false],
        "the kernel's behaviour changed"
    );
    assert_eq!(
        old(&o),
        old(&k),
        "lower, lower dir, upper, upper dir: atime kept?"
    );
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
        .stderr(Stdio::piped())
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
    // A clean unmount is not an error (fuser tried to unmount again: EINVAL).
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.is_empty(),
        "ovlfs -f printed at a clean unmount:\n{err}"
    );
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

/// `cat PATH` as uid/gid 1000 (no supplementary groups): its stdout, or stderr.
fn cat_as_1000(p: &Path) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let out = Command::new("cat")
        .arg(p)
        .uid(1000)
        .gid(1000)
        .stdin(Stdio::null())
        .output()
        .expect("run cat");
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// As root, the mount admits every user by default (as the kernel overlay
/// and fuse-overlayfs as root do); `noallow_other` keeps FUSE's default.
#[test]
fn other_users_enter_a_root_mount_unless_noallow_other() {
    if !can_mount("other_users_enter_a_root_mount_unless_noallow_other") {
        return;
    }
    let l = layout();
    for dir in [&l.scratch.path(""), &l.lower] {
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    mount_ok(&l.args(&l.opts()), &l.mnt);
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts.lines().find(|m| m.contains(&s(&l.mnt))).unwrap();
    assert!(line.contains("allow_other"), "{line}");
    assert_eq!(cat_as_1000(&l.mnt.join("from-lower")), Ok("lower\n".into()));
    unmount_and_wait(&l.mnt, false);

    mount_ok(&l.args(&format!("{},noallow_other", l.opts())), &l.mnt);
    let err = cat_as_1000(&l.mnt.join("from-lower")).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    unmount_and_wait(&l.mnt, false);
}

/// `noacl`: modes alone decide (an ACL denying uid 1000 a 0666 file is not
/// enforced); by default it is, as in the kernel overlay.
#[test]
fn noacl_leaves_acls_unenforced() {
    if !can_mount("noacl_leaves_acls_unenforced") {
        return;
    }
    let l = layout();
    for dir in [&l.scratch.path(""), &l.lower] {
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let f = l.lower.join("denied");
    fs::write(&f, "data\n").unwrap();
    fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let st = Command::new("setfacl")
        .args(["-m", "u:1000:---"])
        .arg(&f)
        .status()
        .expect("setfacl (apt-get install acl)");
    assert!(st.success());
    mount_ok(&l.args(&l.opts()), &l.mnt);
    let err = cat_as_1000(&l.mnt.join("denied")).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    unmount_and_wait(&l.mnt, false);
    mount_ok(&l.args(&format!("{},noacl", l.opts())), &l.mnt);
    assert_eq!(cat_as_1000(&l.mnt.join("denied")), Ok("data\n".into()));
    unmount_and_wait(&l.mnt, false);
}

/// O_DIRECT writes and reads of a file the daemon serves (made O_WRONLY, so
/// not passed through): the daemon's own I/O is buffered (a FUSE request's
/// data is not aligned for direct I/O; this was EINVAL).
#[test]
fn direct_io_through_the_daemon() {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if !can_mount("direct_io_through_the_daemon") {
        return;
    }
    // On ext4 (tmpfs takes unaligned direct I/O; real disks' filesystems do not).
    let scratch = Scratch::new();
    let img = scratch.path("ext4.img");
    fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let ext = scratch.path("ext");
    fs::create_dir(&ext).unwrap();
    let run = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&ext));
    let [lower, upper, work, mnt] = ["l", "u", "w", "m"].map(|d| ext.join(d));
    for d in [&lower, &upper, &work, &mnt] {
        fs::create_dir(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        s(&lower),
        s(&upper),
        s(&work)
    );
    mount_ok(&["-o".to_string(), opts, s(&mnt)], &mnt);
    let layout = std::alloc::Layout::from_size_align(65536, 4096).unwrap();
    // SAFETY: non-zero size; freed below with the same layout.
    let buf = unsafe { std::alloc::alloc(layout) };
    let data = unsafe { std::slice::from_raw_parts_mut(buf, 65536) };
    data.fill(7);
    let p = mnt.join("direct");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .unwrap();
    f.write_all(data).expect("O_DIRECT write");
    drop(f);
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .unwrap();
    data.fill(0);
    f.read_exact(data).expect("O_DIRECT read");
    assert!(data.iter().all(|b| *b == 7));
    drop(f);
    unsafe { std::alloc::dealloc(buf, layout) };
    unmount_and_wait(&mnt, false);
    assert_eq!(fs::read(upper.join("direct")).unwrap(), vec![7u8; 65536]);
    assert!(umount(&[], &ext), "umount {}", ext.display());
}
