//! Access times under each atime mount flag, against the kernel overlay:
//! whether the first and the second read of an upper file, a read of a
//! lower file and a listing of an upper directory update the atime shown.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{Scratch, mount_kernel, mount_ovlfs, require_root_and_fuse, unmount};

/// Which of the four accesses changed the atime, as "y"/"n" per access.
fn accesses(mnt: &Path) -> String {
    let atime = |p: &Path| fs::metadata(p).unwrap().atime();
    let pause = || std::thread::sleep(Duration::from_millis(1100));
    let (f, lf, d) = (mnt.join("f"), mnt.join("lf"), mnt.join("d"));
    fs::write(&f, "data").unwrap();
    fs::create_dir(&d).unwrap();
    fs::write(d.join("x"), "x").unwrap();
    let (f0, l0, d0) = (atime(&f), atime(&lf), atime(&d));
    pause();
    fs::read(&f).unwrap();
    fs::read(&lf).unwrap();
    fs::read_dir(&d).unwrap().for_each(drop);
    let (f1, l1, d1) = (atime(&f), atime(&lf), atime(&d));
    pause();
    fs::read(&f).unwrap();
    let f2 = atime(&f);
    let yn = |a: i64, b: i64| if a == b { "n" } else { "y" };
    format!(
        "first read {}, second {}, lower {}, dir {}",
        yn(f0, f1),
        yn(f1, f2),
        yn(l0, l1),
        yn(d0, d1)
    )
}

#[test]
fn reads_update_atimes_as_the_mount_flags_say() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let mut differ = Vec::new();
    for flag in ["relatime", "noatime", "strictatime", "nodiratime"] {
        let mut seen = Vec::new();
        for kernel in [true, false] {
            let d = s.subdir(&format!("{flag}-{kernel}"));
            let [l, u, w, m] = ["l", "u", "w", "m"].map(|x| d.join(x));
            for p in [&l, &u, &w, &m] {
                fs::create_dir_all(p).unwrap();
            }
            fs::write(l.join("lf"), "lower").unwrap();
            let mount = if kernel { mount_kernel } else { mount_ovlfs };
            mount(&[l], Some(&u), Some(&w), &m, &[flag]).unwrap();
            seen.push(accesses(&m));
            unmount(&m).unwrap();
        }
        if seen[0] != seen[1] {
            differ.push(format!("{flag}: kernel {} | ovlfs {}", seen[0], seen[1]));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// A read-only mount (lowers only) changes no layer's atimes, as the kernel
/// overlay (whose lower layers are never written).
#[test]
fn read_only_mounts_leave_lower_atimes_alone() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let d = s.subdir("ro");
    let (l1, l2, m) = (d.join("l1"), d.join("l2"), d.join("m"));
    for p in [&l1, &l2, &m] {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(l1.join("f"), "data").unwrap();
    let old = libc::timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 0,
    };
    let c = std::ffi::CString::new(l1.join("f").to_str().unwrap()).unwrap();
    // SAFETY: valid C string and a two-element array.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [old, old].as_ptr(), 0) };
    assert_eq!(r, 0);
    mount_ovlfs(&[l1.clone(), l2], None, None, &m, &[]).unwrap();
    assert_eq!(fs::read(m.join("f")).unwrap(), b"data");
    unmount(&m).unwrap();
    assert_eq!(fs::metadata(l1.join("f")).unwrap().atime(), 1_000_000_000);
}
