//! The engine driven directly, without FUSE: on-disk effects of each operation
//! family on real layer directories (whiteouts, opaque marks, copy-up).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ovlfs::engine::{Caller, Errno, Overlay, ROOT_INO, SetAttr};
use ovlfs::params::Config;

/// Root is needed for trusted.* xattrs and whiteout device nodes.
fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("engine tests need root under CI");
        }
        eprintln!("SKIPPED: engine tests need root (trusted.* xattrs, mknod)");
    }
    root
}

/// Layers on a private tmpfs (it has a filesystem UUID, as origins need).
struct Stack {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Stack {
    fn new() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", root.display());
        for d in ["l1", "l2", "u", "w"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        Stack { _dir: dir, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn mount(&self) -> Overlay {
        self.mount_with("")
    }

    fn mount_with(&self, extra: &str) -> Overlay {
        let opts = format!(
            "lowerdir={}:{},upperdir={},workdir={}{extra}",
            self.p("l1").display(),
            self.p("l2").display(),
            self.p("u").display(),
            self.p("w").display()
        );
        Overlay::new(Config::parse(&[opts]).unwrap()).unwrap()
    }
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

fn opaque(p: &Path) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 4];
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            4,
        )
    };
    n == 1 && buf[0] == b'y'
}

fn lookup_path(ovl: &Overlay, path: &str) -> Result<u64, Errno> {
    let mut ino = ROOT_INO;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = ovl.lookup(ino, OsStr::new(c))?.ino;
    }
    Ok(ino)
}

fn read_all(ovl: &Overlay, ino: u64) -> String {
    let fh = ovl.open(ino, libc::O_RDONLY).unwrap();
    let mut buf = Vec::new();
    ovl.read(fh, 0, 1 << 20, &mut buf).unwrap();
    ovl.release(fh);
    String::from_utf8(buf).unwrap()
}

#[test]
fn lookup_merges_and_hides() {
    if !privileged() {
        return;
    }
    let s = Stack::new();
    write(&s.p("l1/a"), "top");
    write(&s.p("l2/a"), "bottom");
    write(&s.p("l2/d/x"), "x");
    write(&s.p("l1/d/y"), "y");
    write(&s.p("l2/gone"), "gone");
    fs::create_dir_all(s.p("l1/opq")).unwrap();
    write(&s.p("l2/opq/hidden"), "h");
    let ovl = s.mount();
    assert_eq!(read_all(&ovl, lookup_path(&ovl, "a").unwrap()), "top");
    assert!(lookup_path(&ovl, "d/x").is_ok() && lookup_path(&ovl, "d/y").is_ok());
    // A whiteout made through the engine hides the lower file.
    ovl.unlink(ROOT_INO, OsStr::new("gone")).unwrap();
    assert!(is_whiteout(&s.p("u/gone")));
    assert_eq!(lookup_path(&ovl, "gone"), Err(Errno::ENOENT));
    let names: Vec<_> = ovl
        .listing(ROOT_INO)
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert!(!names.iter().any(|n| n == "gone"));
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 1);
}

#[test]
fn copy_up_keeps_metadata_and_is_atomic() {
    if !privileged() {
        return;
    }
    let s = Stack::new();
    write(&s.p("l1/dir/f"), "data");
    fs::set_permissions(s.p("l1/dir/f"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(s.p("l1/dir/f"), Some(1000), Some(1000)).unwrap();
    let ovl = s.mount();
    let ino = lookup_path(&ovl, "dir/f").unwrap();
    let before = ovl.getattr(ino).unwrap();
    let fh = ovl.open(ino, libc::O_WRONLY | libc::O_APPEND).unwrap();
    ovl.write(fh, 0, b"+more").unwrap();
    ovl.release(fh);
    let m = fs::metadata(s.p("u/dir/f")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1000, 1000));
    assert_eq!(fs::read_to_string(s.p("u/dir/f")).unwrap(), "data+more");
    assert_eq!(
        fs::read_to_string(s.p("l1/dir/f")).unwrap(),
        "data",
        "lower untouched"
    );
    assert_eq!(
        ovl.getattr(ino).unwrap().st_ino,
        before.st_ino,
        "inode number survives copy-up"
    );
    assert_eq!(
        fs::read_dir(s.p("w/work")).unwrap().count(),
        0,
        "nothing left in work/"
    );
}

#[test]
fn mkdir_over_whiteout_is_opaque_and_rename_rules() {
    if !privileged() {
        return;
    }
    let s = Stack::new();
    write(&s.p("l2/d/old"), "o");
    write(&s.p("l1/file"), "f");
    let ovl = s.mount();
    let me = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
        umask: 0,
    };
    let d = lookup_path(&ovl, "d").unwrap();
    ovl.unlink(d, OsStr::new("old")).unwrap();
    ovl.rmdir(ROOT_INO, OsStr::new("d")).unwrap();
    assert!(is_whiteout(&s.p("u/d")));
    ovl.mkdir(&me, ROOT_INO, OsStr::new("d"), 0o755).unwrap();
    assert!(opaque(&s.p("u/d")));
    assert_eq!(lookup_path(&ovl, "d/old"), Err(Errno::ENOENT));
    // Lower directories cannot move without redirect_dir=on; pure upper ones can.
    fs::create_dir(s.p("l1/lowerdir")).unwrap();
    drop(ovl); // releases the upper and work directories' in-use lock
    let ovl = s.mount_with(",redirect_dir=follow");
    let r = ovl.rename(
        ROOT_INO,
        OsStr::new("lowerdir"),
        ROOT_INO,
        OsStr::new("x"),
        0,
    );
    assert_eq!(r, Err(Errno::EXDEV));
    drop(ovl);
    // With redirect_dir=on (the default) the move records where the directory came from.
    let ovl = s.mount();
    ovl.rename(
        ROOT_INO,
        OsStr::new("lowerdir"),
        ROOT_INO,
        OsStr::new("x"),
        0,
    )
    .unwrap();
    assert!(is_whiteout(&s.p("u/lowerdir")));
    let c = std::ffi::CString::new(s.p("u/x").as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.redirect".as_ptr(),
            buf.as_mut_ptr().cast(),
            64,
        )
    };
    assert_eq!(&buf[..n.max(0) as usize], b"lowerdir");
    ovl.mkdir(&me, ROOT_INO, OsStr::new("new"), 0o700).unwrap();
    ovl.rename(
        ROOT_INO,
        OsStr::new("new"),
        ROOT_INO,
        OsStr::new("moved"),
        0,
    )
    .unwrap();
    // Renaming a lower file copies it up and whites out the old name.
    ovl.rename(
        ROOT_INO,
        OsStr::new("file"),
        ROOT_INO,
        OsStr::new("file2"),
        0,
    )
    .unwrap();
    assert!(is_whiteout(&s.p("u/file")));
    assert_eq!(fs::read_to_string(s.p("u/file2")).unwrap(), "f");
    let r = ovl.rename(
        ROOT_INO,
        OsStr::new("file2"),
        ROOT_INO,
        OsStr::new("moved"),
        0,
    );
    assert_eq!(r, Err(Errno::EISDIR));
}

#[test]
fn read_handle_follows_copy_up() {
    if !privileged() {
        return;
    }
    let s = Stack::new();
    write(&s.p("l1/f"), "old!");
    let ovl = s.mount();
    let ino = lookup_path(&ovl, "f").unwrap();
    let rd = ovl.open(ino, libc::O_RDONLY).unwrap();
    let wr = ovl.open(ino, libc::O_WRONLY).unwrap();
    ovl.write(wr, 0, b"new!").unwrap();
    let mut buf = Vec::new();
    ovl.read(rd, 0, 16, &mut buf).unwrap();
    assert_eq!(buf, b"new!");
    // Setting attributes on a lower file copies it up too.
    let ino2 = {
        write(&s.p("l1/g"), "g");
        lookup_path(&ovl, "g").unwrap()
    };
    ovl.setattr(
        ino2,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        &Caller::ROOT,
    )
    .unwrap();
    assert_eq!(fs::metadata(s.p("u/g")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn private_xattrs_are_hidden_and_escaped() {
    if !privileged() {
        return;
    }
    let s = Stack::new();
    write(&s.p("l1/f"), "x");
    let ovl = s.mount();
    let ino = lookup_path(&ovl, "f").unwrap();
    ovl.setxattr(ino, OsStr::new("trusted.overlay.opaque"), b"y", 0)
        .unwrap();
    assert!(!opaque(&s.p("u/f")), "stored escaped, not as the real mark");
    let names = ovl.listxattr(ino, &Caller::ROOT).unwrap();
    assert!(names.iter().any(|n| n == "trusted.overlay.opaque"));
    assert_eq!(
        ovl.getxattr(ino, OsStr::new("trusted.overlay.opaque"))
            .unwrap(),
        b"y"
    );
    assert_eq!(
        ovl.removexattr(ino, OsStr::new("user.none")),
        Err(Errno::ENODATA)
    );
}

#[test]
fn uuid_modes() {
    if !privileged() {
        return;
    }
    let get = |p: &Path, name: &str| -> Option<Vec<u8>> {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        let mut buf = [0u8; 256];
        // SAFETY: valid C strings and buffer.
        let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), 256) };
        (r >= 0).then(|| buf[..r as usize].to_vec())
    };
    // auto on a fresh upper: a persistent random uuid, kept by the next mount.
    let s = Stack::new();
    write(&s.p("l1/f"), "x");
    let ovl = s.mount();
    let id = get(&s.p("u"), "trusted.overlay.uuid").expect("uuid written");
    assert_eq!(id.len(), 16);
    let f = lookup_path(&ovl, "f").unwrap();
    ovl.setattr(
        f,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        &Caller::ROOT,
    )
    .unwrap();
    drop(ovl);
    let ovl = s.mount();
    assert_eq!(get(&s.p("u"), "trusted.overlay.uuid"), Some(id));
    drop(ovl);
    // auto on an upper an older mount used (root impure, no uuid): null.
    let s = Stack::new();
    write(&s.p("l1/f"), "x");
    let ovl = s.mount_with(",uuid=null");
    let f = lookup_path(&ovl, "f").unwrap();
    ovl.setattr(
        f,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        &Caller::ROOT,
    )
    .unwrap();
    drop(ovl);
    assert_eq!(get(&s.p("u"), "trusted.overlay.uuid"), None);
    let origin = get(&s.p("u/f"), "trusted.overlay.origin").unwrap();
    assert_ne!(
        &origin[5..21],
        &[0u8; 16],
        "null mode keeps the lower filesystem's uuid"
    );
    let _ovl = s.mount();
    assert_eq!(
        get(&s.p("u"), "trusted.overlay.uuid"),
        None,
        "impure root: auto means null"
    );
    // off: origins carry a null uuid and still give stable inode numbers.
    let s = Stack::new();
    write(&s.p("l1/g"), "x");
    let ovl = s.mount_with(",uuid=off");
    let g = lookup_path(&ovl, "g").unwrap();
    let before = ovl.getattr(g).unwrap().st_ino;
    ovl.setattr(
        g,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        &Caller::ROOT,
    )
    .unwrap();
    drop(ovl);
    let origin = get(&s.p("u/g"), "trusted.overlay.origin").unwrap();
    assert_eq!(&origin[5..21], &[0u8; 16]);
    let ovl = s.mount_with(",uuid=off");
    let g = lookup_path(&ovl, "g").unwrap();
    assert_eq!(
        ovl.getattr(g).unwrap().st_ino,
        before,
        "the inode number survives the remount"
    );
    assert_eq!(
        fs::metadata(s.p("l1/g")).unwrap().ino(),
        before,
        "and is the lower file's"
    );
}
