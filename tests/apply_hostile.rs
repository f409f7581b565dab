//! `ovlfs apply` on hostile and broken archives: path traversal, absolute
//! paths, symlinks and hard links leading out of the layer, giant extension
//! headers, truncated and garbage archives, device nodes and whiteouts as an
//! ordinary user, smuggled overlay xattrs. Each is refused with an error
//! naming the archive and the cause; nothing is written outside the target
//! and no target is left behind.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::tree::{SnapMode, diff, snapshot};
use common::{Scratch, lxattr, ovlfs_bin, require_root_and_fuse};

/// A ustar header block. `size` above the octal range is written base-256.
fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{:0w$o}\0", v, w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    let mode = match typeflag {
        b'5' => 0o755,
        _ => 0o644,
    };
    octal(&mut h, 100, 8, mode);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    if size < 0o77777777777 {
        octal(&mut h, 124, 12, size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h, 136, 12, 1_000_000_000);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if typeflag == b'3' {
        octal(&mut h, 329, 8, 1);
        octal(&mut h, 337, 8, 3);
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// An entry: header and data padded to the block size.
fn entry(name: &str, typeflag: u8, data: &[u8], link: &str) -> Vec<u8> {
    let mut v = header(
        name.as_bytes(),
        typeflag,
        data.len() as u64,
        link.as_bytes(),
    )
    .to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let rest = 3 + k.len() + v.len();
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    entry("pax", b'x', &data, "")
}

fn tar(entries: &[Vec<u8>], end: bool) -> Vec<u8> {
    let mut v: Vec<u8> = entries.concat();
    if end {
        v.extend_from_slice(&[0u8; 1024]);
    }
    v
}

fn apply_as(bin: &str, archive: &Path, target: &Path, nobody: bool) -> Output {
    let mut c = if nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    };
    c.arg("apply").arg(archive).arg(target).output().unwrap()
}

struct Case {
    name: &'static str,
    archive: Vec<u8>,
    /// What the error must say.
    cause: &'static str,
}

#[test]
fn hostile_archives_are_refused_and_nothing_is_written_outside() {
    if !require_root_and_fuse() {
        return;
    }
    let sc = Scratch::new().unwrap();
    let work = sc.subdir("work");
    let outside = work.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), "keep me").unwrap();
    let out_abs = outside.to_str().unwrap().to_string();
    let big = vec![b'z'; 100_000];
    let good_file = entry("big", b'0', &big, "");
    let cases = vec![
        Case {
            name: "traversal",
            archive: tar(
                &[
                    entry("ok", b'0', b"x", ""),
                    entry("../escaped", b'0', b"x", ""),
                ],
                true,
            ),
            cause: "leads out of the layer",
        },
        Case {
            name: "traversal-deep",
            archive: tar(&[entry("a/b/../../../outside/x", b'0', b"x", "")], true),
            cause: "leads out of the layer",
        },
        Case {
            name: "absolute",
            archive: tar(&[entry("/abs-escape", b'0', b"x", "")], true),
            cause: "absolute path",
        },
        Case {
            name: "through-absolute-symlink",
            archive: tar(
                &[
                    entry("lnk", b'2', b"", &out_abs),
                    entry("lnk/pwned", b'0', b"x", ""),
                ],
                true,
            ),
            cause: "goes through the symlink",
        },
        Case {
            name: "through-relative-symlink",
            archive: tar(
                &[
                    entry("lnk", b'2', b"", "../outside"),
                    entry("lnk/pwned", b'0', b"x", ""),
                ],
                true,
            ),
            cause: "goes through the symlink",
        },
        Case {
            name: "hardlink-out",
            archive: tar(&[entry("hl", b'1', b"", "../outside/secret")], true),
            cause: "leads out of the layer",
        },
        Case {
            name: "hardlink-absolute",
            archive: tar(&[entry("hl", b'1', b"", "/etc/passwd")], true),
            cause: "absolute path",
        },
        Case {
            name: "hardlink-through-symlink",
            archive: tar(
                &[
                    entry("lnk", b'2', b"", &out_abs),
                    entry("hl", b'1', b"", "lnk/secret"),
                ],
                true,
            ),
            cause: "goes through the symlink",
        },
        Case {
            name: "giant-pax-header",
            archive: tar(&[header(b"pax", b'x', 1 << 40, b"").to_vec()], true),
            cause: "extension header of 1099511627776 bytes",
        },
        Case {
            name: "giant-gnu-long-name",
            archive: tar(
                &[header(b"././@LongLink", b'L', 10 << 20, b"").to_vec()],
                true,
            ),
            cause: "extension header of",
        },
        Case {
            name: "truncated-data",
            archive: tar(std::slice::from_ref(&good_file), true)[..50_000].to_vec(),
            cause: "truncated archive",
        },
        Case {
            name: "no-end-blocks",
            archive: tar(std::slice::from_ref(&good_file), false),
            cause: "end-of-archive",
        },
        Case {
            name: "garbage",
            archive: (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            cause: "not a tar archive",
        },
        Case {
            name: "file-under-a-file",
            archive: tar(
                &[entry("f", b'0', b"x", ""), entry("f/x", b'0', b"x", "")],
                true,
            ),
            cause: "is not a directory",
        },
        Case {
            name: "file-over-a-dir",
            archive: tar(
                &[entry("d/", b'5', b"", ""), entry("d", b'0', b"x", "")],
                true,
            ),
            cause: "replaces a directory",
        },
        Case {
            name: "pax-path-traversal",
            archive: tar(
                &[
                    pax(&[("path", b"../pax-escaped")]),
                    entry("innocent", b'0', b"x", ""),
                ],
                true,
            ),
            cause: "leads out of the layer",
        },
        Case {
            name: "sparse",
            archive: tar(&[entry("sp", b'S', b"", "")], true),
            cause: "sparse",
        },
        Case {
            // Many extension headers before one entry would pile up in memory.
            name: "two-pax-headers",
            archive: tar(
                &[
                    pax(&[("comment", &[b'c'; 1000])]),
                    pax(&[("comment", &[b'c'; 1000])]),
                    entry("f", b'0', b"x", ""),
                ],
                true,
            ),
            cause: "two PAX headers",
        },
        Case {
            name: "path-too-long",
            archive: tar(
                &[
                    pax(&[("path", "d/".repeat(2500).as_bytes())]),
                    entry("f", b'0', b"x", ""),
                ],
                true,
            ),
            cause: "more than 4096 refused",
        },
        Case {
            name: "path-too-deep",
            archive: tar(
                &[
                    pax(&[("path", "d/".repeat(300).as_bytes())]),
                    entry("f", b'0', b"x", ""),
                ],
                true,
            ),
            cause: "deeper than 256",
        },
        Case {
            name: "opaque-root",
            archive: tar(&[entry(".wh..wh..opq", b'0', b"", "")], true),
            cause: "opaque marker at the root",
        },
        Case {
            name: "bad-device-numbers",
            archive: tar(
                &[{
                    let mut h = header(b"dev", b'3', 0, b"");
                    h[329..337].copy_from_slice(b"zzzzzzz\0");
                    h[148..156].copy_from_slice(b"        ");
                    let sum: u32 = h.iter().map(|b| *b as u32).sum();
                    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                    h.to_vec()
                }],
                true,
            ),
            cause: "unreadable device numbers",
        },
    ];
    let bin = ovlfs_bin();
    for c in &cases {
        let archive = work.join(format!("{}.tar", c.name));
        fs::write(&archive, &c.archive).unwrap();
        let before = snapshot(&work, SnapMode::Layer);
        let target = work.join(format!("{}-layer", c.name));
        let out = apply_as(&bin, &archive, &target, false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: accepted", c.name);
        assert!(
            err.contains(c.cause),
            "{}: error does not say {:?}: {err}",
            c.name,
            c.cause
        );
        assert!(
            err.contains(archive.to_str().unwrap()),
            "{}: error does not name the archive: {err}",
            c.name
        );
        let after = snapshot(&work, SnapMode::Layer);
        let dd = diff(&before, &after, "before", "after");
        assert!(
            dd.is_empty(),
            "{}: changed outside the target:\n{}",
            c.name,
            dd.join("\n")
        );
        assert!(!Path::new("/abs-escape").exists());
    }

    // A gzip stream cut short, and one whose tar is fine but whose trailer is damaged.
    let mut gz = Vec::new();
    {
        let mut enc = Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        enc.stdin
            .take()
            .unwrap()
            .write_all(&tar(std::slice::from_ref(&good_file), true))
            .unwrap();
        gz.extend(enc.wait_with_output().unwrap().stdout);
    }
    for (name, bytes) in [
        ("cut.tar.gz", gz[..gz.len() / 2].to_vec()),
        ("crc.tar.gz", {
            let mut b = gz.clone();
            let n = b.len();
            b[n - 6] ^= 0xff;
            b
        }),
    ] {
        let archive = work.join(name);
        fs::write(&archive, bytes).unwrap();
        let target = work.join(format!("{name}-layer"));
        let out = apply_as(&bin, &archive, &target, false);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(!target.exists(), "{name}: target left behind");
        assert!(String::from_utf8_lossy(&out.stderr).contains(archive.to_str().unwrap()));
    }

    // As an ordinary user: device nodes and files owned by others need root,
    // and say so (the kernel lets anyone make a 0/0 whiteout).
    let nb = sc.subdir("nobody");
    std::os::unix::fs::chown(&nb, Some(65534), Some(65534)).unwrap();
    let nb_bin: PathBuf = nb.join("ovlfs");
    fs::copy(&bin, &nb_bin).unwrap();
    for (name, archive) in [
        ("device", tar(&[entry("null", b'3', b"", "")], true)),
        ("owner", tar(&[entry("f", b'0', b"x", "")], true)),
    ] {
        let a = nb.join(format!("{name}.tar"));
        fs::write(&a, archive).unwrap();
        let target = nb.join(format!("{name}-layer"));
        let out = apply_as(nb_bin.to_str().unwrap(), &a, &target, true);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} as nobody: accepted");
        assert!(err.contains("needs root"), "{name} as nobody: {err}");
        assert!(!target.exists());
        assert!(fs::read_dir(&nb).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("apply-tmp")
        }));
    }

    let a = nb.join("whiteout.tar");
    fs::write(&a, tar(&[entry(".wh.gone", b'0', b"", "")], true)).unwrap();
    let target = nb.join("whiteout-layer");
    let out = apply_as(nb_bin.to_str().unwrap(), &a, &target, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = fs::symlink_metadata(target.join("gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &st.file_type()
    ));

    // Overlay xattrs in an archive are not applied (a layer must not bring
    // redirects into a stack); the rest of the entry is.
    let a = work.join("smuggle.tar");
    fs::write(
        &a,
        tar(
            &[
                pax(&[
                    ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
                    // A forged in-place commit mark would let fsck empty an upper.
                    ("SCHILY.xattr.trusted.ovlfs.commit-in-place", b"/"),
                    ("SCHILY.xattr.user.ok", b"1"),
                ]),
                entry("d/", b'5', b"", ""),
            ],
            true,
        ),
    )
    .unwrap();
    let target = work.join("smuggle-layer");
    let out = Command::new(&bin)
        .args(["apply", "--json"])
        .arg(&a)
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"dropped_xattrs\":2"));
    assert_eq!(lxattr(&target.join("d"), "trusted.overlay.redirect"), None);
    assert_eq!(
        lxattr(&target.join("d"), "trusted.ovlfs.commit-in-place"),
        None
    );
    assert_eq!(
        lxattr(&target.join("d"), "user.ok").as_deref(),
        Some(&b"1"[..])
    );
}
