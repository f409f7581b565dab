//! `ovlfs apply`: an OCI image layer (tar, gzip or zstd) unpacked into a new
//! layer directory in overlay form: `.wh.NAME` becomes a 0/0 whiteout at
//! NAME, `.wh..wh..opq` the opaque xattr on its directory.
//!
//! The archive is untrusted input. Every entry is created with *at() calls
//! below the new directory, never following a symlink (an entry whose path
//! goes through one is refused, as are absolute paths, `..` and hard links
//! leading anywhere but to an earlier entry); extension headers are read
//! only up to a bound; data shorter than its header says, or an archive
//! without its end marker, is refused as truncated; device nodes and
//! files of other owners need root, and say so. Overlay xattrs in the archive are
//! dropped (a layer must not smuggle redirects or metacopy into a stack).
//!
//! Everything is built in `.DIR.apply-tmp` beside DIR and renamed into place
//! when the whole archive was read: a refused archive leaves nothing.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use tar::EntryType;

use super::archive::digest_string;
use super::archive::{Compression, Hashing, OCI_META_PREFIX, OCI_OPAQUE, decompressor};
use super::layers::{ToolError, open_dir, sibling};
use super::progress;
use crate::engine::{Errno, remove_tree};
use crate::format::whiteout::WH_PREFIX;
use crate::format::xattr::{OvlXattr, TRUSTED_PREFIX, USER_PREFIX, XattrNames};
use crate::sys;

/// Extension headers (PAX records, GNU long names) larger than this are
/// refused rather than read into memory.
const MAX_PAX: u64 = 1 << 20;
const MAX_LONG_NAME: u64 = 64 << 10;
/// Entry paths longer or deeper than this are refused (PATH_MAX; and no
/// real layer nests this deep, while removal holds a descriptor per level).
const MAX_PATH: usize = 4096;
const MAX_DEPTH: usize = 256;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque: u64,
    pub bytes: u64,
    /// Overlay xattrs found in the archive and not applied.
    pub dropped_xattrs: u64,
    /// `sha256:` of the archive as read.
    pub digest: String,
}

/// Notes when the tar reader meets the end of the stream (an archive must
/// end with its zero blocks before that).
struct EofWatch<R> {
    inner: R,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for EofWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit.set(true);
        }
        Ok(n)
    }
}

/// What the extension headers before an entry said.
#[derive(Default)]
struct Pending {
    pax: Vec<(String, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn pax(&self, key: &str) -> Option<&[u8]> {
        self.pax
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

struct Applier<'a> {
    root: OwnedFd,
    archive: &'a Path,
    names: XattrNames,
    report: ApplyReport,
    /// Directories' times, set once everything inside them is written.
    dir_times: Vec<(Vec<OsString>, libc::timespec)>,
    /// The directory the previous entry went into (archives are in order).
    last_dir: Option<(Vec<OsString>, OwnedFd)>,
}

/// The components of an entry's path, refusing what leads out of the layer.
fn components(raw: &[u8]) -> Result<Vec<OsString>, String> {
    if raw.len() > MAX_PATH {
        return Err(format!(
            "a path of {} bytes (more than {MAX_PATH} refused)",
            raw.len()
        ));
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path refused".into());
    }
    if raw.contains(&0) {
        return Err("NUL byte in the path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path leads out of the layer (..)".into()),
            c if c.len() > 255 => return Err("a name longer than 255 bytes".into()),
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err(format!("a path deeper than {MAX_DEPTH} directories"));
    }
    Ok(out)
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// A PAX time `sec[.frac]`.
fn parse_time(v: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse::<i64>().ok().filter(|v| *v >= 0)?;
    let sec = if negative { -sec } else { sec };
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: i64 = digits.parse().ok()?;
    Some(if negative && nsec > 0 {
        sys::timespec(sec - 1, 1_000_000_000 - nsec)
    } else {
        sys::timespec(sec, nsec)
    })
}

impl Applier<'_> {
    fn refuse(&self, entry: &[u8], why: impl Into<String>) -> ToolError {
        // A hostile name may be kilobytes long: its start is enough to find it.
        let shown = if entry.len() > 256 {
            format!(
                "{}... ({} bytes)",
                String::from_utf8_lossy(&entry[..200]),
                entry.len()
            )
        } else {
            String::from_utf8_lossy(entry).into_owned()
        };
        ToolError::Archive {
            archive: self.archive.to_path_buf(),
            entry: shown,
            why: why.into(),
        }
    }

    fn fail(&self, entry: &[u8], what: &str, e: Errno) -> ToolError {
        let hint = match e {
            Errno::EPERM => {
                " (needs root: device nodes and files of other owners; applying those as an ordinary user is NOT SUPPORTED YET)"
            }
            _ => "",
        };
        self.refuse(entry, format!("{what}: {e}{hint}"))
    }

    /// The directory `comps` in the new layer; made (0755) where missing
    /// when `create`. A symlink or non-directory on the way is refused.
    fn dir(
        &mut self,
        entry: &[u8],
        comps: &[OsString],
        create: bool,
    ) -> Result<OwnedFd, ToolError> {
        if let Some((p, fd)) = &self.last_dir
            && p.as_slice() == comps
        {
            return sys::openat(
                fd.as_fd(),
                OsStr::new("."),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .map_err(|e| self.fail(entry, "cannot open its directory", e));
        }
        let mut cur = sys::openat(self.root.as_fd(), OsStr::new("."), libc::O_PATH, 0)
            .map_err(|e| self.fail(entry, "cannot open the layer", e))?;
        for c in comps {
            match sys::fstatat(cur.as_fd(), c) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    return Err(
                        self.refuse(entry, format!("its path goes through the symlink {:?}", c))
                    );
                }
                Ok(_) => {
                    return Err(self.refuse(entry, format!("{c:?} on its path is not a directory")));
                }
                Err(e) if e == Errno::ENOENT && create => {
                    sys::mkdirat(cur.as_fd(), c, 0o755)
                        .map_err(|e| self.fail(entry, "cannot create a parent directory", e))?;
                }
                Err(e) => return Err(self.fail(entry, "cannot find its directory", e)),
            }
            cur = sys::openat(
                cur.as_fd(),
                c,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(|e| self.fail(entry, "cannot open its directory", e))?;
        }
        let keep = sys::openat(
            cur.as_fd(),
            OsStr::new("."),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| self.fail(entry, "cannot open its directory", e))?;
        self.last_dir = Some((comps.to_vec(), keep));
        Ok(cur)
    }

    /// One entry (extension headers already folded into `p`).
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>, p: &Pending) -> Result<(), ToolError> {
        let h = e.header().clone();
        let raw_path = match (p.pax("path"), &p.long_name) {
            (Some(v), _) => v.to_vec(),
            (None, Some(v)) => v.strip_suffix(&[0]).unwrap_or(v).to_vec(),
            (None, None) => h.path_bytes().into_owned(),
        };
        let entry = raw_path.as_slice();
        let ty = h.entry_type();
        if ty.is_gnu_sparse() || p.pax.iter().any(|(k, _)| k.starts_with("GNU.sparse.")) {
            return Err(self.refuse(entry, "sparse entries are not supported"));
        }
        let size = h
            .entry_size()
            .map_err(|e| self.refuse(entry, e.to_string()))?;
        if let Some(s) = p.pax("size")
            && parse_num(s) != Some(size)
        {
            return Err(self.refuse(entry, "PAX size record disagrees with the header"));
        }
        let comps = components(entry).map_err(|why| self.refuse(entry, why))?;
        let Some((name, parent)) = comps.split_last() else {
            // `./`: the layer's root directory itself.
            if ty.is_dir() {
                let root = sys::openat(self.root.as_fd(), OsStr::new("."), libc::O_PATH, 0)
                    .map_err(|e| self.fail(entry, "cannot open the layer", e))?;
                self.metadata(entry, root.as_fd(), &h, p, false)?;
                self.dir_times.push((Vec::new(), self.mtime(entry, &h, p)?));
                return Ok(());
            }
            return Err(self.refuse(entry, "an empty path for a non-directory"));
        };
        let name_b = name.as_bytes();
        if name_b == OCI_OPAQUE.as_bytes() {
            if parent.is_empty() {
                // OCI: every lower layer hidden. An overlay ignores the opaque
                // mark on a lower layer's root, so the layer would mean less.
                return Err(self.refuse(
                    entry,
                    "an opaque marker at the root hides all layers below, which an overlay layer cannot express (use the layer without those below it)",
                ));
            }
            let dir = self.dir(entry, parent, true)?;
            sys::setxattr(dir.as_fd(), self.names.get(OvlXattr::Opaque), b"y", 0)
                .map_err(|e| self.fail(entry, "cannot mark the directory opaque", e))?;
            self.report.opaque += 1;
            return Ok(());
        }
        if name_b.starts_with(OCI_META_PREFIX) {
            tracing::warn!(entry = %String::from_utf8_lossy(entry), "AUFS metadata left out");
            return Ok(());
        }
        if let Some(target) = name_b.strip_prefix(WH_PREFIX) {
            let target = OsStr::from_bytes(target);
            if target.is_empty() || target == "." || target == ".." {
                return Err(self.refuse(entry, "a whiteout of no name"));
            }
            let dir = self.dir(entry, parent, true)?;
            if sys::fstatat(dir.as_fd(), target).is_ok() {
                // The layer's own entry wins over its whiteout (OCI: a
                // whiteout only hides what lower layers have).
                return Ok(());
            }
            sys::mknodat(dir.as_fd(), target, libc::S_IFCHR, 0)
                .map_err(|e| self.fail(entry, "cannot create the whiteout", e))?;
            self.report.whiteouts += 1;
            return Ok(());
        }
        let dir = self.dir(entry, parent, true)?;
        match sys::fstatat(dir.as_fd(), name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                if !ty.is_dir() {
                    return Err(self.refuse(entry, "replaces a directory an earlier entry made"));
                }
            }
            // A later entry of the same name wins, as with tar.
            Ok(_) => sys::unlinkat(dir.as_fd(), name, false)
                .map_err(|e| self.fail(entry, "cannot replace an earlier entry", e))?,
            Err(_) => {}
        }
        let link_target = || -> Vec<u8> {
            match (p.pax("linkpath"), &p.long_link) {
                (Some(v), _) => v.to_vec(),
                (None, Some(v)) => v.strip_suffix(&[0]).unwrap_or(v).to_vec(),
                (None, None) => h
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default(),
            }
        };
        let mode = h.mode().map_err(|e| self.refuse(entry, e.to_string()))? & 0o7777;
        let fd = match ty {
            EntryType::Regular | EntryType::Continuous => {
                let f = sys::openat(
                    dir.as_fd(),
                    name,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(|e| self.fail(entry, "cannot create", e))?;
                let mut file = std::fs::File::from(f);
                let n = io::copy(&mut e.by_ref().take(size), &mut file)
                    .map_err(|x| self.refuse(entry, format!("cannot unpack the data: {x}")))?;
                if n != size {
                    return Err(self.refuse(
                        entry,
                        format!("truncated archive: {n} of {size} bytes of data"),
                    ));
                }
                self.report.bytes += n;
                OwnedFd::from(file)
            }
            EntryType::Directory => {
                if sys::fstatat(dir.as_fd(), name).is_err() {
                    sys::mkdirat(dir.as_fd(), name, 0o700)
                        .map_err(|e| self.fail(entry, "cannot create", e))?;
                }
                let mut path = parent.to_vec();
                path.push(name.clone());
                self.dir_times.push((path, self.mtime(entry, &h, p)?));
                self.open(entry, dir.as_fd(), name)?
            }
            EntryType::Symlink => {
                let t = link_target();
                if t.is_empty() {
                    return Err(self.refuse(entry, "a symlink to nothing"));
                }
                sys::symlinkat(OsStr::from_bytes(&t), dir.as_fd(), name)
                    .map_err(|e| self.fail(entry, "cannot create", e))?;
                self.open(entry, dir.as_fd(), name)?
            }
            EntryType::Link => {
                let t = link_target();
                let tc = components(&t)
                    .map_err(|why| self.refuse(entry, format!("hard link: {why}")))?;
                let Some((tname, tparent)) = tc.split_last() else {
                    return Err(self.refuse(entry, "a hard link to nothing"));
                };
                let tdir = self.dir(entry, tparent, false)?;
                sys::linkat(tdir.as_fd(), tname, dir.as_fd(), name).map_err(|x| {
                    self.fail(entry, "cannot link to an earlier entry of this archive", x)
                })?;
                self.report.entries += 1;
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (kind, rdev) = match ty {
                    EntryType::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        let bad_num = || self.refuse(entry, "unreadable device numbers");
                        let major = h.device_major().ok().flatten().ok_or_else(bad_num)?;
                        let minor = h.device_minor().ok().flatten().ok_or_else(bad_num)?;
                        let dev = sys::makedev(major, minor);
                        let k = if ty == EntryType::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (k, dev)
                    }
                };
                sys::mknodat(dir.as_fd(), name, kind | 0o600, rdev)
                    .map_err(|e| self.fail(entry, "cannot create the device node", e))?;
                self.open(entry, dir.as_fd(), name)?
            }
            other => {
                return Err(self.refuse(entry, format!("unsupported entry type {:?}", other)));
            }
        };
        let is_link = ty == EntryType::Symlink;
        self.metadata(entry, fd.as_fd(), &h, p, is_link)?;
        if !is_link {
            sys::fchmod(fd.as_fd(), mode).map_err(|e| self.fail(entry, "cannot chmod", e))?;
        }
        if !ty.is_dir() {
            let t = self.mtime(entry, &h, p)?;
            sys::utimensat(dir.as_fd(), name, Some(t), Some(t))
                .map_err(|e| self.fail(entry, "cannot set times", e))?;
        }
        self.report.entries += 1;
        Ok(())
    }

    fn open(&self, entry: &[u8], dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, ToolError> {
        sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| self.fail(entry, "cannot open what was created", e))
    }

    fn mtime(
        &self,
        entry: &[u8],
        h: &tar::Header,
        p: &Pending,
    ) -> Result<libc::timespec, ToolError> {
        if let Some(v) = p.pax("mtime") {
            return parse_time(v).ok_or_else(|| self.refuse(entry, "bad PAX mtime"));
        }
        let m = h.mtime().map_err(|e| self.refuse(entry, e.to_string()))?;
        Ok(sys::timespec(m.min(i64::MAX as u64) as i64, 0))
    }

    /// Owner and xattrs (mode after them: chown clears set-id bits).
    fn metadata(
        &mut self,
        entry: &[u8],
        fd: BorrowedFd<'_>,
        h: &tar::Header,
        p: &Pending,
        is_link: bool,
    ) -> Result<(), ToolError> {
        let id = |key: &str, v: io::Result<u64>| -> Result<u32, ToolError> {
            let n = match p.pax(key) {
                Some(s) => {
                    parse_num(s).ok_or_else(|| self.refuse(entry, format!("bad PAX {key}")))?
                }
                None => v.map_err(|e| self.refuse(entry, e.to_string()))?,
            };
            u32::try_from(n).map_err(|_| self.refuse(entry, format!("{key} {n} out of range")))
        };
        let (uid, gid) = (id("uid", h.uid())?, id("gid", h.gid())?);
        let st = sys::fstat(fd).map_err(|e| self.fail(entry, "cannot stat", e))?;
        if st.st_uid != uid || st.st_gid != gid {
            sys::fchown(fd, Some(uid), Some(gid))
                .map_err(|e| self.fail(entry, &format!("cannot give it owner {uid}:{gid}"), e))?;
        }
        for (k, v) in &p.pax {
            let Some(x) = k.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            // Overlay xattrs, and ovlfs's own marks (a forged commit mark
            // would make fsck empty an upper).
            let private = [TRUSTED_PREFIX, USER_PREFIX, "trusted.ovlfs.", "user.ovlfs."];
            if private.iter().any(|p| x.starts_with(p)) {
                tracing::warn!(entry = %String::from_utf8_lossy(entry), xattr = x, "overlay xattr in the archive not applied");
                self.report.dropped_xattrs += 1;
                continue;
            }
            if is_link && x.starts_with("user.") {
                // Symlinks cannot carry user.* xattrs on Linux.
                return Err(self.refuse(entry, format!("xattr {x} on a symlink")));
            }
            sys::setxattr(fd, OsStr::new(x), v, 0)
                .map_err(|e| self.fail(entry, &format!("cannot set xattr {x}"), e))?;
        }
        Ok(())
    }
}

/// Read an extension header's data, refusing one larger than `max`.
fn read_extension<R: Read>(
    e: &mut tar::Entry<'_, R>,
    max: u64,
    archive: &Path,
) -> Result<Vec<u8>, ToolError> {
    let size = e.header().entry_size().unwrap_or(u64::MAX);
    if size > max {
        return Err(ToolError::Archive {
            archive: archive.to_path_buf(),
            entry: String::new(),
            why: format!("an extension header of {size} bytes (more than {max} refused)"),
        });
    }
    let mut v = Vec::with_capacity(size as usize);
    e.read_to_end(&mut v).map_err(|x| ToolError::Archive {
        archive: archive.to_path_buf(),
        entry: String::new(),
        why: format!("cannot read an extension header: {x}"),
    })?;
    if v.len() as u64 != size {
        return Err(ToolError::Archive {
            archive: archive.to_path_buf(),
            entry: String::new(),
            why: "truncated archive (in an extension header)".into(),
        });
    }
    Ok(v)
}

/// Unpack the OCI layer `archive` (`None`: stdin) into the new layer
/// directory `dir` (absent or empty).
pub fn apply(
    archive: Option<&Path>,
    dir: &Path,
    userxattr: bool,
) -> Result<ApplyReport, ToolError> {
    let shown = archive.unwrap_or(Path::new("-"));
    let bad = |why: String| ToolError::Archive {
        archive: shown.to_path_buf(),
        entry: String::new(),
        why,
    };
    let existed = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let empty = std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(ToolError::Io {
                    path: dir.to_path_buf(),
                    what: "is not empty (apply makes a new layer)",
                    errno: Errno::ENOTEMPTY,
                });
            }
            true
        }
        Ok(_) => {
            return Err(ToolError::Io {
                path: dir.to_path_buf(),
                what: "exists and is not a directory",
                errno: Errno::EEXIST,
            });
        }
        Err(_) => false,
    };
    let (input, len): (Box<dyn Read>, Option<u64>) = match archive {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| ToolError::Io {
                path: p.to_path_buf(),
                what: "cannot open the archive",
                errno: Errno::from(e),
            })?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len)
        }
        None => (Box::new(io::stdin().lock()), None),
    };
    let (parent_path, tmp) = sibling(dir, ".apply-tmp")?;
    let parent = open_dir(&parent_path)?;
    let tmp_path = parent_path.join(&tmp);
    let cleanup = || {
        let _ = remove_tree(parent.as_fd(), &tmp);
    };
    cleanup();
    sys::mkdirat(parent.as_fd(), &tmp, 0o755)
        .map_err(super::layers::io_err(&tmp_path, "cannot create"))?;
    let root = sys::openat(
        parent.as_fd(),
        &tmp,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(super::layers::io_err(&tmp_path, "cannot open"))?;
    let bar = progress::bytes_bar(len, "apply");
    let result = (|| -> Result<ApplyReport, ToolError> {
        let mut raw = Hashing::new(bar.wrap_read(input));
        let (stream, _c): (Box<dyn Read + '_>, Compression) =
            decompressor(BufReader::with_capacity(1 << 20, &mut raw))
                .map_err(|e| bad(format!("cannot read: {e}")))?;
        let eof = Rc::new(Cell::new(false));
        let mut tar = tar::Archive::new(EofWatch {
            inner: stream,
            hit: eof.clone(),
        });
        let mut a = Applier {
            root,
            archive: shown,
            names: XattrNames::new(userxattr),
            report: ApplyReport::default(),
            dir_times: Vec::new(),
            last_dir: None,
        };
        let mut pending = Pending::default();
        let entries = tar
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?
            .raw(true);
        for e in entries {
            let mut e = e.map_err(|e| bad(format!("not a tar archive or damaged: {e}")))?;
            let ty = e.header().entry_type();
            if ty.is_pax_local_extensions() || ty.is_pax_global_extensions() {
                let data = read_extension(&mut e, MAX_PAX, shown)?;
                if ty.is_pax_local_extensions() {
                    if !pending.pax.is_empty() {
                        return Err(bad("two PAX headers for one entry".into()));
                    }
                    for r in tar::PaxExtensions::new(&data) {
                        let r = r.map_err(|e| bad(format!("bad PAX record: {e}")))?;
                        let k = r.key().map_err(|_| bad("PAX key not UTF-8".into()))?;
                        pending.pax.push((k.to_string(), r.value_bytes().to_vec()));
                    }
                }
                continue;
            }
            if ty.is_gnu_longname() && pending.long_name.is_some()
                || ty.is_gnu_longlink() && pending.long_link.is_some()
            {
                return Err(bad("two GNU long names for one entry".into()));
            }
            if ty.is_gnu_longname() {
                pending.long_name = Some(read_extension(&mut e, MAX_LONG_NAME, shown)?);
                continue;
            }
            if ty.is_gnu_longlink() {
                pending.long_link = Some(read_extension(&mut e, MAX_LONG_NAME, shown)?);
                continue;
            }
            let p = std::mem::take(&mut pending);
            a.entry(&mut e, &p)?;
        }
        if eof.get() {
            return Err(bad(
                "truncated archive: it ends without its end-of-archive blocks".into(),
            ));
        }
        // Read what follows the end blocks: a compressed stream's checksum
        // is checked at its very end.
        let mut rest = tar.into_inner();
        io::copy(&mut rest, &mut io::sink())
            .map_err(|e| bad(format!("damaged after the last entry: {e}")))?;
        drop(rest);
        for (comps, t) in std::mem::take(&mut a.dir_times).into_iter().rev() {
            let d = a.dir(b"", &comps, false)?;
            sys::utimensat(d.as_fd(), OsStr::new("."), Some(t), Some(t))
                .map_err(|e| a.fail(b"", "cannot set a directory's times", e))?;
        }
        a.last_dir = None;
        let mut report = a.report;
        report.digest = digest_string(raw.hash);
        Ok(report)
    })();
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            cleanup();
            return Err(e);
        }
    };
    let name = dir.file_name().unwrap_or(OsStr::new(""));
    let flags = if existed { 0 } else { sys::RENAME_NOREPLACE };
    if let Err(e) = sys::renameat2(parent.as_fd(), &tmp, parent.as_fd(), name, flags) {
        cleanup();
        return Err(super::layers::io_err(
            dir,
            "cannot move the new layer into place",
        )(e));
    }
    Ok(report)
}
