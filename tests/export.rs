//! `ovlfs export` and `ovlfs apply`: OCI layers out of and into layer
//! directories. Changes are made through the kernel overlay; what export
//! writes, applied again (by ovlfs and by umoci), shows the overlay's exact
//! view; what umoci writes, applied by ovlfs and mounted by the kernel,
//! shows umoci's tree.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::stack::{changed_stack, set_times};
use common::tree::{SnapMode, Tree, diff, snapshot};
use common::{Scratch, mount_kernel, ovlfs_bin, require_root_and_fuse, set_xattr, unmount};

fn run(args: &[&str]) -> Output {
    Command::new(ovlfs_bin()).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn merged_view(layers: &[PathBuf], m: &Path) -> Tree {
    mount_kernel(layers, None, None, m, &[]).unwrap();
    let t = snapshot(m, SnapMode::Merged);
    unmount(m).unwrap();
    t
}

fn without_root(t: &Tree) -> Tree {
    let mut t = t.clone();
    t.0.remove("");
    t
}

fn sha256_of(p: &Path) -> String {
    let out = sh(&format!("sha256sum '{}'", s(p)));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

#[test]
fn export_then_apply_shows_the_overlay_view_in_every_compression() {
    if !require_root_and_fuse() {
        return;
    }
    let sc = Scratch::new().unwrap();
    let d = sc.subdir("rt");
    let (lowers, u, before) = changed_stack(&d);
    let lowerdir = format!("{}:{}", s(&lowers[0]), s(&lowers[1]));
    let m = d.join("m");
    for name in ["layer.tar", "layer.tar.gz", "layer.tar.zst"] {
        let archive = d.join(name);
        let out = ok(&run(&[
            "export",
            "--upper",
            s(&u),
            "--lower",
            &lowerdir,
            "-o",
            s(&archive),
        ]));
        // The digest printed is the archive's.
        let digest = sha256_of(&archive);
        assert!(
            out.starts_with(&digest),
            "{name}: printed {out}, file is {digest}"
        );
        // Reproducible: the same layers give the same bytes.
        let again = d.join(format!("again-{name}"));
        ok(&run(&[
            "export",
            "--upper",
            s(&u),
            "--lower",
            &lowerdir,
            "-o",
            s(&again),
        ]));
        assert_eq!(
            fs::read(&archive).unwrap(),
            fs::read(&again).unwrap(),
            "{name} not reproducible"
        );

        let layer = d.join(format!("applied-{name}"));
        let out = ok(&run(&["apply", "--json", s(&archive), s(&layer)]));
        assert!(out.contains(&digest), "{out}");
        assert!(
            out.contains("\"opaque\":1"),
            "the opaque dir came as a marker: {out}"
        );
        let mut stacked = vec![layer.clone()];
        stacked.extend(lowers.iter().cloned());
        let after = merged_view(&stacked, &m);
        let dd = diff(&before, &after, "overlay", name);
        assert!(
            dd.is_empty(),
            "{name} applied on the lowers differs:\n{}",
            dd.join("\n")
        );
    }
    // The plain tar as GNU tar sees it: OCI whiteouts and the opaque marker,
    // real data for the metacopy file, no overlay xattrs.
    let listing = sh(&format!("tar -tvf {}", s(&d.join("layer.tar"))));
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in [
        ".wh.gone",
        "opq/.wh..wh..opq",
        ".wh.mv",
        "moved/inner/i",
        "h1 link to a/h2",
    ] {
        assert!(listing.contains(want), "{want} missing from:\n{listing}");
    }
    assert!(
        !listing.contains("opq/.wh.old"),
        "an opaque dir needs no whiteouts:\n{listing}"
    );
    let xattrs = sh(&format!(
        "tar --xattrs --xattrs-include='*' -tvvf {} 2>&1",
        s(&d.join("layer.tar"))
    ));
    assert!(!String::from_utf8_lossy(&xattrs.stdout).contains("overlay"));

    // stdout, with the summary on stderr; a terminal is refused elsewhere.
    let out = run(&[
        "export",
        "--upper",
        s(&u),
        "--lower",
        &lowerdir,
        "-o",
        "-",
        "--compression",
        "zstd",
    ]);
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(d.join("layer.tar.zst")).unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("sha256:"));

    // A progress bar on a terminal (script(1) gives it one), none otherwise.
    let cmd = format!(
        "{} export --upper {} --lower {} -o {}",
        ovlfs_bin(),
        s(&u),
        lowerdir,
        s(&d.join("tty.tar"))
    );
    let tty = sh(&format!("script -qec '{cmd}' /dev/null"));
    assert!(
        String::from_utf8_lossy(&tty.stdout).contains("export ["),
        "no bar on a terminal"
    );
    let plain = sh(&format!("{cmd} 2>&1 >/dev/null"));
    assert!(plain.stdout.is_empty(), "a bar without a terminal");

    // Apply refuses a target that is not empty, naming it.
    let out = run(&["apply", s(&d.join("layer.tar")), s(&lowers[0])]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

fn require_umoci() -> bool {
    if Command::new("umoci").arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and umoci is missing (apt-get install umoci)");
    }
    eprintln!(
        "\n{0}\nSKIPPED: umoci is not installed\n{0}\n",
        "*".repeat(60)
    );
    false
}

fn umoci(args: &[&str]) {
    let out = Command::new("umoci").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "umoci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The blob of the topmost layer of tag `tag` in the OCI layout `img`.
fn top_layer_blob(img: &Path, tag: &str) -> PathBuf {
    let blob = |digest: &str| {
        img.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(img.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(manifest["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    blob(layers.last().unwrap()["digest"].as_str().unwrap())
}

#[test]
fn umoci_reads_what_export_writes_and_apply_reads_what_umoci_writes() {
    if !require_root_and_fuse() || !require_umoci() {
        return;
    }
    let sc = Scratch::new().unwrap();
    let d = sc.subdir("umoci");
    let (lowers, u, before) = changed_stack(&d);
    let m = d.join("m");
    // umoci's base image: the two lowers flattened, as GNU tar packs them.
    let flat = d.join("flat");
    let lowerdir = format!("{}:{}", s(&lowers[0]), s(&lowers[1]));
    ok(&run(&[
        "commit",
        "--flatten",
        "--lower",
        &lowerdir,
        "--into",
        s(&flat),
    ]));
    let base = d.join("base.tar");
    assert!(
        sh(&format!(
            "tar --numeric-owner --xattrs --xattrs-include='*' -C {} -cf {} .",
            s(&flat),
            s(&base)
        ))
        .status
        .success()
    );
    let img = d.join("img");
    let img_tag = |t: &str| format!("{}:{t}", s(&img));
    umoci(&["init", "--layout", s(&img)]);
    umoci(&["new", "--image", &img_tag("base")]);
    umoci(&["raw", "add-layer", "--image", &img_tag("base"), s(&base)]);

    // export → umoci: the unpacked rootfs is the overlay's view.
    let layer = d.join("layer.tar");
    ok(&run(&[
        "export",
        "--upper",
        s(&u),
        "--lower",
        &lowerdir,
        "-o",
        s(&layer),
    ]));
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &img_tag("base"),
        "--tag",
        "changed",
        s(&layer),
    ]);
    let bundle = d.join("bundle");
    umoci(&["unpack", "--image", &img_tag("changed"), s(&bundle)]);
    let rootfs = snapshot(&bundle.join("rootfs"), SnapMode::Merged);
    // umoci gives the root directory its own attributes.
    let dd = diff(
        &without_root(&before),
        &without_root(&rootfs),
        "overlay",
        "umoci rootfs",
    );
    assert!(
        dd.is_empty(),
        "umoci unpacked a different tree:\n{}",
        dd.join("\n")
    );

    // umoci → apply: changes made in an unpacked bundle, repacked by umoci,
    // applied by ovlfs onto the flattened base, mounted by the kernel.
    let b2 = d.join("b2");
    umoci(&["unpack", "--image", &img_tag("base"), s(&b2)]);
    let r = b2.join("rootfs");
    fs::remove_dir_all(r.join("opq")).unwrap();
    fs::remove_file(r.join("gone")).unwrap();
    fs::write(r.join("a/x"), "rewritten by umoci's user").unwrap();
    fs::create_dir(r.join("umoci-dir")).unwrap();
    fs::write(r.join("umoci-dir/f"), "f").unwrap();
    set_xattr(&r.join("umoci-dir/f"), "user.k", b"v");
    std::os::unix::fs::chown(r.join("a/deep/y"), Some(42), Some(43)).unwrap();
    fs::hard_link(r.join("umoci-dir/f"), r.join("a/f-link")).unwrap();
    umoci(&["repack", "--image", &img_tag("repacked"), s(&b2)]);
    let blob = top_layer_blob(&img, "repacked");
    let applied = d.join("applied");
    ok(&run(&["apply", s(&blob), s(&applied)]));
    let want = snapshot(&r, SnapMode::Merged);
    let got = merged_view(&[applied, flat.clone()], &m);
    let dd = diff(
        &without_root(&want),
        &without_root(&got),
        "umoci bundle",
        "applied",
    );
    assert!(
        dd.is_empty(),
        "the applied umoci layer shows a different tree:\n{}",
        dd.join("\n")
    );
}

#[test]
fn export_keeps_old_times_and_refuses_what_it_cannot_carry() {
    if !require_root_and_fuse() {
        return;
    }
    let sc = Scratch::new().unwrap();
    let d = sc.subdir("edge");
    let (l, u, w, m) = (d.join("l"), d.join("u"), d.join("w"), d.join("m"));
    for p in [&l, &u, &w, &m] {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(l.join("one"), "old").unwrap();
    fs::hard_link(l.join("one"), l.join("two")).unwrap();
    mount_kernel(std::slice::from_ref(&l), Some(&u), Some(&w), &m, &[]).unwrap();
    for (name, sec, nsec) in [("pre1970", -315_619_200, 500_000_000), ("whole", -100, 0)] {
        fs::write(m.join(name), name).unwrap();
        set_times(&m.join(name), sec, nsec);
    }
    unmount(&m).unwrap();
    let lower = s(&l).to_string();
    let archive = d.join("layer.tar");
    // A symlink planted where the archive is built is replaced, not followed.
    let victim = d.join("victim");
    fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, d.join(".layer.tar.export-tmp")).unwrap();
    ok(&run(&[
        "export",
        "--upper",
        s(&u),
        "--lower",
        &lower,
        "-o",
        s(&archive),
    ]));
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    assert!(fs::symlink_metadata(&archive).unwrap().is_file());
    // Times before 1970 come back exact.
    let applied = d.join("applied");
    ok(&run(&["apply", s(&archive), s(&applied)]));
    for (name, sec, nsec) in [("pre1970", -315_619_200, 500_000_000), ("whole", -100, 0)] {
        let st = fs::symlink_metadata(applied.join(name)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((st.mtime(), st.mtime_nsec()), (sec, nsec), "{name}");
    }
    // An xattr name a PAX record cannot carry is refused, named.
    set_xattr(&u.join("whole"), "user.a=b", b"v");
    let out = run(&[
        "export",
        "--upper",
        s(&u),
        "--lower",
        &lower,
        "-o",
        s(&d.join("x.tar")),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAX record cannot carry"));
    assert!(!d.join("x.tar").exists() && !d.join(".x.tar.export-tmp").exists());

    // index=on: writing through one name of a lower hard link changes the
    // other names too; the tools say they cannot follow that yet.
    let (u2, w2) = (d.join("u2"), d.join("w2"));
    fs::create_dir_all(&u2).unwrap();
    fs::create_dir_all(&w2).unwrap();
    mount_kernel(
        std::slice::from_ref(&l),
        Some(&u2),
        Some(&w2),
        &m,
        &["index=on"],
    )
    .unwrap();
    fs::write(m.join("one"), "new data").unwrap();
    assert_eq!(fs::read(m.join("two")).unwrap(), b"new data");
    unmount(&m).unwrap();
    let out = run(&[
        "export",
        "--upper",
        s(&u2),
        "--lower",
        &lower,
        "-o",
        s(&d.join("i.tar")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("index=on"), "{err}");
}
