//! Resolving a name through the layers.
//!
//! Upper first, then each lower directory merged into the parent, top down.
//! A whiteout hides everything below it; a non-directory or an opaque
//! directory ends the descent. In lower layers the AUFS/OCI forms count too:
//! `.wh.NAME` hides NAME in the layers below, `.wh..wh..opq` makes its
//! directory opaque.

use crate::format::xattr::OvlXattr;
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::layer::Setup;
use super::layer_walk::{Below, LayerDir, Stop};
use super::metacopy::DataSearch;
use super::node::{Key, LowerEntry, Node, NodeState, ROOT_INO, RealRef};
use super::{Errno, Overlay, Result};
use crate::format::redirect::{Redirect, check_component};
use crate::format::whiteout::{self, WH_OPAQUE, WH_PREFIX};
use crate::format::xattr::XattrNames;
use crate::params::RedirectDir;
use crate::sys::{self, Stat};

/// What a name resolves to in one directory of the overlay.
#[derive(Default)]
pub struct Resolved {
    pub upper: Option<(OwnedFd, Stat)>,
    /// Lower objects merged into the result, topmost first (several only for
    /// directories). No fd for a leaf found under its own name in a held
    /// directory: the node refers to it by name (one fstatat, no open/close).
    pub lowers: Vec<(usize, Option<OwnedFd>, Stat)>,
    /// The upper directory carries the opaque mark.
    pub opaque: bool,
    /// A whiteout sits at this name in the upper layer.
    pub upper_whiteout: bool,
    /// Some lower layer below the parent holds a (non-whiteout) entry of this name,
    /// whether or not it shows: removing or moving the name then needs a whiteout.
    pub lower_positive: bool,
    /// The lower object an upper non-directory was copied from (its origin).
    pub origin: Option<Key>,
    /// The origin's link count: a lower hard link's number is not shown by
    /// an upper copy that may have split from its other names.
    pub origin_links: u64,
    /// The upper directory's redirect (where its lower directories are).
    pub redirect: Option<Redirect>,
    /// A lower directory's redirect was followed.
    pub followed_redirect: bool,
    /// The top object is a metacopy file; its data is `data` (None: missing).
    pub metacopy: bool,
    pub data: Option<(usize, OwnedFd, Stat)>,
    /// The held directories the objects were found in by this very name
    /// (leaf nodes refer to them instead of holding fds of their own).
    pub upper_dir: Option<Arc<OwnedFd>>,
    pub lower_dirs: Vec<Option<Arc<OwnedFd>>>,
    /// index=on, a lower non-directory with several links: its index entry's
    /// name (whether or not the entry exists yet).
    pub index_name: Option<OsString>,
    /// The index entry a name without an upper object of its own shows (the
    /// copy another of its names brought up).
    pub index: Option<(OwnedFd, Stat)>,
}

impl Resolved {
    pub fn visible(&self) -> bool {
        self.upper.is_some() || !self.lowers.is_empty()
    }

    /// Stat of the object that shows through.
    pub fn stat(&self) -> Option<&Stat> {
        self.upper
            .as_ref()
            .or(self.index.as_ref())
            .map(|(_, s)| s)
            .or_else(|| self.lowers.first().map(|(_, _, s)| s))
    }

    pub fn kind(&self) -> Option<u32> {
        self.stat().map(|s| s.st_mode & libc::S_IFMT)
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == Some(libc::S_IFDIR)
    }

    /// Identity whose inode number the object shows: the origin of a copied-up
    /// file, the top lower directory of a merged one, else the key itself.
    fn ino_key(&self, key: Key) -> Key {
        if let Some(o) = self.origin
            && Overlay::shows_origin_ino(self.origin_links, self.index_name.is_some())
        {
            return o;
        }
        match (self.lowers.first(), self.is_dir()) {
            (Some((_, _, s)), true) => Key::new(s.st_dev, s.st_ino),
            _ => key,
        }
    }

    /// Identity under which the node table finds this object: the upper object
    /// if there is one (copy-up re-keys a node to it), else the top lower one.
    fn key(&self, parent: &Node, name: &OsStr) -> Key {
        match (
            self.upper.as_ref().or(self.index.as_ref()),
            self.lowers.first(),
        ) {
            (Some((_, s)), _) => Key::new(s.st_dev, s.st_ino),
            // Without an index the kernel gives each name its own inode.
            (None, Some((_, _, s)))
                if !is_dir(s) && s.st_nlink > 1 && self.index_name.is_none() =>
            {
                let mut h = std::hash::DefaultHasher::new();
                (parent.ino, name).hash(&mut h);
                Key {
                    dev: s.st_dev,
                    ino: s.st_ino,
                    alias: h.finish() | 1,
                }
            }
            (None, Some((_, _, s))) => Key::new(s.st_dev, s.st_ino),
            (None, None) => Key::new(0, 0),
        }
    }
}

fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn open_path(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd> {
    sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
}

/// Open and stat `dir/name`; `None` if it does not exist. A directory is
/// opened for reading (its xattrs are then read through the fd itself,
/// much cheaper than through /proc for an O_PATH fd); anything else O_PATH
/// (opening a device or fifo could have effects).
pub(super) fn probe(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<(OwnedFd, Stat)>> {
    check_component(name)?;
    match open_path(dir, name) {
        Ok(fd) => {
            let st = sys::fstat(fd.as_fd())?;
            if is_dir(&st)
                && let Ok(rd) = sys::openat(
                    fd.as_fd(),
                    OsStr::new("."),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
            {
                return Ok(Some((rd, st)));
            }
            Ok(Some((fd, st)))
        }
        Err(e) if e == Errno::ENOENT || e == Errno::ENAMETOOLONG => Ok(None),
        Err(e) => Err(e),
    }
}

fn exists(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    sys::fstatat(dir, name).is_ok()
}

fn wh_name(name: &OsStr) -> std::ffi::OsString {
    whiteout::wh_name(name)
}

/// Whether a directory is opaque: the xattr mark, or (in lower layers) the
/// `.wh..wh..opq` marker inside it.
pub(super) fn dir_is_opaque(x: &XattrNames, fd: BorrowedFd<'_>, lower: bool) -> bool {
    whiteout::opaque_of(x, fd) == whiteout::Opaque::Yes
        || lower && exists(fd, OsStr::new(WH_OPAQUE))
}

/// Names the overlay never shows from a lower layer: the AUFS/OCI markers.
pub(super) fn is_lower_marker(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

impl Overlay {
    /// Resolve `name` in directory `parent`. With `probe_below`, also find out
    /// whether a lower layer has the name under an upper object that hides it.
    pub(super) fn resolve(
        &self,
        parent: &Node,
        name: &OsStr,
        probe_below: bool,
    ) -> Result<Resolved> {
        let mut r = self.resolve_layers(parent, name, probe_below)?;
        if self.index.is_some() {
            self.find_index(&mut r)?;
        }
        Ok(r)
    }

    /// The index side of a resolution (index=on): whether an upper file is an
    /// index entry's hard link, or where a lower hard-linked file's copy is.
    fn find_index(&self, r: &mut Resolved) -> Result<()> {
        let Some(index) = &self.index else {
            return Ok(());
        };
        if let Some((fd, st)) = &r.upper {
            // An indexed upper file is linked from the index too: nlink >= 2.
            if is_dir(st) || st.st_nlink < 2 {
                return Ok(());
            }
            let Ok(v) = sys::getxattr(fd.as_fd(), self.xattr.get(OvlXattr::Origin)) else {
                return Ok(());
            };
            let iname = super::index::hex_name(&v);
            if !v.is_empty()
                && let Ok(ist) = sys::fstatat(index.as_fd(), &iname)
                && (ist.st_dev, ist.st_ino) == (st.st_dev, st.st_ino)
            {
                r.index_name = Some(iname);
            }
            return Ok(());
        }
        let Some((layer, Some(fd), st)) = r.lowers.first() else {
            return Ok(());
        };
        if is_dir(st) || st.st_nlink < 2 {
            return Ok(());
        }
        let v = self.origin_value(*layer, fd.as_fd());
        if v.is_empty() {
            return Ok(());
        }
        let iname = super::index::hex_name(&v);
        if let Some((ifd, ist)) = probe(index.as_fd(), &iname)? {
            if whiteout::is_whiteout_stat(&ist)
                || ist.st_mode & libc::S_IFMT != st.st_mode & libc::S_IFMT
            {
                tracing::warn!(?iname, "bad index entry for a lower file");
                return Err(Errno::EIO);
            }
            if self.is_metacopy_file(ifd.as_fd(), &ist)? {
                // Metadata copied up, the data still the lower's (or below it).
                if !r.metacopy {
                    let dup = fd.try_clone().map_err(Errno::from)?;
                    r.data = Some((*layer, dup, *st));
                    r.metacopy = true;
                }
            } else {
                r.metacopy = false;
                r.data = None;
            }
            r.origin = Some(Key::new(st.st_dev, st.st_ino));
            r.origin_links = st.st_nlink;
            r.index = Some((ifd, ist));
        }
        r.index_name = Some(iname);
        Ok(())
    }

    fn resolve_layers(&self, parent: &Node, name: &OsStr, probe_below: bool) -> Result<Resolved> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        if !parent.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let (pupper, plowers) = {
            let st = parent.state.read().unwrap();
            (st.upper.clone(), st.lowers.clone())
        };
        let pupper = pupper.map(|u| u.open()).transpose()?;
        let mut r = Resolved {
            upper_dir: pupper.clone(),
            ..Resolved::default()
        };
        let mut descend = true;
        let mut below = Below::Name(name.to_os_string());
        if let Some(pu) = &pupper
            && let Some((fd, st)) = probe(pu.as_fd(), name)?
        {
            if whiteout::is_whiteout_at(&self.xattr, pu.as_fd(), name, &st) {
                r.upper_whiteout = true;
                descend = false;
            } else {
                if is_dir(&st) {
                    r.opaque = dir_is_opaque(&self.xattr, fd.as_fd(), false);
                    descend = !r.opaque;
                    if descend
                        && self.reads_upper_redirect(&plowers)
                        && let Some(v) = self.read_redirect(fd.as_fd())?
                    {
                        below = below.redirected(&v);
                        r.redirect = Some(v);
                    }
                } else {
                    descend = false;
                }
                r.upper = Some((fd, st));
            }
        }
        if let Some((fd, st)) = &r.upper
            && !is_dir(st)
        {
            if let Some(o) = self.decode_origin(fd.as_fd(), st) {
                r.origin = Some(Key::new(o.st_dev, o.st_ino));
                r.origin_links = o.st_nlink;
            }
            if self.has_metacopy_mark(fd.as_fd(), st)? {
                // As the kernel: a bad redirect (EINVAL) before the refusal of
                // metacopy files without metacopy=on (EPERM).
                if self.reads_upper_redirect(&plowers)
                    && let Some(v) = self.read_redirect(fd.as_fd())?
                {
                    below = below.redirected(&v);
                    r.redirect = Some(v);
                }
                self.require_metacopy()?;
                r.metacopy = true;
                r.data = match self.find_data(&plowers, below.clone(), 0)? {
                    DataSearch::Found(l, fd, st) => Some((l, fd, st)),
                    DataSearch::Missing => None,
                };
                // Without an origin, the lower object found stands for it (its
                // inode number shows), as in the kernel.
                if r.origin.is_none()
                    && let Some((l, _, st)) = &r.data
                    && *l < self.lowers.len()
                {
                    r.origin = Some(Key::new(st.st_dev, st.st_ino));
                    r.origin_links = st.st_nlink;
                }
            }
        }
        if !descend {
            if probe_below && !r.upper_whiteout {
                r.lower_positive = self.lower_positive(&plowers, name);
            } else if r.upper_whiteout {
                // An orphan whiteout is harmless to keep: treat the name as covered.
                r.lower_positive = true;
            }
            return Ok(r);
        }
        self.resolve_below(parent, &plowers, below, &mut r)?;
        if r.redirect.is_some() || r.followed_redirect {
            // Whiteouts go where the name itself lies below, not the redirect target.
            r.lower_positive = self.lower_positive(&plowers, name);
        }
        Ok(r)
    }

    /// Search the lower layers, top down, for what `below` names.
    fn resolve_below(
        &self,
        parent: &Node,
        plowers: &[LowerEntry],
        mut below: Below,
        r: &mut Resolved,
    ) -> Result<()> {
        let mut stop = Stop::No;
        for layer in 0..self.lowers.len() {
            // The upper's redirect is refused before a lower layer is searched.
            self.refuse_redirect(r.redirect.is_some())?;
            let Some((dir, leaf)) = self.layer_dir(layer, plowers, &mut below, &mut stop)? else {
                match stop {
                    Stop::No => continue,
                    _ => break,
                }
            };
            // Found under its own name in a held directory: a leaf can refer to it there.
            let by_name = match (&dir, &below) {
                (LayerDir::Held(d), Below::Name(n)) if n.as_os_str() == leaf => Some(d.clone()),
                _ => None,
            };
            let dir = dir.as_fd();
            let found = match &by_name {
                Some(_) => self.probe_named(dir, &leaf)?,
                None => probe(dir, &leaf)?.map(|(fd, st)| (Some(fd), st)),
            };
            if let Some((fd, st)) = found
                && !is_lower_marker(&leaf)
            {
                if whiteout::is_whiteout_at(&self.xattr, dir, &leaf, &st) {
                    break;
                }
                r.lower_positive = true;
                if is_dir(&st) {
                    let top_is_dir = r.upper.as_ref().is_none_or(|(_, s)| is_dir(s));
                    if !top_is_dir {
                        break;
                    }
                    let fd = fd.ok_or(Errno::EIO)?;
                    let opaque = dir_is_opaque(&self.xattr, fd.as_fd(), true);
                    // A lower layer's own redirect leads the layers below it.
                    // The last layer's redirects lead nowhere: not read.
                    let bottom = self.last_layer(layer, plowers);
                    if !opaque
                        && !bottom
                        && let Some(v) = self.read_redirect(fd.as_fd())?
                    {
                        self.refuse_redirect(true)?;
                        if v.is_absolute() {
                            // As the kernel: an absolute redirect searches on
                            // whatever an opaque directory on the way said.
                            stop = Stop::No;
                        }
                        below = below.redirected(&v);
                        r.followed_redirect = true;
                    }
                    if r.lowers.is_empty()
                        && let Some((ufd, _)) = &r.upper
                    {
                        self.fix_origin(parent, ufd.as_fd(), layer, fd.as_fd());
                    }
                    r.lowers.push((layer, Some(fd), st));
                    r.lower_dirs.push(by_name.clone());
                    if opaque {
                        break;
                    }
                } else {
                    if r.upper.is_none() && r.lowers.is_empty() {
                        // A lower metacopy file: metadata here, data further down.
                        if self.has_metacopy_mark_at(dir, &leaf, &st)? {
                            r.metacopy = true;
                            // Below the bottom layer only data-only layers remain.
                            let bottom = layer + 1 == self.lowers.len();
                            let redirect = match &fd {
                                _ if bottom && self.data_layers.is_empty() => None,
                                Some(fd) => self.read_redirect(fd.as_fd())?,
                                None => Redirect::read_at(&self.xattr, dir, &leaf)?,
                            };
                            // As 6.18: a bottom layer's metacopy file with an
                            // absolute redirect leads into the data-only layers
                            // whatever metacopy= and redirect_dir= say.
                            let to_data = bottom
                                && !self.data_layers.is_empty()
                                && redirect.as_ref().is_some_and(Redirect::is_absolute);
                            let next = match redirect {
                                Some(v) => below.clone().redirected(&v),
                                None => below.clone(),
                            };
                            if !to_data {
                                self.require_metacopy()?;
                            }
                            r.data = match self.find_data(plowers, next, layer + 1)? {
                                DataSearch::Found(l, fd, st) => Some((l, fd, st)),
                                DataSearch::Missing => None,
                            };
                        }
                        r.lowers.push((layer, fd, st));
                        r.lower_dirs.push(by_name.clone());
                    }
                    break;
                }
            }
            if exists(dir, &wh_name(&leaf)) || stop != Stop::No {
                break;
            }
        }
        Ok(())
    }

    /// `probe` for a name in a held directory: a leaf is only stat'ed (the
    /// node will refer to it by name), except a hard-linked one with an
    /// index (its origin is read through the fd).
    fn probe_named(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> Result<Option<(Option<OwnedFd>, Stat)>> {
        check_component(name)?;
        let st = match sys::fstatat(dir, name) {
            Ok(st) => st,
            Err(e) if e == Errno::ENOENT || e == Errno::ENAMETOOLONG => return Ok(None),
            Err(e) => return Err(e),
        };
        if is_dir(&st) || (self.index.is_some() && st.st_nlink > 1) {
            return Ok(probe(dir, name)?.map(|(fd, st)| (Some(fd), st)));
        }
        Ok(Some((None, st)))
    }

    /// Whether the kernel searches no layer below `layer` for a directory:
    /// the bottom layer, or without following redirects, the parent's last.
    pub(super) fn last_layer(&self, layer: usize, plowers: &[LowerEntry]) -> bool {
        match self.cfg.redirect_dir {
            RedirectDir::NoFollow => plowers.last().is_none_or(|e| e.layer == layer),
            _ => layer + 1 == self.lowers.len(),
        }
    }

    /// Whether an upper object's redirect is read at all: not where it
    /// could lead nowhere (nofollow and a parent without lower directories),
    /// as the kernel does not read it there.
    fn reads_upper_redirect(&self, plowers: &[LowerEntry]) -> bool {
        self.cfg.redirect_dir != RedirectDir::NoFollow || !plowers.is_empty()
    }

    /// With redirect_dir=nofollow a redirect met on the way down fails the
    /// lookup (EPERM), as in the kernel.
    pub(super) fn refuse_redirect(&self, met: bool) -> Result<()> {
        if met && self.cfg.redirect_dir == RedirectDir::NoFollow {
            tracing::warn!("refusing to follow a redirect (redirect_dir=nofollow)");
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// The redirect of a directory or metacopy file; an invalid one fails
    /// the lookup (EINVAL), as in the kernel.
    pub(super) fn read_redirect(&self, fd: BorrowedFd<'_>) -> Result<Option<Redirect>> {
        Redirect::read(&self.xattr, fd)
    }

    /// Whether any lower directory merged into the parent has `name` (not whited out).
    fn lower_positive(&self, plowers: &[LowerEntry], name: &OsStr) -> bool {
        if is_lower_marker(name) {
            return false;
        }
        for lower in plowers {
            let Ok(dir) = lower.fd() else { continue };
            let dir = dir.as_fd();
            if let Ok(st) = sys::fstatat(dir, name) {
                return !whiteout::is_whiteout_at(&self.xattr, dir, name, &st);
            }
            if exists(dir, &wh_name(name)) {
                return false;
            }
        }
        false
    }

    /// The node `ino` again, with one more kernel reference, if it is still
    /// known as `parent_ino/name`: the cheap path of a repeated listing,
    /// where the caller remembers what it handed out. `None`: look it up.
    pub fn relookup(&self, parent_ino: u64, name: &OsStr, ino: u64) -> Option<Arc<Node>> {
        let node = self.node(ino).ok()?;
        let (parent, n) = node.parent_and_name();
        if parent.is_some_and(|p| p.ino == parent_ino) && n == name {
            self.nodes.add_lookup(&node);
            return Some(node);
        }
        None
    }

    /// Look up `name` in `parent` and return its node with one more kernel reference.
    pub fn lookup(&self, parent_ino: u64, name: &OsStr) -> Result<Arc<Node>> {
        let parent = self.node(parent_ino)?;
        let r = self.resolve(&parent, name, false)?;
        if !r.visible() {
            return Err(Errno::ENOENT);
        }
        Ok(self.node_for(&parent, name, r))
    }

    /// The node for a resolved name: the live one if it is the same object, else a new one.
    pub(super) fn node_for(&self, parent: &Arc<Node>, name: &OsStr, r: Resolved) -> Arc<Node> {
        let kind = r.kind().unwrap_or(0);
        let key = r.key(parent, name);
        let upper_id = r
            .upper
            .as_ref()
            .or(r.index.as_ref())
            .map(|(_, s)| (s.st_dev, s.st_ino));
        let top_lower = r.lowers.first().map(|(_, _, s)| (s.st_dev, s.st_ino));
        let ino_key = r.ino_key(key);
        let node = self.nodes.get_or_insert(
            key,
            ino_key,
            |n| {
                if n.kind != kind {
                    return false;
                }
                // Same object only if the upper side agrees: a copied-up node must not
                // answer for another name of its old lower inode.
                match (&upper_id, n.has_upper()) {
                    (Some(id), true) => n.upper_id() == Some(*id),
                    (None, false) => {
                        top_lower.is_some()
                            && n.lowers().first().and_then(|l| l.r.id()).map(Some)
                                == Some(top_lower)
                    }
                    _ => false,
                }
            },
            |ino| {
                Node::new(
                    ino,
                    kind,
                    NodeState {
                        parent: Some(parent.clone()),
                        name: name.to_os_string(),
                        upper: None,
                        lowers: Vec::new(),
                        opaque: false,
                        impure: false,
                        metacopy: false,
                        data: None,
                        index_name: None,
                        link_up_pending: false,
                    },
                    key,
                )
            },
        );
        // Refresh what backs the node: new lower dirs can only appear through
        // our own changes, and the name it was reached by is the one to copy up.
        let mut st = node.state.write().unwrap();
        st.parent = Some(parent.clone());
        st.name = name.to_os_string();
        st.opaque = r.opaque;
        // Leaves refer to their objects by name in the held directories (so a
        // leaf holds no fd); the newest name found is the one to use.
        st.link_up_pending = r.index.is_some() && r.upper.is_none();
        // An indexed file's upper object is always reached through its index
        // entry, whichever of its names was looked up.
        match (r.upper.or(r.index), &r.index_name, &self.index) {
            (Some((_, ust)), Some(iname), Some(index)) => {
                st.upper = Some(RealRef::At {
                    dir: index.clone(),
                    name: iname.clone(),
                    dev: ust.st_dev,
                    ino: ust.st_ino,
                });
            }
            (Some((fd, ust)), _, _) => {
                st.upper = RealRef::new(Some(fd), &ust, r.upper_dir.as_ref(), name);
            }
            _ => {}
        }
        st.index_name = r.index_name;
        st.metacopy = r.metacopy;
        st.data = r
            .data
            .map(|(layer, fd, _)| LowerEntry::held(layer, Arc::new(fd)));
        let dirs = r.lower_dirs;
        st.lowers = r
            .lowers
            .into_iter()
            .enumerate()
            .filter_map(|(i, (layer, fd, lst))| {
                let r = RealRef::new(fd, &lst, dirs.get(i).and_then(|d| d.as_ref()), name)?;
                Some(LowerEntry { layer, r })
            })
            .collect();
        drop(st);
        node
    }
}

/// The root node: the layer roots merged.
pub(super) fn root_node(setup: &Setup) -> Result<Node> {
    let dup = |fd: &OwnedFd| -> Result<Arc<OwnedFd>> {
        Ok(Arc::new(fd.try_clone().map_err(Errno::from)?))
    };
    // The roots always merge every lower layer: the kernel ignores opaque marks there.
    let lowers = setup
        .lowers
        .iter()
        .enumerate()
        .map(|(i, l)| Ok(LowerEntry::held(i, dup(&l.root)?)))
        .collect::<Result<Vec<_>>>()?;
    let upper = setup.upper.as_ref().map(|u| dup(&u.root)).transpose()?;
    let top = match &upper {
        Some(u) => u.clone(),
        None => lowers[0].fd()?,
    };
    let st = sys::fstat(top.as_fd())?;
    Ok(Node::new(
        ROOT_INO,
        libc::S_IFDIR,
        NodeState {
            parent: None,
            name: Default::default(),
            upper: upper.map(RealRef::Open),
            lowers,
            opaque: false,
            impure: false,
            metacopy: false,
            data: None,
            index_name: None,
            link_up_pending: false,
        },
        Key::new(st.st_dev, st.st_ino),
    ))
}
