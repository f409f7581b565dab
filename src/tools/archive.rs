//! What `export` and `apply` share: compression, sha256 digests while
//! streaming, and the OCI whiteout names.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// OCI's marker for "the lower layers' entries of this directory are gone".
pub(super) const OCI_OPAQUE: &str = ".wh..wh..opq";
/// Names starting so are AUFS's own bookkeeping (`.wh..wh.plnk`, ...), not
/// whiteouts of a name.
pub(super) const OCI_META_PREFIX: &[u8] = b".wh..wh.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a file name: `.gz`/`.tgz` gzip, `.zst`/`.zstd` zstd, else none.
    pub fn for_path(p: &Path) -> Compression {
        let n = p.to_string_lossy();
        if n.ends_with(".gz") || n.ends_with(".tgz") {
            Compression::Gzip
        } else if n.ends_with(".zst") || n.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" | "tar" => Some(Compression::None),
            "gzip" | "gz" => Some(Compression::Gzip),
            "zstd" | "zst" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// From the first bytes of a stream.
    pub(super) fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// `sha256:<hex>`.
pub(super) fn digest_string(h: Sha256) -> String {
    let mut s = String::from("sha256:");
    for b in h.finalize().iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A writer or reader that hashes and counts what passes through.
pub(super) struct Hashing<T> {
    pub(super) inner: T,
    pub(super) hash: Sha256,
    pub(super) count: u64,
}

impl<T> Hashing<T> {
    pub(super) fn new(inner: T) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The compressing end of an export.
pub(super) enum Compressor<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub(super) fn new(out: W, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Compressor::Plain(out),
            // No name and mtime 0 in the gzip header: the same layer gives
            // the same bytes.
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(out, 3)?),
        })
    }

    /// Write the trailer; the sink.
    pub(super) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// The decompressing end of an apply, chosen by the stream's magic bytes.
pub(super) fn decompressor<'a, R: io::BufRead + 'a>(
    mut input: R,
) -> io::Result<(Box<dyn Read + 'a>, Compression)> {
    let head = input.fill_buf()?;
    let c = Compression::sniff(head);
    let r: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
    };
    Ok((r, c))
}
