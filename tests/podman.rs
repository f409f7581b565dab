//! Podman with ovlfs as the overlay driver's mount program, against Podman's
//! kernel overlay driver: an image whose USER is not root starts, reads
//! root's 0644 files, is refused root's 0600 ones, writes where the modes
//! allow and is refused where they do not, alike under both.
//!
//! The image is made here (no registry): a static busybox, /etc/passwd, a
//! directory the user owns and one it does not, imported with `USER 1000`.
//! Podman runs as root with runc and cgroupfs (crun refuses hybrid cgroup
//! hierarchies) and ulimits the sandbox allows. Needs podman, runc and
//! busybox-static (CI installs them); outside CI their absence skips loudly.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Scratch, ovlfs_bin, require_root_and_fuse};

const SCRIPT: &str = "id -u; cat /rodata/public; cat /rodata/secret; \
     echo w > /data/f && cat /data/f; echo x > /rodata/new; echo y > /data/g; \
     ls /data; grep ' / / ' /proc/self/mountinfo | sed 's/.* - \\([^ ]*\\) .*/root fs: \\1/'";

fn have_tools() -> bool {
    let missing: Vec<&str> = ["podman", "runc", "busybox"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("podman test needs {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: skipping is not allowed)");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    false
}

/// The image's root tree, as a tar file.
fn image_tar(d: &Path) -> std::path::PathBuf {
    let r = d.join("rootfs");
    for sub in ["bin", "etc", "data", "rodata", "tmp"] {
        fs::create_dir_all(r.join(sub)).unwrap();
    }
    let busybox = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v busybox"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    fs::copy(busybox.trim(), r.join("bin/busybox")).unwrap();
    for cmd in ["sh", "cat", "echo", "id", "ls", "grep", "sed"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(cmd)).unwrap();
    }
    fs::write(
        r.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .unwrap();
    fs::write(r.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    for (name, mode) in [("public", 0o644), ("secret", 0o600)] {
        let p = r.join("rodata").join(name);
        fs::write(&p, format!("{name}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::chown(r.join("data"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let tar = d.join("rootfs.tar");
    let st = Command::new("tar")
        .args(["-C"])
        .arg(&r)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

/// Podman with its own storage under `d`; with `mount_program`, ovlfs.
fn podman(d: &Path, mount_program: bool, args: &[&str]) -> Output {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(d.join("storage"))
        .arg("--runroot")
        .arg(d.join("run"))
        .args(["--storage-driver", "overlay", "--runtime", "runc"])
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"]);
    if mount_program {
        c.args([
            "--storage-opt",
            &format!("overlay.mount_program={}", ovlfs_bin()),
        ]);
    }
    c.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run podman")
}

/// Import the image and run SCRIPT in it; its output.
fn run_in_container(d: &Path, tar: &Path, mount_program: bool) -> String {
    let tar = tar.to_str().unwrap();
    let out = podman(
        d,
        mount_program,
        &[
            "import",
            "--change",
            "USER 1000",
            tar,
            "localhost/ovlfs-test",
        ],
    );
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman(
        d,
        mount_program,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "localhost/ovlfs-test",
            "sh",
            "-c",
            SCRIPT,
        ],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let _ = podman(d, mount_program, &["rmi", "-a", "-f"]);
    text
}

#[test]
fn a_non_root_container_runs_on_ovlfs_as_on_the_kernel_driver() {
    if !require_root_and_fuse() || !have_tools() {
        return;
    }
    let s = Scratch::new().unwrap();
    let tar = image_tar(&s.subdir("image"));
    let kernel = run_in_container(&s.subdir("kernel"), &tar, false);
    let ovlfs = run_in_container(&s.subdir("ovlfs"), &tar, true);
    eprintln!("kernel driver:\n{kernel}\novlfs:\n{ovlfs}");
    assert!(
        kernel.contains("root fs: overlay"),
        "kernel driver:\n{kernel}"
    );
    assert!(
        ovlfs.contains("root fs: fuse.ovlfs"),
        "ovlfs as mount program:\n{ovlfs}"
    );
    let expected = [
        "1000",
        "public",
        "cat: can't open '/rodata/secret': Permission denied",
        "w",
        "sh: can't create /rodata/new: Permission denied",
        "f\ng",
    ];
    for e in expected {
        assert!(ovlfs.contains(e), "ovlfs: {e:?} missing:\n{ovlfs}");
    }
    let strip = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("root fs:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&ovlfs),
        strip(&kernel),
        "ovlfs and the kernel driver differ"
    );
}
