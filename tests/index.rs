//! index=on through real mounts: hard links of lower files survive copy-up,
//! across remounts and under the kernel overlay, and the mount-time checks
//! of the index refuse what the kernel refuses.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::tree::{SnapMode, diff, snapshot};
use common::{Scratch, mount_kernel, mount_ovlfs, require_root_and_fuse, unmount};

struct Stack {
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

impl Stack {
    fn new(s: &Scratch, name: &str) -> Stack {
        let d = s.subdir(name);
        let st = Stack {
            lower: d.join("l"),
            upper: d.join("u"),
            work: d.join("w"),
            mnt: d.join("m"),
        };
        for p in [&st.lower, &st.upper, &st.work, &st.mnt] {
            fs::create_dir_all(p).unwrap();
        }
        st
    }

    fn mount(&self, kernel: bool) -> Result<(), String> {
        let mount = if kernel { mount_kernel } else { mount_ovlfs };
        mount(
            std::slice::from_ref(&self.lower),
            Some(&self.upper),
            Some(&self.work),
            &self.mnt,
            &["index=on", "redirect_dir=on"],
        )
    }

    /// Mounted read-only: the index is only read (as the kernel reads it).
    fn mount_ro(&self, kernel: bool) -> Result<(), String> {
        let mount = if kernel { mount_kernel } else { mount_ovlfs };
        mount(
            std::slice::from_ref(&self.lower),
            Some(&self.upper),
            Some(&self.work),
            &self.mnt,
            &["ro", "index=on", "redirect_dir=on"],
        )
    }

    fn umount(&self) {
        unmount(&self.mnt).unwrap();
    }

    /// Index entries (not the kernel's `#` temporaries and shared whiteout).
    fn index_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.work.join("index"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('#'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// (content, st_ino, st_nlink) of each name.
fn view(m: &Path, names: &[&str]) -> Vec<(String, u64, u64)> {
    names
        .iter()
        .map(|n| {
            let p = m.join(n);
            let md = fs::metadata(&p).unwrap_or_else(|e| panic!("stat {n}: {e}"));
            (fs::read_to_string(&p).unwrap(), md.ino(), md.nlink())
        })
        .collect()
}

fn assert_one_file(what: &str, v: &[(String, u64, u64)], content: &str, nlink: u64) {
    for (i, (c, ino, n)) in v.iter().enumerate() {
        assert_eq!(c, content, "{what}: content of name {i}");
        assert_eq!(*ino, v[0].1, "{what}: st_ino of name {i}");
        assert_eq!(*n, nlink, "{what}: st_nlink of name {i}");
    }
}

#[test]
fn hard_links_survive_copy_up_remount_and_the_kernel() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let st = Stack::new(&s, "hl");
    fs::create_dir_all(st.lower.join("d/e")).unwrap();
    fs::write(st.lower.join("d/a"), "v1\n").unwrap();
    fs::hard_link(st.lower.join("d/a"), st.lower.join("d/e/b")).unwrap();
    fs::hard_link(st.lower.join("d/a"), st.lower.join("c")).unwrap();
    let names = ["d/a", "d/e/b", "c"];
    let lower_ino = fs::metadata(st.lower.join("c")).unwrap().ino();

    st.mount(false).unwrap();
    let v = view(&st.mnt, &names);
    assert_one_file("before copy-up", &v, "v1\n", 3);
    assert_eq!(v[0].1, lower_ino, "st_ino is the lower file's");
    // Copy-up through one name; every other name shows the new data.
    fs::OpenOptions::new()
        .append(true)
        .open(st.mnt.join("d/e/b"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"v2\n"))
        .unwrap();
    let v = view(&st.mnt, &names);
    assert_one_file("after copy-up through d/e/b", &v, "v1\nv2\n", 3);
    assert_eq!(v[0].1, lower_ino, "st_ino kept across copy-up");
    assert_eq!(st.index_entries().len(), 1, "one index entry");
    assert!(
        st.upper.join("d/e/b").exists(),
        "the name written through is linked up"
    );
    assert!(!st.upper.join("c").exists(), "the other names are not");
    // Lower layer untouched.
    assert_eq!(fs::read_to_string(st.lower.join("c")).unwrap(), "v1\n");
    st.umount();

    st.mount(false).unwrap();
    assert_one_file("ovlfs remount", &view(&st.mnt, &names), "v1\nv2\n", 3);
    st.umount();

    // Read-only, the names not linked up show the index copy too, as in the
    // kernel, and nothing in the layers changes.
    // (Only the upper: the kernel's read-only mount still tidies W.)
    let upper_before = snapshot(&st.upper, SnapMode::Layer);
    let mut seen = Vec::new();
    for kernel in [true, false] {
        st.mount_ro(kernel).unwrap();
        let v = view(&st.mnt, &names);
        assert_one_file(&format!("read-only (kernel: {kernel})"), &v, "v1\nv2\n", 3);
        seen.push((v, snapshot(&st.mnt, SnapMode::Merged)));
        st.umount();
    }
    assert_eq!(seen[0].0, seen[1].0, "read-only: the kernel's view");
    let d = diff(&seen[0].1, &seen[1].1, "kernel", "ovlfs");
    assert!(d.is_empty(), "read-only trees differ:\n{}", d.join("\n"));
    let d = diff(
        &upper_before,
        &snapshot(&st.upper, SnapMode::Layer),
        "before",
        "after",
    );
    assert!(
        d.is_empty(),
        "a read-only mount changed the upper:\n{}",
        d.join("\n")
    );

    // The kernel reads the same layers alike, and writes through another name.
    st.mount(true).unwrap();
    let v = view(&st.mnt, &names);
    assert_one_file("kernel on ovlfs's layers", &v, "v1\nv2\n", 3);
    assert_eq!(v[0].1, lower_ino, "the kernel shows the same st_ino");
    fs::write(st.mnt.join("c"), "k\n").unwrap();
    st.umount();

    st.mount(false).unwrap();
    assert_one_file(
        "ovlfs after the kernel wrote",
        &view(&st.mnt, &names),
        "k\n",
        3,
    );
    // Links and unlinks keep the union count; the last name takes the entry along.
    fs::hard_link(st.mnt.join("d/a"), st.mnt.join("d/n")).unwrap();
    let names4 = ["d/a", "d/e/b", "c", "d/n"];
    assert_one_file("after link", &view(&st.mnt, &names4), "k\n", 4);
    fs::remove_file(st.mnt.join("d/a")).unwrap();
    fs::remove_file(st.mnt.join("c")).unwrap();
    assert_one_file(
        "after two unlinks",
        &view(&st.mnt, &["d/e/b", "d/n"]),
        "k\n",
        2,
    );
    st.umount();
    st.mount(true).unwrap();
    assert_one_file(
        "kernel after unlinks",
        &view(&st.mnt, &["d/e/b", "d/n"]),
        "k\n",
        2,
    );
    st.umount();
    st.mount(false).unwrap();
    fs::remove_file(st.mnt.join("d/e/b")).unwrap();
    assert_eq!(
        st.index_entries().len(),
        1,
        "one name left: the entry stays"
    );
    fs::remove_file(st.mnt.join("d/n")).unwrap();
    assert!(
        st.index_entries().is_empty(),
        "no name left: the entry is gone: {:?}",
        st.index_entries()
    );
    assert!(!st.mnt.join("c").exists() && !st.mnt.join("d/a").exists());
    st.umount();
}

#[test]
fn the_index_is_checked_at_mount_as_the_kernel_does() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let st = Stack::new(&s, "chk");
    fs::write(st.lower.join("f"), "x").unwrap();
    fs::hard_link(st.lower.join("f"), st.lower.join("g")).unwrap();
    st.mount(false).unwrap();
    fs::write(st.mnt.join("f"), "y").unwrap();
    st.umount();
    let index = st.work.join("index");

    // Leftovers of an interrupted copy-up go, and so does a stale entry (one
    // whose origin is not the handle its name says).
    fs::write(index.join("#1f"), "tmp").unwrap();
    let entry = st.index_entries()[0].clone();
    // The same handle with one byte of the inode number changed.
    let b = u8::from_str_radix(&entry[42..44], 16).unwrap() ^ 1;
    let stale = format!("{}{b:02x}{}", &entry[..42], &entry[44..]);
    assert_ne!(stale, entry);
    fs::write(index.join(&stale), "stale").unwrap();
    let c = common::cstr(&index.join(&stale));
    let name = std::ffi::CString::new("trusted.overlay.origin").unwrap();
    let v = entry.as_bytes();
    let bytes: Vec<u8> = (0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(std::str::from_utf8(&v[i..i + 2]).unwrap(), 16).unwrap())
        .collect();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            name.as_ptr(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
        )
    };
    assert_eq!(r, 0);
    st.mount(false).unwrap();
    assert_eq!(fs::read_to_string(st.mnt.join("g")).unwrap(), "y");
    st.umount();
    assert_eq!(
        st.index_entries(),
        vec![entry.clone()],
        "stale entry removed"
    );
    assert!(!index.join("#1f").exists(), "leftover removed");

    // A name that is not a file handle: refused, naming the entry, as the kernel.
    fs::write(index.join("garbage"), "").unwrap();
    let e = st.mount(false).unwrap_err();
    assert!(e.contains("garbage"), "error names the entry: {e}");
    assert!(st.mount(true).is_err(), "the kernel refuses it too");
    fs::remove_file(index.join("garbage")).unwrap();

    // Another lower stack under the same upper: refused, as the kernel.
    let other = s.subdir("chk/other");
    let e = mount_ovlfs(
        std::slice::from_ref(&other),
        Some(&st.upper),
        Some(&st.work),
        &st.mnt,
        &["index=on"],
    )
    .unwrap_err();
    assert!(e.contains("origin"), "error says why: {e}");
    assert!(
        mount_kernel(
            std::slice::from_ref(&other),
            Some(&st.upper),
            Some(&st.work),
            &st.mnt,
            &["index=on"],
        )
        .is_err(),
        "the kernel refuses it too"
    );
    // With index=off the same stack mounts.
    mount_ovlfs(
        std::slice::from_ref(&other),
        Some(&st.upper),
        Some(&st.work),
        &st.mnt,
        &["index=off"],
    )
    .unwrap();
    st.umount();
    st.mount(false).unwrap();
    assert_eq!(fs::read_to_string(st.mnt.join("f")).unwrap(), "y");
    st.umount();
}

fn tool(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::ovlfs_bin())
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// diff, commit and export follow index=on hard links given the workdir: the
/// names not linked up show the index copy, so they changed too, and the
/// layers written show what the mount showed, links included.
#[test]
fn tools_follow_index_hard_links_with_the_workdir() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let st = Stack::new(&s, "tools");
    fs::create_dir_all(st.lower.join("d/e")).unwrap();
    fs::write(st.lower.join("d/a"), "v1\n").unwrap();
    fs::hard_link(st.lower.join("d/a"), st.lower.join("d/e/b")).unwrap();
    fs::hard_link(st.lower.join("d/a"), st.lower.join("c")).unwrap();
    fs::write(st.lower.join("x"), "x\n").unwrap();
    st.mount(true).unwrap();
    fs::write(st.mnt.join("d/e/b"), "v2\n").unwrap();
    fs::remove_file(st.mnt.join("c")).unwrap();
    fs::write(st.mnt.join("x"), "x2\n").unwrap();
    let before = snapshot(&st.mnt, SnapMode::Merged);
    st.umount();
    assert!(!st.upper.join("d/a").exists(), "d/a is not linked up");

    let (u, w, l) = (
        st.upper.to_str().unwrap(),
        st.work.to_str().unwrap(),
        st.lower.to_str().unwrap(),
    );
    let (ok, _, err) = tool(&["diff", "--upper", u, "--lower", l]);
    assert!(
        !ok && err.contains("--workdir"),
        "without the workdir: {err}"
    );
    let (ok, out, err) = tool(&["diff", "--upper", u, "--workdir", w, "--lower", l]);
    assert!(ok, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["C /d", "C /d/a", "C /d/e", "C /d/e/b", "C /x", "D /c"],
        "{out}"
    );

    let d = s.subdir("out");
    let new = d.join("new");
    let (ok, _, err) = tool(&[
        "commit",
        "--upper",
        u,
        "--workdir",
        w,
        "--lower",
        l,
        "--into",
        new.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let tar = d.join("layer.tar");
    let (ok, _, err) = tool(&[
        "export",
        "--upper",
        u,
        "--workdir",
        w,
        "--lower",
        l,
        "-o",
        tar.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let applied = d.join("applied");
    let (ok, _, err) = tool(&["apply", tar.to_str().unwrap(), applied.to_str().unwrap()]);
    assert!(ok, "{err}");
    for (what, layer) in [("commit", &new), ("export", &applied)] {
        let m = d.join(format!("m-{what}"));
        fs::create_dir_all(&m).unwrap();
        mount_kernel(&[layer.clone(), st.lower.clone()], None, None, &m, &[]).unwrap();
        let after = snapshot(&m, SnapMode::Merged);
        unmount(&m).unwrap();
        let dd = diff(&before, &after, "index=on mount", what);
        assert!(
            dd.is_empty(),
            "{what}: the view differs:\n{}",
            dd.join("\n")
        );
    }
}
