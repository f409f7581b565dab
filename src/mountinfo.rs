//! /proc/self/mountinfo, read once per question: which mounts exist, and
//! which kernel overlays use a directory as a layer.
//!
//! Fields with spaces, tabs, newlines or backslashes are escaped by the
//! kernel as `\NNN` octal; so are the overlay's layer paths inside its
//! options (with `,`, `=` and `:` too). Both are unescaped here.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted filesystem.
    pub dev: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// The superblock options (for an overlay: its layers).
    pub super_options: String,
}

/// Every mount this process sees, in mount order.
pub fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().filter_map(parse_line).collect())
        .unwrap_or_default()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let f: Vec<&str> = before.split(' ').collect();
    let mut a = after.split(' ');
    let fstype = a.next()?.to_string();
    let _source = a.next()?;
    Some(Mount {
        dev: f.get(2)?.to_string(),
        mount_point: PathBuf::from(OsString::from_vec(unescape(f.get(4)?))),
        fstype,
        super_options: a.next().unwrap_or("").to_string(),
    })
}

/// `\NNN` octal escapes decoded.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                let v = (u32::from(d[0] - b'0') << 6)
                    | (u32::from(d[1] - b'0') << 3)
                    | u32::from(d[2] - b'0');
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// The layers an overlay's options name, each with its role (`upperdir`,
/// `workdir`, `lowerdir`, `datadir`). The kernel shows each value octal
/// escaped, and within it the option syntax's own escapes (`\\:`, `\\,`,
/// `\\\\`) as given; lower layers in one `lowerdir=a:b` are split at
/// unescaped colons.
pub fn overlay_layers(options: &str) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    for o in options.split(',') {
        let Some((k, v)) = o.split_once('=') else {
            continue;
        };
        let role = match k.trim_end_matches('+') {
            "upperdir" => "upperdir",
            "workdir" => "workdir",
            "lowerdir" => "lowerdir",
            "datadir" => "datadir",
            _ => continue,
        };
        for part in split_layers(&unescape(v)) {
            out.push((role, PathBuf::from(OsString::from_vec(part))));
        }
    }
    out
}

fn split_layers(v: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = vec![Vec::new()];
    let mut it = v.iter();
    while let Some(&c) = it.next() {
        match c {
            b'\\' => {
                if let Some(&n) = it.next() {
                    parts.last_mut().unwrap().push(n);
                }
            }
            b':' => parts.push(Vec::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The kernel overlays that use `dir` (canonical) as upper or work dir:
/// their mount points.
pub fn kernel_overlays_using(dir: &Path) -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|m| m.fstype == "overlay")
        .filter(|m| {
            overlay_layers(&m.super_options)
                .iter()
                .any(|(role, p)| matches!(*role, "upperdir" | "workdir") && p == dir)
        })
        .map(|m| m.mount_point)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_fields_and_layers() {
        // As 6.18 shows lowerdir=/l\:1\,c:/l2 (its backslashes and comma octal).
        let line = "36 25 0:33 / /mnt/a\\040b rw,relatime shared:1 - overlay overlay \
                    rw,lowerdir=/l\\134:1\\134\\054c:/l2,upperdir=/u\\040x,workdir=/w,uuid=on";
        let m = parse_line(line).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(m.dev, "0:33");
        let layers = overlay_layers(&m.super_options);
        assert_eq!(
            layers,
            vec![
                ("lowerdir", PathBuf::from("/l:1,c")),
                ("lowerdir", PathBuf::from("/l2")),
                ("upperdir", PathBuf::from("/u x")),
                ("workdir", PathBuf::from("/w")),
            ]
        );
    }
}
