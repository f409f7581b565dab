//! READDIRPLUS: a directory's entries with their attributes, each one
//! counting as a lookup (or taken back from what the kernel was given).

use std::time::Duration;

use fuser::{FileType, Generation, INodeNo, ReplyDirectoryPlus};

use super::{OverlayFs, missing_attr, to_attr};
use crate::errno::Errno;

impl OverlayFs {
    pub(super) fn list_plus(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectoryPlus) {
        let (listing, start) = match self.ovl.list_from(ino.0, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(self.fail("readdirplus", e)),
        };
        let rest = &listing.entries()[start..];
        for (i, e) in rest.iter().enumerate() {
            let off = e.off;
            if e.name == "." || e.name == ".." {
                // The kernel takes neither a node nor a lookup from these.
                let mut a = missing_attr();
                a.ino = INodeNo(e.ino);
                a.kind = FileType::Directory;
                if reply.add(
                    INodeNo(e.ino),
                    off,
                    &e.name,
                    &Duration::ZERO,
                    &a,
                    Generation(0),
                ) {
                    break;
                }
                continue;
            }
            // A node the kernel was given for this name: taken back without
            // resolving the name again.
            let known = self
                .given
                .fresh(ino.0, &e.name)
                .and_then(|i| self.ovl.relookup(ino.0, &e.name, i));
            let looked_up = known
                .map(Ok)
                .unwrap_or_else(|| self.ovl.lookup(ino.0, &e.name))
                .and_then(|node| {
                    self.ovl
                        .getattr(node.ino)
                        .inspect_err(|_| self.ovl.forget(node.ino, 1))
                });
            let a = match looked_up {
                Ok(a) => a,
                // Gone since the listing was taken: left out.
                Err(e) if e == Errno::ENOENT => continue,
                Err(err) => {
                    tracing::warn!(name = ?e.name, %err, "readdirplus: lookup failed");
                    // What was filled goes out; the kernel asks again from here,
                    // and an error with nothing filled reaches the caller.
                    if i == 0 {
                        return reply.error(self.fail("readdirplus", err));
                    }
                    break;
                }
            };
            let node_ino = a.ino;
            let ttl = self.ttl(&a);
            let full = reply.add(
                INodeNo(a.ino),
                off,
                &e.name,
                &ttl,
                &to_attr(&a),
                Generation(0),
            );
            if full {
                // Not sent: the kernel holds no reference for it.
                self.ovl.forget(node_ino, 1);
                break;
            }
            if !ttl.is_zero() {
                self.given.note(ino.0, &e.name, node_ino);
            }
        }
        reply.ok();
    }
}
