//! Merged directory listings.
//!
//! Upper entries first, then each merged lower directory top down; a name is
//! shown once, whiteouts (and in lower layers `.wh.` markers) hide names from
//! the layers below. The listing is built once per open directory (and again
//! on rewind) so it stays stable while it is read: a hash set keeps the
//! merge linear in the number of entries.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::lookup::is_lower_marker;
use super::node::{Key, Node};
use super::{Errno, Overlay, Result};
use crate::format::whiteout;
use crate::sys;

/// One entry of a merged listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
    /// S_IFMT bits.
    pub kind: u32,
}

/// An open directory: the snapshot being read.
pub struct DirHandle {
    pub node: Arc<Node>,
    entries: Mutex<Arc<Vec<DirEntry>>>,
    read_once: AtomicBool,
}

#[derive(Default)]
pub struct DirTable {
    map: RwLock<HashMap<u64, Arc<DirHandle>>>,
    next: AtomicU64,
}

fn dtype_to_kind(d: u8) -> Option<u32> {
    Some(match d {
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_REG => libc::S_IFREG,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_BLK => libc::S_IFBLK,
        // Character devices may be whiteouts: stat to tell.
        _ => return None,
    })
}

/// Entries of one real directory as (name, ino, kind, is_whiteout).
fn read_layer_dir(dir: BorrowedFd<'_>) -> Result<Vec<(OsString, u64, u32, bool)>> {
    let mut out = Vec::new();
    for e in sys::read_dir(dir)? {
        let (kind, wh) = match dtype_to_kind(e.d_type) {
            Some(k) => (k, false),
            None => match sys::fstatat(dir, &e.name) {
                Ok(st) => (st.st_mode & libc::S_IFMT, whiteout::is_whiteout_stat(&st)),
                Err(_) => continue, // vanished meanwhile
            },
        };
        out.push((e.name, e.ino, kind, wh));
    }
    Ok(out)
}

impl Overlay {
    /// The merged listing of a directory node, without `.` and `..`. With
    /// `with_ino`, entries carry the inode numbers lookup would give them
    /// (origins decoded in impure directories, merged subdirectories numbered
    /// after their lower directory), as the kernel's d_ino translation does.
    pub(super) fn merged_entries(&self, node: &Node, with_ino: bool) -> Result<Vec<DirEntry>> {
        let (upper, lowers) = {
            let st = node.state.read().unwrap();
            (st.upper.clone(), st.lowers.clone())
        };
        let upper = upper.map(|u| u.open()).transpose()?;
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        // Upper subdirectories that may merge with a lower one: their index in `out`.
        let mut upper_dirs: HashMap<OsString, usize> = HashMap::new();
        if let Some(u) = &upper {
            let dev = self.upper.as_ref().map_or(0, |l| l.dev);
            let impure = with_ino && sys::getxattr(u.as_fd(), &self.xattr.name("impure")).is_ok();
            for (name, ino, kind, wh) in read_layer_dir(u.as_fd())? {
                if !wh {
                    let key = Key::new(dev, ino);
                    let ino = match self.nodes.live_ino(key) {
                        Some(i) => i,
                        None if !with_ino => ino,
                        None => {
                            if kind == libc::S_IFDIR && !lowers.is_empty() {
                                upper_dirs.insert(name.clone(), out.len());
                            }
                            let origin = (impure && kind != libc::S_IFDIR)
                                .then(|| self.entry_origin(u.as_fd(), &name, kind))
                                .flatten();
                            self.nodes.ino_hint(origin.unwrap_or(key))
                        }
                    };
                    out.push(DirEntry {
                        name: name.clone(),
                        ino,
                        kind,
                    });
                }
                seen.insert(name);
            }
        }
        for lower in &lowers {
            let dev = self.lowers[lower.layer].dev;
            let entries = read_layer_dir(lower.fd()?.as_fd())?;
            // `.wh.NAME` hides NAME only in the layers below this one.
            let mut hidden_below = Vec::new();
            for (name, ino, kind, wh) in entries {
                if is_lower_marker(&name) {
                    if let Some(t) = whiteout::wh_target(&name) {
                        hidden_below.push(t.to_os_string());
                    }
                    continue;
                }
                if seen.contains(&name) {
                    if kind == libc::S_IFDIR
                        && let Some(i) = upper_dirs.remove(&name)
                        && let Some(u) = &upper
                        && !self.entry_is_opaque(u.as_fd(), &name)
                    {
                        out[i].ino = self.nodes.ino_hint(Key::new(dev, ino));
                    }
                    continue;
                }
                if !wh {
                    let ino = if with_ino {
                        self.nodes.ino_hint(Key::new(dev, ino))
                    } else {
                        ino
                    };
                    out.push(DirEntry {
                        name: name.clone(),
                        ino,
                        kind,
                    });
                }
                seen.insert(name);
            }
            seen.extend(hidden_below);
        }
        Ok(out)
    }

    fn entry_origin(&self, dir: BorrowedFd<'_>, name: &OsStr, kind: u32) -> Option<Key> {
        let v = sys::getxattr_at(dir, name, &self.xattr.name("origin")).ok()?;
        self.decode_origin_value(&v, kind)
    }

    fn entry_is_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        sys::getxattr_at(dir, name, &self.xattr.opaque())
            .is_ok_and(|v| whiteout::is_opaque_value(&v))
    }

    /// Whether a directory shows no entries (rmdir and rename-over need that).
    pub(super) fn is_empty_dir(&self, node: &Node) -> Result<bool> {
        Ok(self.merged_entries(node, false)?.is_empty())
    }

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let entries = self.snapshot(&node)?;
        let h = Arc::new(DirHandle {
            node,
            entries: Mutex::new(Arc::new(entries)),
            read_once: AtomicBool::new(false),
        });
        let fh = self.dirs.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.dirs.map.write().unwrap().insert(fh, h);
        Ok(fh)
    }

    fn snapshot(&self, node: &Arc<Node>) -> Result<Vec<DirEntry>> {
        let mut v = Vec::new();
        let parent = node.parent_and_name().0.map(|p| p.ino).unwrap_or(node.ino);
        let parent = self.st_ino(parent);
        v.push(DirEntry {
            name: ".".into(),
            ino: self.st_ino(node.ino),
            kind: libc::S_IFDIR,
        });
        v.push(DirEntry {
            name: "..".into(),
            ino: parent,
            kind: libc::S_IFDIR,
        });
        // In name order: the same contents always give the same offsets, even
        // after copy-ups moved entries between layers.
        let mut entries = self.merged_entries(node, true)?;
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        v.extend(entries);
        Ok(v)
    }

    /// Entries from `offset` on (offset i+1 follows entry i). Offset 0 after a
    /// first read is a rewind: the snapshot is rebuilt, as the kernel does.
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        let h = self
            .dirs
            .map
            .read()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)?;
        if offset == 0 && h.read_once.swap(true, Ordering::Relaxed) {
            let fresh = self.snapshot(&h.node)?;
            *h.entries.lock().unwrap() = Arc::new(fresh);
        }
        h.read_once.store(true, Ordering::Relaxed);
        Ok(h.entries.lock().unwrap().clone())
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.map.write().unwrap().remove(&fh);
    }

    /// fsync a directory: its upper copy, if it has one.
    pub fn fsyncdir(&self, ino: u64, datasync: bool) -> Result<()> {
        let node = self.node(ino)?;
        if let Some(u) = node.upper()? {
            let d = sys::reopen(u.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            sys::fsync(d.as_fd(), datasync)?;
        }
        Ok(())
    }
}
