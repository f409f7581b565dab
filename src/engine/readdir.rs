//! Merged directory listings.
//!
//! Upper entries first, then each merged lower directory top down; a name is
//! shown once, whiteouts (and in lower layers `.wh.` markers) hide names from
//! the layers below; a hash set keeps the merge linear in the number of
//! entries. A listing is kept per directory until its names change, and
//! offsets stay meaningful across changes (see `name_key`), so readers need
//! no handle of their own.

use crate::format::xattr::{OvlXattr, is_yes};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use super::lookup::is_lower_marker;
use super::node::{Key, Node};
use super::{Errno, Overlay, Result};
use crate::format::whiteout;
use crate::sys;

/// One entry of a merged listing, with its offset: the position a reader
/// continues from after it (see `name_key`).
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
    /// S_IFMT bits.
    pub kind: u32,
    pub off: u64,
}

/// An entry's offset: 1 and 2 for `.` and `..`, else a hash of its name. The
/// same name has the same offset in every listing of the directory, so a
/// reader continues "after this name" in any later listing and gets every
/// entry that stayed exactly once however the directory changes meanwhile;
/// and the kernel's cached listing, which a reader scans for its position,
/// holds that position whenever the entry is still there. (Offsets that
/// differ from listing to listing, as a generation tag would make them, are
/// never found in a cache filled by another reader; where such a cache ends
/// exactly on a page boundary the kernel then reports the end of the
/// directory instead of asking again: entries were lost that way.) Two names
/// with one key sort by name; a reader whose reply ended between them would
/// miss the second (with 63 bits, practically never).
fn name_key(name: &OsStr) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same name gives the same key for the daemon's life.
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    // Positive as a file offset, and past 0 (the start), `.` and `..`.
    (h.finish() >> 1).max(3)
}

/// A directory's merged listing at one generation.
#[derive(Debug)]
pub struct Listing {
    generation: u64,
    entries: Vec<DirEntry>,
}

impl Listing {
    /// All entries, `.` and `..` first.
    pub fn entries(&self) -> &[DirEntry] {
        &self.entries
    }
}

/// Per directory node: the generation, and the listing built at it.
#[derive(Default)]
pub struct ListingSlot {
    generation: u64,
    cached: Option<Arc<Listing>>,
    /// A listing was given out since the last change: the kernel may cache it.
    listed: bool,
}

impl Node {
    /// The directory's names changed: listings from before are stale.
    /// Whether one was given out since the last change (the kernel's copy
    /// must then be dropped too).
    pub fn names_changed(&self) -> bool {
        let Some(listing) = &self.listing else {
            return false;
        };
        let mut slot = listing.lock().unwrap();
        slot.generation = slot.generation.wrapping_add(1);
        slot.cached = None;
        std::mem::take(&mut slot.listed)
    }

    /// Our listing is stale (a moved directory's `..`); what the kernel
    /// cached stays as it is, and so does whether it may have cached any.
    pub fn listing_stale(&self) {
        if let Some(listing) = &self.listing {
            let mut slot = listing.lock().unwrap();
            slot.generation = slot.generation.wrapping_add(1);
            slot.cached = None;
        }
    }
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

/// Entries of one real directory as (name, ino, kind, is_whiteout). A lower
/// one is read without touching its atime (the layer never changes), an
/// upper one as any directory, as the kernel overlay reads them, unless the
/// mount is noatime or nodiratime (`noatime`).
fn read_layer_dir(dir: BorrowedFd<'_>, noatime: bool) -> Result<Vec<(OsString, u64, u32, bool)>> {
    let mut out = Vec::new();
    let entries = match noatime {
        true => sys::read_dir_noatime(dir)?,
        false => sys::read_dir(dir)?,
    };
    for e in entries {
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
    /// An upper directory marked impure whose entries all show their real
    /// numbers needs no mark: the kernel drops it when listing such a
    /// directory, and so does ovlfs. Checked again under the directory's
    /// lock (a rename into it could bring an entry with an origin).
    fn drop_needless_impure(&self, node: &Node, dir: BorrowedFd<'_>) {
        if self.read_only() || !self.nodes.upper_numbers_real() {
            return;
        }
        let _lock = super::dir::lock(node);
        let Ok(entries) = read_layer_dir(dir, false) else {
            return;
        };
        for (name, _, kind, wh) in entries {
            let translated = match kind {
                _ if wh => false,
                // A directory moved here from below shows its lower number.
                libc::S_IFDIR => {
                    sys::getxattr_at(dir, &name, self.xattr.get(OvlXattr::Redirect)).is_ok()
                }
                _ => self.entry_origin(dir, &name, kind).is_some(),
            };
            if translated {
                return;
            }
        }
        match sys::removexattr(dir, self.xattr.get(OvlXattr::Impure)) {
            Ok(()) => node.state.write().unwrap().impure = false,
            Err(e) => tracing::debug!(%e, "impure mark not dropped"),
        }
    }

    /// Flag the regular files of a listing that are xattr whiteouts.
    fn mark_xattr_whiteouts(
        &self,
        dir: BorrowedFd<'_>,
        entries: &mut [(OsString, u64, u32, bool)],
    ) {
        for (name, _, kind, wh) in entries.iter_mut() {
            if *kind == libc::S_IFREG
                && let Ok(st) = sys::fstatat(dir, name)
            {
                *wh = whiteout::is_xattr_whiteout(&self.xattr, dir, name, &st);
            }
        }
    }

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
            let impure = with_ino
                && sys::getxattr(u.as_fd(), self.xattr.get(OvlXattr::Impure))
                    .is_ok_and(|v| is_yes(&v));
            let mut translated = false;
            let noatime = self.cfg.dir_atime == crate::params::Atime::Never;
            for (name, real_ino, kind, wh) in read_layer_dir(u.as_fd(), noatime)? {
                let ino = real_ino;
                if !wh {
                    let key = Key::new(dev, ino);
                    let ino = match self.nodes.live_st_ino(key) {
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
                    translated |= ino != real_ino;
                    out.push(DirEntry {
                        off: name_key(&name),
                        name: name.clone(),
                        ino,
                        kind,
                    });
                }
                seen.insert(name);
            }
            if impure && lowers.is_empty() && !translated {
                self.drop_needless_impure(node, u.as_fd());
            }
        }
        for lower in &lowers {
            let dev = self.lowers[lower.layer].dev;
            let fd = lower.fd()?;
            let mut entries = read_layer_dir(fd.as_fd(), true)?;
            // A lower directory marked `opaque=x` holds xattr whiteouts.
            if whiteout::opaque_of(&self.xattr, fd.as_fd()) == whiteout::Opaque::XWhiteouts {
                self.mark_xattr_whiteouts(fd.as_fd(), &mut entries);
            }
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
                        off: name_key(&name),
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

    /// The origin whose number a non-directory entry shows, if any.
    fn entry_origin(&self, dir: BorrowedFd<'_>, name: &OsStr, kind: u32) -> Option<Key> {
        let v = sys::getxattr_at(dir, name, self.xattr.get(OvlXattr::Origin)).ok()?;
        let st = self.decode_origin_stat(&v, kind)?;
        Self::shows_origin_ino(st.st_nlink, self.index.is_some())
            .then(|| Key::new(st.st_dev, st.st_ino))
    }

    fn entry_is_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        sys::getxattr_at(dir, name, self.xattr.get(OvlXattr::Opaque))
            .is_ok_and(|v| whiteout::is_opaque_value(&v))
    }

    /// Whether a directory shows no entries (rmdir and rename-over need that).
    pub(super) fn is_empty_dir(&self, node: &Node) -> Result<bool> {
        Ok(self.merged_entries(node, false)?.is_empty())
    }

    /// The current merged listing of directory `ino`, in offset order, with
    /// `.` and `..` first. Built once and kept until the directory changes
    /// (or a reader reached its end), so paging through a large directory
    /// merges it once; no per-open state, so the kernel may cache listings
    /// itself (FOPEN_CACHE_DIR) and skip OPENDIR/RELEASEDIR.
    pub fn listing(&self, ino: u64) -> Result<Arc<Listing>> {
        let node = self.node(ino)?;
        let Some(slot) = &node.listing else {
            return Err(Errno::ENOTDIR);
        };
        let generation = {
            let mut slot = slot.lock().unwrap();
            slot.listed = true;
            if let Some(l) = &slot.cached {
                return Ok(l.clone());
            }
            slot.generation
        };
        let listing = Arc::new(self.build_listing(&node, generation)?);
        let mut slot = slot.lock().unwrap();
        // Kept only if nothing changed while it was read from the layers.
        if slot.generation == generation && slot.cached.is_none() {
            slot.cached = Some(listing.clone());
        }
        Ok(listing)
    }

    /// What a reader at `offset` (0, or an offset given out by any listing of
    /// this directory) gets next: the listing and where in it to start. A
    /// reader at the end lets our copy go (the kernel caches it now, and
    /// memory follows the directories being read).
    pub fn list_from(&self, ino: u64, offset: u64) -> Result<(Arc<Listing>, usize)> {
        let listing = self.listing(ino)?;
        let start = listing.entries.partition_point(|e| e.off <= offset);
        if start == listing.entries.len()
            && let Some(slot) = &self.node(ino)?.listing
        {
            let mut slot = slot.lock().unwrap();
            if slot
                .cached
                .as_ref()
                .is_some_and(|l| l.generation == listing.generation)
            {
                slot.cached = None;
            }
        }
        Ok((listing, start))
    }

    fn build_listing(&self, node: &Arc<Node>, generation: u64) -> Result<Listing> {
        let parent = node
            .parent_and_name()
            .0
            .map_or(node.st_ino(), |p| p.st_ino());
        let dots = [(".", node.st_ino(), 1), ("..", parent, 2)].map(|(name, ino, off)| DirEntry {
            name: name.into(),
            ino,
            kind: libc::S_IFDIR,
            off,
        });
        let mut merged = self.merged_entries(node, true)?;
        merged.sort_unstable_by(|a, b| (a.off, &a.name).cmp(&(b.off, &b.name)));
        let mut entries = dots.to_vec();
        entries.extend(merged);
        Ok(Listing {
            generation,
            entries,
        })
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
