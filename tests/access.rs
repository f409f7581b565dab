//! Access as the kernel overlay gives it: one operation table, run by several
//! callers with two umasks, on ovlfs (default options: allow_other as root,
//! POSIX ACLs on) and on the kernel overlay (redirect_dir=on, as ovlfs's
//! default) over identical layers (lower files
//! and directories with access and default ACLs, set-group-ID and sticky
//! directories). Each operation is a shell command run through setpriv with
//! the caller's credentials; its exit status and message must be the same on
//! both, and so must the merged tree (modes, owners, ACL xattrs) and the
//! upper layer afterwards.
//!
//! Callers: root; uid 1000 and 1001 without groups; uid 1000 in group 2000;
//! root without CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID.
//! Set-ID files get writes (appending, truncating opens, truncate,
//! fallocate, in-place dd) and chgrp from each; files with capabilities
//! (security.capability) are written and truncated.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::tree::{SnapMode, diff, snapshot};
use common::{Scratch, mount_kernel, mount_ovlfs, require_root_and_fuse, unmount};

/// (name, setpriv arguments).
const CALLERS: &[(&str, &[&str])] = &[
    ("root", &[]),
    ("u1000", &["--reuid=1000", "--regid=1000", "--clear-groups"]),
    ("u1001", &["--reuid=1001", "--regid=1001", "--clear-groups"]),
    ("u1000g", &["--reuid=1000", "--regid=1000", "--groups=2000"]),
    (
        "rootnocap",
        &["--bounding-set=-dac_override,-dac_read_search,-fowner,-fsetid"],
    ),
];

const UMASKS: &[&str] = &["022", "077"];

/// Shell commands; `{M}` is the mount point, `{W}` the caller and umask, so
/// each caller makes names of its own, `{U}` the umask alone (root's names:
/// root runs each operation first).
const OPS: &[&str] = &[
    // Access ACLs on lower files and a directory.
    "cat {M}/f_deny",
    "echo w >> {M}/f_deny",
    "cat {M}/f_allow",
    "echo w >> {M}/f_allow",
    "cat {M}/f_group",
    "truncate -s 3 {M}/f_group",
    "ls {M}/d_nosearch",
    "cat {M}/d_nosearch/inner",
    // Creation: default ACLs, umask, set-group-ID and sticky directories.
    "echo a > {M}/dacl/f_{W}; mkdir {M}/dacl/d_{W}; mkfifo {M}/dacl/p_{W}",
    "mkdir {M}/dacl/d_{W}/sub_{W}; echo b > {M}/dacl/d_{W}/f_{W}",
    "echo a > {M}/plain/f_{W}; mkdir {M}/plain/d_{W}; mkfifo {M}/plain/p_{W}",
    "echo a > {M}/sgid/f_{W}; mkdir {M}/sgid/d_{W}",
    "echo a > {M}/sticky/f_{W}; mkdir {M}/sticky/d_{W}",
    "rm {M}/sticky/victim_{W}",
    // Changes to what others own and to one's own.
    "chmod 600 {M}/plain/f_{W}",
    "chmod 640 {M}/f_allow",
    "chown 1001 {M}/plain/f_{W}",
    "chgrp 2000 {M}/plain/d_{W}",
    "touch -d @1000000000 {M}/f_allow",
    "touch {M}/f_allow",
    "setfattr -n user.k -v v {M}/f_allow",
    "setfattr -n trusted.k -v v {M}/f_allow",
    "setfattr -x user.k {M}/f_allow",
    "setfacl -m u:1001:r {M}/plain/f_{W}",
    "setfacl -m u:1001:rwx {M}/f_allow",
    "setfacl -b {M}/dacl/f_{W}",
    "getfacl -cp {M}/f_allow",
    "ln {M}/f_allow {M}/plain/l_{W}",
    "mv {M}/plain/p_{W} {M}/plain/q_{W}",
    "rmdir {M}/dacl/d_{W}/sub_{W}",
    "rm {M}/f_deny",
    "setfattr -n security.k -v v {M}/f_allow",
    "setfattr -x system.posix_acl_access {M}/plain/f_{W}",
    // Upper files with ACLs (made by root above, umask {U}): inherited, set.
    "cat {M}/dacl/f_root_{U}",
    "echo u >> {M}/dacl/f_root_{U}",
    "setfacl -m u:1000:--- {M}/plain/f_root_{U}",
    "cat {M}/plain/f_root_{U}",
    "rmdir {M}/sticky/vdir_{W}",
    "mv {M}/sticky/vmv_{W} {M}/sticky/moved_{W}",
    // Set-ID bits dropped by a change from a caller without CAP_FSETID.
    "echo x >> {M}/sg_{W}",
    "truncate -s 1 {M}/sgg_{W}",
    "echo y > {M}/su_{W}",
    "fallocate -l 64 {M}/sgx_{W}",
    "dd if=/dev/zero of={M}/su3_{W} bs=1 count=2 conv=notrunc status=none",
    "chgrp 2000 {M}/su2_{W}",
    "chown 0 {M}/csg_{W}",
    "setfacl -m u::rwx,g::rwx,o::rwx {M}/aclsg_{W}",
    // File capabilities go with a change by another user.
    "echo x >> {M}/cap_{W}",
    "truncate -s 1 {M}/capt_{W}",
];

/// The lower layer: ACLs set with setfacl, owners and modes by hand.
fn lower(l: &Path) {
    let sh = |cmd: &str| {
        let st = Command::new("sh")
            .arg("-ec")
            .arg(cmd)
            .current_dir(l)
            .status()
            .unwrap();
        assert!(st.success(), "fixture: {cmd}");
    };
    sh("echo deny > f_deny; chmod 666 f_deny; setfacl -m u:1000:--- f_deny");
    sh("echo allow > f_allow; chmod 660 f_allow; setfacl -m u:1000:rw-,u:1001:r-- f_allow");
    sh("echo group > f_group; chmod 640 f_group; setfacl -m g:2000:rw- f_group");
    sh(
        "mkdir d_nosearch; echo in > d_nosearch/inner; chmod 755 d_nosearch; \
        setfacl -m u:1000:rw- d_nosearch",
    );
    sh("mkdir dacl plain sgid sticky; chmod 777 dacl plain; \
        setfacl -d -m u:1001:rwx,g::r-x,g:2000:rw-,o::--- dacl; \
        chown 0:2000 sgid; chmod 2777 sgid; chmod 1777 sticky");
    for (who, _) in CALLERS {
        for u in UMASKS {
            let w = format!("{who}_{u}");
            sh(&format!(
                "echo v > sticky/victim_{w}; chown 1001:1001 sticky/victim_{w}; \
                 mkdir sticky/vdir_{w}; echo m > sticky/vmv_{w}; \
                 chown 1001:1001 sticky/vdir_{w} sticky/vmv_{w}; \
                 for f in sg sgg su sgx su2 su3; do echo s > ${{f}}_{w}; done; \
                 chmod 2767 sg_{w} sgg_{w}; chgrp 2000 sgg_{w}; chmod 6777 su_{w} su3_{w}; \
                 chmod 2777 sgx_{w}; chmod 6755 su2_{w}; \
                 for f in csg aclsg; do echo g > ${{f}}_{w}; done; \
                 chown 1000:1000 csg_{w}; chmod 6744 csg_{w}; \
                 chown 1000:2000 aclsg_{w}; chmod 2755 aclsg_{w}; \
                 for f in cap capt; do echo c > ${{f}}_{w}; chmod 666 ${{f}}_{w}; \
                 setcap cap_net_raw+ep ${{f}}_{w}; done"
            ));
        }
    }
}

/// Runs `op` as `who` with `umask`; the exit status and stderr, with the
/// mount point's path taken out.
fn run(mnt: &Path, who: &(&str, &[&str]), umask: &str, op: &str) -> String {
    let m = mnt.to_str().unwrap();
    let cmd = op
        .replace("{M}", m)
        .replace("{W}", &format!("{}_{umask}", who.0))
        .replace("{U}", umask);
    let out = Command::new("setpriv")
        .args(who.1)
        .args(["sh", "-c", &format!("umask {umask}; {cmd}")])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    let text = |b: &[u8]| String::from_utf8_lossy(b).replace(m, "M");
    format!(
        "rc={} out={:?} err={:?}",
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr)
    )
}

struct Side {
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

impl Side {
    fn new(s: &Scratch, name: &str) -> Side {
        let d = s.subdir(name);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        let side = Side {
            lower: d.join("l"),
            upper: d.join("u"),
            work: d.join("w"),
            mnt: d.join("m"),
        };
        for p in [&side.lower, &side.upper, &side.work, &side.mnt] {
            fs::create_dir_all(p).unwrap();
        }
        fs::set_permissions(&side.lower, fs::Permissions::from_mode(0o755)).unwrap();
        lower(&side.lower);
        side
    }

    /// ovlfs with its defaults; the kernel with the one default of ovlfs it
    /// lacks (redirect_dir=on: new directories in merged ones are opaque).
    fn mount(&self, kernel: bool) {
        let (mount, opts): (fn(_, _, _, _, _) -> _, &[&str]) = match kernel {
            true => (mount_kernel, &["redirect_dir=on"]),
            false => (mount_ovlfs, &[]),
        };
        let lowers = std::slice::from_ref(&self.lower);
        mount(lowers, Some(&self.upper), Some(&self.work), &self.mnt, opts).unwrap();
        fs::set_permissions(&self.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn the_operation_table_gives_every_caller_the_kernels_answer() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new().unwrap();
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (k, o) = (Side::new(&s, "kernel"), Side::new(&s, "ovlfs"));
    k.mount(true);
    o.mount(false);
    let mut differ = Vec::new();
    let mut count = 0;
    for umask in UMASKS {
        for op in OPS {
            for who in CALLERS {
                let (a, b) = (run(&k.mnt, who, umask, op), run(&o.mnt, who, umask, op));
                count += 1;
                if a != b {
                    differ.push(format!(
                        "{} umask {umask}: {op}\n    kernel: {a}\n    ovlfs:  {b}",
                        who.0
                    ));
                }
            }
        }
    }
    let d = diff(
        &snapshot(&k.mnt, SnapMode::Merged),
        &snapshot(&o.mnt, SnapMode::Merged),
        "kernel",
        "ovlfs",
    );
    differ.extend(d.into_iter().map(|l| format!("merged: {l}")));
    unmount(&k.mnt).unwrap();
    unmount(&o.mnt).unwrap();
    let d = diff(
        &snapshot(&k.upper, SnapMode::Layer),
        &snapshot(&o.upper, SnapMode::Layer),
        "kernel",
        "ovlfs",
    );
    differ.extend(d.into_iter().map(|l| format!("upper: {l}")));
    eprintln!("access table: {count} operations");
    assert!(
        differ.is_empty(),
        "{} differences from the kernel overlay:\n{}",
        differ.len(),
        differ.join("\n")
    );
}
