//! Whiteouts and opaque marks: odd modes and device numbers, opaque values
//! on directories and on what is not one, long `.wh.` names, the OCI
//! markers as files, directories and symlinks, xattr whiteouts in lowers and
//! in the upper.

use super::harness::*;

/// Devices and special files at a name that hides a lower file.
fn device_shapes() -> Vec<Case> {
    let shapes: Vec<(&str, u32, u32, u32)> = vec![
        ("0/0 char 0000", libc::S_IFCHR, 0, 0),
        ("0/0 char 0777", libc::S_IFCHR | 0o777, 0, 0),
        ("0/0 char set-uid", libc::S_IFCHR | 0o4755, 0, 0),
        ("0/0 block", libc::S_IFBLK | 0o600, 0, 0),
        ("0/1 char", libc::S_IFCHR | 0o600, 0, 1),
        ("1/0 char", libc::S_IFCHR | 0o600, 1, 0),
        ("fifo", libc::S_IFIFO | 0o644, 0, 0),
    ];
    let mut v = Vec::new();
    for (what, mode, ma, mi) in shapes {
        v.push(
            Case::new(format!("upper {what} over a file and a dir"), 1, move |l| {
                put(l.l(0), &[("f", "lower f"), ("d/x", "lower d/x")]);
                mknod(&l.upper.join("f"), mode, ma, mi);
                mknod(&l.upper.join("d"), mode, ma, mi);
                mknod(&l.upper.join("orphan"), mode, ma, mi);
            })
            .probe(&["f", "d", "d/x", "orphan"]),
        );
        v.push(
            Case::new(format!("lower {what} between layers"), 2, move |l| {
                put(l.l(1), &[("f", "bottom f"), ("d/x", "bottom d/x")]);
                mknod(&l.l(0).join("f"), mode, ma, mi);
                mknod(&l.l(0).join("d"), mode, ma, mi);
            })
            .probe(&["f", "d", "d/x"]),
        );
    }
    v
}

fn opaque_values() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("y", b"y".to_vec()),
        ("x", b"x".to_vec()),
        ("n", b"n".to_vec()),
        ("Y", b"Y".to_vec()),
        ("empty", vec![]),
        ("yes", b"yes".to_vec()),
        ("y NUL", b"y\0".to_vec()),
        ("garbage", (0..64u8).map(|i| i.wrapping_mul(37)).collect()),
    ]
}

fn opaque_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (what, val) in opaque_values() {
        let val2 = val.clone();
        v.push(
            Case::new(format!("opaque={what} on an upper dir"), 1, move |l| {
                put(l.l(0), &[("d/low", "lower"), ("d/both", "lower both")]);
                put(&l.upper, &[("d/up", "upper"), ("d/both", "upper both")]);
                l.ovl(&l.upper.join("d"), "opaque", &val);
                // On a file too: no meaning there.
                put(l.l(0), &[("f", "lower f")]);
                put(&l.upper, &[("f", "upper f")]);
                l.ovl(&l.upper.join("f"), "opaque", &val);
            })
            .probe(&["d", "d/low", "f"]),
        );
        v.push(
            Case::new(format!("opaque={what} on a lower dir"), 3, move |l| {
                put(l.l(0), &[("d/top", "top")]);
                put(l.l(1), &[("d/mid", "mid")]);
                put(l.l(2), &[("d/bottom", "bottom"), ("d/mid", "hidden mid")]);
                l.ovl(&l.l(1).join("d"), "opaque", &val2);
            })
            .probe(&["d", "d/bottom"]),
        );
    }
    v
}

fn oci_markers() -> Vec<Case> {
    let long = "n".repeat(251);
    let long2 = long.clone();
    vec![
        Case::new(".wh. name of 255 bytes in the upper", 1, move |l| {
            put(l.l(0), &[(long.as_str(), "lower long")]);
            put(
                &l.upper,
                &[(format!(".wh.{long}").as_str(), "upper marker file")],
            );
        }),
        Case::new(".wh..wh..opq as a file in the upper", 1, |l| {
            put(l.l(0), &[("d/low", "lower")]);
            put(&l.upper, &[("d/.wh..wh..opq", ""), ("d/up", "upper")]);
        })
        .probe(&["d/low", "d/.wh..wh..opq"]),
        Case::new(".wh..wh..opq as a dir and a symlink in the upper", 1, |l| {
            put(l.l(0), &[("d/low", "lower"), ("e/low", "lower")]);
            put(&l.upper, &[("d/.wh..wh..opq/inner", "x"), ("e/up", "u")]);
            symlink("/nonexistent", &l.upper.join("e/.wh..wh..opq"));
        })
        .probe(&["d/low", "e/low"]),
        Case::new("whiteout with a 255-byte name", 2, move |l| {
            put(l.l(1), &[(long2.as_str(), "bottom")]);
            put(l.l(1), &[(("x".repeat(255)).as_str(), "bottom 255")]);
            whiteout(&l.l(0).join("x".repeat(255)));
            whiteout(&l.upper.join(&long2));
        }),
    ]
}

/// Kernel 6.7 xattr whiteouts: a 0-size file with the `whiteout` xattr, in
/// a directory marked `opaque=x`, hides the name in the layers below.
fn xattr_whiteouts() -> Vec<Case> {
    vec![
        Case::new("xattr whiteout in a lower layer", 2, |l| {
            put(
                l.l(1),
                &[("d/gone", "bottom gone"), ("d/kept", "bottom kept")],
            );
            put(l.l(0), &[("d/gone", ""), ("d/top", "top")]);
            l.ovl(&l.l(0).join("d/gone"), "whiteout", b"");
            l.ovl(&l.l(0).join("d"), "opaque", b"x");
        })
        .probe(&["d/gone", "d/kept"]),
        Case::new("xattr whiteout without the x mark", 2, |l| {
            put(l.l(1), &[("d/gone", "bottom gone")]);
            put(l.l(0), &[("d/gone", "")]);
            l.ovl(&l.l(0).join("d/gone"), "whiteout", b"");
        })
        .probe(&["d/gone"]),
        Case::new("xattr whiteout of non-zero size", 2, |l| {
            put(l.l(1), &[("d/gone", "bottom gone")]);
            put(l.l(0), &[("d/gone", "not empty")]);
            l.ovl(&l.l(0).join("d/gone"), "whiteout", b"");
            l.ovl(&l.l(0).join("d"), "opaque", b"x");
        })
        .probe(&["d/gone"]),
        Case::new("xattr whiteout in the upper", 1, |l| {
            put(l.l(0), &[("d/gone", "lower gone")]);
            put(&l.upper, &[("d/gone", "")]);
            l.ovl(&l.upper.join("d/gone"), "whiteout", b"");
            l.ovl(&l.upper.join("d"), "opaque", b"x");
        })
        .probe(&["d/gone"]),
        Case::new("xattr whiteout at the root of a lower", 2, |l| {
            put(l.l(1), &[("gone", "bottom gone")]);
            put(l.l(0), &[("gone", "")]);
            l.ovl(&l.l(0).join("gone"), "whiteout", b"");
            l.ovl(l.l(0), "opaque", b"x");
        })
        .probe(&["gone"]),
    ]
}

pub fn cases() -> Vec<Case> {
    let mut v = device_shapes();
    v.extend(opaque_cases());
    v.extend(oci_markers());
    v.extend(xattr_whiteouts());
    v
}
