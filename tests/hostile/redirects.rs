//! Redirects: escaping, invalid, to non-directories and symlinks, loops,
//! cycles and chains across layers, long, binary garbage; on upper and lower
//! directories, in the bottom layer, and on metacopy files.

use super::harness::*;
use std::path::Path;

/// Redirect values of every shape the kernel parses differently.
pub fn values() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        &b"real"[..],
        b"/real",
        b"/a/b",
        b"..",
        b".",
        b"/..",
        b"/.",
        b"/../x",
        b"/../OUT",
        b"/../../../../../../../etc",
        b"/a/../real",
        b"/nonexist/../real",
        b"/a/./b",
        b"/a//b",
        b"/",
        b"//",
        b"",
        b"a/b",
        b"../OUT",
        b"/a/",
        b"//a",
        b"/a\0/../x",
        b"real\0/x",
        b"\0",
        b"/\0",
        b"..\0",
        b"nonexist",
        b"/real/f",
        b"real_file",
        b"lnk_out",
        b"/lnk_out",
        b"/lnk_out/x",
        b"/lnk_abs",
        b"lnk_dir",
        b"/lnk_dir/f",
        b"wh",
        b"/opq",
        b"/opq/inner",
        b"d",
        b"/d",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    // Binary garbage, seeded.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for len in [1usize, 2, 7, 64, 255, 300, 4096] {
        let mut g = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            g.push((x >> 24) as u8);
        }
        v.push(g);
    }
    v
}

/// What a redirect may aim at in a lower layer `l`.
fn targets(l: &Path, outside: &Path) {
    put(
        l,
        &[
            ("real/f", "real f"),
            ("a/b/f", "a b f"),
            ("real_file", "rfile!"),
            ("opq/inner/i", "under opaque"),
            ("opq/o", "opaque dir"),
            ("x/y", "x y"),
        ],
    );
    symlink(
        &format!("../{}", outside.file_name().unwrap().to_string_lossy()),
        &l.join("lnk_out"),
    );
    let _ = outside;
    symlink("/etc", &l.join("lnk_abs"));
    symlink("real", &l.join("lnk_dir"));
    whiteout(&l.join("wh"));
}

fn show(v: &[u8]) -> String {
    v.iter()
        .map(|&b| {
            if b.is_ascii_graphic() && b != b'\\' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .take(40)
        .collect()
}

/// Each value on an upper directory over one lower layer.
fn on_upper_dir(v: Vec<u8>) -> Case {
    Case::new(format!("upper dir -> {}", show(&v)), 1, move |l| {
        targets(l.l(0), &l.outside);
        put(l.l(0), &[("d/own", "d's own lower")]);
        put(&l.upper, &[("d/up", "upper file")]);
        l.ovl(&l.upper.join("d"), "redirect", &v);
    })
    .probe(&["d", "d/f", "d/b", "d/own"])
}

/// Each value on a directory of the middle of three lower layers.
fn on_lower_dir(v: Vec<u8>) -> Case {
    Case::new(format!("lower dir -> {}", show(&v)), 3, move |l| {
        put(l.l(0), &[("d/top", "top layer")]);
        put(l.l(1), &[("d/mid", "middle layer")]);
        l.ovl(&l.l(1).join("d"), "redirect", &v);
        targets(l.l(2), &l.outside);
        put(l.l(2), &[("d/bottom", "bottom's own d")]);
    })
    .probe(&["d", "d/f", "d/mid", "d/bottom"])
}

/// Each value on a directory of the bottom layer: the kernel never reads it.
fn on_bottom_dir(v: Vec<u8>) -> Case {
    Case::new(format!("bottom dir -> {}", show(&v)), 2, move |l| {
        put(l.l(0), &[("d/top", "top layer")]);
        targets(l.l(1), &l.outside);
        put(l.l(1), &[("d/bottom", "bottom")]);
        l.ovl(&l.l(1).join("d"), "redirect", &v);
    })
}

/// Each value on an upper metacopy file whose data should be `real/f`.
fn on_metacopy(v: Vec<u8>) -> Case {
    Case::new(format!("metacopy -> {}", show(&v)), 1, move |l| {
        targets(l.l(0), &l.outside);
        make_metacopy(l, &l.upper.join("m"), 6);
        l.ovl(&l.upper.join("m"), "redirect", &v);
    })
    .probe(&["m"])
    .kernel_alias(&["real/f", "real_file"])
}

/// An upper metacopy file: empty sparse data of `size` bytes, empty mark.
pub fn make_metacopy(l: &Layers, p: &Path, size: u64) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let f = std::fs::File::create(p).unwrap();
    f.set_len(size).unwrap();
    l.ovl(p, "metacopy", b"");
}

/// Loops and cycles: redirects that lead back to themselves or each other.
fn loops() -> Vec<Case> {
    vec![
        Case::new("self loop, relative, upper", 1, |l| {
            put(l.l(0), &[("d/f", "lower d")]);
            put(&l.upper, &[("d/", "")]);
            l.ovl(&l.upper.join("d"), "redirect", b"d");
        }),
        Case::new("self loop, absolute, every layer", 3, |l| {
            for i in 0..3 {
                put(l.l(i), &[(&format!("d/f{i}"), "x")]);
                l.ovl(&l.l(i).join("d"), "redirect", b"/d");
            }
            put(&l.upper, &[("d/", "")]);
            l.ovl(&l.upper.join("d"), "redirect", b"/d");
        }),
        Case::new("cycle a->b->a across layers", 4, |l| {
            for i in 0..4 {
                let (me, next) = if i % 2 == 0 { ("a", "/b") } else { ("b", "/a") };
                put(
                    l.l(i),
                    &[(&format!("{me}/f{i}"), "x"), (&format!("a/g{i}"), "y")],
                );
                l.ovl(&l.l(i).join(me), "redirect", next.as_bytes());
            }
            put(&l.upper, &[("a/", "")]);
            l.ovl(&l.upper.join("a"), "redirect", b"/b");
        }),
        Case::new("relative cycle x<->y in one directory", 3, |l| {
            for i in 0..3 {
                put(
                    l.l(i),
                    &[(&format!("p/x/x{i}"), "x"), (&format!("p/y/y{i}"), "y")],
                );
                l.ovl(&l.l(i).join("p/x"), "redirect", b"y");
                l.ovl(&l.l(i).join("p/y"), "redirect", b"x");
            }
        }),
        Case::new("redirect into its own subtree", 2, |l| {
            put(l.l(0), &[("d/sub/f", "x")]);
            l.ovl(&l.l(0).join("d/sub"), "redirect", b"/d/sub/sub");
            put(l.l(1), &[("d/sub/sub/g", "y")]);
            put(&l.upper, &[("d/", "")]);
            l.ovl(&l.upper.join("d"), "redirect", b"/d/sub");
        }),
    ]
}

/// A chain of `n` redirects, one per layer: d0 -> /d1 -> ... -> /dn.
fn chain(n: usize) -> Case {
    Case::new(format!("chain of {n} across layers"), n + 1, move |l| {
        for i in 0..=n {
            put(l.l(i), &[(&format!("d{i}/f{i}"), "link")]);
            if i < n {
                l.ovl(
                    &l.l(i).join(format!("d{i}")),
                    "redirect",
                    format!("/d{}", i + 1).as_bytes(),
                );
            }
        }
        put(&l.upper, &[("d0/", "")]);
        l.ovl(&l.upper.join("d0"), "redirect", b"/d1");
    })
    .probe(&["d0"])
}

/// Long redirects: just over the kernel's redirect_max, and up to 4096
/// bytes, to paths that exist and that do not.
fn long() -> Vec<Case> {
    let mut out = Vec::new();
    for (len, exists) in [
        (257usize, true),
        (257, false),
        (1000, true),
        (4095, true),
        (4096, false),
    ] {
        out.push(
            Case::new(
                format!("{len}-byte redirect, target exists: {exists}"),
                1,
                move |l| {
                    // Components of up to 200 bytes, so each is a valid name.
                    let mut comps = Vec::new();
                    let mut total = 0;
                    while total < len {
                        let c = (len - total - 1).min(200);
                        let c = c.max(1);
                        comps.push("n".repeat(c));
                        total += c + 1;
                    }
                    let path = comps.join("/");
                    if exists {
                        comps.push("deep".into());
                        mkdirs_at(l.l(0), &comps);
                    }
                    put(&l.upper, &[("d/", "")]);
                    l.ovl(
                        &l.upper.join("d"),
                        "redirect",
                        format!("/{path}").as_bytes(),
                    );
                },
            )
            .probe(&["d"]),
        );
    }
    out
}

/// Absolute redirects whose path crosses directories that are themselves
/// redirected, opaque, whited out or not directories in some layer.
fn through() -> Vec<Case> {
    let with_x = |l: &Layers, target: &[u8]| {
        put(&l.upper, &[("x/", "")]);
        l.ovl(&l.upper.join("x"), "redirect", target);
    };
    vec![
        Case::new("path through a lower dir renamed in place", 2, move |l| {
            put(l.l(0), &[("a/own", "a's own")]);
            l.ovl(&l.l(0).join("a"), "redirect", b"c");
            put(l.l(1), &[("c/b/f", "under c/b"), ("a/b/g", "under a/b")]);
            with_x(l, b"/a/b");
        })
        .probe(&["x", "x/f", "x/g"]),
        Case::new("path through a lower dir moved elsewhere", 3, move |l| {
            put(l.l(0), &[("a/b/top", "top")]);
            l.ovl(&l.l(0).join("a"), "redirect", b"/z/y");
            put(l.l(1), &[("z/y/b/mid", "mid"), ("a/b/no", "not shown")]);
            put(l.l(2), &[("z/y/b/bottom", "bottom")]);
            with_x(l, b"/a/b");
        })
        .probe(&["x"]),
        Case::new("path through an opaque lower dir", 2, move |l| {
            put(l.l(0), &[("a/b/f1", "top")]);
            l.ovl(&l.l(0).join("a"), "opaque", b"y");
            put(l.l(1), &[("a/b/f2", "hidden")]);
            with_x(l, b"/a/b");
        })
        .probe(&["x"]),
        Case::new("path through a whiteout", 2, move |l| {
            whiteout(&l.l(0).join("a"));
            put(l.l(1), &[("a/b/f", "hidden")]);
            with_x(l, b"/a/b");
        })
        .probe(&["x"]),
        Case::new("path through a file", 2, move |l| {
            put(l.l(0), &[("a", "a file")]);
            put(l.l(1), &[("a/b/f", "hidden")]);
            with_x(l, b"/a/b");
        })
        .probe(&["x"]),
        Case::new("path through a symlink", 2, move |l| {
            put(l.l(1), &[("real/b/f", "real")]);
            symlink("real", &l.l(0).join("a"));
            put(l.l(1), &[("a/b/g", "under a")]);
            with_x(l, b"/a/b");
        })
        .probe(&["x"]),
        Case::new(
            "opaque on the way, absolute redirect at the end",
            3,
            move |l| {
                put(l.l(0), &[("a/b/f0", "top")]);
                l.ovl(&l.l(0).join("a"), "opaque", b"y");
                l.ovl(&l.l(0).join("a/b"), "redirect", b"/q");
                put(l.l(1), &[("q/f1", "mid q")]);
                put(l.l(2), &[("q/f2", "bottom q")]);
                with_x(l, b"/a/b");
            },
        )
        .probe(&["x"]),
        Case::new("metacopy data through a renamed dir", 2, move |l| {
            put(l.l(0), &[("a/own", "own")]);
            l.ovl(&l.l(0).join("a"), "redirect", b"c");
            put(l.l(1), &[("c/data", "data 14 bytes!")]);
            make_metacopy(l, &l.upper.join("m"), 14);
            l.ovl(&l.upper.join("m"), "redirect", b"/a/data");
        })
        .probe(&["m"]),
    ]
}

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for v in values() {
        cases.push(on_upper_dir(v.clone()));
        cases.push(on_lower_dir(v.clone()));
        cases.push(on_bottom_dir(v.clone()));
        cases.push(on_metacopy(v));
    }
    cases.extend(loops());
    cases.extend(through());
    cases.push(chain(50));
    cases.extend(long());
    cases
}
