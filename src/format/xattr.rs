//! Overlay xattr names and the escaping rules for names seen through the mount.
//!
//! The overlay's own xattrs are named by [`OvlXattr`] (the kernel's
//! `enum ovl_xattr`); nothing else in ovlfs spells an overlay xattr name.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Which namespace holds the overlay's private xattrs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrNames {
    prefix: &'static str,
}

pub const TRUSTED_PREFIX: &str = "trusted.overlay.";
pub const USER_PREFIX: &str = "user.overlay.";

/// The overlay's private xattrs, as the kernel's `enum ovl_xattr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvlXattr {
    /// `y` on a directory: nothing below it shows (`x`: it holds xattr whiteouts).
    Opaque,
    /// Where a moved directory or metacopy file came from.
    Redirect,
    /// The `ovl_fb` handle of the lower object an upper one was copied from.
    Origin,
    /// A directory with entries whose inode numbers come from below.
    Impure,
    /// The nlink of an indexed hard link, relative to its lower or upper.
    Nlink,
    /// In an index directory entry: the `ovl_fb` handle of its upper directory.
    Upper,
    /// On the upper root: the uuid of the overlay (uuid=on).
    Uuid,
    /// A file whose data is still below; an optional verity digest.
    Metacopy,
    /// Immutable/append-only flags kept off the real file.
    Protattr,
    /// A 0-size regular file that is a whiteout (kernel 6.7 xattr whiteouts).
    Whiteout,
}

macro_rules! ovl_xattr_names {
    ($($var:ident => $suffix:literal),* $(,)?) => {
        impl OvlXattr {
            /// The name after the namespace prefix, e.g. `opaque`.
            pub const fn suffix(self) -> &'static str {
                match self { $(OvlXattr::$var => $suffix,)* }
            }
            const fn trusted(self) -> &'static str {
                match self { $(OvlXattr::$var => concat!("trusted.overlay.", $suffix),)* }
            }
            const fn user(self) -> &'static str {
                match self { $(OvlXattr::$var => concat!("user.overlay.", $suffix),)* }
            }
        }
    };
}

ovl_xattr_names!(
    Opaque => "opaque",
    Redirect => "redirect",
    Origin => "origin",
    Impure => "impure",
    Nlink => "nlink",
    Upper => "upper",
    Uuid => "uuid",
    Metacopy => "metacopy",
    Protattr => "protattr",
    Whiteout => "whiteout",
);

impl XattrNames {
    pub fn new(userxattr: bool) -> Self {
        XattrNames {
            prefix: if userxattr {
                USER_PREFIX
            } else {
                TRUSTED_PREFIX
            },
        }
    }

    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// The full name of an overlay xattr in this namespace.
    pub fn get(&self, x: OvlXattr) -> &'static OsStr {
        OsStr::new(if self.prefix == USER_PREFIX {
            x.user()
        } else {
            x.trusted()
        })
    }

    /// A name in the private namespace that means nothing to the kernel:
    /// written once at mount to learn whether the namespace is writable.
    pub fn probe(&self) -> OsString {
        OsString::from(format!("{}ovlfs-probe", self.prefix))
    }

    /// True if a real xattr name is in the overlay's private namespace.
    pub fn is_private(&self, real: &OsStr) -> bool {
        real.as_bytes().starts_with(self.prefix.as_bytes())
    }

    /// The name a user sees for a real xattr name: private names are hidden,
    /// except the escaped form `PREFIX overlay.X`, shown as `PREFIX X`.
    pub fn to_user(&self, real: &OsStr) -> Option<OsString> {
        let b = real.as_bytes();
        let p = self.prefix.as_bytes();
        if !b.starts_with(p) {
            return Some(real.to_os_string());
        }
        let rest = &b[p.len()..];
        let escaped = b"overlay.";
        if rest.starts_with(escaped) && rest.len() > escaped.len() {
            let mut v = p.to_vec();
            v.extend_from_slice(&rest[escaped.len()..]);
            Some(OsString::from_vec(v))
        } else {
            None
        }
    }

    /// The real name for a name a user asked for: names in the overlay
    /// namespace are stored escaped (`PREFIX X` → `PREFIX overlay.X`).
    pub fn to_real(&self, user: &OsStr) -> OsString {
        let b = user.as_bytes();
        let p = self.prefix.as_bytes();
        if b.starts_with(p) {
            let mut v = p.to_vec();
            v.extend_from_slice(b"overlay.");
            v.extend_from_slice(&b[p.len()..]);
            OsString::from_vec(v)
        } else {
            user.to_os_string()
        }
    }

    /// Whether a real xattr may be carried over on copy-up: private ones are not,
    /// except escaped user-set names, which are copied as they are.
    pub fn copy_on_copy_up(&self, real: &OsStr) -> bool {
        !self.is_private(real) || self.to_user(real).is_some()
    }
}

/// Whether a flag xattr (`impure`, `opaque`) says yes: the kernel reads one
/// byte and wants `y`; any other value, empty or longer, is no mark.
pub fn is_yes(v: &[u8]) -> bool {
    v == b"y"
}

/// ovlfs's own mark on the root of a lower layer that `commit --in-place`
/// has merged an upper into, until that upper is emptied (`user.` with
/// userxattr). Outside the overlay namespace: the kernel ignores it.
pub fn commit_mark(userxattr: bool) -> OsString {
    OsString::from(if userxattr {
        "user.ovlfs.commit-in-place"
    } else {
        "trusted.ovlfs.commit-in-place"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trip() {
        let x = XattrNames::new(false);
        assert_eq!(x.to_user(OsStr::new("trusted.overlay.opaque")), None);
        assert_eq!(x.to_user(OsStr::new("user.foo")), Some("user.foo".into()));
        let real = x.to_real(OsStr::new("trusted.overlay.opaque"));
        assert_eq!(real, OsString::from("trusted.overlay.overlay.opaque"));
        assert_eq!(x.to_user(&real), Some("trusted.overlay.opaque".into()));
        assert!(x.copy_on_copy_up(&real));
        assert!(!x.copy_on_copy_up(OsStr::new("trusted.overlay.origin")));
        let u = XattrNames::new(true);
        assert!(u.is_private(OsStr::new("user.overlay.opaque")));
        assert!(!u.is_private(OsStr::new("trusted.overlay.opaque")));
    }
}
