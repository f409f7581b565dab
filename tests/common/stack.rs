//! A layer stack changed through the kernel overlay in every way the layer
//! tools must get right, shared by the commit and export tests.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::tree::{SnapMode, Tree, snapshot};
use super::{cstr, mount_kernel, set_xattr, stack_dirs, unmount, write_files};

/// The bottom layer of the tools' stacks: what they change, move, hide.
pub const LOWER2: &[(&str, &str)] = &[
    ("a/x", "x"),
    ("a/deep/y", "y"),
    ("opq/old", "old"),
    ("opq/sub/s", "s"),
    ("mv/m", "m"),
    ("mv/inner/i", "i"),
    ("meta/big", "metacopy data"),
    ("gone", "g"),
];

pub fn set_times(p: &Path, sec: i64, nsec: i64) {
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let c = cstr(p);
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// Lower layers and an upper written through the kernel overlay with
/// redirects, metacopy, whiteouts, an opaque dir (with a lower dir of the
/// same name below it), hard links (in the upper and in a lower), xattrs,
/// devices, long and odd names. Returns (lowers, upper, the overlay's merged
/// view).
pub fn changed_stack(d: &Path) -> (Vec<PathBuf>, PathBuf, Tree) {
    let [l1, l2, u, w, m] = stack_dirs(d);
    write_files(&l2, LOWER2);
    fs::write(l1.join("top"), "t").unwrap();
    // A lower hard link: one st_ino for both names in the view (index=off).
    fs::write(l1.join("lh1"), "lower link").unwrap();
    fs::hard_link(l1.join("lh1"), l1.join("lh2")).unwrap();
    let lowers = vec![l1.clone(), l2.clone()];
    mount_kernel(
        &lowers,
        Some(&u),
        Some(&w),
        &m,
        &["redirect_dir=on", "metacopy=on"],
    )
    .unwrap();
    fs::write(m.join("a/deep/y"), "changed").unwrap();
    fs::write(m.join("a/new"), vec![7u8; 300_000]).unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    fs::remove_dir_all(m.join("opq")).unwrap();
    fs::create_dir(m.join("opq")).unwrap();
    fs::write(m.join("opq/fresh"), "f").unwrap();
    fs::create_dir(m.join("opq/sub")).unwrap();
    fs::write(m.join("opq/sub/t"), "t").unwrap();
    fs::rename(m.join("mv"), m.join("moved")).unwrap();
    fs::write(m.join("moved/inner/j"), "j").unwrap();
    std::os::unix::fs::chown(m.join("meta/big"), Some(1000), Some(1000)).unwrap();
    fs::write(m.join("h1"), "linked").unwrap();
    fs::hard_link(m.join("h1"), m.join("a/h2")).unwrap();
    set_xattr(&m.join("h1"), "user.note", b"bin\x00ary\xff");
    std::os::unix::fs::symlink("../a/x", m.join("a/lnk")).unwrap();
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkfifo {0}/fifo && mknod {0}/dev c 1 3",
            m.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    fs::write(m.join("a/suid"), "s").unwrap();
    fs::set_permissions(m.join("a/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    // Paths beyond ustar's 100-byte name and 155-byte prefix, a long link
    // target, a name that is not UTF-8.
    let long_dir = m.join("l".repeat(120)).join("m".repeat(150));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("n".repeat(200)), "long").unwrap();
    std::os::unix::fs::symlink("t".repeat(300), m.join("longlink")).unwrap();
    fs::write(m.join(OsStr::from_bytes(b"bad\xffname")), "odd").unwrap();
    set_times(&m.join("a/new"), 1_500_000_000, 123_456_789);
    set_times(&m.join("a/lnk"), 1_234_567_890, 0);
    set_times(&m.join("opq"), 2_000_000_000, 999_999_999);
    let before = snapshot(&m, SnapMode::Merged);
    unmount(&m).unwrap();
    (lowers, u, before)
}
