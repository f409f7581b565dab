//! Errors as the kernel overlay returns them: a bare errno.

use std::fmt;

/// An errno value; the engine's only error type, so FUSE replies map 1:1.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

pub type Result<T> = std::result::Result<T, Errno>;

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(pub const $name: Errno = Errno(libc::$name);)*
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    EIO,
    EBADF,
    EACCES,
    EEXIST,
    EXDEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENOSPC,
    EROFS,
    ENAMETOOLONG,
    ENOTEMPTY,
    ENODATA,
    ERANGE,
    ESTALE,
    EOPNOTSUPP,
    ENOSYS,
    ENOTSUP,
    ELOOP,
    EBUSY,
    ENXIO,
    EFBIG,
);

impl Errno {
    /// The calling thread's errno.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "No such file or directory", without std's " (os error 2)" tail.
        let s = std::io::Error::from_raw_os_error(self.0).to_string();
        f.write_str(s.split(" (os error").next().unwrap_or(&s))
    }
}

impl std::error::Error for Errno {}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}
