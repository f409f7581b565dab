//! 3. A clean umount loses nothing.

use super::support::*;
use super::tree::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::Duration;

// ============================================================================
// 3. A clean umount loses nothing
// ============================================================================

const SIZES: &[usize] = &[0, 1, 100, 4095, 4096, 4097, 65535, 65536, 131073, 300_001];

fn write_strategy(f: &fs::File, i: usize, data: &[u8]) {
    let mut f = f;
    match i % 4 {
        0 => f.write_all(data).unwrap(),
        1 => {
            for c in data.chunks(1000) {
                f.write_all(c).unwrap();
            }
        }
        2 => {
            // Back to front, positioned.
            let chunks: Vec<(usize, &[u8])> = data
                .chunks(65536)
                .enumerate()
                .map(|(k, c)| (k * 65536, c))
                .collect();
            for (off, c) in chunks.into_iter().rev() {
                f.write_all_at(c, off as u64).unwrap();
            }
        }
        _ => {
            f.set_len(data.len() as u64).unwrap();
            for (k, c) in data.chunks(7777).enumerate() {
                f.write_all_at(c, (k * 7777) as u64).unwrap();
            }
        }
    }
}

fn clean_umount_case(lazy: bool) {
    let s = Scratch::new(if lazy { "umountl" } else { "umount" });
    let lower = s.dir("lower");
    let mut lower_files = Vec::new();
    for j in 0..40usize {
        let rel = format!("ld{}/lf{j}", j % 2);
        let data = pgen(5000 + j as u64, SIZES[j % SIZES.len()] + j);
        write_file(&lower.join(&rel), &data);
        lower_files.push((rel, data));
    }
    let st = Stack::new(&s.path.join("ovl"), vec![lower.clone()]);
    let pid = st.mount();
    let mut expect: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (j, (rel, data)) in lower_files.iter().enumerate() {
        let add = pgen(6000 + j as u64, 1 + j * 1013);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(st.mnt.join(rel))
            .unwrap_or_else(|e| panic!("append {rel}: {e}"));
        let (a, b) = add.split_at(add.len() / 2);
        f.write_all(a).unwrap();
        f.write_all(b).unwrap();
        let mut all = data.clone();
        all.extend_from_slice(&add);
        expect.insert(rel.clone(), all);
    }
    for d in ["n0", "n1", "n2"] {
        fs::create_dir(st.mnt.join(d)).unwrap();
    }
    let dirs = ["n0", "n1", "n2", "ld0", "ld1"];
    for i in 0..1000usize {
        let rel = format!("{}/f{i}", dirs[i % dirs.len()]);
        let size = if i % 97 == 0 {
            3 * MIB + i
        } else {
            SIZES[i % SIZES.len()] + (i % 3)
        };
        let data = pgen(i as u64, size);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(st.mnt.join(&rel))
            .unwrap_or_else(|e| panic!("create {rel}: {e}"));
        write_strategy(&f, i, &data);
        expect.insert(rel, data);
    }

    if lazy {
        // A child holds a file open across `umount -l` and writes after it.
        let src = s.path.join("held-src");
        let held_data = pgen(777, 2 * MIB + 3);
        fs::write(&src, &held_data).unwrap();
        let mut holder = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3>>"$1" || exit 9; echo open; read x; cat "$2" >&3 || exit 8; exec 3>&-; exit 0"#)
            .arg("sh")
            .arg(st.mnt.join("n0/held"))
            .arg(&src)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "open\n", "the holder could not open n0/held");
        umount_lazy(&st.mnt);
        assert!(!is_mounted(&st.mnt), "still mounted after umount -l");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            alive(pid),
            "daemon exited while a file was still open after umount -l"
        );
        holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let hst = timed("holder writing after umount -l", 60, move || holder.wait()).unwrap();
        assert!(hst.success(), "holder writing after umount -l: {hst}");
        expect.insert("n0/held".into(), held_data);
        assert!(
            wait_gone(pid, Duration::from_secs(15)),
            "daemon still running 15 s after the last file closed (umount -l)"
        );
    } else {
        st.umount(pid);
    }

    // Every byte is in the upper, and nothing else is.
    let mut bad = Vec::new();
    for (rel, want) in &expect {
        match fs::read(st.upper.join(rel)) {
            Ok(got) if got == *want => {}
            Ok(got) => {
                let at = got.iter().zip(want).position(|(a, b)| a != b);
                bad.push(format!(
                    "{rel}: {} bytes, want {} (first difference at {at:?})",
                    got.len(),
                    want.len()
                ))
            }
            Err(e) => bad.push(format!("{rel}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} files wrong in the upper after umount{}:\n  {}",
        bad.len(),
        expect.len(),
        if lazy { " -l" } else { "" },
        bad[..bad.len().min(20)].join("\n  ")
    );
    let up = snapshot(&st.upper).unwrap();
    let files: BTreeSet<String> = up
        .iter()
        .filter(|(_, e)| matches!(e, Ent::File { .. }))
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    let want: BTreeSet<String> = expect.keys().cloned().collect();
    assert_eq!(files, want, "regular files in the upper");
    let left = st.work_entries();
    assert!(
        left.is_empty(),
        "W/work not empty after a clean unmount: {left:?}"
    );
}

#[test]
fn clean_umount_loses_nothing() {
    if !usable("clean_umount_loses_nothing", false) {
        return;
    }
    clean_umount_case(false);
}

#[test]
fn lazy_umount_with_open_file_loses_nothing() {
    if !usable("lazy_umount_with_open_file_loses_nothing", false) {
        return;
    }
    clean_umount_case(true);
}
