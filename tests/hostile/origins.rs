//! Origins that are valid file handles but name the wrong object: a lower
//! directory for an upper file, another file of the same layer, a file of
//! another layer, a file outside every layer, an upper file. Real handles
//! are made by the kernel itself: a throwaway kernel overlay over the
//! object copies it up and its `origin` xattr is taken.

use super::super::common::{lxattr, mount_kernel, unmount};
use super::harness::*;
use std::path::Path;

/// The origin value the kernel writes for `rel` below lower root `root`.
fn kernel_origin(l: &Layers, root: &Path, rel: &str) -> Vec<u8> {
    let base = l.outside.join(".origin");
    let (u, w, m) = (base.join("u"), base.join("w"), base.join("m"));
    for d in [&u, &w, &m] {
        std::fs::create_dir_all(d).unwrap();
    }
    mount_kernel(&[root.to_path_buf()], Some(&u), Some(&w), &m, &[]).expect("throwaway overlay");
    // chmod copies the object up; the mode is put back on the copy only.
    let target = m.join(rel);
    let mode = std::fs::symlink_metadata(&target).unwrap().permissions();
    std::fs::set_permissions(&target, mode).unwrap();
    let v = lxattr(&u.join(rel), "trusted.overlay.origin").expect("origin written");
    unmount(&m).unwrap();
    std::fs::remove_dir_all(&base).unwrap();
    v
}

fn upper_with_origin(l: &Layers, name: &str, origin: &[u8]) {
    put(&l.upper, &[(name, "upper copy")]);
    l.ovl(&l.upper.join(name), "origin", origin);
    l.ovl(&l.upper, "impure", b"y");
}

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("origin naming a lower directory", 1, |l| {
            put(l.l(0), &[("f", "lower f"), ("d/x", "x")]);
            let o = kernel_origin(l, l.l(0), "d");
            upper_with_origin(l, "f", &o);
        })
        .probe(&["f"]),
        Case::new("origin naming another file of the layer", 1, |l| {
            put(l.l(0), &[("f", "lower f"), ("g", "lower g")]);
            let o = kernel_origin(l, l.l(0), "g");
            upper_with_origin(l, "f", &o);
        })
        .probe(&["f", "g"])
        .kernel_alias(&["g"]),
        Case::new("origin naming a file of another layer", 2, |l| {
            put(l.l(0), &[("f", "top f")]);
            put(l.l(1), &[("g", "bottom g")]);
            let o = kernel_origin(l, l.l(1), "g");
            upper_with_origin(l, "f", &o);
        })
        .probe(&["f", "g"])
        .kernel_alias(&["g"]),
        Case::new("origin naming a file outside every layer", 1, |l| {
            put(l.l(0), &[("f", "lower f")]);
            put(&l.outside, &[("src/x", "outside")]);
            let o = kernel_origin(l, &l.outside.join("src"), "x");
            upper_with_origin(l, "f", &o);
        })
        .probe(&["f"]),
        Case::new("origin naming an upper file", 1, |l| {
            put(l.l(0), &[("f", "lower f")]);
            put(&l.upper, &[("u", "upper u")]);
            let o = kernel_origin(l, &l.upper, "u");
            upper_with_origin(l, "f", &o);
        })
        .probe(&["f", "u"]),
        Case::new("origin on a pure upper file of a lower file", 1, |l| {
            put(l.l(0), &[("g", "lower g")]);
            let o = kernel_origin(l, l.l(0), "g");
            upper_with_origin(l, "new", &o);
        })
        .probe(&["new", "g"])
        .kernel_alias(&["g", "new"]),
    ]
}
