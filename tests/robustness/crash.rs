//! 1. SIGKILL during copy-up; 2. SIGKILL during renames.

use super::support::*;
use super::tree::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ============================================================================
// 1. SIGKILL during copy-up
// ============================================================================

const BIG: usize = 256 * MIB;

/// A 256 MiB lower file, all data (no holes): a 1 MiB random block with the
/// block number stamped in front, so misplaced blocks are caught too.
fn write_big(p: &Path) {
    let block = pgen(0xB16, MIB);
    let mut f = fs::File::create(p).unwrap();
    let mut b = block.clone();
    for i in 0..(BIG / MIB) {
        b[..8].copy_from_slice(&(i as u64 ^ 0xA5A5_A5A5).to_le_bytes());
        f.write_all(&b).unwrap();
    }
    f.sync_all().unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Anchor {
    /// Delay counted from the open(2) that triggers the copy-up.
    Open,
    /// Delay counted from the moment a `#` entry shows up in W/work.
    Temp,
}

#[test]
fn crash_during_copy_up_never_leaves_a_partial_file() {
    if !usable("crash_during_copy_up", false) {
        return;
    }
    let s = Scratch::new("copyup");
    let lower = s.dir("lower");
    let big = lower.join("big");
    write_big(&big);
    let plan: &[(Anchor, u64)] = &[
        (Anchor::Open, 0),
        (Anchor::Open, 2),
        (Anchor::Temp, 0),
        (Anchor::Temp, 2),
        (Anchor::Temp, 5),
        (Anchor::Temp, 10),
        (Anchor::Temp, 20),
        (Anchor::Temp, 50),
        (Anchor::Temp, 100),
        (Anchor::Temp, 200),
        (Anchor::Temp, 400),
        (Anchor::Open, 3000),
    ];
    let mut mid_copy = 0;
    let mut complete = 0;
    for (round, &(anchor, ms)) in plan.iter().enumerate() {
        let root = s.dir(&format!("r{round}"));
        let st = Stack::new(&root, vec![lower.clone()]);
        let mut child = st.spawn_fg();
        let pid = child.id() as i32;
        let target = st.mnt.join("big");
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let r = fs::OpenOptions::new()
                .append(true) // O_WRONLY|O_APPEND: copy-up
                .open(&target)
                .map(drop)
                .map_err(|e| os_err(&e));
            let _ = tx.send(r);
        });
        let mut open_result = None;
        if let Anchor::Temp = anchor {
            let work = st.work.join("work");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if dir_names(&work)
                    .iter()
                    .any(|n| n.as_bytes().starts_with(b"#"))
                {
                    break;
                }
                if let Ok(r) = rx.try_recv() {
                    open_result = Some(r); // the copy-up finished before we saw it
                    break;
                }
                assert!(Instant::now() < deadline, "no copy-up started in 20 s");
                std::thread::yield_now();
            }
        }
        std::thread::sleep(Duration::from_millis(ms));
        sigkill(pid);
        let _ = child.wait();
        let killed_at = t0.elapsed();
        let open_result = match open_result {
            Some(r) => r,
            None => rx
                .recv_timeout(Duration::from_secs(30))
                .expect("HANG: open(2) did not return after the daemon was killed"),
        };
        umount_lazy(&st.mnt);
        let leftovers = st.work_entries();
        if !leftovers.is_empty() {
            mid_copy += 1;
        }
        let up = st.upper.join("big");
        let ctx = format!(
            "round {round} ({anchor:?}+{ms} ms, killed after {killed_at:?}, open: {}, W/work: {leftovers:?})",
            open_result.map_or_else(ename, |_| "OK".into())
        );
        match fs::symlink_metadata(&up) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    open_result.is_err(),
                    "{ctx}: open for write succeeded but the upper has no copy"
                );
            }
            Err(e) => panic!("{ctx}: lstat upper: {e}"),
            Ok(md) => {
                assert!(md.is_file(), "{ctx}: upper big is not a regular file");
                assert_eq!(
                    md.len(),
                    BIG as u64,
                    "{ctx}: PARTIAL COPY at the visible upper path"
                );
                files_equal(&up, &big).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                complete += 1;
            }
        }
        // The leftover must be confined to W/work: nothing else in the upper.
        let extra: Vec<OsString> = dir_names(&st.upper)
            .into_iter()
            .filter(|n| n != "big")
            .collect();
        assert!(extra.is_empty(), "{ctx}: stray upper entries {extra:?}");

        // Remount: W/work is emptied, the merged file is complete, and a
        // copy-up after the crash works.
        let pid = st.mount();
        let left = st.work_entries();
        assert!(
            left.is_empty(),
            "{ctx}: W/work not emptied at mount: {left:?}"
        );
        files_equal(&st.mnt.join("big"), &big)
            .unwrap_or_else(|e| panic!("{ctx}: merged view after remount: {e}"));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(st.mnt.join("big"))
            .unwrap_or_else(|e| panic!("{ctx}: open for append after remount: {e}"));
        f.write_all(b"tail!").unwrap();
        drop(f);
        st.umount(pid);
        let md = fs::metadata(&up).unwrap();
        assert_eq!(md.len(), BIG as u64 + 5, "{ctx}: size after the append");
        let mut t = [0u8; 5];
        fs::File::open(&up)
            .unwrap()
            .read_exact_at(&mut t, BIG as u64)
            .unwrap();
        assert_eq!(&t, b"tail!", "{ctx}");
        eprintln!("copy-up crash {ctx}: ok");
        let _ = fs::remove_dir_all(&root);
    }
    eprintln!(
        "copy-up crash: {mid_copy} kills left a temp in W/work, {complete} left a complete copy"
    );
    assert!(
        mid_copy > 0,
        "no kill landed during a copy-up (W/work always empty): the crash window was not exercised"
    );
}

// ============================================================================
// 2. SIGKILL during renames
// ============================================================================

/// 32 names: d{0,1}/{f,g}{0..7}; the f names exist in the lower layer.
const NNAMES: usize = 32;

fn rname(i: usize) -> String {
    format!(
        "d{}/{}{}",
        i / 16,
        if (i % 16) < 8 { "f" } else { "g" },
        i % 8
    )
}

fn rcontent(id: u32) -> Vec<u8> {
    let mut v = format!("content #{id} ").into_bytes();
    let n = 100 + (id as usize * 997) % 6000;
    while v.len() < n {
        v.extend_from_slice(format!("[{id}]").as_bytes());
    }
    v
}

type RModel = BTreeMap<usize, u32>;

#[derive(Clone, Copy, Debug)]
enum ROp {
    Move {
        src: usize,
        dst: usize,
        noreplace: bool,
    },
    Replace {
        src: usize,
        dst: usize,
    },
    Exchange {
        a: usize,
        b: usize,
    },
}

fn rapply(m: &RModel, op: ROp) -> RModel {
    let mut m = m.clone();
    match op {
        ROp::Move { src, dst, .. } | ROp::Replace { src, dst } => {
            let c = m.remove(&src).unwrap();
            m.insert(dst, c);
        }
        ROp::Exchange { a, b } => {
            let (ca, cb) = (m[&a], m[&b]);
            m.insert(a, cb);
            m.insert(b, ca);
        }
    }
    m
}

fn rpick(m: &RModel, rng: &mut Rng) -> ROp {
    let names: Vec<usize> = m.keys().copied().collect();
    let src = names[rng.below(names.len() as u64) as usize];
    let mut dst = rng.below(NNAMES as u64) as usize;
    while dst == src {
        dst = rng.below(NNAMES as u64) as usize;
    }
    if !m.contains_key(&dst) {
        ROp::Move {
            src,
            dst,
            noreplace: rng.below(2) == 0,
        }
    } else if rng.below(2) == 0 || m.len() <= 12 {
        ROp::Exchange { a: src, b: dst }
    } else {
        ROp::Replace { src, dst }
    }
}

fn rdo(mnt: &Path, op: ROp) -> Result<(), i32> {
    let p = |i: usize| mnt.join(rname(i));
    match op {
        ROp::Move {
            src,
            dst,
            noreplace,
        } => renameat2(
            &p(src),
            &p(dst),
            if noreplace { libc::RENAME_NOREPLACE } else { 0 },
        ),
        ROp::Replace { src, dst } => renameat2(&p(src), &p(dst), 0),
        ROp::Exchange { a, b } => renameat2(&p(a), &p(b), libc::RENAME_EXCHANGE),
    }
}

/// Files of d0/d1 as seen in a tree, by name index → content.
fn rstate(t: &Tree) -> Result<BTreeMap<usize, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for (k, e) in t {
        let k = String::from_utf8_lossy(k).into_owned();
        if k == "d0" || k == "d1" {
            continue;
        }
        let Some(i) = (0..NNAMES).find(|i| rname(*i) == k) else {
            return Err(format!("unexpected entry {k:?}: {e:?}"));
        };
        match e {
            Ent::File { data, .. } => {
                out.insert(i, data.clone());
            }
            other => return Err(format!("{k}: not a regular file: {other:?}")),
        }
    }
    Ok(out)
}

fn rrender(m: &RModel) -> BTreeMap<usize, Vec<u8>> {
    m.iter().map(|(k, c)| (*k, rcontent(*c))).collect()
}

fn rdescribe(m: &BTreeMap<usize, Vec<u8>>) -> String {
    m.iter()
        .map(|(k, v)| {
            let id = String::from_utf8_lossy(&v[..v.len().min(16)]).into_owned();
            format!("{}={}", rname(*k), id.trim_end())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn crash_during_renames_keeps_every_name_old_or_new() {
    if !usable("crash_during_renames", true) {
        return;
    }
    let s = Scratch::new("rename");
    let lower = s.dir("lower");
    let mut model = RModel::new();
    for i in 0..NNAMES {
        if (i % 16) < 8 {
            write_file(&lower.join(rname(i)), &rcontent(i as u32));
            model.insert(i, i as u32);
        }
    }
    let st = Stack::new(&s.path.join("ovl"), vec![lower.clone()]);
    let kmnt = s.path.join("kmnt");
    let kwork = s.path.join("kwork");
    let delays = [3u64, 10, 25, 50, 100, 200, 7, 15, 40, 75, 150, 1, 5, 30];
    let mut applied = 0;
    let mut total_ops = 0usize;
    for (round, &delay) in delays.iter().enumerate() {
        let mut child = st.spawn_fg();
        let pid = child.id() as i32;
        if round == 0 {
            // Copy up most lower files (d1/f4..f7 stay lower-only: their
            // renames copy up first), and add upper-only files.
            for i in 0..NNAMES {
                if (i % 16) < 8 && !(16 + 4..16 + 8).contains(&i) {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(st.mnt.join(rname(i)))
                        .unwrap_or_else(|e| panic!("copy-up {}: {e}", rname(i)));
                }
            }
            for i in [8usize, 9, 10, 11, 24, 25, 26, 27] {
                fs::write(st.mnt.join(rname(i)), rcontent(100 + i as u32)).unwrap();
                model.insert(i, 100 + i as u32);
            }
        }
        let start = model.clone();
        let mnt = st.mnt.clone();
        let seed = 1000 + round as u64;
        let worker = std::thread::spawn(move || {
            let mut m = start;
            let mut rng = Rng::new(seed);
            let mut done = 0usize;
            loop {
                let op = rpick(&m, &mut rng);
                match rdo(&mnt, op) {
                    Ok(()) => {
                        m = rapply(&m, op);
                        done += 1;
                    }
                    Err(e) if e == libc::ENOTCONN || e == libc::ECONNABORTED => {
                        return (m, op, None, done);
                    }
                    Err(e) => {
                        return (m, op, Some(format!("{op:?}: {}", ename(e))), done);
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(delay));
        sigkill(pid);
        let _ = child.wait();
        let (m_done, inflight, err, done) = timed("joining the rename loop", 30, move || {
            worker.join().unwrap()
        });
        umount_lazy(&st.mnt);
        total_ops += done;
        assert!(
            err.is_none(),
            "round {round}: rename failed: {}",
            err.unwrap()
        );
        let m_next = rapply(&m_done, inflight);

        // A fresh ovlfs mount shows either the state before or after the op in flight.
        let pid = st.mount();
        let tree_ovl = snapshot(&st.mnt).unwrap_or_else(|e| panic!("round {round}: {e}"));
        st.umount(pid);
        let seen = rstate(&tree_ovl).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let (before, after) = (rrender(&m_done), rrender(&m_next));
        let ctx = format!(
            "round {round} (kill after {delay} ms, {done} renames done, in flight {inflight:?})"
        );
        model = if seen == before {
            m_done
        } else if seen == after {
            applied += 1;
            m_next
        } else {
            panic!(
                "{ctx}: merged state is neither before nor after the rename in flight\n  seen:   {}\n  before: {}\n  after:  {}",
                rdescribe(&seen),
                rdescribe(&before),
                rdescribe(&after)
            );
        };

        // No partial objects in the upper: exactly the model's files, complete;
        // whiteouts only where nothing is shown.
        for d in ["d0", "d1"] {
            for name in dir_names(&st.upper.join(d)) {
                let rel = format!("{d}/{}", name.to_string_lossy());
                let p = st.upper.join(&rel);
                let md = fs::symlink_metadata(&p).unwrap();
                let idx = (0..NNAMES).find(|i| rname(*i) == rel);
                if is_whiteout(&md) {
                    assert!(
                        idx.is_none_or(|i| !model.contains_key(&i)),
                        "{ctx}: whiteout at shown name {rel}"
                    );
                    continue;
                }
                let i = idx.unwrap_or_else(|| panic!("{ctx}: stray upper entry {rel} ({md:?})"));
                assert!(md.is_file(), "{ctx}: upper {rel} is not a regular file");
                let want = model
                    .get(&i)
                    .unwrap_or_else(|| panic!("{ctx}: upper {rel} exists but is not shown"));
                assert!(
                    fs::read(&p).unwrap() == rcontent(*want),
                    "{ctx}: upper {rel} has partial or wrong content"
                );
            }
        }

        // The kernel overlay mounts the same layers and shows the same tree.
        mount_kernel(std::slice::from_ref(&lower), &st.upper, &kwork, &kmnt)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let tree_k = snapshot(&kmnt);
        umount_kernel(&kmnt);
        let tree_k = tree_k.unwrap_or_else(|e| panic!("{ctx}: kernel overlay: {e}"));
        let d = tree_diff("ovlfs", &tree_ovl, "kernel", &tree_k);
        assert!(
            d.is_empty(),
            "{ctx}: ovlfs and kernel overlay differ:\n  {}",
            d.join("\n  ")
        );
        eprintln!("rename crash {ctx}: ok");
    }
    eprintln!(
        "rename crash: {total_ops} renames over {} rounds; the rename in flight had taken effect in {applied}",
        delays.len()
    );
}
