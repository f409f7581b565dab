//! 5. Layers changed under a live mount.

use super::support::*;
use super::tree::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

// ============================================================================
// 5. Layers changed under a live mount
// ============================================================================

type Op = Box<dyn FnOnce() -> String + Send>;

fn op(f: impl FnOnce() -> String + Send + 'static) -> Op {
    Box::new(f)
}

#[test]
fn layers_changed_under_the_mount() {
    if !usable("layers_changed_under_the_mount", false) {
        return;
    }
    let s = Scratch::new("changed");
    let l1 = s.dir("l1");
    for (p, c) in [
        ("a/f1", "lower a/f1"),
        ("a/f2", "lower a/f2"),
        ("a/f3", "lower a/f3"),
        ("dirA/x", "lower dirA/x"),
        ("dirA/y", "lower dirA/y"),
        ("keep/k", "lower keep/k"),
        ("sub/lowz", "lower sub/lowz"),
    ] {
        write_file(&l1.join(p), c.as_bytes());
    }
    let st = Stack::new(&s.path.join("ovl"), vec![l1.clone()]);
    let (u, m) = (st.upper.clone(), st.mnt.clone());
    for (p, c) in [
        ("u/p", "upper u/p"),
        ("u/q", "upper u/q"),
        ("sub/deep/z", "upper sub/deep/z"),
        ("up_only", "upper only"),
    ] {
        write_file(&u.join(p), c.as_bytes());
    }
    let pid = st.mount();
    // Warm the kernel's and the daemon's caches, hold some objects open.
    snapshot(&m).expect("initial snapshot");
    let held_read = Arc::new(fs::File::open(m.join("a/f1")).unwrap());
    let held_write = Arc::new(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.join("u/p"))
            .unwrap(),
    );
    let held_dir = Arc::new(fs::File::open(m.join("dirA")).unwrap());
    let held_sub = Arc::new(fs::File::open(m.join("sub/deep")).unwrap());

    // Change the layers directly.
    fs::remove_file(l1.join("a/f1")).unwrap();
    fs::write(l1.join("a/f1"), b"re-created lower a/f1").unwrap();
    fs::remove_file(l1.join("a/f2")).unwrap();
    fs::write(l1.join("a/new_lower"), b"appeared").unwrap();
    fs::rename(l1.join("dirA"), l1.join("dirA2")).unwrap();
    fs::remove_file(u.join("u/p")).unwrap();
    fs::create_dir(u.join("u/p")).unwrap();
    fs::remove_file(u.join("u/q")).unwrap();
    fs::write(u.join("u/q"), b"re-created upper u/q").unwrap();
    fs::remove_dir_all(u.join("sub")).unwrap();

    let mp = |r: &str| m.join(r);
    let append = |p: PathBuf| -> Op {
        Box::new(move || {
            io_res(
                fs::OpenOptions::new()
                    .append(true)
                    .open(p)
                    .and_then(|mut f| f.write_all(b"more")),
            )
        })
    };
    let (hr, hw, hd, hs) = (
        held_read.clone(),
        held_write.clone(),
        held_dir.clone(),
        held_sub.clone(),
    );
    let ops: Vec<(&str, Op)> = vec![
        (
            "stat a/f1",
            op({
                let p = mp("a/f1");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "read a/f1",
            op({
                let p = mp("a/f1");
                move || io_res(fs::read(p))
            }),
        ),
        (
            "read held a/f1",
            op(move || {
                let mut b = vec![0u8; 64];
                io_res(hr.read_at(&mut b, 0))
            }),
        ),
        (
            "stat a/f2",
            op({
                let p = mp("a/f2");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "read a/f2",
            op({
                let p = mp("a/f2");
                move || io_res(fs::read(p))
            }),
        ),
        ("append a/f2", append(mp("a/f2"))),
        (
            "ls a",
            op({
                let p = mp("a");
                move || io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "read a/new_lower",
            op({
                let p = mp("a/new_lower");
                move || io_res(fs::read(p))
            }),
        ),
        (
            "stat dirA",
            op({
                let p = mp("dirA");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "ls dirA",
            op({
                let p = mp("dirA");
                move || io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "ls held dirA",
            op(move || {
                let p = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&*hd)
                ));
                io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "read dirA/x",
            op({
                let p = mp("dirA/x");
                move || io_res(fs::read(p))
            }),
        ),
        ("append dirA/x", append(mp("dirA/x"))),
        (
            "create dirA/n",
            op({
                let p = mp("dirA/n");
                move || io_res(fs::write(p, b"n"))
            }),
        ),
        (
            "ls dirA2",
            op({
                let p = mp("dirA2");
                move || io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "rmdir dirA",
            op({
                let p = mp("dirA");
                move || io_res(fs::remove_dir(p))
            }),
        ),
        (
            "stat u/p",
            op({
                let p = mp("u/p");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "write held u/p",
            op(move || io_res(hw.write_all_at(b"held write", 0))),
        ),
        (
            "read held u/p",
            op(move || {
                let mut b = vec![0u8; 64];
                io_res(held_write.read_at(&mut b, 0))
            }),
        ),
        (
            "unlink u/p",
            op({
                let p = mp("u/p");
                move || io_res(fs::remove_file(p))
            }),
        ),
        (
            "rmdir u/p",
            op({
                let p = mp("u/p");
                move || io_res(fs::remove_dir(p))
            }),
        ),
        (
            "read u/q",
            op({
                let p = mp("u/q");
                move || io_res(fs::read(p))
            }),
        ),
        ("append u/q", append(mp("u/q"))),
        (
            "ls sub",
            op({
                let p = mp("sub");
                move || io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "stat sub/deep/z",
            op({
                let p = mp("sub/deep/z");
                move || io_res(fs::metadata(p))
            }),
        ),
        (
            "read sub/deep/z",
            op({
                let p = mp("sub/deep/z");
                move || io_res(fs::read(p))
            }),
        ),
        (
            "create sub/deep/new",
            op({
                let p = mp("sub/deep/new");
                move || io_res(fs::write(p, b"x"))
            }),
        ),
        (
            "ls held sub/deep",
            op(move || {
                let p = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&*hs)
                ));
                io_res(fs::read_dir(p).map(|r| r.count()))
            }),
        ),
        (
            "unlink sub/deep/z",
            op({
                let p = mp("sub/deep/z");
                move || io_res(fs::remove_file(p))
            }),
        ),
        (
            "mkdir sub/nd",
            op({
                let p = mp("sub/nd");
                move || io_res(fs::create_dir(p))
            }),
        ),
        ("append sub/lowz", append(mp("sub/lowz"))),
        (
            "rename a/f3 a/f3b",
            op({
                let (a, b) = (mp("a/f3"), mp("a/f3b"));
                move || io_res(fs::rename(a, b))
            }),
        ),
        (
            "unlink a/f1",
            op({
                let p = mp("a/f1");
                move || io_res(fs::remove_file(p))
            }),
        ),
        (
            "snapshot",
            op({
                let p = m.clone();
                move || match snapshot(&p) {
                    Ok(t) => format!("OK ({} entries)", t.len()),
                    Err(e) => e,
                }
            }),
        ),
    ];
    let mut results = Vec::new();
    for (name, op) in ops {
        let r = timed(name, 20, op);
        assert!(alive(pid), "the daemon died during `{name}` (result {r})");
        results.push(format!("{name}: {r}"));
    }
    ls_lar_ok(&m, &s.path.join("ls.log"), "after the layer changes");
    eprintln!(
        "layers changed under the mount:\n  {}",
        results.join("\n  ")
    );
    drop((held_read, held_dir, held_sub));
    st.umount(pid);

    // A fresh mount shows exactly what the layers now hold, and works.
    let pid = st.mount();
    assert!(st.work_entries().is_empty(), "W/work not emptied at mount");
    ls_lar_ok(&m, &s.path.join("ls2.log"), "after remount");
    let got = snapshot(&m).unwrap_or_else(|e| panic!("after remount: {e}"));
    let want = expected_merge(&u, std::slice::from_ref(&l1));
    let d = tree_diff("mount", &got, "layers", &want);
    assert!(
        d.is_empty(),
        "after remount the mount does not show the layers:\n  {}",
        d.join("\n  ")
    );
    fs::write(m.join("a/after"), b"after remount").unwrap();
    assert_eq!(fs::read(m.join("a/after")).unwrap(), b"after remount");
    fs::write(m.join("keep/k"), b"rewritten").unwrap();
    assert_eq!(fs::read(m.join("keep/k")).unwrap(), b"rewritten");
    st.umount(pid);
    assert_eq!(fs::read(u.join("keep/k")).unwrap(), b"rewritten");
}
