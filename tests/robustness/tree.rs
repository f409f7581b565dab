//! Trees: snapshots through a mount, and the merge recomputed from the layers.

use super::support::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

// ============================================================================
// Trees: snapshots through a mount, and the merge recomputed from the layers
// ============================================================================

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Ent {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        data: Vec<u8>,
    },
    Link {
        uid: u32,
        gid: u32,
        target: Vec<u8>,
    },
    Other {
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
    },
}

impl std::fmt::Debug for Ent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ent::Dir { mode, uid, gid } => write!(f, "dir {mode:o} {uid}:{gid}"),
            Ent::File {
                mode,
                uid,
                gid,
                data,
            } => {
                let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
                });
                write!(
                    f,
                    "file {mode:o} {uid}:{gid} {} bytes fnv {h:016x}",
                    data.len()
                )
            }
            Ent::Link { uid, gid, target } => {
                write!(
                    f,
                    "symlink {uid}:{gid} -> {:?}",
                    String::from_utf8_lossy(target)
                )
            }
            Ent::Other {
                mode,
                uid,
                gid,
                rdev,
            } => {
                write!(f, "special {mode:o} {uid}:{gid} rdev {rdev:x}")
            }
        }
    }
}

pub(crate) type Tree = BTreeMap<Vec<u8>, Ent>;

fn ent_of(p: &Path, md: &fs::Metadata) -> Result<Ent, String> {
    let ft = md.file_type();
    let (mode, uid, gid) = (md.mode() & 0o7777, md.uid(), md.gid());
    Ok(if ft.is_dir() {
        Ent::Dir { mode, uid, gid }
    } else if ft.is_file() {
        let data = fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
        Ent::File {
            mode,
            uid,
            gid,
            data,
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(p)
            .map_err(|e| format!("readlink {}: {e}", p.display()))?
            .into_os_string()
            .into_vec();
        Ent::Link { uid, gid, target }
    } else {
        Ent::Other {
            mode: md.mode(),
            uid,
            gid,
            rdev: md.rdev(),
        }
    })
}

fn rel_join(rel: &[u8], name: &OsStr) -> Vec<u8> {
    let mut v = rel.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name.as_bytes());
    v
}

/// Everything below `root`, not following symlinks.
pub(crate) fn snapshot(root: &Path) -> Result<Tree, String> {
    let mut t = Tree::new();
    snap_dir(root, &[], &mut t)?;
    Ok(t)
}

fn snap_dir(dir: &Path, rel: &[u8], t: &mut Tree) -> Result<(), String> {
    let rd = fs::read_dir(dir).map_err(|e| format!("readdir {}: {e}", dir.display()))?;
    for e in rd {
        let e = e.map_err(|e| format!("readdir {}: {e}", dir.display()))?;
        let p = e.path();
        let md = fs::symlink_metadata(&p).map_err(|e| format!("lstat {}: {e}", p.display()))?;
        let r = rel_join(rel, &e.file_name());
        t.insert(r.clone(), ent_of(&p, &md)?);
        if md.is_dir() {
            snap_dir(&p, &r, t)?;
        }
    }
    Ok(())
}

pub(crate) fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    lgetxattr(p, "trusted.overlay.opaque").as_deref() == Some(b"y")
}

/// The merged tree the kernel's rules give for these layers (whiteouts,
/// opaque dirs; no `.wh.` markers are used where this is called).
pub(crate) fn expected_merge(upper: &Path, lowers: &[PathBuf]) -> Tree {
    let mut stack = vec![upper.to_path_buf()];
    if !is_opaque(upper) {
        stack.extend(lowers.iter().cloned());
    }
    let mut t = Tree::new();
    merge_dir(&stack, &[], &mut t);
    t
}

fn merge_dir(stack: &[PathBuf], rel: &[u8], t: &mut Tree) {
    let mut seen = HashSet::new();
    for (i, d) in stack.iter().enumerate() {
        for name in dir_names(d) {
            if !seen.insert(name.clone()) {
                continue;
            }
            let p = d.join(&name);
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if is_whiteout(&md) {
                continue;
            }
            let r = rel_join(rel, &name);
            t.insert(r.clone(), ent_of(&p, &md).unwrap());
            if md.is_dir() {
                let mut child = vec![p.clone()];
                if !is_opaque(&p) {
                    for below in &stack[i + 1..] {
                        let q = below.join(&name);
                        match fs::symlink_metadata(&q) {
                            Err(_) => continue,
                            Ok(m) if m.is_dir() => {
                                child.push(q.clone());
                                if is_opaque(&q) {
                                    break;
                                }
                            }
                            Ok(_) => break, // a whiteout or non-directory ends the merge
                        }
                    }
                }
                merge_dir(&child, &r, t);
            }
        }
    }
}

/// Human-readable differences (at most 25).
pub(crate) fn tree_diff(an: &str, a: &Tree, bn: &str, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push(format!(
                "{:?}: {an}={x:?} {bn}={y:?}",
                String::from_utf8_lossy(k)
            ));
        }
        if out.len() >= 25 {
            out.push("...".into());
            break;
        }
    }
    out
}
