//! `ovlfs export`: an upper layer as an OCI image layer (tar, gzip or zstd).
//!
//! The paths `diff` reports are written from the merged view (read through
//! the engine), so the layer means to an OCI consumer what the upper means
//! to an overlay:
//! - added and changed entries as plain tar entries: a metacopy file with
//!   its real data, a moved directory at its new path with everything it
//!   brought, parent directories before what they hold;
//! - deletions as `.wh.NAME`; an opaque directory over a lower one as the
//!   directory plus `.wh..wh..opq` (what it hides needs no whiteouts);
//! - xattrs as PAX `SCHILY.xattr.*` records (the overlay's own are not
//!   shown by the merged view, so none leak), hard links as tar links,
//!   owners as numbers, mtimes kept (PAX for sub-second parts), no atime;
//! - entries in path order and the gzip header without a time: the same
//!   layers give the same bytes, hence the same digest.
//!
//! The file is written beside its final name and renamed into place.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::archive::{Compression, Compressor, Hashing, OCI_OPAQUE, digest_string};
use super::diff::{ChangeKind, diff_and_opaque};
use super::layers::{Stack, ToolError};
use super::progress;
use super::view::View;
use crate::errno::Errno;
use crate::format::whiteout;
use crate::sys;

/// What was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub entries: u64,
    pub whiteouts: u64,
    /// File data bytes carried.
    pub bytes: u64,
    /// Size of the archive as written (compressed).
    pub size: u64,
    /// `sha256:` of the archive as written: the OCI blob digest.
    pub digest: String,
    /// `sha256:` of the uncompressed tar: the OCI `diff_id`.
    pub diff_id: String,
}

type Sink = Hashing<Compressor<Hashing<Box<dyn Write>>>>;

struct LayerWriter<'a> {
    view: View,
    tar: tar::Builder<Sink>,
    archive: &'a Path,
    /// Inode number shown by a hard-linked file → its first path in the archive.
    links: HashMap<u64, Vec<u8>>,
    dirs_written: HashSet<PathBuf>,
    opaque: HashSet<PathBuf>,
    report: ExportReport,
}

fn write_err(archive: &Path) -> impl Fn(io::Error) -> ToolError + '_ {
    move |e| ToolError::Io {
        path: archive.to_path_buf(),
        what: "cannot write the archive",
        errno: Errno::from(e),
    }
}

/// Put `path` in the header's name fields (ustar prefix split where it
/// fits), else in a PAX `path` record.
fn set_name(h: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, path: &[u8]) {
    let Some(u) = h.as_ustar_mut() else { return };
    if path.len() <= u.name.len() {
        u.name[..path.len()].copy_from_slice(path);
        return;
    }
    let split = (0..path.len()).rev().find(|&i| {
        path[i] == b'/' && i <= u.prefix.len() && path.len() - i - 1 <= u.name.len() && i > 0
    });
    if let Some(i) = split
        && i + 1 < path.len()
    {
        u.prefix[..i].copy_from_slice(&path[..i]);
        u.name[..path.len() - i - 1].copy_from_slice(&path[i + 1..]);
        return;
    }
    let tail = &path[path.len() - u.name.len()..];
    u.name.copy_from_slice(tail);
    pax.push(("path".into(), path.to_vec()));
}

fn set_link_name(h: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, target: &[u8]) {
    let Some(u) = h.as_ustar_mut() else { return };
    let n = target.len().min(u.linkname.len());
    u.linkname[..n].copy_from_slice(&target[..n]);
    if target.len() > u.linkname.len() {
        pax.push(("linkpath".into(), target.to_vec()));
    }
}

/// `sec.nsec` with the fraction's trailing zeros dropped, as PAX writes it.
/// Before 1970 stat's seconds are rounded down: -1.5 s is (-2, 5e8).
fn pax_time(sec: i64, nsec: i64) -> Vec<u8> {
    let (sign, whole, frac) = if sec < 0 && nsec > 0 {
        ("-", -(sec + 1), 1_000_000_000 - nsec)
    } else if sec < 0 {
        ("-", -sec, 0)
    } else {
        ("", sec, nsec)
    };
    let frac = format!("{frac:09}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{whole}").into_bytes()
    } else {
        format!("{sign}{whole}.{frac}").into_bytes()
    }
}

impl LayerWriter<'_> {
    fn view_err(&self, rel: &Path, what: &'static str) -> impl Fn(Errno) -> ToolError + use<> {
        let path = Path::new("/").join(rel);
        move |errno| ToolError::Io {
            path: path.clone(),
            what,
            errno,
        }
    }

    fn append(&mut self, h: &mut Header, pax: &[(String, Vec<u8>)]) -> Result<(), ToolError> {
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(write_err(self.archive))?;
        }
        h.set_cksum();
        self.tar
            .get_mut()
            .write_all(h.as_bytes())
            .map_err(write_err(self.archive))?;
        self.report.entries += 1;
        Ok(())
    }

    /// A marker file (`.wh.NAME` or the opaque marker) in directory `dir`.
    fn marker(&mut self, dir: &Path, name: &OsStr) -> Result<(), ToolError> {
        let mut h = Header::new_ustar();
        let mut pax = Vec::new();
        set_name(&mut h, &mut pax, dir.join(name).as_os_str().as_bytes());
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        self.report.whiteouts += 1;
        self.append(&mut h, &pax)
    }

    /// Merged node `ino` as the entry `rel`.
    fn node(&mut self, rel: &Path, ino: u64) -> Result<(), ToolError> {
        let a = self
            .view
            .ovl
            .getattr(ino)
            .map_err(self.view_err(rel, "cannot stat in the merged view"))?;
        let st = a.stat;
        let kind = st.st_mode & libc::S_IFMT;
        let mut name = rel.as_os_str().as_bytes().to_vec();
        if kind == libc::S_IFDIR {
            name.push(b'/');
        }
        let mut h = Header::new_ustar();
        let mut pax = Vec::new();
        set_name(&mut h, &mut pax, &name);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        // Sub-second parts and times before 1970 need a PAX record.
        if st.st_mtime_nsec != 0 || st.st_mtime < 0 {
            pax.push(("mtime".into(), pax_time(st.st_mtime, st.st_mtime_nsec)));
        }
        for (x, v) in self.view.xattrs(ino) {
            // A PAX key ends at the first '=' and is UTF-8: other names
            // would be read back as something else.
            let name = x.to_str().filter(|n| !n.contains('='));
            let Some(name) = name else {
                return Err(ToolError::Io {
                    path: Path::new("/").join(rel),
                    what: "has an xattr whose name a PAX record cannot carry ('=' or not UTF-8)",
                    errno: Errno::EINVAL,
                });
            };
            pax.push((format!("SCHILY.xattr.{name}"), v));
        }
        h.set_size(0);
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            // By the number shown: the names of a lower hard link are
            // different nodes showing one number (index=off).
            if let Some(first) = self.links.get(&a.st_ino).cloned() {
                h.set_entry_type(EntryType::Link);
                set_link_name(&mut h, &mut pax, &first);
                return self.append(&mut h, &pax);
            }
            self.links.insert(a.st_ino, name.clone());
        }
        match kind {
            libc::S_IFDIR => h.set_entry_type(EntryType::Directory),
            libc::S_IFLNK => {
                h.set_entry_type(EntryType::Symlink);
                let target = self
                    .view
                    .ovl
                    .readlink(ino)
                    .map_err(self.view_err(rel, "cannot read the link"))?;
                set_link_name(&mut h, &mut pax, target.as_bytes());
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                h.set_entry_type(if kind == libc::S_IFCHR {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                let (major, minor) = sys::major_minor(st.st_rdev);
                let bad = |e: io::Error| ToolError::Io {
                    path: Path::new("/").join(rel),
                    what: "device number does not fit a tar header",
                    errno: Errno::from(e),
                };
                h.set_device_major(major).map_err(bad)?;
                h.set_device_minor(minor).map_err(bad)?;
            }
            libc::S_IFIFO => h.set_entry_type(EntryType::Fifo),
            libc::S_IFREG => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(st.st_size as u64);
                self.append(&mut h, &pax)?;
                return self.data(rel, ino, st.st_size as u64);
            }
            _ => {
                // Sockets have no tar form (docker leaves them out too).
                tracing::warn!(path = %rel.display(), "socket left out of the layer");
                return Ok(());
            }
        }
        self.append(&mut h, &pax)
    }

    /// The data of a regular file, padded to the block size.
    fn data(&mut self, rel: &Path, ino: u64, size: u64) -> Result<(), ToolError> {
        let sink = self.tar.get_mut();
        let mut io_error = None;
        let got = self
            .view
            .read_data(ino, &mut |buf, off| {
                // Never more than the header promised.
                let room = size.saturating_sub(off).min(buf.len() as u64) as usize;
                sink.write_all(&buf[..room]).map_err(|e| {
                    let errno = Errno(e.raw_os_error().unwrap_or(libc::EIO));
                    io_error = Some(e);
                    errno
                })
            })
            .map_err(|errno| match io_error.take() {
                Some(e) => write_err(self.archive)(e),
                None => self.view_err(rel, "cannot read the data")(errno),
            })?;
        if got != size {
            return Err(ToolError::Io {
                path: Path::new("/").join(rel),
                what: "changed size while being exported",
                errno: Errno::EIO,
            });
        }
        let pad = (512 - size % 512) % 512;
        self.tar
            .get_mut()
            .write_all(&[0u8; 512][..pad as usize])
            .map_err(write_err(self.archive))?;
        self.report.bytes += size;
        Ok(())
    }

    /// A directory the archive needs before `rel`'s entry: written from the
    /// merged view, with the opaque marker where it is one.
    fn dir(&mut self, rel: &Path) -> Result<(), ToolError> {
        if self.dirs_written.contains(rel) {
            return Ok(());
        }
        let ino = self
            .view
            .resolve(rel)
            .map_err(self.view_err(rel, "not in the merged view"))?;
        self.node(rel, ino)?;
        self.dirs_written.insert(rel.to_path_buf());
        if self.opaque.contains(rel) {
            self.marker(rel, OsStr::new(OCI_OPAQUE))?;
        }
        Ok(())
    }

    fn parents(&mut self, rel: &Path) -> Result<(), ToolError> {
        let mut ancestors: Vec<&Path> = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        ancestors.reverse();
        for a in ancestors {
            self.dir(a)?;
        }
        Ok(())
    }

    fn under_opaque(&self, rel: &Path) -> bool {
        rel.ancestors().skip(1).any(|a| self.opaque.contains(a))
    }
}

/// Write the changes `upper` makes to `lowers` as an OCI layer to `out`
/// (`None`: stdout).
pub fn export(
    stack: &Stack<'_>,
    out: Option<&Path>,
    compression: Compression,
) -> Result<ExportReport, ToolError> {
    let (changes, opaque) = diff_and_opaque(stack)?;
    let view = stack.view()?;
    let archive = out.unwrap_or(Path::new("-"));
    // Written beside the final name, renamed into place when complete.
    let tmp = out.map(|p| {
        let (dir, name) = super::layers::sibling(p, ".export-tmp")?;
        Ok::<_, ToolError>(dir.join(name))
    });
    let tmp = tmp.transpose()?;
    let file: Box<dyn Write> = match &tmp {
        Some(t) => Box::new(io::BufWriter::with_capacity(1 << 20, {
            // A leftover (or anything planted there) goes; never followed.
            let _ = std::fs::remove_file(t);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(t)
                .map_err(|e| ToolError::Io {
                    path: t.clone(),
                    what: "cannot create",
                    errno: Errno::from(e),
                })?
        })),
        None => Box::new(io::BufWriter::new(io::stdout().lock())),
    };
    let result = (|| {
        let compressor =
            Compressor::new(Hashing::new(file), compression).map_err(write_err(archive))?;
        let mut w = LayerWriter {
            view,
            tar: tar::Builder::new(Hashing::new(compressor)),
            archive,
            links: HashMap::new(),
            dirs_written: HashSet::new(),
            opaque: opaque
                .iter()
                .map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf())
                .collect(),
            report: ExportReport::default(),
        };
        let bar = progress::bar(Some(changes.len() as u64), "export");
        for c in &changes {
            bar.inc(1);
            let rel = c.path.strip_prefix("/").unwrap_or(&c.path);
            let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                continue;
            };
            match c.kind {
                ChangeKind::Deleted if w.under_opaque(rel) => {}
                ChangeKind::Deleted => {
                    w.parents(rel)?;
                    w.marker(parent, &whiteout::wh_name(name))?;
                }
                _ => {
                    w.parents(rel)?;
                    let ino = w
                        .view
                        .resolve(rel)
                        .map_err(w.view_err(rel, "not in the merged view"))?;
                    let is_dir = w
                        .view
                        .ovl
                        .getattr(ino)
                        .is_ok_and(|a| a.stat.st_mode & libc::S_IFMT == libc::S_IFDIR);
                    if is_dir {
                        w.dir(rel)?;
                    } else {
                        w.node(rel, ino)?;
                    }
                }
            }
            w.view.release_held();
        }
        bar.finish_and_clear();
        let mut report = w.report;
        let inner = w.tar.into_inner().map_err(write_err(archive))?;
        report.diff_id = digest_string(inner.hash);
        let mut file = inner.inner.finish().map_err(write_err(archive))?;
        file.flush().map_err(write_err(archive))?;
        report.size = file.count;
        report.digest = digest_string(file.hash);
        Ok(report)
    })();
    if let (Some(t), Some(final_path)) = (&tmp, out) {
        if result.is_ok() {
            // On disk before it has its name.
            std::fs::File::open(t)
                .and_then(|f| f.sync_all())
                .map_err(|e| ToolError::Io {
                    path: t.clone(),
                    what: "cannot flush",
                    errno: Errno::from(e),
                })?;
            std::fs::rename(t, final_path).map_err(|e| ToolError::Io {
                path: final_path.to_path_buf(),
                what: "cannot move the archive into place",
                errno: Errno::from(e),
            })?;
        } else {
            let _ = std::fs::remove_file(t);
        }
    }
    result
}
