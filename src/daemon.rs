//! Mounting: validate, fork into the background, mount, serve until unmounted.
//!
//! The parent process returns only once the mount is live (or with the
//! child's error), so `ovlfs ... MNT && ls MNT` works as with the kernel.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fuser::{MountOption, SessionACL};

use crate::engine::Overlay;
use crate::fuse::OverlayFs;
use crate::params::{Callers, Config};
use crate::sys;

/// Everything a mount needs besides the overlay options.
pub struct MountRequest {
    pub config: Config,
    pub mountpoint: PathBuf,
    /// Shown as the mount's source in /proc/mounts.
    pub source: String,
    pub foreground: bool,
}

fn fuse_mount_options(cfg: &Config, source: &str) -> Vec<MountOption> {
    // `fsname=` and `subtype=` given override the defaults (test suites and
    // mount helpers name their own).
    let given = |key: &str| {
        cfg.fuse_options
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix(key).map(str::to_string))
    };
    let fsname = given("fsname=").unwrap_or_else(|| source.to_string());
    let subtype = given("subtype=").unwrap_or_else(|| "ovlfs".into());
    let mut opts = vec![
        MountOption::FSName(fsname),
        // As a kernel option, so /proc/mounts shows the type fuse.ovlfs
        // (`subtype=` empty: plain fuse).
        MountOption::CUSTOM(format!("subtype={subtype}")),
        // The kernel overlay checks permissions against the overlay inode with
        // the caller's credentials; the FUSE kernel does exactly that here.
        MountOption::DefaultPermissions,
    ];
    if subtype.is_empty() {
        opts.remove(1);
    }
    if cfg.read_only {
        opts.push(MountOption::RO);
    }
    let has = |o: &str| cfg.fuse_options.iter().any(|x| x == o);
    // Like the kernel overlay (and unlike FUSE's default), honour devices and
    // set-id bits unless told otherwise.
    if !has("nodev") {
        opts.push(MountOption::Dev);
    }
    if !has("nosuid") {
        opts.push(MountOption::Suid);
    }
    for o in &cfg.fuse_options {
        let m = match o.as_str() {
            "nodev" => MountOption::NoDev,
            "nosuid" => MountOption::NoSuid,
            "exec" => MountOption::Exec,
            "noexec" => MountOption::NoExec,
            "atime" | "strictatime" => MountOption::Atime,
            "noatime" => MountOption::NoAtime,
            "sync" => MountOption::Sync,
            "async" => MountOption::Async,
            "dirsync" => MountOption::DirSync,
            s if s.starts_with("context=")
                || s.starts_with("fscontext=")
                || s.starts_with("defcontext=")
                || s.starts_with("rootcontext=") =>
            {
                MountOption::CUSTOM(s.to_string())
            }
            // relatime is the kernel's default; the others have no FUSE equivalent.
            _ => continue,
        };
        opts.push(m);
    }
    opts
}

const FUSE_CONF: &str = "/etc/fuse.conf";

/// Who may use the mount. As root (in any user namespace), every user by
/// default, as with the kernel overlay and fuse-overlayfs; an ordinary user's
/// mount admits others only where `conf` (/etc/fuse.conf) has
/// `user_allow_other`, which fusermount3 enforces: asked for without it, a
/// clear refusal; by default, the mounting user alone, said in the log.
fn callers(asked: Option<Callers>, root: bool, conf: &str) -> Result<Callers> {
    let permitted = root || fuse_conf_allows_other(conf);
    match asked {
        Some(c @ (Callers::All | Callers::OwnerAndRoot)) if !permitted => bail!(
            "{}: {conf} has no user_allow_other line, so FUSE lets an ordinary user's mount \
             admit no other user (add user_allow_other there, or mount without it)",
            if c == Callers::All {
                "allow_other"
            } else {
                "allow_root"
            }
        ),
        Some(c) => Ok(c),
        None if permitted => Ok(Callers::All),
        None => {
            tracing::info!(
                "only you can use this mount: {conf} has no user_allow_other line (other users, \
                 root included, get EACCES)"
            );
            Ok(Callers::Owner)
        }
    }
}

/// Whether fuse.conf lets ordinary users mount with allow_other.
fn fuse_conf_allows_other(conf: &str) -> bool {
    std::fs::read_to_string(conf).is_ok_and(|s| {
        s.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .any(|l| l == "user_allow_other")
    })
}

fn check_mountpoint(p: &Path) -> Result<()> {
    let md = std::fs::metadata(p).with_context(|| format!("mountpoint {}", p.display()))?;
    if !md.is_dir() {
        bail!("mountpoint {}: not a directory", p.display());
    }
    Ok(())
}

/// Mount and serve. In the background case this returns in the parent once
/// the mount is live; the child serves until unmounted and then exits.
pub fn run(mut req: MountRequest) -> Result<()> {
    check_mountpoint(&req.mountpoint)?;
    let callers = callers(req.config.callers, sys::geteuid() == 0, FUSE_CONF)?;
    req.config.callers = Some(callers);
    sys::raise_nofile_limit();
    let ovl = Overlay::new(req.config.clone()).map_err(anyhow::Error::new)?;
    if req.foreground {
        return serve(ovl, &req, None);
    }
    let (rd, wr) = sys::pipe().context("pipe")?;
    match sys::fork().context("fork")? {
        sys::Forked::Parent => {
            drop(wr);
            wait_for_child(rd)
        }
        sys::Forked::Child => {
            drop(rd);
            sys::detach(req.config.debug);
            let code = match serve(ovl, &req, Some(wr)) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e:#}");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// Sequential reads the daemon serves come in readahead-sized requests: the
/// kernel offers FUSE 128 KiB, a tenth of what one request can carry (1 MiB).
/// Raise the mount's readahead to that (root only; best effort). The device
/// is found in mountinfo: a stat of the mount point would wait for the very
/// daemon that is not serving yet.
fn raise_readahead(mountpoint: &Path) {
    const KIB: u32 = 1024;
    // The newest mount there is ours.
    let dev = crate::mountinfo::mounts()
        .into_iter()
        .filter(|m| m.mount_point == mountpoint)
        .map(|m| m.dev)
        .next_back();
    if let Some(dev) = dev {
        let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
        if let Err(e) = std::fs::write(&path, KIB.to_string()) {
            tracing::debug!(%e, path, "readahead not raised");
        }
    }
}

/// Parent side: the child writes "ok" once mounted, or an error message.
fn wait_for_child(rd: OwnedFd) -> Result<()> {
    let mut msg = String::new();
    std::fs::File::from(rd)
        .read_to_string(&mut msg)
        .context("waiting for the daemon")?;
    match msg.strip_prefix("ok") {
        Some(_) => Ok(()),
        None if msg.is_empty() => bail!("the daemon exited before the mount was live"),
        None => bail!("{}", msg.trim_end()),
    }
}

fn serve(ovl: Overlay, req: &MountRequest, ready: Option<OwnedFd>) -> Result<()> {
    sys::clear_umask();
    let cfg = ovl.config().clone();
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = fuse_mount_options(&cfg, &req.source);
    fcfg.acl = match cfg.callers {
        Some(Callers::All) => SessionACL::All,
        Some(Callers::OwnerAndRoot) => SessionACL::RootAndOwner,
        Some(Callers::Owner) | None => SessionACL::Owner,
    };
    fcfg.n_threads = Some(cfg.threads);
    fcfg.clone_fd = true;
    sys::block_stop_signals();
    let ovl = Arc::new(ovl);
    let fs = OverlayFs::new(ovl.clone());
    let session = fuser::Session::new(fs, &req.mountpoint, &fcfg);
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot mount {}: {e}", req.mountpoint.display());
            if let Some(w) = ready {
                let _ = std::fs::File::from(w).write_all(msg.as_bytes());
            }
            bail!(msg);
        }
    };
    // Attributes only (offset -1): no page locks, so this is safe inside a request.
    let notifier = session.notifier();
    ovl.set_attr_changed_hook(Box::new(move |ino| {
        let _ = notifier.inval_inode(fuser::INodeNo(ino), -1, 0);
    }));
    // A directory's cached listing (pages from offset 0): its names changed.
    // Safe inside the request: the kernel holds the directory's lock for the
    // change, so no listing of it is being read or filled meanwhile.
    let notifier = session.notifier();
    ovl.set_listing_changed_hook(Box::new(move |ino| {
        let _ = notifier.inval_inode(fuser::INodeNo(ino), 0, 0);
    }));
    let mut unmounter = session.unmount_callable();
    let mnt = req.mountpoint.clone();
    std::thread::spawn(move || {
        let sig = sys::wait_stop_signal();
        tracing::info!(sig, mountpoint = %mnt.display(), "signal: unmounting");
        if let Err(e) = unmounter.unmount() {
            tracing::error!(%e, "unmount on signal failed; lazily detaching");
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&mnt)
                .status();
        }
    });
    raise_readahead(&req.mountpoint);
    if let Some(w) = ready {
        let _ = std::fs::File::from(w).write_all(b"ok");
    }
    session.run().context("serving FUSE requests")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_by_privilege_and_fuse_conf() {
        let dir = std::env::temp_dir().join(format!("ovlfs-fuse-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (yes, no) = (dir.join("yes"), dir.join("no"));
        std::fs::write(&yes, "# mount_max = 1000\n  user_allow_other  # ok\n").unwrap();
        std::fs::write(&no, "#user_allow_other\n").unwrap();
        let (yes, no) = (yes.to_str().unwrap(), no.to_str().unwrap());
        assert_eq!(callers(None, true, no).unwrap(), Callers::All);
        assert_eq!(callers(None, false, yes).unwrap(), Callers::All);
        assert_eq!(callers(None, false, no).unwrap(), Callers::Owner);
        assert_eq!(
            callers(None, false, "/nonexistent").unwrap(),
            Callers::Owner
        );
        let err = callers(Some(Callers::All), false, no)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("user_allow_other") && err.contains(no),
            "{err}"
        );
        assert!(callers(Some(Callers::OwnerAndRoot), false, no).is_err());
        assert_eq!(
            callers(Some(Callers::Owner), true, yes).unwrap(),
            Callers::Owner
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
