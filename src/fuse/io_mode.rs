//! Who serves an open file's reads and writes: the kernel itself from the
//! upper file (FUSE passthrough), or the daemon.
//!
//! The kernel's rules (fs/fuse/iomode.c): all passthrough opens of an inode
//! share one backing file, and an inode is never open in passthrough and
//! daemon-served mode at once. So an inode's mode is decided by its first
//! open and kept while any open remains. Passthrough is used only for files
//! whose data is in the upper layer (it never moves again); a lower file is
//! served by the daemon, whose reads follow a later copy-up as the kernel
//! overlay's do, with the page cache kept across opens while nothing but
//! FUSE requests changed the data.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, RwLock};

use fuser::BackingId;

enum Mode {
    Passthrough {
        backing: Arc<BackingId>,
        opens: usize,
    },
    Daemon {
        opens: usize,
    },
}

/// Per inode: its current mode, and whether its page cache may hold data a
/// passthrough open changed behind it.
#[derive(Default)]
pub struct IoModes {
    /// Read on every attribute reply (is_passthrough): a shared lock there.
    modes: RwLock<HashMap<u64, Mode>>,
    stale_cache: Mutex<std::collections::HashSet<u64>>,
}

/// How to answer an open.
pub enum Decision {
    /// Reply with this backing id (shared by every passthrough open of the inode).
    Passthrough(Arc<BackingId>),
    Daemon {
        keep_cache: bool,
    },
}

impl IoModes {
    /// Register an open of `ino` and decide its mode. `backing` gives the
    /// upper file to pass through (None: the daemon serves it), `register`
    /// turns it into a backing id. The open is counted before the lock is
    /// released, so no concurrent release can drop the mode before the reply.
    pub fn open(
        &self,
        ino: u64,
        backing: impl FnOnce() -> Option<OwnedFd>,
        register: impl FnOnce(&OwnedFd) -> std::io::Result<BackingId>,
    ) -> Decision {
        let mut modes = self.modes.write().unwrap();
        match modes.get_mut(&ino) {
            Some(Mode::Passthrough { backing, opens }) => {
                *opens += 1;
                return Decision::Passthrough(backing.clone());
            }
            Some(Mode::Daemon { opens }) => {
                *opens += 1;
                return Decision::Daemon { keep_cache: true };
            }
            None => {}
        }
        if let Some(fd) = backing()
            && let Ok(id) = register(&fd).inspect_err(
                |e| tracing::debug!(ino, %e, "passthrough refused; the daemon serves this file"),
            )
        {
            let id = Arc::new(id);
            modes.insert(
                ino,
                Mode::Passthrough {
                    backing: id.clone(),
                    opens: 1,
                },
            );
            return Decision::Passthrough(id);
        }
        modes.insert(ino, Mode::Daemon { opens: 1 });
        let keep_cache = !self.stale_cache.lock().unwrap().remove(&ino);
        Decision::Daemon { keep_cache }
    }

    /// Whether `ino` is open in passthrough mode now: the kernel writes its
    /// data (mmap included) without telling us, so its attributes must not be
    /// cached meanwhile.
    pub fn is_passthrough(&self, ino: u64) -> bool {
        matches!(
            self.modes.read().unwrap().get(&ino),
            Some(Mode::Passthrough { .. })
        )
    }

    /// The kernel forgot `ino`: nothing of it is cached any more.
    pub fn forget(&self, ino: u64) {
        self.stale_cache.lock().unwrap().remove(&ino);
    }

    /// An open of `ino` was released (or its open reply could not be sent).
    /// True when that ended a passthrough period.
    pub fn release(&self, ino: u64) -> bool {
        let mut modes = self.modes.write().unwrap();
        let (left, was_passthrough) = match modes.get_mut(&ino) {
            Some(Mode::Passthrough { opens, .. }) => {
                *opens -= 1;
                (*opens, true)
            }
            Some(Mode::Daemon { opens }) => {
                *opens -= 1;
                (*opens, false)
            }
            None => return false,
        };
        if left == 0 {
            // Dropping the backing id closes it; the kernel detaches the file
            // from the inode when its last passthrough open goes.
            modes.remove(&ino);
            if was_passthrough {
                self.stale_cache.lock().unwrap().insert(ino);
            }
            return was_passthrough;
        }
        false
    }
}
