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
