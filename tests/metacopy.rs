//! metacopy=on and data-only layers through real mounts, against the kernel.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{Scratch, mount_kernel, mount_ovlfs, require_root_and_fuse, unmount};

fn blocks_under(root: &Path) -> (u64, usize) {
    let (mut blocks, mut files) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                blocks += md.blocks();
                files += 1;
            }
        }
    }
    (blocks, files)
}

/// 20,000 files: more than this machine's open-file hard limit, which the
/// daemon must not need one fd per inode for.
const FILES: usize = 20_000;

#[test]
fn chown_r_over_a_lower_tree_moves_no_data() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let d = s.subdir("big");
    let (l, u, w, m) = (d.join("l"), d.join("u"), d.join("w"), d.join("m"));
    for p in [&u, &w, &m] {
        fs::create_dir_all(p).unwrap();
    }
    let block = vec![b'x'; 4096];
    for i in 0..FILES / 100 {
        let dir = l.join(format!("d{i}"));
        fs::create_dir_all(&dir).unwrap();
        for j in 0..100 {
            fs::write(dir.join(format!("f{j}")), &block).unwrap();
        }
    }
    let (lower_blocks, n) = blocks_under(&l);
    assert_eq!(n, FILES);
    mount_ovlfs(
        std::slice::from_ref(&l),
        Some(&u),
        Some(&w),
        &m,
        &["metacopy=on"],
    )
    .unwrap();
    let st = std::process::Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(&m)
        .status()
        .unwrap();
    assert!(st.success());
    let (upper_blocks, copied) = blocks_under(&u);
    eprintln!(
        "chown -R over {n} lower files: lower data {} KiB, upper data after {} KiB ({copied} files copied up)",
        lower_blocks / 2,
        upper_blocks / 2
    );
    assert_eq!(copied, FILES, "every file was copied up (metadata)");
    assert_eq!(upper_blocks, 0, "no data block moved");
    let md = fs::metadata(m.join("d7/f7")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.len()), (1000, 1000, 4096));
    assert_eq!(
        md.blocks(),
        fs::metadata(l.join("d7/f7")).unwrap().blocks(),
        "st_blocks of the data"
    );
    assert_eq!(
        fs::read(m.join("d7/f7")).unwrap(),
        block,
        "reads come from the lower data"
    );
    assert_eq!(
        common::lxattr(&u.join("d7/f7"), "trusted.overlay.metacopy").as_deref(),
        Some(&b""[..])
    );
    // The first write brings the data up and drops the mark.
    fs::OpenOptions::new()
        .append(true)
        .open(m.join("d7/f7"))
        .unwrap();
    std::io::Write::write_all(
        &mut fs::OpenOptions::new()
            .append(true)
            .open(m.join("d7/f7"))
            .unwrap(),
        b"!",
    )
    .unwrap();
    assert_eq!(fs::read(u.join("d7/f7")).unwrap().len(), 4097);
    assert_eq!(
        common::lxattr(&u.join("d7/f7"), "trusted.overlay.metacopy"),
        None
    );
    unmount(&m).unwrap();
    // The kernel with metacopy=on reads these layers the same.
    mount_kernel(
        std::slice::from_ref(&l),
        Some(&u),
        Some(&w),
        &m,
        &["metacopy=on"],
    )
    .unwrap();
    assert_eq!(fs::read(m.join("d3/f9")).unwrap(), block);
    assert_eq!(fs::metadata(m.join("d3/f9")).unwrap().uid(), 1000);
    assert_eq!(fs::read(m.join("d7/f7")).unwrap().len(), 4097);
    unmount(&m).unwrap();
}

#[test]
fn data_only_layers_are_reached_through_redirects_alone() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let d = s.subdir("dataonly");
    let (meta, data, u, w, m) = (
        d.join("meta"),
        d.join("data"),
        d.join("u"),
        d.join("w"),
        d.join("m"),
    );
    for p in [&meta, &data, &u, &w, &m] {
        fs::create_dir_all(p).unwrap();
    }
    // A metadata layer (as composefs-style images build): metacopy files whose
    // absolute redirects point into a data-only layer.
    fs::create_dir_all(data.join("objects/ab")).unwrap();
    fs::write(data.join("objects/ab/cdef"), b"the real content").unwrap();
    fs::write(data.join("unreferenced"), b"never listed").unwrap();
    let f = meta.join("file");
    fs::File::create(&f).unwrap().set_len(16).unwrap();
    common::set_xattr(&f, "trusted.overlay.metacopy", b"");
    common::set_xattr(&f, "trusted.overlay.redirect", b"/objects/ab/cdef");
    let g = meta.join("missing");
    fs::File::create(&g).unwrap().set_len(3).unwrap();
    common::set_xattr(&g, "trusted.overlay.metacopy", b"");
    common::set_xattr(&g, "trusted.overlay.redirect", b"/objects/zz/none");
    let lowers: Vec<PathBuf> = vec![meta.clone()];
    let lowerdir = format!("{}::{}", meta.display(), data.display());
    let mut seen = Vec::new();
    for kernel in [false, true] {
        let opts = [format!("lowerdir={lowerdir}"), "metacopy=on".into()];
        let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
        // lowerdir is given through the extra options so `::` reaches the mount.
        if kernel {
            mount_kernel(&[], Some(&u), Some(&w), &m, &opts).unwrap();
        } else {
            mount_ovlfs(&[], Some(&u), Some(&w), &m, &opts).unwrap();
        }
        let mut names: Vec<_> = fs::read_dir(&m)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        let content = fs::read(m.join("file")).unwrap();
        let missing = fs::read(m.join("missing")).map_err(|e| e.raw_os_error());
        let size = fs::metadata(m.join("missing")).map(|md| md.len()).ok();
        seen.push((names, content, missing, size));
        unmount(&m).unwrap();
        let _ = &lowers;
    }
    assert_eq!(seen[0], seen[1], "ovlfs and the kernel agree");
    assert_eq!(seen[0].1, b"the real content");
    assert_eq!(
        seen[0].2,
        Err(Some(libc::ENOENT)),
        "missing data: open fails ENOENT"
    );
}

/// verity=: digests are checked where recorded, required with `require`.
/// This kernel has no fs-verity, so no digest can be measured: a recorded one
/// fails the open (EIO), and verity=require copies data up instead of
/// metadata only; ovlfs and the kernel must agree on all of it.
#[test]
fn verity_modes_agree_with_the_kernel() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    let d = s.subdir("verity");
    let (l, u, w, m) = (d.join("l"), d.join("u"), d.join("w"), d.join("m"));
    for p in [&l, &u, &w, &m] {
        fs::create_dir_all(p).unwrap();
    }
    for n in ["plain", "digest", "copied"] {
        fs::write(l.join(n), format!("data of {n}")).unwrap();
    }
    let ls = std::slice::from_ref(&l);
    // Two metacopy files, one then given a (fake sha256) digest.
    mount_ovlfs(ls, Some(&u), Some(&w), &m, &["metacopy=on"]).unwrap();
    for n in ["plain", "digest"] {
        std::os::unix::fs::lchown(m.join(n), Some(7), Some(7)).unwrap();
    }
    unmount(&m).unwrap();
    let mut digest = vec![0u8, 36, 0, 1];
    digest.extend_from_slice(&[0xab; 32]);
    common::set_xattr(&u.join("digest"), "trusted.overlay.metacopy", &digest);

    let mut seen = Vec::new();
    for kernel in [false, true] {
        let mount = if kernel { mount_kernel } else { mount_ovlfs };
        let mut got = Vec::new();
        for verity in ["verity=off", "verity=on", "verity=require"] {
            mount(ls, Some(&u), Some(&w), &m, &["metacopy=on", verity]).unwrap();
            for n in ["plain", "digest"] {
                let read = fs::read_to_string(m.join(n)).map_err(|e| e.raw_os_error());
                let owner = fs::metadata(m.join(n)).map(|md| md.uid()).ok();
                got.push((verity, n, read, owner));
            }
            unmount(&m).unwrap();
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "ovlfs and the kernel agree");
    let expect_eio = [
        ("verity=on", "digest"),
        ("verity=require", "plain"),
        ("verity=require", "digest"),
    ];
    for (verity, n, read, owner) in &seen[0] {
        assert_eq!(*owner, Some(7), "{verity} {n}: stat works");
        if expect_eio.contains(&(*verity, *n)) {
            assert_eq!(*read, Err(Some(libc::EIO)), "{verity} {n}");
        } else {
            assert_eq!(*read, Ok(format!("data of {n}")), "{verity} {n}");
        }
    }

    // verity=require with nothing to record: chown copies the data up.
    for kernel in [false, true] {
        let (u2, w2) = (d.join(format!("u{kernel}")), d.join(format!("w{kernel}")));
        fs::create_dir_all(&u2).unwrap();
        fs::create_dir_all(&w2).unwrap();
        let mount = if kernel { mount_kernel } else { mount_ovlfs };
        mount(
            ls,
            Some(&u2),
            Some(&w2),
            &m,
            &["metacopy=on", "verity=require"],
        )
        .unwrap();
        std::os::unix::fs::lchown(m.join("copied"), Some(7), None).unwrap();
        unmount(&m).unwrap();
        assert_eq!(
            fs::read_to_string(u2.join("copied")).unwrap(),
            "data of copied",
            "kernel={kernel}: data in the upper"
        );
        let x = common::cstr(&u2.join("copied"));
        let name = std::ffi::CString::new("trusted.overlay.metacopy").unwrap();
        // SAFETY: valid C strings; a null buffer asks for the size only.
        let r = unsafe { libc::lgetxattr(x.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        assert_eq!(r, -1, "kernel={kernel}: no metacopy mark");
    }
}
