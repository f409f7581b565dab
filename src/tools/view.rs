//! The merged view of a layer stack, read through the engine itself (every
//! layer read-only), for the tools that write out what a mount would show:
//! `commit` and `export`. Redirects, metacopy files, whiteouts and opaque
//! directories mean exactly what they mean to a mount.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use super::layers::ToolError;
use crate::engine::{Caller, Errno, Overlay, ROOT_INO};
use crate::params::{Config, RedirectDir};

/// Receives a file's data in order: the bytes and their offset.
pub(super) type DataSink<'a> = dyn FnMut(&[u8], u64) -> Result<(), Errno> + 'a;

/// The stack `layers` (topmost first), mounted read-only in the engine.
pub(super) struct View {
    pub(super) ovl: Overlay,
    /// Lookup references held while one change is written.
    held: Vec<u64>,
}

impl View {
    /// The stack `layers` (topmost first), every one a lower layer.
    pub(super) fn new(layers: &[PathBuf], userxattr: bool) -> Result<View, ToolError> {
        let cfg = Self::config(layers, userxattr)?;
        Self::open(cfg)
    }

    /// The stack with its upper and workdir, mounted read-only with
    /// index=on: index=on hard links show as the mount shows them (names not
    /// linked up show the index copy).
    pub(super) fn with_index(
        upper: &Path,
        work: &Path,
        lowers: &[PathBuf],
        userxattr: bool,
    ) -> Result<View, ToolError> {
        let mut cfg = Self::config(lowers, userxattr)?;
        cfg.upper = Some(upper.to_path_buf());
        cfg.work = Some(work.to_path_buf());
        cfg.index = true;
        Self::open(cfg)
    }

    fn config(layers: &[PathBuf], userxattr: bool) -> Result<Config, ToolError> {
        let mut cfg = Config::parse(&["lowerdir=/"]).map_err(|e| ToolError::Io {
            path: PathBuf::from("/"),
            what: "internal configuration",
            errno: {
                tracing::error!(%e, "merged view config");
                Errno::EINVAL
            },
        })?;
        cfg.lowers = layers.to_vec();
        cfg.read_only = true;
        cfg.userxattr = userxattr;
        cfg.metacopy = !userxattr;
        cfg.redirect_dir = if userxattr {
            RedirectDir::NoFollow
        } else {
            RedirectDir::On
        };
        Ok(cfg)
    }

    fn open(cfg: Config) -> Result<View, ToolError> {
        let top = cfg.upper.clone().or_else(|| cfg.lowers.first().cloned());
        let ovl = Overlay::new(cfg).map_err(|e| ToolError::Io {
            path: top.unwrap_or_default(),
            what: "cannot read the stack",
            errno: {
                tracing::error!(%e, "opening the stack");
                Errno::EINVAL
            },
        })?;
        Ok(View {
            ovl,
            held: Vec::new(),
        })
    }

    /// The merged node at `rel`; the lookup references along the way are
    /// held until `release_held` (the node must stay known while written).
    pub(super) fn resolve(&mut self, rel: &Path) -> Result<u64, Errno> {
        let mut ino = ROOT_INO;
        for c in rel.components() {
            let n = self.ovl.lookup(ino, c.as_os_str())?;
            self.held.push(n.ino);
            ino = n.ino;
        }
        Ok(ino)
    }

    pub(super) fn release_held(&mut self) {
        for i in std::mem::take(&mut self.held) {
            self.ovl.forget(i, 1);
        }
    }

    /// The names in merged directory `ino`, sorted, without `.` and `..`.
    pub(super) fn children(&self, ino: u64) -> Result<Vec<OsString>, Errno> {
        let listing = self.ovl.listing(ino)?;
        let mut names: Vec<OsString> = listing
            .entries()
            .iter()
            .filter(|e| e.name != "." && e.name != "..")
            .map(|e| e.name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The xattrs the merged view shows on `ino`, sorted by name.
    pub(super) fn xattrs(&self, ino: u64) -> Vec<(OsString, Vec<u8>)> {
        let mut names = self.ovl.listxattr(ino, &Caller::ROOT).unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .filter_map(|n| self.ovl.getxattr(ino, &n).ok().map(|v| (n, v)))
            .collect()
    }

    /// Feed the data of merged file `ino` to `sink` in order, 1 MiB at a
    /// time; the byte count.
    pub(super) fn read_data(&self, ino: u64, sink: &mut DataSink<'_>) -> Result<u64, Errno> {
        let fh = self.ovl.open(ino, libc::O_RDONLY)?;
        let copied = (|| {
            let mut off = 0u64;
            let mut buf = Vec::new();
            loop {
                buf.clear();
                self.ovl.read(fh, off, 1 << 20, &mut buf)?;
                if buf.is_empty() {
                    return Ok(off);
                }
                sink(&buf, off)?;
                off += buf.len() as u64;
            }
        })();
        self.ovl.release(fh);
        copied
    }

    /// Whether merged node `ino` shows an index=on copy (a hard-linked lower
    /// file copied up through another of its names).
    pub(super) fn shows_index_copy(&self, ino: u64) -> bool {
        self.ovl.shows_index_copy(ino).unwrap_or(false)
    }

    pub(super) fn lookup_child(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        Ok(self.ovl.lookup(dir, name)?.ino)
    }
}
