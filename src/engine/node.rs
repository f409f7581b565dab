//! The inode table: overlay inode numbers ↔ the real objects in each layer.
//!
//! A directory node holds O_PATH fds of its real directories (upper and merged
//! lowers), so every operation resolves one name relative to a held fd and
//! never walks a path from a layer root again. A leaf (non-directory) node
//! holds no fd of its own: it names its real objects by the held directory fd
//! and the name, with the identity to verify on each open, so the number of
//! open fds follows the directories the kernel caches, not every inode.
//! Nodes are keyed by the identity (st_dev, st_ino) of the object that gives
//! them their inode number.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::engine::{Errno, Result};
use crate::sys::{self, Stat};

pub const ROOT_INO: u64 = 1;

/// A real object: held open (directories), or found again by name in a held
/// directory (leaves), checked against its identity each time.
#[derive(Clone)]
pub enum RealRef {
    Open(Arc<OwnedFd>),
    At {
        dir: Arc<OwnedFd>,
        name: OsString,
        dev: u64,
        ino: u64,
    },
}

impl RealRef {
    /// An O_PATH fd of the object; ESTALE if the name now holds another one.
    pub fn open(&self) -> Result<Arc<OwnedFd>> {
        match self {
            RealRef::Open(fd) => Ok(fd.clone()),
            RealRef::At { .. } => self.open_stat().map(|(fd, _)| fd),
        }
    }

    /// `open`, with the object's stat (a leaf's identity check made it anyway).
    pub fn open_stat(&self) -> Result<(Arc<OwnedFd>, Stat)> {
        match self {
            RealRef::Open(fd) => Ok((fd.clone(), sys::fstat(fd.as_fd())?)),
            RealRef::At {
                dir,
                name,
                dev,
                ino,
            } => {
                let fd = sys::openat(dir.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)
                    .map_err(|e| if e == Errno::ENOENT { Errno::ESTALE } else { e })?;
                let st = sys::fstat(fd.as_fd())?;
                if (st.st_dev, st.st_ino) != (*dev, *ino) {
                    return Err(Errno::ESTALE);
                }
                Ok((Arc::new(fd), st))
            }
        }
    }

    /// stat of the object; for a leaf one fstatat by name, identity checked.
    pub fn stat(&self) -> Result<Stat> {
        match self {
            RealRef::Open(fd) => sys::fstat(fd.as_fd()),
            RealRef::At {
                dir,
                name,
                dev,
                ino,
            } => {
                let st = sys::fstatat(dir.as_fd(), name)
                    .map_err(|e| if e == Errno::ENOENT { Errno::ESTALE } else { e })?;
                if (st.st_dev, st.st_ino) != (*dev, *ino) {
                    return Err(Errno::ESTALE);
                }
                Ok(st)
            }
        }
    }

    /// The object's identity (st_dev, st_ino), without opening it by name.
    pub fn id(&self) -> Option<(u64, u64)> {
        match self {
            RealRef::Open(fd) => sys::fstat(fd.as_fd()).ok().map(|s| (s.st_dev, s.st_ino)),
            RealRef::At { dev, ino, .. } => Some((*dev, *ino)),
        }
    }

    /// Refer to the object found as `dir/name` (`fd`, if it was opened): by
    /// name for a leaf, else held open. None: neither is possible.
    pub fn new(
        fd: Option<OwnedFd>,
        st: &Stat,
        dir: Option<&Arc<OwnedFd>>,
        name: &std::ffi::OsStr,
    ) -> Option<RealRef> {
        match dir {
            Some(dir) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => Some(RealRef::At {
                dir: dir.clone(),
                name: name.to_os_string(),
                dev: st.st_dev,
                ino: st.st_ino,
            }),
            _ => Some(RealRef::Open(Arc::new(fd?))),
        }
    }
}

/// A real object in a lower layer.
#[derive(Clone)]
pub struct LowerEntry {
    pub layer: usize,
    pub r: RealRef,
}

impl LowerEntry {
    pub fn held(layer: usize, fd: Arc<OwnedFd>) -> LowerEntry {
        LowerEntry {
            layer,
            r: RealRef::Open(fd),
        }
    }

    pub fn fd(&self) -> Result<Arc<OwnedFd>> {
        self.r.open()
    }
}

/// The mutable part of a node: where it lives, which real objects back it.
pub struct NodeState {
    /// The directory this node was last seen in (strong: copy-up needs the
    /// parent chain even after the kernel forgot the parent).
    pub parent: Option<Arc<Node>>,
    pub name: OsString,
    pub upper: Option<RealRef>,
    /// Directories: every lower directory merged into this one, topmost first.
    /// Non-directories: the lower object, if the node came from a lower layer.
    pub lowers: Vec<LowerEntry>,
    /// The upper directory is opaque (nothing below it is merged).
    pub opaque: bool,
    /// The upper directory is known to carry the impure mark.
    pub impure: bool,
    /// The top object (upper, or a lower metacopy file) holds metadata only:
    /// the data is in `data`, found below (metacopy).
    pub metacopy: bool,
    /// Where a metacopy file's data is; `None` where it could not be found
    /// (a data-only layer without it: open fails with ENOENT).
    pub data: Option<LowerEntry>,
    /// index=on, a lower non-directory with several links: the name of its
    /// index entry. All its names share this node, as they share the
    /// kernel's inode, and `upper` (once copied up) is the index entry.
    pub index_name: Option<OsString>,
    /// The name last reached (`parent`/`name`) has no upper hard link to the
    /// index entry yet: a change through it links it up first.
    pub link_up_pending: bool,
}

pub struct Node {
    /// The node id the kernel knows this node by (FUSE's nodeid).
    pub ino: u64,
    /// The inode number it shows (st_ino, d_ino): the same for nodes the
    /// kernel overlay shows as one number (the names of a lower hard link
    /// without an index), where node ids must differ. Changes once at most:
    /// when copy-up breaks such a link.
    st_ino: AtomicU64,
    /// S_IFMT bits: the type never changes for the life of a node.
    pub kind: u32,
    lookups: AtomicU64,
    pub state: RwLock<NodeState>,
    /// Held while this node is being copied up.
    pub copy_up_lock: Mutex<()>,
    /// Held by namespace operations inside this directory.
    pub dir_lock: Mutex<()>,
    /// Directories: the listing generation and the listing kept for it
    /// (boxed: leaves, most nodes, pay one pointer).
    pub listing: Option<Box<Mutex<super::readdir::ListingSlot>>>,
    /// Key under which the table finds this node.
    key: Mutex<Key>,
}

/// How the table finds a node: the real object's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub dev: u64,
    pub ino: u64,
    /// Tells apart the names of a hard-linked lower file: without an index the
    /// kernel overlay gives each name its own inode, and copy-up splits them.
    pub alias: u64,
}

impl Key {
    pub fn new(dev: u64, ino: u64) -> Key {
        Key { dev, ino, alias: 0 }
    }
}

impl Node {
    pub fn new(ino: u64, kind: u32, state: NodeState, key: Key) -> Node {
        Node {
            ino,
            st_ino: AtomicU64::new(ino),
            kind,
            lookups: AtomicU64::new(0),
            state: RwLock::new(state),
            copy_up_lock: Mutex::new(()),
            dir_lock: Mutex::new(()),
            listing: (kind == libc::S_IFDIR).then(Box::default),
            key: Mutex::new(key),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    pub fn st_ino(&self) -> u64 {
        self.st_ino.load(Ordering::Relaxed)
    }

    /// Hold the upper object open from now on: its name is about to go (unlink,
    /// rename over it), but the kernel may still ask about it (open files).
    pub fn pin_upper(&self) {
        let mut st = self.state.write().unwrap();
        if let Some(r @ RealRef::At { .. }) = &st.upper
            && let Ok(fd) = r.open()
        {
            st.upper = Some(RealRef::Open(fd));
        }
    }

    /// Identity of the upper object, if the node has one.
    pub fn upper_id(&self) -> Option<(u64, u64)> {
        let r = self.state.read().unwrap().upper.clone();
        r.and_then(|r| r.id())
    }

    /// The upper object, if the node has one.
    pub fn upper(&self) -> Result<Option<Arc<OwnedFd>>> {
        let r = self.state.read().unwrap().upper.clone();
        r.map(|r| r.open()).transpose()
    }

    pub fn has_upper(&self) -> bool {
        self.state.read().unwrap().upper.is_some()
    }

    /// The fd of the object that shows through: upper if present, else the top lower.
    pub fn top_fd(&self) -> Result<Arc<OwnedFd>> {
        self.top_ref()?.open()
    }

    /// The object that shows through: upper if present, else the top lower.
    fn top_ref(&self) -> Result<RealRef> {
        let st = self.state.read().unwrap();
        match &st.upper {
            Some(u) => Ok(u.clone()),
            None => Ok(st.lowers.first().ok_or(Errno::EIO)?.r.clone()),
        }
    }

    /// The fd holding this file's data: the top object's, or for metacopy the
    /// data file's below. `None`: a metacopy file whose data is missing.
    pub fn data_fd(&self) -> Result<Option<Arc<OwnedFd>>> {
        let data = {
            let st = self.state.read().unwrap();
            st.metacopy.then(|| st.data.as_ref().map(|d| d.r.clone()))
        };
        match data {
            Some(r) => r.map(|r| r.open()).transpose(),
            None => self.top_fd().map(Some),
        }
    }

    /// The upper object exists and holds the data too.
    pub fn data_in_upper(&self) -> bool {
        let st = self.state.read().unwrap();
        st.upper.is_some() && !st.metacopy
    }

    pub fn index_name(&self) -> Option<OsString> {
        self.state.read().unwrap().index_name.clone()
    }

    pub fn link_up_pending(&self) -> bool {
        self.state.read().unwrap().link_up_pending
    }

    pub fn set_link_up_pending(&self, v: bool) {
        self.state.write().unwrap().link_up_pending = v;
    }

    pub fn is_metacopy(&self) -> bool {
        self.state.read().unwrap().metacopy
    }

    pub fn lowers(&self) -> Vec<LowerEntry> {
        self.state.read().unwrap().lowers.clone()
    }

    /// More than one layer shows through (the kernel's OVL_TYPE_MERGE for directories).
    pub fn is_merged(&self) -> bool {
        let st = self.state.read().unwrap();
        st.lowers.len() + usize::from(st.upper.is_some()) > 1
    }

    pub fn parent_and_name(&self) -> (Option<Arc<Node>>, OsString) {
        let st = self.state.read().unwrap();
        (st.parent.clone(), st.name.clone())
    }

    pub fn stat(&self) -> Result<Stat> {
        self.top_ref()?.stat()
    }
}

struct Maps {
    by_ino: HashMap<u64, Arc<Node>>,
    by_key: HashMap<Key, u64>,
}

/// How real inode numbers become overlay inode numbers (decided once, at mount).
#[derive(Debug, Clone)]
pub enum InoScheme {
    /// All layers on one filesystem: real numbers unchanged, as the kernel.
    SameFs,
    /// The kernel's xino: `ino | fsid << (65 - bits)` while `ino` fits in
    /// `64 - bits` bits; fsid 0 is the upper's filesystem, lowers numbered in
    /// order of first appearance.
    Xino { bits: u32, fsids: Vec<u64> },
    /// Several filesystems, xino off: ovlfs's own scheme (the kernel would give
    /// each filesystem its own st_dev, which FUSE cannot): the upper's numbers
    /// unchanged, others with a filesystem index at bit 48.
    Indexed { upper_dev: Option<u64> },
}

/// All nodes the kernel holds references to.
pub struct NodeTable {
    maps: RwLock<Maps>,
    /// Numbers for nodes whose natural number is taken.
    fallback: AtomicU64,
    scheme: InoScheme,
    /// Filesystems of the Indexed scheme, in order of appearance.
    devs: Mutex<Vec<u64>>,
}

const DEV_SHIFT: u32 = 48;

impl NodeTable {
    pub fn new(root: Node, scheme: InoScheme) -> NodeTable {
        root.lookups.store(1, Ordering::Relaxed);
        let key = *root.key.lock().unwrap();
        // Numbers no real object gets: with xino the reserved bit just below
        // the filesystem id (as the kernel's non-persistent numbers), else 2^62.
        let fallback = match &scheme {
            InoScheme::Xino { bits, .. } => 1u64 << (64 - bits),
            _ => 1 << 62,
        };
        let mut table = NodeTable {
            maps: RwLock::new(Maps {
                by_ino: HashMap::new(),
                by_key: HashMap::new(),
            }),
            fallback: AtomicU64::new(fallback + 2),
            scheme,
            devs: Mutex::new(Vec::new()),
        };
        // The root's node id is fixed at 1 by FUSE; it shows the upper root's
        // number (else the top lower root's), as the kernel reports.
        let st_ino = match &table.scheme {
            InoScheme::SameFs => key.ino,
            _ => table.natural_ino(key),
        };
        root.st_ino.store(st_ino, Ordering::Relaxed);
        let maps = table.maps.get_mut().unwrap();
        maps.by_ino.insert(ROOT_INO, Arc::new(root));
        maps.by_key.insert(key, ROOT_INO);
        table
    }

    /// Whether upper objects keep their real numbers (one filesystem, or
    /// xino): then a listing translates a number only for an origin.
    pub fn upper_numbers_real(&self) -> bool {
        !matches!(self.scheme, InoScheme::Indexed { .. })
    }

    pub fn len(&self) -> usize {
        self.maps.read().unwrap().by_ino.len()
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.maps.read().unwrap().by_ino.get(&ino).cloned()
    }

    /// The inode number an object with this identity naturally gets.
    fn natural_ino(&self, key: Key) -> u64 {
        let Key { dev, ino, .. } = key;
        let fallback = || self.fallback.fetch_add(1, Ordering::Relaxed);
        if ino <= ROOT_INO {
            return fallback();
        }
        match &self.scheme {
            InoScheme::SameFs => ino,
            InoScheme::Xino { bits, fsids } => {
                let shift = 64 - bits;
                let fsid = fsids.iter().position(|d| *d == dev).unwrap_or(0) as u64;
                if ino >> shift != 0 {
                    return fallback();
                }
                ino | fsid.checked_shl(shift + 1).unwrap_or(0)
            }
            InoScheme::Indexed { upper_dev } => {
                if ino >= 1 << DEV_SHIFT {
                    return fallback();
                }
                if Some(dev) == *upper_dev {
                    return ino;
                }
                let mut devs = self.devs.lock().unwrap();
                let idx = match devs.iter().position(|d| *d == dev) {
                    Some(i) => i,
                    None => {
                        devs.push(dev);
                        devs.len() - 1
                    }
                };
                // With no upper, the first filesystem keeps its numbers unchanged.
                let idx = idx as u64 + u64::from(upper_dev.is_some());
                if idx >= (1 << (62 - DEV_SHIFT)) {
                    return fallback();
                }
                (idx << DEV_SHIFT) | ino
            }
        }
    }

    /// The st_ino of the live node with this identity, if the kernel holds one.
    pub fn live_st_ino(&self, key: Key) -> Option<u64> {
        let maps = self.maps.read().unwrap();
        let id = maps.by_key.get(&key)?;
        maps.by_ino.get(id).map(|n| n.st_ino())
    }

    /// The inode number an entry with this identity shows in a listing: the
    /// live node's, else the one a lookup would give it.
    pub fn ino_hint(&self, key: Key) -> u64 {
        if let Some(i) = self.live_st_ino(key) {
            return i;
        }
        if key.ino <= ROOT_INO {
            return key.ino;
        }
        self.natural_ino(key)
    }

    /// Find the live node for `key` that `matches`, or make one with `make`.
    /// Either way the node gains one lookup reference.
    pub fn get_or_insert(
        &self,
        key: Key,
        ino_key: Key,
        matches: impl Fn(&Node) -> bool,
        make: impl FnOnce(u64) -> Node,
    ) -> Arc<Node> {
        {
            let maps = self.maps.read().unwrap();
            if let Some(n) = maps.by_key.get(&key).and_then(|i| maps.by_ino.get(i))
                && matches(n)
            {
                n.lookups.fetch_add(1, Ordering::Relaxed);
                return n.clone();
            }
        }
        let mut maps = self.maps.write().unwrap();
        if let Some(n) = maps.by_key.get(&key).and_then(|i| maps.by_ino.get(i))
            && matches(n)
        {
            n.lookups.fetch_add(1, Ordering::Relaxed);
            return n.clone();
        }
        // A node id taken (another name of the same lower hard link) gets a
        // number no object has; the number shown stays the natural one.
        let st_ino = self.natural_ino(ino_key);
        let mut ino = st_ino;
        while maps.by_ino.contains_key(&ino) {
            ino = self.fallback.fetch_add(1, Ordering::Relaxed);
        }
        let node = make(ino);
        node.st_ino.store(st_ino, Ordering::Relaxed);
        let node = Arc::new(node);
        *node.key.lock().unwrap() = key;
        node.lookups.store(1, Ordering::Relaxed);
        maps.by_ino.insert(ino, node.clone());
        maps.by_key.insert(key, ino);
        node
    }

    /// One more kernel reference to a node we already hold (link, create reply).
    pub fn add_lookup(&self, node: &Node) {
        let _maps = self.maps.read().unwrap();
        node.lookups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut maps = self.maps.write().unwrap();
        let Some(node) = maps.by_ino.get(&ino).cloned() else {
            return;
        };
        // Increments happen under the read lock, so this read-modify-write is exclusive.
        let left = node.lookups.load(Ordering::Relaxed).saturating_sub(n);
        node.lookups.store(left, Ordering::Relaxed);
        if left == 0 {
            maps.by_ino.remove(&ino);
            let key = *node.key.lock().unwrap();
            if maps.by_key.get(&key) == Some(&ino) {
                maps.by_key.remove(&key);
            }
        }
    }

    /// The node now answers to a new identity (after copy-up: its upper object).
    pub fn rekey(&self, node: &Node, key: Key) {
        let mut maps = self.maps.write().unwrap();
        let mut k = node.key.lock().unwrap();
        if maps.by_key.get(&*k) == Some(&node.ino) {
            maps.by_key.remove(&*k);
        }
        *k = key;
        if maps.by_ino.contains_key(&node.ino) {
            maps.by_key.insert(key, node.ino);
        }
    }

    /// The node shows the number of its object `key` from now on (copy-up
    /// broke the lower hard link whose number it showed). Whether it changed.
    pub fn renumber(&self, node: &Node, key: Key) -> bool {
        let st_ino = self.natural_ino(key);
        node.st_ino.swap(st_ino, Ordering::Relaxed) != st_ino
    }

    /// The node's object is gone from every layer: new objects that reuse its
    /// real inode number must not find it.
    pub fn unkey(&self, node: &Node) {
        let mut maps = self.maps.write().unwrap();
        let k = *node.key.lock().unwrap();
        if maps.by_key.get(&k) == Some(&node.ino) {
            maps.by_key.remove(&k);
        }
    }
}
