//! Metacopy files: bad mark sizes, versions and digests, missing or odd
//! data, marks on what is not a regular file, redirects on plain files.

use super::harness::*;
use super::redirects::make_metacopy;

/// Mark values of every size class the kernel checks.
fn marks() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("1 byte".into(), vec![0]),
        ("3 bytes".into(), vec![0, 3, 0]),
        ("header only".into(), vec![0, 4, 0, 0]),
        ("version 1".into(), vec![1, 4, 0, 0]),
        ("version 255".into(), vec![255, 4, 0, 0]),
        ("length field wrong".into(), vec![0, 40, 0, 1, 9, 9]),
        ("algo without digest".into(), vec![0, 4, 0, 1]),
        ("flags set".into(), vec![0, 4, 0xff, 0]),
    ];
    let mut sha = vec![0, 36, 0, 1];
    sha.extend_from_slice(&[0xab; 32]);
    v.push(("sha256 digest (wrong)".into(), sha));
    let mut max = vec![0, 68, 0, 2];
    max.extend_from_slice(&[0xcd; 64]);
    v.push(("68 bytes".into(), max));
    v.push(("69 bytes".into(), vec![0x5a; 69]));
    v.push(("4096 bytes".into(), vec![0x11; 4096]));
    v.push(("64 KiB".into(), vec![0x22; 65536]));
    v
}

fn with_mark(name: String, mark: Vec<u8>) -> Case {
    Case::new(format!("upper mark: {name}"), 1, move |l| {
        put(l.l(0), &[("f", "lower data"), ("g", "lower g")]);
        make_metacopy(l, &l.upper.join("f"), 10);
        l.ovl(&l.upper.join("f"), "metacopy", &mark);
        put(l.l(0), &[("d/x", "x")]);
        put(&l.upper, &[("d/", "")]);
        // The same mark on a directory and on a lower file.
        l.ovl(&l.upper.join("d"), "metacopy", &mark);
        l.ovl(&l.l(0).join("g"), "metacopy", &mark);
    })
    .probe(&["f", "g", "d"])
}

fn data_shapes() -> Vec<Case> {
    vec![
        Case::new("data missing in every layer", 2, |l| {
            put(l.l(1), &[("other", "x")]);
            make_metacopy(l, &l.upper.join("m"), 4);
        })
        .probe(&["m"]),
        Case::new("data below is a directory", 1, |l| {
            put(l.l(0), &[("m/inner", "x")]);
            make_metacopy(l, &l.upper.join("m"), 4);
        })
        .probe(&["m"]),
        Case::new("data below is a symlink", 1, |l| {
            put(l.l(0), &[("target", "data")]);
            symlink("target", &l.l(0).join("m"));
            make_metacopy(l, &l.upper.join("m"), 4);
        })
        .probe(&["m"]),
        Case::new("data below is whited out", 2, |l| {
            whiteout(&l.l(0).join("m"));
            put(l.l(1), &[("m", "data")]);
            make_metacopy(l, &l.upper.join("m"), 4);
        })
        .probe(&["m"]),
        Case::new("data below is a fifo", 1, |l| {
            mknod(&l.l(0).join("m"), libc::S_IFIFO | 0o644, 0, 0);
            make_metacopy(l, &l.upper.join("m"), 0);
        })
        .probe(&["m"]),
        Case::new("chain of lower metacopy files", 4, |l| {
            for i in 0..3 {
                let p = l.l(i).join("m");
                std::fs::File::create(&p).unwrap().set_len(4).unwrap();
                l.ovl(&p, "metacopy", b"");
            }
            put(l.l(3), &[("m", "data")]);
        })
        .probe(&["m"]),
        Case::new("lower metacopy with no data", 2, |l| {
            let p = l.l(0).join("m");
            std::fs::File::create(&p).unwrap().set_len(4).unwrap();
            l.ovl(&p, "metacopy", b"");
        })
        .probe(&["m"]),
        Case::new("lower metacopy redirecting upward", 3, |l| {
            put(l.l(0), &[("top", "in the top layer")]);
            let p = l.l(1).join("m");
            std::fs::File::create(&p).unwrap().set_len(16).unwrap();
            l.ovl(&p, "metacopy", b"");
            l.ovl(&p, "redirect", b"/top");
            put(l.l(2), &[("m", "bottom data 16 b")]);
        })
        .probe(&["m"]),
        Case::new("redirect on a plain upper file", 1, |l| {
            put(l.l(0), &[("f", "lower f"), ("other", "other")]);
            put(&l.upper, &[("f", "upper f")]);
            l.ovl(&l.upper.join("f"), "redirect", b"/other");
        })
        .probe(&["f"]),
        Case::new("redirect on a plain lower file", 2, |l| {
            put(l.l(0), &[("f", "top f")]);
            put(l.l(1), &[("f", "bottom f"), ("other", "other")]);
            l.ovl(&l.l(0).join("f"), "redirect", b"other");
        })
        .probe(&["f"]),
        Case::new("metacopy mark on a symlink", 1, |l| {
            put(l.l(0), &[("t", "x")]);
            symlink("t", &l.upper.join("s"));
            set_lxattr(&l.upper.join("s"), &format!("{}metacopy", l.prefix), b"");
        })
        .probe(&["s"]),
    ]
}

/// lsetxattr where the namespace allows it (user.* is refused on symlinks).
fn set_lxattr(p: &std::path::Path, name: &str, v: &[u8]) {
    let c = super::super::common::cstr(p);
    let n = std::ffi::CString::new(name).unwrap();
    unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
}

/// Data-only layers (`lowerdir=L1[:L2]::D`): reached by absolute redirects
/// of metacopy files; from the bottom layer's even without metacopy=on.
fn data_only() -> Vec<Case> {
    use std::path::PathBuf;
    let lower_meta = |l: &Layers, layer: usize, name: &str, size: u64, redirect: Option<&[u8]>| {
        let p = l.l(layer).join(name);
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        l.ovl(&p, "metacopy", b"");
        if let Some(r) = redirect {
            l.ovl(&p, "redirect", r);
        }
    };
    // The last layer given is the data-only one.
    let with_data = |l: &Layers| {
        let n = l.lowers.len();
        let mut v: Vec<PathBuf> = l.lowers[..n - 1].to_vec();
        v.push(PathBuf::new());
        v.push(l.lowers[n - 1].clone());
        v
    };
    vec![
        Case::new(
            "bottom lower metacopy into a data-only layer",
            2,
            move |l| {
                put(l.l(1), &[("blob", "data only!")]);
                lower_meta(l, 0, "f", 10, Some(b"/blob"));
                lower_meta(l, 0, "g", 10, None);
                lower_meta(l, 0, "h", 10, Some(b"/missing"));
            },
        )
        .lowerdirs(with_data)
        .probe(&["f", "g", "h"]),
        Case::new(
            "middle lower metacopy into a data-only layer",
            3,
            move |l| {
                put(l.l(1), &[("other", "x")]);
                put(l.l(2), &[("blob", "data only!")]);
                lower_meta(l, 0, "f", 10, Some(b"/blob"));
            },
        )
        .lowerdirs(with_data)
        .probe(&["f"]),
        Case::new("upper metacopy into a data-only layer", 2, move |l| {
            put(l.l(1), &[("blob", "data only!")]);
            put(l.l(0), &[("x", "x")]);
            make_metacopy(l, &l.upper.join("f"), 10);
            l.ovl(&l.upper.join("f"), "redirect", b"/blob");
        })
        .lowerdirs(with_data)
        .probe(&["f"]),
    ]
}

pub fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = marks().into_iter().map(|(n, m)| with_mark(n, m)).collect();
    v.extend(data_shapes());
    v.extend(data_only());
    v
}
