//! Origin and impure: how an upper object remembers the lower object it was
//! copied from, so its inode number survives copy-up and remount.
//!
//! As the kernel (docs/format.md §3, §4): copy-up writes `origin` (an ovl_fb
//! of the lower object, or an empty value where the lower filesystem has no
//! file handles) on directories and on non-directories with one link; the
//! parent gets `impure`. Lookup decodes the origin of upper non-directories
//! by file handle to give them the lower object's inode number.

use crate::format::xattr::{OvlXattr, is_yes};
use std::os::fd::{AsFd, BorrowedFd};

use super::layer::Layer;
use super::node::Node;
use super::{Errno, Overlay, Result};
use crate::format::fh::OvlFb;
use crate::format::xattr::XattrNames;
use crate::params::UuidMode;
use crate::sys::{self, Stat};

/// Settle `uuid=` for a mount as the kernel does (docs/format.md §5): `off`
/// needs one filesystem; `on` keeps a random `uuid` xattr on the upper root;
/// `auto` is `on` for a fresh upper and `null` for one an older mount used
/// (its root already impure).
pub(super) fn settle_uuid(
    mode: UuidMode,
    xattr: &XattrNames,
    upper: Option<&Layer>,
    lowers: &[Layer],
    writable: bool,
) -> UuidMode {
    let Some(upper) = upper else {
        return if mode == UuidMode::Off {
            UuidMode::Off
        } else {
            UuidMode::Null
        };
    };
    let root = upper.root.as_fd();
    let name = xattr.get(OvlXattr::Uuid);
    match mode {
        UuidMode::Off if lowers.iter().any(|l| l.dev != upper.dev) => {
            tracing::warn!(
                "uuid=off needs one filesystem for all layers; falling back to uuid=null"
            );
            UuidMode::Null
        }
        UuidMode::Off | UuidMode::Null => mode,
        UuidMode::On | UuidMode::Auto => {
            // As the kernel's ovl_init_uuid_xattr: a stored uuid of another
            // size (or unreadable) means uuid=null, and is left alone.
            match sys::getxattr(root, name) {
                Ok(v) if v.len() == 16 => return UuidMode::On,
                Err(e) if e == Errno::ENODATA => {}
                _ => return UuidMode::Null,
            }
            // auto: an upper an older mount used (impure root, or one that
            // cannot be read) stays uuid=null.
            let old = match sys::getxattr(root, xattr.get(OvlXattr::Impure)) {
                Ok(v) => !v.is_empty(),
                Err(e) => e != Errno::ENODATA,
            };
            if mode == UuidMode::Auto && old {
                return UuidMode::Null;
            }
            if !writable {
                return UuidMode::Null;
            }
            let mut id = [0u8; 16];
            let random = std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id));
            match random
                .map_err(Errno::from)
                .and_then(|()| sys::setxattr(root, name, &id, 0))
            {
                Ok(()) => UuidMode::On,
                Err(e) => {
                    tracing::warn!(%e, "cannot set the upper root's uuid; falling back to uuid=null");
                    UuidMode::Null
                }
            }
        }
    }
}

impl Overlay {
    /// The `origin` value for a lower object of layer `layer`.
    pub(super) fn origin_value(&self, layer: usize, lower: BorrowedFd<'_>) -> Vec<u8> {
        // uuid=off writes null UUIDs: all layers are on one filesystem.
        let uuid = if self.uuid == UuidMode::Off {
            [0; 16]
        } else {
            self.lowers[layer].uuid
        };
        match sys::name_to_handle(lower) {
            Ok(h) => OvlFb::new(uuid, h).encode().unwrap_or_default(),
            // No file handles on that filesystem: "copied up, origin unknown".
            Err(_) => Vec::new(),
        }
    }

    /// Whether a copy-up of an object with this stat records its origin: not for
    /// a hard-linked lower file, whose link the copy-up breaks (no index).
    pub(super) fn records_origin(st: &Stat) -> bool {
        st.st_mode & libc::S_IFMT == libc::S_IFDIR || st.st_nlink == 1
    }

    /// Mark a directory's upper copy impure (it holds entries with an origin).
    pub(super) fn set_impure(&self, dir: &Node, upper: BorrowedFd<'_>) -> Result<()> {
        if dir.state.read().unwrap().impure {
            return Ok(());
        }
        let name = self.xattr.get(OvlXattr::Impure);
        if !sys::getxattr(upper, name).is_ok_and(|v| is_yes(&v)) {
            sys::setxattr(upper, name, b"y", 0)?;
        }
        dir.state.write().unwrap().impure = true;
        Ok(())
    }

    /// The lower object an upper object was copied from, by its origin handle:
    /// its identity (st_dev, st_ino), if the origin decodes in one of the lower
    /// layers and is of the same type.
    pub(super) fn decode_origin(&self, upper: BorrowedFd<'_>, upper_st: &Stat) -> Option<Stat> {
        let value = sys::getxattr(upper, self.xattr.get(OvlXattr::Origin)).ok()?;
        self.decode_origin_stat(&value, upper_st.st_mode & libc::S_IFMT)
    }

    /// Whether an upper object shows its origin's inode number (the kernel's
    /// ovl_getattr): not a lower hard link's, which copy-up may have split
    /// into different files, unless the index ties the names together.
    pub(super) fn shows_origin_ino(origin_links: u64, indexed: bool) -> bool {
        origin_links <= 1 || indexed
    }

    /// Decode a stored origin value: the stat of the lower object it names.
    pub(super) fn decode_origin_stat(&self, value: &[u8], kind: u32) -> Option<Stat> {
        let off = self.uuid == UuidMode::Off;
        let trust_null = !self.allow_offline_changes();
        let st = match decode_origin_in(&self.lowers, off, trust_null, value) {
            Ok(st) => st,
            Err(e) => {
                tracing::debug!(%e, "origin does not decode");
                return None;
            }
        };
        if st.st_mode & libc::S_IFMT != kind {
            tracing::warn!("invalid origin: type differs from the upper object");
            return None;
        }
        Some(st)
    }

    /// A merged directory whose upper has no origin gets the origin of its lower
    /// directory, and its parent is marked impure (the kernel's ovl_fix_origin:
    /// lookups write to the upper layer too).
    pub(super) fn fix_origin(
        &self,
        parent: &Node,
        upper: BorrowedFd<'_>,
        layer: usize,
        lower: BorrowedFd<'_>,
    ) {
        if self.read_only() {
            return;
        }
        let name = self.xattr.get(OvlXattr::Origin);
        if sys::getxattr(upper, name).is_ok() {
            return;
        }
        let value = self.origin_value(layer, lower);
        if let Err(e) = sys::setxattr(upper, name, &value, 0) {
            tracing::debug!(%e, "cannot record the origin of a merged directory");
            return;
        }
        if let Ok(Some(pu)) = parent.upper() {
            let _ = self.set_impure(parent, pu.as_fd());
        }
    }
}

/// Why an origin value leads to no lower object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Undecodable {
    /// Not an `ovl_fb` the kernel accepts: it warns "invalid origin" and ignores it.
    #[error("not a valid overlay file handle")]
    Malformed,
    /// No lower layer is on the filesystem the handle names (or its null UUID
    /// cannot be trusted): the handle cannot be judged here.
    #[error("no lower layer is on the filesystem it names")]
    NoLayer,
    /// The object is gone from the filesystem it was on (ESTALE).
    #[error("the lower object it names is gone")]
    Stale,
    /// Decoding failed for another reason.
    #[error("open_by_handle_at: {0}")]
    Failed(Errno),
}

/// Decode a stored origin value in `lowers`: the stat of the object it names.
/// `uuid_off`: the mount's uuid=off (null UUIDs, one filesystem);
/// `trust_null_uuid`: the features that forbid offline changes to the lowers
/// are on, so a handle of a filesystem without a UUID may be trusted.
pub(crate) fn decode_origin_in(
    lowers: &[Layer],
    uuid_off: bool,
    trust_null_uuid: bool,
    value: &[u8],
) -> std::result::Result<Stat, Undecodable> {
    let fb = OvlFb::decode(value).map_err(|_| Undecodable::Malformed)?;
    // With uuid=off only null-UUID origins decode (any layer: one filesystem);
    // otherwise a null UUID matches nothing, as such layers cannot be told apart.
    let null = fb.uuid == [0; 16];
    if uuid_off && !null {
        return Err(Undecodable::NoLayer);
    }
    if null && !uuid_off {
        // A filesystem without a UUID: its handles are trusted only with the
        // features that forbid offline changes, and only if it is the one
        // such filesystem among the lowers (as the kernel's bad_uuid rule).
        let mut devs = lowers.iter().filter(|l| l.uuid == [0; 16]).map(|l| l.dev);
        let first = devs.next().ok_or(Undecodable::NoLayer)?;
        if !trust_null_uuid || devs.any(|d| d != first) {
            return Err(Undecodable::NoLayer);
        }
    }
    let mut why = Undecodable::NoLayer;
    for layer in lowers.iter().filter(|l| uuid_off || l.uuid == fb.uuid) {
        let Some(mount_fd) = &layer.root_rd else {
            continue;
        };
        match sys::open_by_handle(mount_fd.as_fd(), &fb.handle) {
            Ok(fd) => return sys::fstat(fd.as_fd()).map_err(Undecodable::Failed),
            Err(e) if e == Errno::ESTALE => why = Undecodable::Stale,
            Err(e) => {
                tracing::debug!(%e, layer = %layer.path.display(), "origin does not decode");
                if why != Undecodable::Stale {
                    why = Undecodable::Failed(e);
                }
            }
        }
    }
    Err(why)
}
