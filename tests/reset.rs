//! `ovlfs reset` on layers written through real mounts: what is kept shows,
//! the rest is back to the lower layers' state under both the kernel overlay
//! and ovlfs, and an interrupted reset leaves the old or the new upper.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    Scratch, mount_kernel, mount_ovlfs, ovlfs_bin, require_root_and_fuse, require_strace, unmount,
};

struct Stack {
    base: PathBuf,
    l: PathBuf,
    u: PathBuf,
    w: PathBuf,
    m: PathBuf,
}

impl Stack {
    fn new(s: &Scratch, name: &str) -> Stack {
        let base = s.subdir(name);
        let st = Stack {
            l: base.join("l"),
            u: base.join("u"),
            w: base.join("w"),
            m: base.join("m"),
            base,
        };
        for p in [&st.l, &st.u, &st.w, &st.m] {
            fs::create_dir_all(p).unwrap();
        }
        for d in ["etc/config", "etc/other"] {
            fs::create_dir_all(st.l.join(d)).unwrap();
        }
        for (p, c) in [
            ("etc/config/network", "lower net"),
            ("etc/config/system", "lower sys"),
            ("etc/other/o", "o"),
        ] {
            fs::write(st.l.join(p), c).unwrap();
        }
        st
    }

    fn mount(&self, kernel: bool) {
        let m = if kernel { mount_kernel } else { mount_ovlfs };
        m(
            std::slice::from_ref(&self.l),
            Some(&self.u),
            Some(&self.w),
            &self.m,
            &["redirect_dir=on", "index=on"],
        )
        .unwrap();
    }

    fn change(&self) {
        let m = &self.m;
        fs::write(m.join("etc/config/network"), "my net").unwrap();
        fs::write(m.join("etc/config/system"), "my sys").unwrap();
        fs::create_dir_all(m.join("etc/keepdir/sub")).unwrap();
        fs::write(m.join("etc/keepdir/sub/k"), "k").unwrap();
        fs::remove_dir_all(m.join("etc/other")).unwrap();
        fs::create_dir(m.join("etc/other")).unwrap();
        fs::write(m.join("etc/other/n"), "n").unwrap();
        fs::write(m.join("junk"), "j").unwrap();
    }

    fn reset(&self, extra: &[&str]) -> std::process::Output {
        Command::new(ovlfs_bin())
            .arg("reset")
            .arg("--upper")
            .arg(&self.u)
            .arg("--workdir")
            .arg(&self.w)
            .args(extra)
            .output()
            .unwrap()
    }
}

/// Every regular file of the merged view with its content.
fn files(m: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![m.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(m).unwrap().to_string_lossy().into_owned();
                out.push((rel, fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn expected() -> Vec<(String, String)> {
    [
        ("etc/config/network", "my net"),
        ("etc/config/system", "lower sys"),
        ("etc/keepdir/sub/k", "k"),
        ("etc/other/o", "o"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

#[test]
fn reset_keeps_what_is_listed_and_nothing_else() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    for kernel in [true, false] {
        let st = Stack::new(&s, if kernel { "k" } else { "o" });
        st.mount(kernel);
        st.change();
        let busy = st.reset(&["--keep", "/etc/config/network"]);
        assert!(
            !busy.status.success(),
            "kernel={kernel}: a mounted upper is refused"
        );
        unmount(&st.m).unwrap();
        fs::write(
            st.base.join("keep.conf"),
            "# kept\n/etc/keepdir\n\n/not/there\n",
        )
        .unwrap();
        let keep_file = st.base.join("keep.conf");
        let out = st.reset(&[
            "--keep",
            "/etc/config/network",
            "--keep-file",
            keep_file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("kept /etc/keepdir") && text.contains("absent /not/there"),
            "{text}"
        );
        assert_eq!(fs::read_dir(&st.w).unwrap().count(), 0, "workdir emptied");
        for k in [true, false] {
            st.mount(k);
            assert_eq!(
                files(&st.m),
                expected(),
                "made by kernel={kernel}, read by kernel={k}"
            );
            unmount(&st.m).unwrap();
        }
    }
    // A kept path must stay inside the layer.
    let st = Stack::new(&s, "bad");
    let out = st.reset(&["--keep", "/etc/../../x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(".."));
}

#[test]
fn an_interrupted_reset_leaves_the_old_or_the_new_upper() {
    if !require_root_and_fuse() {
        return;
    }
    if !require_strace("an_interrupted_reset") {
        return;
    }
    let s = Scratch::new().unwrap();
    let st = Stack::new(&s, "int");
    st.mount(true);
    st.change();
    unmount(&st.m).unwrap();
    // Killed at the swap (the first renameat2): the old upper is still in place.
    let killed = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=renameat2:signal=SIGKILL:when=1",
        ])
        .arg(ovlfs_bin())
        .arg("reset")
        .arg("--upper")
        .arg(&st.u)
        .arg("--workdir")
        .arg(&st.w)
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the reset was killed");
    st.mount(true);
    assert!(
        files(&st.m).iter().any(|(p, c)| p == "junk" && c == "j"),
        "old upper intact"
    );
    unmount(&st.m).unwrap();
    // Killed after the swap, before the old upper is gone: the new one is in place.
    let killed = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=renameat2:signal=SIGKILL:when=2",
        ])
        .arg(ovlfs_bin())
        .args(["reset", "--keep", "/etc/config/network", "--upper"])
        .arg(&st.u)
        .arg("--workdir")
        .arg(&st.w)
        .output()
        .unwrap();
    assert!(!killed.status.success());
    let names: Vec<String> = fs::read_dir(&st.base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("reset")),
        "a leftover beside the upper: {names:?}"
    );
    // The workdir may still hold the old mount's state: the next reset clears it.
    let out = st.reset(&["--keep", "/etc/config/network"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = fs::read_dir(&st.base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("reset")),
        "leftovers removed: {names:?}"
    );
    st.mount(true);
    let f = files(&st.m);
    assert!(
        f.contains(&("etc/config/network".into(), "my net".into())),
        "{f:?}"
    );
    assert!(!f.iter().any(|(p, _)| p == "junk"));
    unmount(&st.m).unwrap();
}
