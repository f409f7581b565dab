//! Redirects: where the lower objects of a moved directory or metacopy file
//! are, and the names a lookup may take inside a layer.
//!
//! Parsed exactly as the kernel's `ovl_get_redirect_xattr` (fs/overlayfs/
//! util.c): the value ends at its first NUL; an empty value, an absolute one
//! with an empty component (`/`, `//a`, `/a//b`, `/a/`) or a relative one
//! holding `/` is invalid (the lookup fails with EINVAL). Components are not
//! checked here: `.`, `..` and empty names fail only when a lookup reaches
//! them (EACCES, as the kernel's `lookup_one`), see [`check_component`].

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::xattr::{OvlXattr, XattrNames};
use crate::errno::Errno;
use crate::sys;

/// The kernel's `redirect_max`: the longest redirect it writes.
pub const REDIRECT_MAX: usize = 256;

/// A valid stored redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `/a/b`: this path from each lower layer's root.
    Absolute(Vec<OsString>),
    /// `name`: this name instead of the looked-up one, in the same parent.
    Relative(OsString),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedirectError {
    #[error("empty redirect")]
    Empty,
    #[error("empty component in an absolute redirect")]
    EmptyComponent,
    #[error("'/' inside a relative redirect")]
    SlashInRelative,
    #[error("redirect longer than {REDIRECT_MAX} bytes")]
    TooLong,
}

impl Redirect {
    /// Parse a stored value as the kernel does.
    pub fn parse(raw: &[u8]) -> Result<Redirect, RedirectError> {
        if raw.is_empty() {
            return Err(RedirectError::Empty);
        }
        let v = raw.split(|b| *b == 0).next().unwrap_or_default();
        match v.strip_prefix(b"/") {
            Some(path) => {
                let comps: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
                if comps.iter().any(|c| c.is_empty()) {
                    return Err(RedirectError::EmptyComponent);
                }
                Ok(Redirect::Absolute(
                    comps
                        .into_iter()
                        .map(|c| OsString::from_vec(c.to_vec()))
                        .collect(),
                ))
            }
            None if v.contains(&b'/') => Err(RedirectError::SlashInRelative),
            None => Ok(Redirect::Relative(OsString::from_vec(v.to_vec()))),
        }
    }

    /// An absolute redirect from components, root first, as the kernel's
    /// `ovl_get_redirect` builds one; longer than [`REDIRECT_MAX`]: refused.
    pub fn absolute(comps: Vec<OsString>) -> Result<Redirect, RedirectError> {
        let r = Redirect::Absolute(comps);
        if r.encode().len() > REDIRECT_MAX {
            return Err(RedirectError::TooLong);
        }
        Ok(r)
    }

    /// Whether every component is one a lookup accepts (no `..`, `.` or
    /// empty name): the kernel fails such a redirect with EACCES once its
    /// walk reaches the bad component; the tools refuse it outright.
    pub fn stays_inside(&self) -> bool {
        match self {
            Redirect::Relative(n) => check_component(n).is_ok(),
            Redirect::Absolute(comps) => comps.iter().all(|c| check_component(c).is_ok()),
        }
    }

    pub fn is_absolute(&self) -> bool {
        matches!(self, Redirect::Absolute(_))
    }

    /// The value as stored.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Redirect::Relative(n) => n.as_bytes().to_vec(),
            Redirect::Absolute(comps) => {
                let mut v = Vec::new();
                for c in comps {
                    v.push(b'/');
                    v.extend_from_slice(c.as_bytes());
                }
                v
            }
        }
    }

    /// Read the redirect of an object. No xattr (or none supported): `None`;
    /// an invalid value: EINVAL, as the kernel's lookup returns.
    pub fn read(x: &XattrNames, fd: BorrowedFd<'_>) -> Result<Option<Redirect>, Errno> {
        Self::from_xattr(sys::getxattr(fd, x.get(OvlXattr::Redirect)))
    }

    /// [`Redirect::read`] for `dir/name` (never followed if a symlink).
    pub fn read_at(
        x: &XattrNames,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> Result<Option<Redirect>, Errno> {
        Self::from_xattr(sys::getxattr_at(dir, name, x.get(OvlXattr::Redirect)))
    }

    fn from_xattr(v: Result<Vec<u8>, Errno>) -> Result<Option<Redirect>, Errno> {
        let v = match v {
            Ok(v) => v,
            Err(e) if e == Errno::ENODATA || e == Errno::EOPNOTSUPP => return Ok(None),
            Err(e) => return Err(e),
        };
        match Redirect::parse(&v) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(value = ?String::from_utf8_lossy(&v), %e, "invalid redirect");
                Err(Errno::EINVAL)
            }
        }
    }
}

/// Whether a lookup may take `name` as one component inside a layer, as the
/// kernel's `lookup_one`: not empty, not `.` or `..`, no `/` or NUL. A
/// redirect leading anywhere else fails with EACCES when it is followed, so
/// no name from a layer ever leaves it.
pub fn check_component(name: &OsStr) -> Result<(), Errno> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.iter().any(|c| *c == b'/' || *c == 0) {
        return Err(Errno::EACCES);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abs(c: &[&str]) -> Redirect {
        Redirect::Absolute(c.iter().map(OsString::from).collect())
    }

    #[test]
    fn parses_as_the_kernel() {
        assert_eq!(Redirect::parse(b"/a/b"), Ok(abs(&["a", "b"])));
        assert_eq!(Redirect::parse(b"/../x"), Ok(abs(&["..", "x"])));
        assert_eq!(Redirect::parse(b"/a\0/../x"), Ok(abs(&["a"])));
        assert_eq!(
            Redirect::parse(b"real\0/x"),
            Ok(Redirect::Relative("real".into()))
        );
        assert_eq!(Redirect::parse(b"\0"), Ok(Redirect::Relative("".into())));
        assert_eq!(Redirect::parse(b".."), Ok(Redirect::Relative("..".into())));
        assert_eq!(Redirect::parse(b""), Err(RedirectError::Empty));
        for bad in [&b"/"[..], b"//a", b"/a//b", b"/a/"] {
            assert_eq!(Redirect::parse(bad), Err(RedirectError::EmptyComponent));
        }
        assert_eq!(Redirect::parse(b"a/b"), Err(RedirectError::SlashInRelative));
        assert_eq!(abs(&["a", "b"]).encode(), b"/a/b");
    }

    #[test]
    fn components_stay_inside() {
        for bad in ["", ".", ".."] {
            assert_eq!(check_component(OsStr::new(bad)), Err(Errno::EACCES));
        }
        assert!(check_component(OsStr::new("...")).is_ok());
        assert!(check_component(OsStr::from_bytes(b"a\0b")).is_err());
    }
}
