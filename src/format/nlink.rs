//! The `nlink` xattr of an indexed hard link: the union link count, kept
//! relative to the upper (`U+1`) or lower (`L-2`) inode's own count.
//!
//! Read as the kernel's `ovl_get_nlink`: at most 12 bytes, the text up to a
//! NUL, `U` or `L`, a sign, a decimal `int` (a trailing newline allowed);
//! a count of zero or less is invalid. Anything else: no recorded count.

/// Which real count the difference is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NlinkBase {
    Upper,
    Lower,
}

/// The longest value the kernel reads (its buffer holds 12 bytes and a NUL).
const MAX_LEN: usize = 12;

/// Parse a stored value: its base and difference.
pub fn parse(v: &[u8]) -> Option<(NlinkBase, i32)> {
    if v.len() > MAX_LEN {
        return None;
    }
    let v = v.split(|b| *b == 0).next().unwrap_or_default();
    let base = match v.first()? {
        b'U' => NlinkBase::Upper,
        b'L' => NlinkBase::Lower,
        _ => return None,
    };
    if !matches!(v.get(1), Some(b'+' | b'-')) {
        return None;
    }
    let text = std::str::from_utf8(&v[1..]).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    Some((base, text.parse::<i32>().ok()?))
}

/// The count a stored value gives from the real counts, zero or less
/// included (no name left).
pub fn count(v: &[u8], upper_nlink: u64, lower_nlink: Option<u64>) -> Option<i64> {
    let (base, diff) = parse(v)?;
    let real = match base {
        NlinkBase::Upper => upper_nlink,
        NlinkBase::Lower => lower_nlink?,
    };
    Some(real as i64 + i64::from(diff))
}

/// The union count a stored value gives; `None` where the kernel would
/// fall back to the real count.
pub fn union(v: &[u8], upper_nlink: u64, lower_nlink: Option<u64>) -> Option<u64> {
    count(v, upper_nlink, lower_nlink)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// The value recording `union` relative to `real`.
pub fn encode(base: NlinkBase, union: u64, real: u64) -> String {
    let c = if base == NlinkBase::Upper { 'U' } else { 'L' };
    format!("{c}{:+}", union as i64 - real as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_the_kernel() {
        assert_eq!(parse(b"U+1"), Some((NlinkBase::Upper, 1)));
        assert_eq!(parse(b"L-2\n"), Some((NlinkBase::Lower, -2)));
        assert_eq!(parse(b"L+1\0junk"), Some((NlinkBase::Lower, 1)));
        assert_eq!(parse(b"U1"), None);
        assert_eq!(parse(b"X+1"), None);
        assert_eq!(parse(b"U+99999999999"), None);
        assert_eq!(parse(b"U+0000000000001"), None);
        assert_eq!(union(b"L-2", 1, Some(2)), None);
        assert_eq!(union(b"L+1", 1, Some(2)), Some(3));
        assert_eq!(encode(NlinkBase::Upper, 3, 1), "U+2");
    }
}
