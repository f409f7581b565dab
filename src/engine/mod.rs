//! The overlay semantics, free of FUSE: every operation takes node numbers and
//! names and returns what the kernel overlay would return, errno included.
//!
//! One file per operation family, as in the kernel's fs/overlayfs:
//! `lookup` (names through layers), `readdir` (merged listings), `copy_up`,
//! `dir` (namespace changes), `inode` (attributes, xattrs), `file` (open files).

mod copy_up;
mod dir;
mod file;
mod index;
mod inode;
mod layer;
mod layer_walk;
mod lookup;
mod metacopy;
mod node;
mod origin;
mod readdir;
mod rename;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub use crate::errno::{Errno, Result};
pub use crate::fsutil::remove_tree;
pub use file::{FileTable, OpenFile};
pub use inode::{Attr, SetAttr, Timestamp};
pub(crate) use layer::open_dir as open_layer;
pub use layer::{Layer, SetupError};
pub use node::{Node, ROOT_INO};
pub(crate) use origin::{Undecodable, decode_origin_in};
pub use readdir::{DirEntry, Listing};

use crate::format::xattr::XattrNames;
use crate::params::{Config, FsyncMode};
use crate::sys;
use node::NodeTable;

/// Capability numbers (linux/capability.h) the engine asks about.
pub const CAP_FOWNER: u32 = 3;
pub const CAP_FSETID: u32 = 4;

/// Who asks: the caller's fs credentials as the kernel reports them.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The caller's umask, for what it creates (FUSE hands it over unapplied
    /// with POSIX ACLs on: the parent's default ACL, if any, decides then).
    pub umask: u32,
}

impl Caller {
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
        umask: 0,
    };

    /// Whether the caller may keep set-ID bits on what it changes
    /// (CAP_FSETID in its effective set). Unknown callers (pid 0): yes.
    pub fn has_cap_fsetid(&self) -> bool {
        self.has_cap(CAP_FSETID)
    }

    /// Whether the caller holds capability `cap` (linux/capability.h) in its
    /// effective set. Unknown callers (pid 0): yes.
    pub fn has_cap(&self, cap: u32) -> bool {
        self.pid == 0 || sys::process_has_cap(self.pid, cap)
    }

    /// Whether the caller belongs to `gid` (primary or supplementary group).
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || (self.pid != 0 && sys::process_groups(self.pid).contains(&gid))
    }
}

/// A mounted overlay stack.
pub struct Overlay {
    cfg: Config,
    xattr: XattrNames,
    /// Lower layers, topmost first.
    lowers: Vec<Layer>,
    /// Data-only lower layers: only metacopy redirects lead there.
    data_layers: Vec<Layer>,
    upper: Option<Layer>,
    /// `W/work`: scratch space for atomic copy-up, whiteouts and removal.
    work: Option<OwnedFd>,
    /// Held for its in-use lock.
    _workdir: Option<Layer>,
    /// `W/index` with index=on.
    index: Option<Arc<OwnedFd>>,
    /// xino=on in effect (layers on several filesystems).
    xino_on: bool,
    nodes: NodeTable,
    files: FileTable,
    tmp_counter: AtomicU64,
    /// Most nodes held since memory was last returned to the system.
    node_peak: std::sync::atomic::AtomicUsize,
    /// The `uuid=` mode in effect (see origin::settle_uuid).
    uuid: crate::params::UuidMode,
    /// Told when a node's attributes change behind the kernel's back (copy-up
    /// of a hard-linked lower file changes st_nlink, for one), so the kernel's
    /// attribute cache can be dropped.
    attr_changed: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    listing_changed: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

impl Overlay {
    /// Open and check every layer, prepare the workdir, build the root node.
    pub fn new(cfg: Config) -> std::result::Result<Overlay, SetupError> {
        let setup = layer::open_layers(&cfg)?;
        let xattr = XattrNames::new(cfg.userxattr);
        let root = lookup::root_node(&setup).map_err(|e| SetupError::Io {
            path: cfg.lowers[0].clone(),
            what: "cannot read the layer roots",
            errno: e,
        })?;
        let uuid = origin::settle_uuid(
            cfg.uuid,
            &xattr,
            setup.upper.as_ref(),
            &setup.lowers,
            setup.work.is_some(),
        );
        let scheme = layer::ino_scheme(cfg.xino, setup.upper.as_ref(), &setup.lowers);
        // The kernel drops an xino=on that has nothing to do (one filesystem).
        let xino_on =
            cfg.xino == crate::params::Xino::On && matches!(scheme, node::InoScheme::Xino { .. });
        let nodes = NodeTable::new(root, scheme);
        let mut ov = Overlay {
            uuid,
            nodes,
            cfg,
            xattr,
            lowers: setup.lowers,
            data_layers: setup.data_lowers,
            upper: setup.upper,
            work: setup.work,
            _workdir: setup.workdir,
            files: FileTable::default(),
            tmp_counter: AtomicU64::new(0),
            node_peak: Default::default(),
            attr_changed: OnceLock::new(),
            listing_changed: OnceLock::new(),
            index: None,
            xino_on,
        };
        if ov.cfg.index {
            ov.index = ov.open_index()?;
        }
        Ok(ov)
    }

    /// Install the hook called with a node number whose attributes changed
    /// other than through the request that is being answered.
    pub fn set_attr_changed_hook(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.attr_changed.set(f);
    }

    /// Install the hook called, before a change to a directory's names is
    /// answered, with the directory's node number if the kernel may hold a
    /// cached listing of it (the FUSE adapter drops that copy).
    pub fn set_listing_changed_hook(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.listing_changed.set(f);
    }

    pub(super) fn listing_changed(&self, ino: u64) {
        if let Some(f) = self.listing_changed.get() {
            f(ino);
        }
    }

    fn attr_changed(&self, ino: u64) {
        if let Some(f) = self.attr_changed.get() {
            f(ino);
        }
    }

    /// Tell the kernel a node's cached attributes are stale (the FUSE adapter:
    /// data written where the daemon does not see it, as through passthrough).
    pub fn invalidate_attrs(&self, ino: u64) {
        self.attr_changed(ino);
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Number of live nodes (the kernel's references), for tests and statistics.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn read_only(&self) -> bool {
        self.cfg.read_only || self.upper.is_none()
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only() {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// The kernel's ovl_allow_offline_changes: none of the features that
    /// record lower identities in the upper layer are on.
    fn allow_offline_changes(&self) -> bool {
        self.cfg.redirect_dir != crate::params::RedirectDir::On
            && self.index.is_none()
            && !self.xino_on
    }

    fn fsync_data(&self) -> bool {
        self.cfg.fsync != FsyncMode::Volatile
    }

    fn work_fd(&self) -> Result<&OwnedFd> {
        self.work.as_ref().ok_or(Errno::EROFS)
    }

    /// A fresh name in `W/work` for an object under construction.
    fn tmp_name(&self) -> OsString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#{:x}", n))
    }

    /// Create a whiteout (0/0 char device) in the workdir and return its name.
    fn make_tmp_whiteout(&self) -> Result<OsString> {
        let work = self.work_fd()?;
        let tmp = self.tmp_name();
        sys::mknodat(work.as_fd(), &tmp, libc::S_IFCHR, 0)?;
        Ok(tmp)
    }

    /// Remove a tree in the workdir (the leftovers of rmdir or rename).
    fn remove_work_tree(&self, name: &OsStr) {
        if let Ok(work) = self.work_fd()
            && let Err(e) = remove_tree(work.as_fd(), name)
        {
            tracing::warn!(?name, %e, "cannot clean up workdir entry");
        }
    }

    pub fn node(&self, ino: u64) -> Result<Arc<Node>> {
        self.nodes.get(ino).ok_or(Errno::ESTALE)
    }

    /// The kernel dropped `n` references to a node.
    pub fn forget(&self, ino: u64, n: u64) {
        self.nodes.forget(ino, n);
        // When the kernel has let go of most of what it held (memory pressure,
        // drop_caches), hand the freed memory back to the system.
        let now = self.nodes.len();
        let peak = self.node_peak.fetch_max(now, Ordering::Relaxed).max(now);
        if peak >= TRIM_AFTER_NODES && now < peak / 2 {
            self.node_peak.store(now, Ordering::Relaxed);
            sys::release_free_memory();
        }
    }
}

/// Node counts from which a drop to half returns freed memory to the system.
const TRIM_AFTER_NODES: usize = 10_000;
