//! Scripted permission scenarios: operations run by non-root callers (in a
//! forked child with their credentials, see common/creds.rs) over the
//! fixture's `perm/` tree (common/fixture.rs). The kernel overlay checks the
//! caller against the overlay inode; ovlfs must give the same access, errno,
//! and owner/group/mode on what it creates. A refused operation must change
//! nothing in the upper (the end-of-sequence upper tree comparison checks
//! that; `perm_refused` consists of refused operations and reads only).
//!
//! Callers: A = uid 1000/gid 1000 + group 2000, B = uid 1001/gid 1001,
//! G = uid 0 with gid 2000.
use crate::common::ops::{Op, Who};
use crate::scenarios::Scenario;
use crate::steps::*;

const A: Who = Who::U1000;
const B: Who = Who::U1001;
const G: Who = Who::RootG2000;
const KEEP: u32 = u32::MAX;

fn create_mode(p: &str, mode: u32) -> Op {
    Op::Create { p: s(p), mode }
}

#[rustfmt::skip]
pub fn scenarios() -> Vec<Scenario> {
    let rw = |name, steps| Scenario {
        name,
        read_only: false,
        steps,
    };
    vec![
        rw(
            "perm_refused",
            vec![
                er(write("perm/f0644_r", 5), "EACCES").by(A), er(pwrite("perm/f0644_r", 0, 5), "EACCES").by(A),
                er(append("perm/f0644_r", 5), "EACCES").by(A), er(truncate("perm/f0644_r", 0), "EACCES").by(A),
                er(truncate("perm/l2_f0644_r", 0), "EACCES").by(A), er(write("perm/f0660_g", 3), "EACCES").by(B),
                er(read("perm/f0600_r"), "EACCES").by(A), er(read("perm/f0600_u"), "EACCES").by(B),
                er(read("perm/l2_f0600_u"), "EACCES").by(B), er(read("perm/f0660_g"), "EACCES").by(B),
                er(mmap_read("perm/f0600_r"), "EACCES").by(A), er(mmap_write("perm/f0644_r", 0, 3), "EACCES").by(A),
                er(access("perm/f0644_r", libc::W_OK), "EACCES").by(A),
                er(chmod("perm/f0644_r", 0o666), "EPERM").by(A), er(chown("perm/f0644_r", 1000, 1000), "EPERM").by(A),
                er(utimes("perm/f0644_r", 1, false), "EPERM").by(A), er(touch_now("perm/f0644_r"), "EACCES").by(A),
                er(setx("perm/f0644_r", "user.a", "1", 0), "EACCES").by(A),
                er(rmx("perm/f0644_r", "user.p"), "EACCES").by(A), er(getx("perm/f0600_r", "user.p"), "EACCES").by(A),
                er(setx("perm/d0755_r", "user.a", "1", 0), "EACCES").by(A),
                er(setx("perm/f0644_u", "trusted.x", "1", 0), "EPERM").by(A),
                er(create("perm/d0755_r/new"), "EACCES").by(A), er(unlink("perm/d0755_r/f_u"), "EACCES").by(A),
                er(rename("perm/d0755_r/f_u", "perm/d0755_u/x"), "EACCES").by(A),
                er(mkdir("perm/d0755_r/nd", 0o755), "EACCES").by(A),
                er(link("perm/f0644_u", "perm/d0755_r/hl"), "EACCES").by(A),
                er(link("perm/d0755_u/f_r", "perm/d0755_u/hl"), "EPERM").by(A),
                er(symlink("x", "perm/d0755_r/sl"), "EACCES").by(A), er(mkfifo("perm/d0755_r/ff"), "EACCES").by(A),
                er(stat("perm/d0700_r/f"), "EACCES").by(A), er(readdir("perm/d0700_r"), "EACCES").by(A),
                er(create("perm/d0700_r/new"), "EACCES").by(A), er(read("perm/d0700_r/f"), "EACCES").by(A),
                er(stat("perm/d0700_u/f"), "EACCES").by(B), er(write("perm/d0700_u/f", 3), "EACCES").by(B),
                er(statfs("perm/d0700_r/f"), "EACCES").by(A), er(unlink("perm/sticky_r/f_u1"), "EPERM").by(A),
                er(rmdir("perm/sticky_r/d_u"), "EPERM").by(B), er(create("a_new_top"), "EACCES").by(A),
                er(rmrf("perm/d0755_r"), "EACCES").by(A), er(chmod("perm/f0644_u", 0o777), "EPERM").by(B),
                er(chown("perm/f0755_u", KEEP, 1001), "EPERM").by(A),
                er(chown("perm/f0755_u", 1001, KEEP), "EPERM").by(A),
                er(mkdir("merged/nd", 0o755), "EACCES").by(B), er(unlink("merged/common"), "EACCES").by(B),
                ok(stat("perm/d0700_r")).by(A), ok(read("perm/f0644_r")).by(A), ok(read("perm/f0660_g")).by(A),
                ok(access("perm/f0660_g", libc::W_OK)).by(A), ok(stat("perm/d0700_u/f")).by(A),
                ok(readdir("perm")).by(B), ok(getx("perm/f0644_r", "user.p")).by(A),
                ok(listx("perm/f0600_r")).by(A), ok(mmap_read("perm/f0644_r")).by(B), ok(statfs("perm")).by(B),
                ok(access("perm/f0755_r", libc::X_OK)).by(B), er(access("perm/f0644_r", libc::X_OK), "EACCES").by(G),
            ],
        ),
        rw(
            "perm_readonly_dir",
            vec![
                er(create("perm/d0555_r/new"), "EACCES").by(A), er(mkdir("perm/d0555_r/nd", 0o755), "EACCES").by(A),
                er(unlink("perm/d0555_r/f"), "EACCES").by(A), er(rmdir("perm/d0555_r/sub"), "EACCES").by(A),
                er(rename("perm/d0555_r/f", "perm/d0755_u/x"), "EACCES").by(A),
                er(rename("perm/d0755_u/f_u", "perm/d0555_r/x"), "EACCES").by(A),
                er(symlink("x", "perm/d0555_r/sl"), "EACCES").by(A),
                er(link("perm/d0755_u/f_u", "perm/d0555_r/hl"), "EACCES").by(A),
                er(mkfifo("perm/d0555_r/ff"), "EACCES").by(A), er(create("perm/d0555_u/new"), "EACCES").by(A),
                er(unlink("perm/d0555_u/f"), "EACCES").by(A), er(create("perm/d0555_r/new"), "EACCES").by(B),
                ok(chmod("perm/d0555_u", 0o755)).by(A), ok(stat("perm/d0555_u")), ok(create("perm/d0555_u/new")).by(A),
                ok(stat("perm/d0555_u/new")), ok(unlink("perm/d0555_u/f")).by(A), ok(create("perm/d0555_r/byroot")),
                ok(write("perm/d0555_r/f", 5)).by(G), ok(create("perm/d0555_r/g")).by(G), ok(stat("perm/d0555_r/g")),
                ok(mkdir("perm/d0555_r/sub/gd", 0o700)).by(G), ok(stat("perm/d0555_r/sub/gd")),
                ok(create("perm/d0700_u/g")).by(G), ok(stat("perm/d0700_u/g")), ok(readdir("perm/d0555_r")),
                ok(readdir("perm/d0555_u")),
            ],
        ),
        rw(
            "perm_sticky",
            vec![
                er(unlink("perm/sticky_r/f_u1"), "EPERM").by(A), er(unlink("perm/sticky_r/f_r"), "EPERM").by(A),
                er(rename("perm/sticky_r/f_u1", "perm/sticky_r/mine"), "EPERM").by(A),
                er(rename("perm/sticky_r/f_u", "perm/sticky_r/f_u1"), "EPERM").by(A),
                ok(write("perm/sticky_r/f_u1", 7)).by(A), ok(stat("perm/sticky_r/f_u1")),
                ok(unlink("perm/sticky_r/f_u")).by(A), ok(create("perm/sticky_r/new")).by(B),
                ok(stat("perm/sticky_r/new")), er(unlink("perm/sticky_r/new"), "EPERM").by(A),
                ok(rename("perm/sticky_r/new", "perm/sticky_r/newb")).by(B),
                er(rmdir("perm/sticky_r/d_u"), "EPERM").by(B), ok(create("perm/sticky_r/d_u/inner")).by(B),
                ok(unlink("perm/sticky_r/d_u/inner")).by(A), ok(rmdir("perm/sticky_r/d_u")).by(A),
                er(unlink("perm/sticky_u/f_r"), "EPERM").by(B), ok(unlink("perm/sticky_u/f_u1")).by(B),
                ok(unlink("perm/sticky_u/f_r")).by(A), ok(unlink("perm/sticky_r/f_r")),
                ok(mkdir("perm/sticky_u/bd", 0o755)).by(B), ok(stat("perm/sticky_u/bd")),
                ok(rmdir("perm/sticky_u/bd")).by(A), ok(readdir("perm/sticky_r")), ok(readdir("perm/sticky_u")),
            ],
        ),
        rw(
            "perm_sgid",
            vec![
                ok(create("perm/sgid/a_file")).by(A), ok(stat("perm/sgid/a_file")),
                ok(mkdir("perm/sgid/a_dir", 0o755)).by(A), ok(stat("perm/sgid/a_dir")),
                ok(create("perm/sgid/a_dir/deeper")).by(A), ok(stat("perm/sgid/a_dir/deeper")),
                ok(create_mode("perm/sgid/a_sgid", 0o2755)).by(A), ok(stat("perm/sgid/a_sgid")),
                er(create("perm/sgid/b_file"), "EACCES").by(B),
                ok(create_mode("perm/sgid_open/b_sgid", 0o2755)).by(B), ok(stat("perm/sgid_open/b_sgid")),
                ok(mkdir("perm/sgid_open/b_dir", 0o777)).by(B), ok(stat("perm/sgid_open/b_dir")),
                ok(mkfifo("perm/sgid/a_fifo")).by(A), ok(lstat("perm/sgid/a_fifo")),
                ok(symlink("x", "perm/sgid/a_sym")).by(A), ok(lstat("perm/sgid/a_sym")),
                ok(create("perm/sgid/g_file")).by(G), ok(stat("perm/sgid/g_file")),
                ok(create("perm/d0755_r/g_file")).by(G), ok(stat("perm/d0755_r/g_file")),
                ok(mkdir("perm/d0755_r/g_dir", 0o755)).by(G), ok(stat("perm/d0755_r/g_dir")),
                ok(create("sgid_dir/a_new")).by(A), ok(stat("sgid_dir/a_new")),
                ok(mkdir("sgid_dir/a_dir", 0o700)).by(A), ok(stat("sgid_dir/a_dir")),
                ok(create("perm/sgid/sub/new")).by(A), ok(stat("perm/sgid/sub/new")),
                ok(link("perm/d0755_u/f_u", "perm/sgid/hl")).by(A), ok(stat("perm/sgid/hl")),
                ok(rename("perm/d0755_u/f_u1", "perm/sgid/moved")).by(A), ok(stat("perm/sgid/moved")),
                ok(write_creat("perm/sgid_open/w", 10)).by(B), ok(stat("perm/sgid_open/w")),
                ok(create_mode("perm/d0755_u/own_sgid", 0o2755)).by(A), ok(stat("perm/d0755_u/own_sgid")),
                ok(create_mode("perm/d0755_u/own_suid", 0o4755)).by(A), ok(stat("perm/d0755_u/own_suid")),
                ok(readdir("perm/sgid")), ok(readdir("perm/sgid_open")),
            ],
        ),
        rw(
            "perm_attrs",
            vec![
                er(chmod("perm/f0644_r", 0o666), "EPERM").by(A), er(chown("perm/f0644_r", 1000, KEEP), "EPERM").by(A),
                er(chown("perm/f0644_r", KEEP, 1000), "EPERM").by(A), er(utimes("perm/f0644_r", 1, false), "EPERM").by(A),
                er(touch_now("perm/f0644_r"), "EACCES").by(A), ok(touch_now("perm/f0666_r")).by(A),
                ok(stat("perm/f0666_r")), er(utimes("perm/f0666_r", 1, false), "EPERM").by(A),
                ok(utimes("perm/f0644_u", 2, false)).by(A), ok(stat("perm/f0644_u")),
                ok(chmod("perm/f0644_u", 0o600)).by(A), ok(stat("perm/f0644_u")),
                ok(chown("perm/f0755_u", KEEP, 2000)).by(A), ok(stat("perm/f0755_u")),
                er(chown("perm/f0755_u", KEEP, 1001), "EPERM").by(A), er(chown("perm/f0755_u", 1001, KEEP), "EPERM").by(A),
                ok(chown("perm/f0600_u", 1000, 1000)).by(A), ok(stat("perm/f0600_u")),
                ok(chmod("perm/f0644_u_g0", 0o2644)).by(A), ok(stat("perm/f0644_u_g0")),
                ok(chmod("perm/f0666_u", 0o2666)).by(A), ok(stat("perm/f0666_u")),
                ok(truncate("perm/f2755_u", 1)).by(A), ok(stat("perm/f2755_u")),
                ok(chown("perm/f2755_u", KEEP, 1000)).by(A), ok(stat("perm/f2755_u")),
                ok(write("perm/f4755_u", 5)).by(A), ok(stat("perm/f4755_u")),
                ok(chown("perm/f4755_r", 1000, KEEP)), ok(stat("perm/f4755_r")),
                ok(append("perm/f2755_r", 3)), ok(stat("perm/f2755_r")),
                ok(chown("perm/f0644_u", KEEP, 2000)).by(G), ok(stat("perm/f0644_u")),
                ok(chmod("perm/f0666_r", 0o4777)).by(G), ok(stat("perm/f0666_r")),
                ok(write("perm/f0666_r", 9)).by(A), ok(stat("perm/f0666_r")),
                ok(setx("perm/f0644_u", "user.a", "1", 0)).by(A), ok(setx("perm/f0666_r", "user.a", "1", 0)).by(A),
                ok(getx("perm/f0666_r", "user.a")).by(B), ok(rmx("perm/f0644_u", "user.p")).by(A),
                ok(listx("perm/f0644_u")), ok(chmod("perm/d0755_u", 0o700)).by(A), ok(stat("perm/d0755_u")),
                er(stat("perm/d0755_u/f_u"), "EACCES").by(B), ok(utimes("perm/d0755_u", 3, false)).by(A),
                ok(stat("perm/d0755_u")), ok(chmod("perm/sgid", 0o775)).by(G), ok(stat("perm/sgid")),
            ],
        ),
        // open(O_TRUNC) without a write: the kernel kills S_ISUID and
        // S_ISGID (group-executable) of a caller without CAP_FSETID.
        rw(
            "perm_open_trunc_sgid",
            vec![ok(write("perm/f2755_u", 0)).by(A), ok(stat("perm/f2755_u"))],
        ),
        rw(
            "perm_open_trunc_suid",
            vec![
                ok(write("perm/f4755_r", 0)), ok(stat("perm/f4755_r")), ok(write("perm/f2755_r", 0)).by(G),
                ok(stat("perm/f2755_r")), ok(write("perm/f4755_u", 0)).by(A), ok(stat("perm/f4755_u")),
            ],
        ),
        rw(
            "perm_rename_lower",
            vec![
                ok(rename("perm/d0755_u/f_r", "perm/d0755_u/moved")).by(A), ok(stat("perm/d0755_u/moved")),
                ok(rename("perm/d0755_u/moved", "perm/l2_d0755_u/moved2")).by(A),
                ok(read("perm/l2_d0755_u/moved2")).by(A), ok(rename("perm/d0755_u/l2f", "perm/l2_d0755_u/l2f")).by(A),
                ok(rename_f("perm/d0755_u/f_u", "perm/d0755_u/f_u1", libc::RENAME_EXCHANGE)).by(A),
                ok(stat("perm/d0755_u/f_u")), ok(stat("perm/d0755_u/f_u1")),
                ok(mkdir("perm/d0755_u/nd", 0o777)).by(A), ok(stat("perm/d0755_u/nd")),
                ok(create("perm/d0755_u/nd/f")).by(A), ok(rename("perm/d0755_u/nd", "perm/l2_d0755_u/nd")).by(A),
                er(rename("perm/l2_d0755_u", "perm/x"), "EACCES").by(A),
                ok(symlink("target", "perm/d0755_u/sl")).by(A), ok(lstat("perm/d0755_u/sl")),
                ok(mkfifo("perm/d0755_u/ff")).by(A), ok(lstat("perm/d0755_u/ff")),
                er(link("perm/d0755_u/f_u", "perm/d0755_u/hl"), "EPERM").by(A),
                ok(link("perm/d0755_u/f_u1", "perm/d0755_u/hl")).by(A), ok(stat("perm/d0755_u/hl")),
                ok(unlink("perm/d0755_u/f_u")).by(A), ok(readdir("perm/d0755_u")), ok(readdir("perm/l2_d0755_u")),
                er(rename("perm/d0755_u/hl", "perm/d0755_r/hl"), "EACCES").by(A),
                ok(rename("perm/d0755_u/hl", "perm/sticky_r/hl")).by(A), ok(stat("perm/sticky_r/hl")),
                ok(write_creat("perm/l2_d0755_u/newf", 100)).by(A), ok(stat("perm/l2_d0755_u/newf")),
                er(rename("perm/l2_d0755_u/newf", "perm/sticky_r/f_u1"), "EPERM").by(A),
                ok(rename("perm/sticky_r/f_u1", "perm/sticky_r/u1")).by(B), ok(rmrf("perm/l2_d0755_u/nd")).by(A),
                ok(mkdir("perm/d0755_u/rdir", 0o755)).by(G), ok(stat("perm/d0755_u/rdir")),
                er(rename("perm/d0755_u/rdir", "perm/l2_d0755_u/rdir"), "EACCES").by(A),
                ok(rename("perm/d0755_u/rdir", "perm/d0755_u/rdir2")).by(A),
                ok(mkdir("perm/sticky_r/adir", 0o700)).by(A), ok(rename("perm/sticky_r/adir", "perm/d0755_u/adir")).by(A),
                ok(stat("perm/d0755_u/adir")), ok(mmap_write("perm/sticky_r/u1", 1, 3)).by(A),
                ok(stat("perm/sticky_r/u1")), ok(mmap_write("perm/f0755_u", 0, 2)).by(A), ok(stat("perm/f0755_u")),
                any(rmrf("perm/l2_d0755_u")).by(A), ok(readdir("perm/l2_d0755_u")), ok(readdir("perm")),
            ],
        ),
    ]
}
