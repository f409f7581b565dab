//! Layers: opening and checking the directories of a stack before mounting.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::Errno;
use super::node::InoScheme;
use crate::format::xattr::XattrNames;
use crate::params::{Config, FsyncMode, Xino};
use crate::sys;

/// One layer directory, held open for the life of the mount.
pub struct Layer {
    pub path: PathBuf,
    pub root: OwnedFd,
    /// st_dev of the layer's filesystem.
    pub dev: u64,
    /// The root opened for reading: open_by_handle_at needs a real fd, not O_PATH.
    pub root_rd: Option<OwnedFd>,
    /// The filesystem's UUID as the kernel knows it (origin handles carry it);
    /// all zeros where the filesystem has none.
    pub uuid: [u8; 16],
    /// The exclusive flock that marks the upper and work directories in use;
    /// released when the overlay is dropped.
    in_use: Option<OwnedFd>,
}

/// Why a stack cannot be mounted. Each names the path and the cause.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{path}: {what}: {errno}")]
    Io {
        path: PathBuf,
        what: &'static str,
        errno: Errno,
    },
    #[error("{0}: not a directory")]
    NotDir(PathBuf),
    #[error("{0} and {1} overlap: no layer may be inside another")]
    Overlap(PathBuf, PathBuf),
    #[error("{0}: in use by another ovlfs mount")]
    InUse(PathBuf),
    #[error(
        "{0}: in use by the kernel overlay mounted on {1}; index=on needs it exclusively \
         (as the kernel: mount with index=off to share it, with undefined results)"
    )]
    KernelInUse(PathBuf, PathBuf),
    #[error("workdir {work} and upperdir {upper} must be on the same filesystem")]
    WorkOtherFs { work: PathBuf, upper: PathBuf },
    #[error(
        "{0}: the upper filesystem does not support {1} xattrs (needed for opaque directories)"
    )]
    NoXattr(PathBuf, &'static str),
    #[error(
        "{0}: incompatible feature in workdir ({1}); a volatile mount was not shut down cleanly: \
         remove the upper and work directories' contents or the incompat directory to mount again"
    )]
    Incompat(PathBuf, String),
    #[error("{0}: index=on cannot use this: {1}")]
    IndexMismatch(PathBuf, &'static str),
    #[error("{0}: bad index entry ({1}); remove the index directory or mount with index=off")]
    BadIndex(PathBuf, &'static str),
}

pub(super) struct Setup {
    pub lowers: Vec<Layer>,
    /// Data-only lower layers (after `::`).
    pub data_lowers: Vec<Layer>,
    pub upper: Option<Layer>,
    pub work: Option<OwnedFd>,
    /// The workdir itself, held for its in-use lock.
    pub workdir: Option<Layer>,
}

/// Open a layer directory with what identifies its filesystem (dev, UUID).
pub(crate) fn open_dir(path: &Path) -> Result<Layer, SetupError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| SetupError::Io {
        path: path.into(),
        what: "bad path",
        errno: Errno::EINVAL,
    })?;
    let root = sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|errno| {
        if errno == Errno::ENOTDIR {
            SetupError::NotDir(path.into())
        } else {
            SetupError::Io {
                path: path.into(),
                what: "cannot open",
                errno,
            }
        }
    })?;
    let st = sys::fstat(root.as_fd()).map_err(|errno| SetupError::Io {
        path: path.into(),
        what: "cannot stat",
        errno,
    })?;
    let uuid = sys::fs_uuid(root.as_fd()).unwrap_or([0; 16]);
    let root_rd = sys::reopen(root.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).ok();
    Ok(Layer {
        path: path.into(),
        root,
        dev: st.st_dev,
        uuid,
        root_rd,
        in_use: None,
    })
}

fn canonical(path: &Path) -> Result<PathBuf, SetupError> {
    std::fs::canonicalize(path).map_err(|e| SetupError::Io {
        path: path.into(),
        what: "cannot resolve",
        errno: e.into(),
    })
}

/// Open the layers of `cfg`, check them as the kernel does, and prepare `W/work`.
pub(super) fn open_layers(cfg: &Config) -> Result<Setup, SetupError> {
    let lowers = cfg
        .lowers
        .iter()
        .map(|p| open_dir(p))
        .collect::<Result<Vec<_>, _>>()?;
    let data_lowers = cfg
        .data_lowers
        .iter()
        .map(|p| open_dir(p))
        .collect::<Result<Vec<_>, _>>()?;
    check_overlap(cfg)?;
    let (Some(upper_path), Some(work_path)) = (&cfg.upper, &cfg.work) else {
        return Ok(Setup {
            lowers,
            data_lowers,
            upper: None,
            work: None,
            workdir: None,
        });
    };
    let mut upper = open_dir(upper_path)?;
    let mut workdir = open_dir(work_path)?;
    if upper.dev != workdir.dev {
        return Err(SetupError::WorkOtherFs {
            work: work_path.clone(),
            upper: upper_path.clone(),
        });
    }
    if cfg.read_only {
        // A read-only mount with an upper layer: the upper is the top layer,
        // the workdir only read (its index, with index=on).
        return Ok(Setup {
            lowers,
            data_lowers,
            upper: Some(upper),
            work: None,
            workdir: Some(workdir),
        });
    }
    lock_in_use(&mut upper)?;
    lock_in_use(&mut workdir)?;
    check_kernel_users(&[&upper, &workdir], cfg)?;
    let work = prepare_workdir(&workdir, cfg)?;
    probe_xattrs(&workdir, cfg)?;
    Ok(Setup {
        lowers,
        data_lowers,
        upper: Some(upper),
        work: Some(work),
        workdir: Some(workdir),
    })
}

/// Decide the inode number scheme, as the kernel decides xino (docs/format.md
/// §9.2): one filesystem keeps real numbers; several, with xino on or auto and
/// file handles everywhere, put a filesystem id in the high bits: 32 of them
/// where every filesystem uses the generic 8-byte handle (ext4 and the like),
/// else just enough for the number of filesystems.
pub(super) fn ino_scheme(mode: Xino, upper: Option<&Layer>, lowers: &[Layer]) -> InoScheme {
    // fsid 0 is the upper's filesystem (reserved even without an upper).
    let mut fsids: Vec<u64> = vec![upper.map_or(u64::MAX, |u| u.dev)];
    for l in lowers {
        if !fsids.contains(&l.dev) {
            fsids.push(l.dev);
        }
    }
    let distinct = fsids.iter().filter(|d| **d != u64::MAX).count();
    if distinct <= 1 {
        return InoScheme::SameFs;
    }
    let handles: Vec<_> = upper
        .into_iter()
        .chain(lowers)
        .map(|l| sys::name_to_handle(l.root.as_fd()))
        .collect();
    if mode == Xino::Off || handles.iter().any(|h| h.is_err()) {
        if mode == Xino::On {
            tracing::warn!("a layer's filesystem has no file handles: falling back to xino=off");
        }
        return InoScheme::Indexed {
            upper_dev: upper.map(|u| u.dev),
        };
    }
    let generic = handles
        .iter()
        .flatten()
        .all(|h| h.handle_type == 1 && h.bytes.len() == 8);
    let bits = if generic {
        32
    } else {
        (fsids.len() as u32 - 1).ilog2() + 2
    };
    InoScheme::Xino { bits, fsids }
}

/// No layer may lie inside another (the kernel's ELOOP check): the overlay
/// would show its own upper or work directory, or recurse into itself.
fn check_overlap(cfg: &Config) -> Result<(), SetupError> {
    let mut roots = Vec::new();
    for p in cfg
        .lowers
        .iter()
        .chain(cfg.upper.iter())
        .chain(cfg.work.iter())
    {
        roots.push((p.clone(), canonical(p)?));
    }
    for (i, (pa, ca)) in roots.iter().enumerate() {
        for (pb, cb) in &roots[i + 1..] {
            // The same lower twice is harmless; nesting is not.
            if ca != cb && (ca.starts_with(cb) || cb.starts_with(ca)) {
                return Err(SetupError::Overlap(pa.clone(), pb.clone()));
            }
        }
    }
    Ok(())
}

/// Take an exclusive lock on a layer directory for the life of the mount, so
/// a second ovlfs cannot empty our workdir under us (the kernel's "inuse").
fn lock_in_use(layer: &mut Layer) -> Result<(), SetupError> {
    let fd =
        sys::reopen(layer.root.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).map_err(|errno| {
            SetupError::Io {
                path: layer.path.clone(),
                what: "cannot open",
                errno,
            }
        })?;
    // A daemon that was just unmounted may still be exiting: give it a moment.
    for _ in 0..40 {
        if sys::flock_exclusive(fd.as_fd()).is_ok() {
            layer.in_use = Some(fd);
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(SetupError::InUse(layer.path.clone()))
}

/// A kernel overlay using our upper or work dir, as the kernel answers a
/// second overlay on them: with index=on refused, else a warning (both
/// mounts then see undefined results). Another ovlfs is refused always, by
/// the lock above.
fn check_kernel_users(layers: &[&Layer], cfg: &Config) -> Result<(), SetupError> {
    for layer in layers {
        let canon = std::fs::canonicalize(&layer.path).unwrap_or_else(|_| layer.path.clone());
        if let Some(mnt) = crate::mountinfo::kernel_overlays_using(&canon)
            .into_iter()
            .next()
        {
            if cfg.index {
                return Err(SetupError::KernelInUse(layer.path.clone(), mnt));
            }
            tracing::warn!(
                path = %layer.path.display(),
                kernel_overlay = %mnt.display(),
                "in use by a kernel overlay too: the two mounts will see undefined results"
            );
        }
    }
    Ok(())
}

/// `W/work` is scratch: emptied at every mount. `W/work/incompat/*` refuses the mount.
fn prepare_workdir(workdir: &Layer, cfg: &Config) -> Result<OwnedFd, SetupError> {
    let io = |what: &'static str| {
        let path = workdir.path.join("work");
        move |errno| SetupError::Io {
            path: path.clone(),
            what,
            errno,
        }
    };
    let wdir = workdir.root.as_fd();
    let name = OsStr::new("work");
    match sys::fstatat(wdir, name) {
        Ok(_) => {
            if let Ok(inc) = sys::openat(
                wdir,
                OsStr::new("work/incompat"),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) && let Some(e) = sys::read_dir(inc.as_fd())
                .map_err(io("cannot read"))?
                .first()
            {
                return Err(SetupError::Incompat(
                    workdir.path.clone(),
                    e.name.to_string_lossy().into_owned(),
                ));
            }
            super::remove_tree(wdir, name).map_err(io("cannot empty"))?;
        }
        Err(e) if e == Errno::ENOENT => {}
        Err(e) => return Err(io("cannot stat")(e)),
    }
    sys::mkdirat(wdir, name, 0).map_err(io("cannot create"))?;
    let work = sys::openat(
        wdir,
        name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(io("cannot open"))?;
    if cfg.fsync == FsyncMode::Volatile {
        // Mark the layers as written without fsync, as the kernel does: a later
        // mount refuses them until the user clears the flag.
        for dir in ["incompat", "incompat/volatile"] {
            sys::mkdirat(work.as_fd(), OsStr::new(dir), 0o755).map_err(io("cannot create"))?;
        }
        sys::mknodat(
            work.as_fd(),
            OsStr::new("incompat/volatile/dirty"),
            libc::S_IFREG | 0o644,
            0,
        )
        .map_err(io("cannot create"))?;
    }
    Ok(work)
}

/// The upper must take the overlay's xattrs, or opaque directories cannot be written.
fn probe_xattrs(workdir: &Layer, cfg: &Config) -> Result<(), SetupError> {
    let names = XattrNames::new(cfg.userxattr);
    let probe = names.probe();
    let fd = workdir.root.as_fd();
    match sys::setxattr(fd, &probe, b"y", 0) {
        Ok(()) => {
            let _ = sys::removexattr(fd, &probe);
            Ok(())
        }
        Err(_) => Err(SetupError::NoXattr(
            workdir.path.clone(),
            if cfg.userxattr { "user.*" } else { "trusted.*" },
        )),
    }
}
