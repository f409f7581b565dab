//! 4. Bad on-disk input.

use super::support::*;
use super::tree::*;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};

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
