//! The FUSE adapter: translates kernel requests into engine calls and engine
//! results into replies. It owns the caching policy and nothing else.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FErrno, FileHandle, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::engine::{Attr, Caller, Errno, Node, Overlay, SetAttr};
use crate::params::Atime;

mod attr;
mod given;
mod io_mode;
mod listing;

use attr::{file_type, missing_attr, timestamp, to_attr};
use given::Given;
use io_mode::{Decision, IoModes};

pub struct OverlayFs {
    ovl: Arc<Overlay>,
    /// Passthrough or daemon-served, per open inode.
    io: IoModes,
    /// How long the kernel may keep names, missing names and attributes
    /// without asking again (`timeout=`).
    ttl: Duration,
    /// Names the kernel holds, so listing them again needs no lookups.
    given: Given,
}

impl OverlayFs {
    /// Requests are logged by fuser itself at debug level (`-d`).
    pub fn new(ovl: Arc<Overlay>) -> Self {
        let ttl = ovl.config().timeout;
        OverlayFs {
            ovl,
            ttl,
            io: IoModes::default(),
            given: Given::new(ttl),
        }
    }

    /// How long the kernel may cache a node's entry and attributes: not at all
    /// for an inode several names share where the name used matters (index=on
    /// hard links: a change links up the name it came through, so every path
    /// walk must tell us the name).
    fn ttl(&self, a: &Attr) -> Duration {
        if a.shared || self.io.is_passthrough(a.ino) {
            Duration::ZERO
        } else {
            self.ttl
        }
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// The caller of a request that creates something, with its umask.
fn creator(req: &Request, umask: u32) -> Caller {
    Caller {
        umask,
        ..caller(req)
    }
}

fn ferr(e: Errno) -> FErrno {
    FErrno::from_i32(e.0)
}

impl OverlayFs {
    /// Log a failed request (errors the caller should expect are debug-level).
    fn fail(&self, op: &str, e: Errno) -> FErrno {
        match e.0 {
            libc::ENOENT
            | libc::EEXIST
            | libc::ENOTEMPTY
            | libc::ENODATA
            | libc::EXDEV
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::ERANGE
            | libc::ENAMETOOLONG
            | libc::EROFS
            | libc::EPERM
            | libc::EACCES
            | libc::EINVAL
            | libc::EOPNOTSUPP => {
                tracing::debug!(op, %e, "request failed")
            }
            _ => tracing::warn!(op, %e, "request failed"),
        }
        ferr(e)
    }

    /// Reply with a node the engine handed one kernel reference; give the
    /// reference back if the reply cannot be made.
    fn reply_node(
        &self,
        op: &str,
        (parent, name): (INodeNo, &OsStr),
        r: Result<Arc<Node>, Errno>,
        reply: ReplyEntry,
    ) {
        let n = match r {
            Ok(n) => n,
            Err(e) => return reply.error(self.fail(op, e)),
        };
        match self.ovl.getattr(n.ino) {
            Ok(a) => {
                let ttl = self.ttl(&a);
                if !ttl.is_zero() {
                    self.given.note(parent.0, name, a.ino);
                }
                reply.entry_node(&ttl, INodeNo(a.ino), &to_attr(&a), Generation(0))
            }
            Err(e) => {
                self.ovl.forget(n.ino, 1);
                reply.error(self.fail(op, e))
            }
        }
    }
}

impl Filesystem for OverlayFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_NO_OPENDIR_SUPPORT
            | InitFlags::FUSE_PASSTHROUGH
            // Set-ID bits are dropped here, where the kernel says (the kill
            // flags on write, truncate, chown and truncating opens), with the
            // kernel's rule; without it FUSE keeps set-group-ID on files
            // that are not group-executable.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2
            // The kernel checks POSIX ACLs (from the xattrs we serve) with
            // default_permissions and keeps their mask in step with chmod;
            // the umask is left to us (create_object applies it, or the
            // parent's default ACL does).
            | if self.ovl.config().acl {
                InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK
            } else {
                InitFlags::empty()
            }
            // No nfs_export: file handles are refused (EOPNOTSUPP) as by the
            // kernel overlay, instead of handles that go stale once evicted.
            | InitFlags::FUSE_NO_EXPORT_SUPPORT;
        let _ = config.add_capabilities(wanted & config.capabilities());
        // Passthrough backing files sit on the layers' filesystems: one level of
        // stacking below us (two where a layer is itself on an overlay).
        if config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH) {
            // Depth 1 keeps a kernel overlay on top of this mount possible.
            let _ = config.set_max_stack_depth(1);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.ovl.lookup(parent.0, name) {
            // A missing name is cached too (node id 0): only our own requests
            // can make it appear.
            Err(e) if e == Errno::ENOENT && !self.ttl.is_zero() => {
                reply.entry(&self.ttl, &missing_attr(), Generation(0));
            }
            r => self.reply_node("lookup", (parent, name), r, reply),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ovl.forget(ino.0, nlookup);
        if self.ovl.node(ino.0).is_err() {
            self.io.forget(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh {
            Some(fh) => self.ovl.getattr_fh(ino.0, fh.0),
            None => self.ovl.getattr(ino.0),
        };
        match r {
            Ok(a) => reply.attr(&self.ttl(&a), &to_attr(&a)),
            Err(e) => reply.error(self.fail("getattr", e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        kill_suidgid: bool,
        reply: ReplyAttr,
    ) {
        // A setattr that changes nothing is what the kernel sends for a chown
        // of neither id, or to remove privileges (file_remove_privs: writes
        // by others, fallocate, copy_file_range), with KILLPRIV_V2 and no
        // kill flag: either
        // drops set-ID bits. The two cannot be told apart, so the owner check
        // a real chown gets is not made (the kernel makes it for the chown).
        let nothing = [mode, uid, gid].iter().all(Option::is_none)
            && size.is_none()
            && atime.is_none()
            && mtime.is_none();
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(timestamp),
            mtime: mtime.map(timestamp),
            fh: fh.map(|f| f.0),
            kill_suidgid: kill_suidgid || nothing,
            chown: uid.is_some() || gid.is_some(),
        };
        match self.ovl.setattr(ino.0, set, &caller(req)) {
            Ok(a) => reply.attr(&self.ttl(&a), &to_attr(&a)),
            Err(e) => reply.error(self.fail("setattr", e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.ovl.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(self.fail("readlink", e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .ovl
            .mknod(&creator(req, umask), parent.0, name, mode, u64::from(rdev));
        self.reply_node("mknod", (parent, name), r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.ovl.mkdir(&creator(req, umask), parent.0, name, mode);
        self.reply_node("mkdir", (parent, name), r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.given.drop_name(parent.0, name);
        match self.ovl.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("unlink", e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.given.drop_name(parent.0, name);
        match self.ovl.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("rmdir", e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self
            .ovl
            .symlink(&caller(req), parent.0, link_name, target.as_os_str());
        self.reply_node("symlink", (parent, link_name), r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // Both names now show something else (an exchange swaps them).
        self.given.drop_name(parent.0, name);
        self.given.drop_name(newparent.0, newname);
        match self
            .ovl
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("rename", e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.ovl.link(ino.0, newparent.0, newname);
        self.reply_node("link", (newparent, newname), r, reply);
    }

    fn open(
        &self,
        req: &Request,
        ino: INodeNo,
        flags: OpenFlags,
        kill_suidgid: bool,
        reply: ReplyOpen,
    ) {
        let fh = match self.ovl.open(ino.0, flags.0) {
            Ok(fh) => fh,
            Err(e) => return reply.error(self.fail("open", e)),
        };
        // A truncating open by a caller without CAP_FSETID (KILLPRIV_V2).
        if kill_suidgid && let Err(e) = self.ovl.drop_setid(ino.0, Some(fh), &caller(req)) {
            self.ovl.release(fh);
            return reply.error(self.fail("open", e));
        }
        let backing = || self.ovl.backing_file(fh);
        match self.io.open(ino.0, backing, |fd| reply.open_backing(fd)) {
            Decision::Passthrough(id) => {
                // Attributes cached before now would outlive writes we never see.
                self.ovl.invalidate_attrs(ino.0);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id)
            }
            // strictatime: every open reads from us, so each read is counted.
            Decision::Daemon { keep_cache } => {
                let keep_cache = keep_cache && self.ovl.config().atime != Atime::Always;
                // Flush does nothing here: spare the kernel the request.
                let flags = if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
                } else {
                    FopenFlags::FOPEN_NOFLUSH
                };
                reply.opened(FileHandle(fh), flags)
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // One buffer per worker thread, kept: a fresh megabyte per request
        // costs an mmap, page faults and zeroing every time.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            match self.ovl.read_into(fh.0, offset, &mut buf[..size as usize]) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(self.fail("read", e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // A write by a caller without CAP_FSETID (KILLPRIV_V2).
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            && let Err(e) = self.ovl.drop_setid(ino.0, Some(fh.0), &caller(req))
        {
            return reply.error(self.fail("write", e));
        }
        match self.ovl.write(fh.0, offset, data) {
            Ok(n) => {
                // Page-cache writeback (mmap'ed pages) updates no cached times
                // in the kernel: drop them. write(2) does this itself.
                if write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
                    self.ovl.invalidate_attrs(ino.0);
                }
                reply.written(n)
            }
            Err(e) => reply.error(self.fail("write", e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.ovl.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("flush", e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.ovl.release(fh.0);
        if self.io.release(ino.0) {
            // Writes through the mapping may have landed up to now.
            self.ovl.invalidate_attrs(ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.ovl.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fsync", e)),
        }
    }

    /// ENOSYS: the kernel stops sending OPENDIR and RELEASEDIR, and caches
    /// listings itself (it opens directories with FOPEN_CACHE_DIR |
    /// FOPEN_KEEP_CACHE). Listings need no handle: see `engine::Listing`.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(FErrno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.ovl.list_from(ino.0, offset) {
            Ok((listing, start)) => {
                for e in &listing.entries()[start..] {
                    if reply.add(INodeNo(e.ino), e.off, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(self.fail("readdir", e)),
        }
    }

    /// Entries with their attributes (FUSE_DO_READDIRPLUS): each one counts
    /// as a lookup, which spares `ls -l` and `find` one request per entry.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.list_plus(ino, offset, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.ovl.fsyncdir(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fsyncdir", e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.ovl.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(self.fail("statfs", e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let set = self.ovl.setxattr(ino.0, name, value, flags).and_then(|()| {
            // A new access ACL updates the mode (the upper filesystem does
            // that, with our privileges): set-group-ID goes unless the caller
            // is in the file's group or has CAP_FSETID (posix_acl_update_mode).
            match name.as_bytes() == b"system.posix_acl_access" {
                true => self.ovl.drop_sgid_unless_member(ino.0, &caller(req)),
                false => Ok(()),
            }
        });
        match set {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("setxattr", e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.ovl.getxattr(ino.0, name) {
            Ok(v) => reply_xattr(v, size, reply),
            Err(e) => reply.error(self.fail("getxattr", e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.ovl.listxattr(ino.0, &caller(req)) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                reply_xattr(buf, size, reply)
            }
            Err(e) => reply.error(self.fail("listxattr", e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.ovl.removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("removexattr", e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks modes itself; only existence is ours.
        match self.ovl.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(self.fail("access", e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self
            .ovl
            .create(&creator(req, umask), parent.0, name, mode, flags)
            .and_then(|(n, fh)| {
                self.ovl.getattr(n.ino).map(|a| (a, fh)).inspect_err(|_| {
                    self.ovl.release(fh);
                    self.ovl.forget(n.ino, 1);
                })
            });
        let (a, fh) = match r {
            Ok(x) => x,
            Err(e) => return reply.error(self.fail("create", e)),
        };
        // A file made to be filled (truncating or read-write opens: dd, cc,
        // shell redirections, databases) is passed through at once; one made
        // by touch or tar (O_WRONLY, no O_TRUNC) gets a few small writes at
        // most, which the daemon serves cheaper than setting up a backing
        // file (the kernel then keeps its attributes cached). Later opens of
        // it decide afresh.
        let filled = flags & libc::O_TRUNC != 0 || flags & libc::O_ACCMODE == libc::O_RDWR;
        let backing = || filled.then(|| self.ovl.backing_file(fh)).flatten();
        let (ttl, node, attr) = (self.ttl(&a), INodeNo(a.ino), to_attr(&a));
        match self.io.open(a.ino, backing, |fd| reply.open_backing(fd)) {
            // Not cached while the kernel writes it behind our back.
            Decision::Passthrough(id) => reply.created_node(
                &Duration::ZERO,
                node,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_NOFLUSH,
                Some(&id),
            ),
            Decision::Daemon { .. } => reply.created_node(
                &ttl,
                node,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_NOFLUSH,
                None,
            ),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.ovl.fallocate(fh.0, mode, offset, length) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("fallocate", e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.ovl.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(self.fail("lseek", e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self
            .ovl
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(self.fail("copy_file_range", e)),
        }
    }
}

fn reply_xattr(v: Vec<u8>, size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(FErrno::from_i32(libc::ERANGE));
    } else {
        reply.data(&v);
    }
}
