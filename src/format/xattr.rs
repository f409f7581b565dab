//! Overlay xattr names and the escaping rules for names seen through the mount.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Which namespace holds the overlay's private xattrs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrNames {
    prefix: &'static str,
}

pub const TRUSTED_PREFIX: &str = "trusted.overlay.";
pub const USER_PREFIX: &str = "user.overlay.";

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

    /// Full name of a private overlay xattr, e.g. `opaque` → `trusted.overlay.opaque`.
    pub fn name(&self, short: &str) -> OsString {
        OsString::from(format!("{}{}", self.prefix, short))
    }

    pub fn opaque(&self) -> OsString {
        self.name("opaque")
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
