//! The `metacopy` xattr: a regular file whose data is still below.
//!
//! Its value is empty or a `struct ovl_metacopy`: version (0), length of the
//! whole value, flags, fs-verity digest algorithm, digest (up to 64 bytes).
//! Checked as the kernel's `ovl_check_metacopy_xattr`: at lookup only a
//! value of 1 to 3 bytes is refused (EIO; a longer one than a digest can
//! need passes there, as in 6.18); size, version and length when the digest
//! is used (verity=on|require).

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

use super::xattr::{OvlXattr, XattrNames};
use crate::errno::Errno;
use crate::sys;

pub const MIN_SIZE: usize = 4;
pub const MAX_SIZE: usize = MIN_SIZE + 64;

/// Whether a stored value (or the error reading it) marks a metacopy file.
pub fn is_marked(value: Result<Vec<u8>, Errno>) -> Result<bool, Errno> {
    match value {
        Ok(v) if !v.is_empty() && v.len() < MIN_SIZE => {
            tracing::warn!(len = v.len(), "metacopy file has too small xattr");
            Err(Errno::EIO)
        }
        Ok(_) => Ok(true),
        // As the kernel: no xattr, none supported, or (user.* on a file the
        // daemon may not read) no permission: not metacopy; other errors fail.
        Err(e) if e == Errno::ENODATA || e == Errno::EOPNOTSUPP || e == Errno::EACCES => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`is_marked`] for an object's fd.
pub fn read(x: &XattrNames, fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    is_marked(sys::getxattr(fd, x.get(OvlXattr::Metacopy)))
}

/// [`is_marked`] for `dir/name` (never followed if a symlink).
pub fn read_at(x: &XattrNames, dir: BorrowedFd<'_>, name: &OsStr) -> Result<bool, Errno> {
    is_marked(sys::getxattr_at(dir, name, x.get(OvlXattr::Metacopy)))
}

/// The recorded fs-verity digest `(algorithm, digest)`, if any; a value of
/// another version or whose length field disagrees: EIO.
pub fn digest(v: &[u8]) -> Result<Option<(u8, &[u8])>, Errno> {
    if v.is_empty() {
        return Ok(None);
    }
    is_marked(Ok(v.to_vec()))?;
    if v.len() > MAX_SIZE || v[0] != 0 || usize::from(v[1]) != v.len() {
        tracing::warn!(
            version = v[0],
            len = v[1],
            "metacopy xattr of unsupported version or size"
        );
        return Err(Errno::EIO);
    }
    Ok((v[3] != 0 && v.len() > MIN_SIZE).then(|| (v[3], &v[MIN_SIZE..])))
}

/// The value recording a digest.
pub fn encode(algo: u8, digest: &[u8]) -> Vec<u8> {
    let mut v = vec![0, (MIN_SIZE + digest.len()) as u8, 0, algo];
    v.extend_from_slice(digest);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_the_kernel() {
        assert_eq!(is_marked(Ok(vec![])), Ok(true));
        assert_eq!(is_marked(Ok(vec![0; 3])), Err(Errno::EIO));
        assert_eq!(is_marked(Ok(vec![0; 69])), Ok(true));
        assert_eq!(digest(&[0; 69]), Err(Errno::EIO));
        assert_eq!(is_marked(Err(Errno::ENODATA)), Ok(false));
        let v = encode(1, &[7; 32]);
        assert_eq!(digest(&v), Ok(Some((1, &[7u8; 32][..]))));
        assert_eq!(digest(&[1, 4, 0, 0]), Err(Errno::EIO));
        assert_eq!(digest(&[0, 9, 0, 1]), Err(Errno::EIO));
    }
}
