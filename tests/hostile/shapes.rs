//! Layer shapes: lowerdirs that are symlinks, symlink loops inside layers,
//! very deep and very wide directories, many lowers, 64 KiB overlay xattrs;
//! and the workdir and index: garbage in them, `work/` or `index/` as a
//! symlink, index entries with bad names.

use super::harness::*;

pub fn shapes() -> Vec<Case> {
    vec![
        Case::new("lowerdirs given as symlinks", 2, |l| {
            put(l.l(0), &[("a", "top a"), ("d/x", "top x")]);
            put(l.l(1), &[("b", "bottom b"), ("d/y", "bottom y")]);
            for (i, lower) in l.lowers.iter().enumerate() {
                let link = l.outside.join(format!("link{i}"));
                std::os::unix::fs::symlink(lower, &link).unwrap();
            }
        })
        .lowerdirs(|l| {
            (0..l.lowers.len())
                .map(|i| l.outside.join(format!("link{i}")))
                .collect()
        }),
        Case::new("symlink loops inside layers", 2, |l| {
            symlink("b", &l.l(0).join("a"));
            symlink("a", &l.l(0).join("b"));
            symlink("self", &l.l(1).join("self"));
            symlink("../../../../../../..", &l.l(1).join("up"));
            symlink("d/..", &l.l(1).join("dotdot"));
            put(l.l(1), &[("d/f", "f")]);
            symlink("/", &l.upper.join("root"));
        })
        .probe(&["a/x", "self/x", "up/etc", "dotdot/d/f", "root/etc"]),
        Case::new("a directory 2000 levels deep", 1, |l| {
            let comps: Vec<String> = (0..2000).map(|_| "d".to_string()).collect();
            mkdirs_at(l.l(0), &comps);
        })
        .probe(&[&"d/".repeat(400)]),
        Case::new("64 KiB overlay xattrs", 2, |l| {
            put(l.l(0), &[("d/x", "x"), ("f", "f")]);
            put(l.l(1), &[("d/y", "y")]);
            put(&l.upper, &[("d/", ""), ("f", "upper f")]);
            let big = vec![b'a'; 65536];
            for name in ["redirect", "opaque", "origin", "impure", "nlink"] {
                l.ovl(&l.upper.join("d"), name, &big);
                l.ovl(&l.upper.join("f"), name, &big);
            }
            l.ovl(&l.l(0).join("d"), "redirect", &big);
        })
        .probe(&["d", "f"]),
        many_lowers(200),
    ]
}

/// `n` lower layers, each with a file of its own and a share of one directory.
fn many_lowers(n: usize) -> Case {
    Case::new(format!("{n} lower layers"), n, move |l| {
        for i in 0..n {
            put(
                l.l(i),
                &[
                    (&format!("f{i}"), "own"),
                    (&format!("d/s{i}"), "shared dir"),
                ],
            );
            if i % 7 == 3 {
                whiteout(&l.l(i).join(format!("f{}", i + 1)));
            }
        }
    })
    .probe(&["d"])
}

/// One directory with `n` entries (run in one option set: building it takes a while).
pub fn wide(n: usize) -> Case {
    Case::new(format!("{n} entries in one directory"), 2, move |l| {
        let d = l.l(1).join("wide");
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            std::fs::File::create(d.join(format!("entry-{i:06}"))).unwrap();
        }
        put(l.l(0), &[("wide/top", "top")]);
        whiteout(&l.l(0).join("wide/entry-000007"));
    })
    .probe(&["wide"])
}

pub fn workdir() -> Vec<Case> {
    let garbage = |l: &Layers| {
        put(l.l(0), &[("f", "lower f"), ("d/x", "x")]);
        put(&l.upper, &[("u", "upper")]);
    };
    vec![
        Case::new("garbage in work/", 1, move |l| {
            garbage(l);
            // One level: deeper garbage the kernel cannot clean (it mounts
            // read-only), ovlfs removes (README: deliberate differences).
            put(&l.work, &[("work/#1/file", "left"), ("work/junk", "junk")]);
            whiteout(&l.work.join("work/#2"));
            symlink("/etc", &l.work.join("work/etc-link"));
        }),
        Case::new("work/ is a symlink out", 1, move |l| {
            garbage(l);
            symlink(&l.outside.to_string_lossy(), &l.work.join("work"));
        }),
        Case::new("work/ is a file", 1, move |l| {
            garbage(l);
            put(&l.work, &[("work", "a file")]);
        }),
        Case::new("index/ is a symlink out", 1, move |l| {
            garbage(l);
            symlink(&l.outside.to_string_lossy(), &l.work.join("index"));
        }),
        Case::new("index/ is a file", 1, move |l| {
            garbage(l);
            put(&l.work, &[("index", "a file")]);
        }),
        Case::new("index entries with bad names", 1, move |l| {
            garbage(l);
            put(
                &l.work,
                &[
                    ("index/zz", "not hex"),
                    ("index/00fb", "too short"),
                    ("index/#7", "temp"),
                    (&format!("index/{}", "ab".repeat(40)), "not an ovl_fb"),
                    (
                        &format!("index/00fb2100{}", "0".repeat(58)),
                        "hex of a header",
                    ),
                    ("index/dir/", ""),
                ],
            );
            symlink(
                "/etc/passwd",
                &l.work
                    .join("index/00fb15000100112233445566778899aabbccddeeff"),
            );
        }),
        Case::new("incompat/ and volatile marks", 1, move |l| {
            garbage(l);
            put(&l.work, &[("work/incompat/volatile/dirty", "")]);
        }),
    ]
}

/// Origin, impure, nlink and uuid xattrs of every bad shape.
pub fn xattrs() -> Vec<Case> {
    let values: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        (
            "wrong magic",
            vec![
                0, 0xfa, 21, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            ],
        ),
        ("truncated", vec![0, 0xfb, 21, 0, 1, 1, 2]),
        ("length field too big", {
            let mut v = vec![0, 0xfb, 200, 0, 1];
            v.extend_from_slice(&[7; 16]);
            v
        }),
        ("unknown version", {
            let mut v = vec![9, 0xfb, 29, 0, 1];
            v.extend_from_slice(&[7; 24]);
            v
        }),
        ("unknown flags", {
            let mut v = vec![0, 0xfb, 29, 0xf0, 1];
            v.extend_from_slice(&[7; 24]);
            v
        }),
        ("garbage handle, right header", {
            let mut v = vec![0, 0xfb, 33, 0, 1];
            v.extend_from_slice(&[0x5a; 28]);
            v
        }),
        ("oversized", vec![0x33; 4000]),
        ("text", b"y".to_vec()),
    ];
    let mut out = Vec::new();
    for (what, v) in values {
        let (v1, v2, v3) = (v.clone(), v.clone(), v.clone());
        out.push(
            Case::new(
                format!("origin {what} on upper file and dir"),
                2,
                move |l| {
                    put(l.l(0), &[("f", "lower f"), ("d/x", "x")]);
                    put(l.l(1), &[("g", "bottom g")]);
                    put(
                        &l.upper,
                        &[
                            ("f", "upper f"),
                            ("d/u", "u"),
                            ("g", "upper g"),
                            ("p/q", "q"),
                        ],
                    );
                    for p in ["f", "d", "g", "p/q"] {
                        l.ovl(&l.upper.join(p), "origin", &v1);
                    }
                    l.ovl(&l.upper, "impure", b"y");
                    l.ovl(&l.upper.join("p"), "impure", &v1);
                },
            )
            .probe(&["f", "d", "g", "p/q"]),
        );
        out.push(Case::new(
            format!("origin {what} on the upper root"),
            1,
            move |l| {
                put(l.l(0), &[("f", "lower f")]);
                l.ovl(&l.upper, "origin", &v2);
            },
        ));
        out.push(Case::new(format!("nlink and uuid {what}"), 1, move |l| {
            put(l.l(0), &[("f", "lower f")]);
            std::fs::hard_link(l.l(0).join("f"), l.l(0).join("f2")).unwrap();
            put(&l.upper, &[("g", "upper g")]);
            l.ovl(&l.upper.join("g"), "nlink", &v3);
            l.ovl(&l.upper, "uuid", &v3);
        }));
    }
    out
}
