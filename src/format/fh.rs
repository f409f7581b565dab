//! `ovl_fb`: the file handle the kernel stores in `origin`, `upper` and index names.
//!
//! Layout: version (0), magic (0xfb), total length, flags, handle type, the
//! filesystem UUID (16 bytes), then the exportfs handle bytes.

use crate::sys::FileHandle;

pub const FB_VERSION: u8 = 0;
pub const FB_MAGIC: u8 = 0xfb;
/// The handle was encoded on a big-endian machine.
pub const FLAG_BIG_ENDIAN: u8 = 1 << 0;
/// The handle type does not depend on endianness.
pub const FLAG_ANY_ENDIAN: u8 = 1 << 1;
/// The handle refers to an upper-layer object (index entries of directories).
pub const FLAG_PATH_UPPER: u8 = 1 << 2;
pub const HEADER: usize = 5 + 16;

/// A decoded `ovl_fb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvlFb {
    pub flags: u8,
    pub uuid: [u8; 16],
    pub handle: FileHandle,
}

/// The flags the kernel knows (`OVL_FH_FLAG_ALL`).
pub const FLAGS_KNOWN: u8 = FLAG_BIG_ENDIAN | FLAG_ANY_ENDIAN | FLAG_PATH_UPPER;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FbError {
    #[error("file handle too short ({0} bytes)")]
    TooShort(usize),
    #[error("bad file handle magic {0:#x}")]
    BadHeader(u8),
    #[error("file handle length field {0} does not fit its size {1}")]
    BadLength(usize, usize),
    #[error("file handle too long to store ({0} bytes)")]
    TooLong(usize),
    /// A later version, unknown flags or the other endianness: the kernel
    /// reads such a value as "origin unknown", not as an error.
    #[error("file handle of another version, flags or endianness (origin unknown)")]
    Unknown,
}

impl OvlFb {
    pub fn new(uuid: [u8; 16], handle: FileHandle) -> OvlFb {
        let flags = if cfg!(target_endian = "big") {
            FLAG_BIG_ENDIAN
        } else {
            0
        };
        OvlFb {
            flags,
            uuid,
            handle,
        }
    }

    /// The bytes the kernel writes.
    pub fn encode(&self) -> Result<Vec<u8>, FbError> {
        let len = HEADER + self.handle.bytes.len();
        if len > u8::MAX as usize {
            return Err(FbError::TooLong(len));
        }
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&[
            FB_VERSION,
            FB_MAGIC,
            len as u8,
            self.flags,
            self.handle.handle_type as u8,
        ]);
        v.extend_from_slice(&self.uuid);
        v.extend_from_slice(&self.handle.bytes);
        Ok(v)
    }

    /// Parse stored bytes as the kernel's `ovl_check_fb_len`: the length
    /// field may be shorter than the value (the rest is ignored).
    pub fn decode(b: &[u8]) -> Result<OvlFb, FbError> {
        if b.len() < HEADER {
            return Err(FbError::TooShort(b.len()));
        }
        if b[1] != FB_MAGIC {
            return Err(FbError::BadHeader(b[1]));
        }
        // The kernel checks only that the value holds the length field's
        // bytes; a length below the header leaves no handle bytes (such a
        // handle decodes to nothing and matches no other).
        let len = b[2] as usize;
        if len > b.len() {
            return Err(FbError::BadLength(len, b.len()));
        }
        let flags = b[3];
        let cpu_big = if cfg!(target_endian = "big") {
            FLAG_BIG_ENDIAN
        } else {
            0
        };
        if b[0] > FB_VERSION
            || flags & !FLAGS_KNOWN != 0
            || (flags & FLAG_ANY_ENDIAN == 0 && flags & FLAG_BIG_ENDIAN != cpu_big)
        {
            return Err(FbError::Unknown);
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[5..HEADER]);
        Ok(OvlFb {
            flags,
            uuid,
            handle: FileHandle {
                handle_type: i32::from(b[4]),
                bytes: b[HEADER..len.max(HEADER)].to_vec(),
            },
        })
    }

    /// Lower-case hex of the encoded handle: the name of an index entry.
    pub fn hex(&self) -> Result<String, FbError> {
        Ok(to_hex(&self.encode()?))
    }
}

/// Lower-case hex of bytes (index entry names are the hex of an origin value).
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes an index entry name stands for: `None` unless it is hex of at
/// least a whole `ovl_fb` header.
pub fn index_name_bytes(name: &[u8]) -> Option<Vec<u8>> {
    if name.len() < 2 * HEADER || !name.len().is_multiple_of(2) {
        return None;
    }
    name.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_kernel_written_origin() {
        // trusted.overlay.origin as the kernel wrote it for a file on tmpfs.
        let hex = "00fb2100011d165030f8454555bfd08d69b5cdc291128faff90600000000000000";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let fb = OvlFb::decode(&bytes).unwrap();
        assert_eq!(fb.handle.handle_type, 1);
        assert_eq!(fb.handle.bytes.len(), 12);
        assert_eq!(fb.encode().unwrap(), bytes);
        assert_eq!(fb.hex().unwrap(), hex);
        assert!(OvlFb::decode(&bytes[..20]).is_err());
        let mut bad = bytes.clone();
        bad[2] = 40;
        assert!(matches!(OvlFb::decode(&bad), Err(FbError::BadLength(..))));
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"trailing");
        assert_eq!(OvlFb::decode(&longer).unwrap(), fb);
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert_eq!(OvlFb::decode(&v1), Err(FbError::Unknown));
        let mut flags = bytes.clone();
        flags[3] = 0x10;
        assert_eq!(OvlFb::decode(&flags), Err(FbError::Unknown));
    }
}
