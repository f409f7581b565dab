//! Mount options → a validated [`Config`].
//!
//! Accepts the kernel overlay's option syntax (`lowerdir=A:B` with `\:` escapes,
//! empty entries as Podman writes them) plus the generic FUSE options.
//! Options that later work will implement are accepted only with the values this
//! build really honours; anything else is refused with a message naming it.

use std::path::PathBuf;

use thiserror::Error;

/// What `fsync=` asks for when data reaches the upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// Copy-up data is fsynced before it is renamed into place (kernel default).
    Auto,
    /// As `Auto`, and also fsync the upper directory after a copy-up.
    Strict,
    /// No fsync at all; the mount is marked dirty in `W/work/incompat/volatile`.
    Volatile,
}

/// `redirect_dir=`: whether directory renames write redirects and lookups follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectDir {
    /// Renaming a lower or merged directory writes a redirect; lookups follow them.
    On,
    /// Redirects are followed but never written (renames of such dirs: EXDEV).
    Follow,
    /// A lookup meeting a redirect fails with EPERM.
    NoFollow,
}

/// `uuid=`: which UUID origin handles carry and whether the upper root keeps one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UuidMode {
    /// Origins carry zero UUIDs; only zero-UUID origins are decoded (one filesystem only).
    Off,
    /// Origins carry the lower filesystem's UUID; no `uuid` xattr is kept.
    Null,
    /// As null, and the upper root keeps a persistent random `uuid` xattr.
    On,
    /// On for a fresh upper, null for one an older mount already used.
    Auto,
}

/// `verity=`: fs-verity digests of metacopy files' data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verity {
    /// Digests are neither written nor checked.
    Off,
    /// Written where the data file has fs-verity; checked where present.
    On,
    /// As on, and a metacopy file must have one: copy-up copies data where
    /// it cannot record a digest, and opening one without a digest fails.
    Require,
}

/// `xino=`: how inode numbers from several filesystems are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xino {
    Off,
    Auto,
    On,
}

/// A validated mount configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lower layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// Data-only lower layers (after `::`): reached only through metacopy redirects.
    pub data_lowers: Vec<PathBuf>,
    /// Metadata-only copy-up for attribute changes (`metacopy=on`).
    pub metacopy: bool,
    /// Hard links of lower files survive copy-up, through `W/index` (`index=on`).
    pub index: bool,
    pub verity: Verity,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// `ro` given, or no upper layer.
    pub read_only: bool,
    /// Overlay xattrs in `user.overlay.*` instead of `trusted.overlay.*`.
    pub userxattr: bool,
    pub redirect_dir: RedirectDir,
    pub uuid: UuidMode,
    pub xino: Xino,
    pub fsync: FsyncMode,
    /// POSIX ACLs enforced (`acl`, the default; `noacl`: modes only).
    pub acl: bool,
    /// How reads update upper files' access times (from the atime flags).
    pub atime: Atime,
    /// The same for directories (`Never` with nodiratime).
    pub dir_atime: Atime,
    /// Who may use the mount: `allow_other`, `allow_root`, `noallow_other`;
    /// `None`: decided at mount (see `daemon::callers`).
    pub callers: Option<Callers>,
    /// Generic FUSE/VFS options passed through to the kernel mount
    /// (`suid`, `nodev`, `noexec`, `noatime`, ...).
    pub fuse_options: Vec<String>,
    /// `-d` / `-o debug`: log every request.
    pub debug: bool,
    /// Worker threads serving FUSE requests.
    pub threads: usize,
    /// How long the kernel may cache names (negative ones too) and attributes.
    pub timeout: std::time::Duration,
}

/// Who may use a FUSE mount (the kernel admits only the mounting user unless
/// told otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// `noallow_other`: FUSE's default.
    Owner,
    /// `allow_root`.
    OwnerAndRoot,
    /// `allow_other`: every user, as with the kernel overlay.
    All,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("unknown mount option \"{0}\"")]
    Unknown(String),
    #[error("option \"{0}\" is not supported by this build yet (only {1})")]
    Unsupported(String, &'static str),
    #[error("bad value for option \"{0}\": {1}")]
    BadValue(String, String),
    #[error("conflicting options: {0}")]
    Conflict(String),
    #[error("missing option: {0}")]
    Missing(&'static str),
}

/// The daemon makes every change to the layers itself (lower layers are
/// read-only by contract) and tells the kernel where its caches go stale, so
/// names and attributes can be cached long.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The value of an on/off option.
fn on_off(opt: &str, v: &str) -> Result<bool, ParamError> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        v => Err(ParamError::BadValue(
            opt.into(),
            format!("\"{v}\" is not on or off"),
        )),
    }
}

/// Generic options handed to the kernel's FUSE mount unchanged.
const PASSTHROUGH_FLAGS: &[&str] = &[
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nodiratime",
    "diratime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
];

/// How reads update access times (the mount's atime flags, as the kernel
/// overlay applies them to its upper files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atime {
    /// `noatime`.
    Never,
    /// `relatime`, the default: when older than the last change, or a day old.
    Relative,
    /// `strictatime`: on every read.
    Always,
}

/// The atime policy the mount's flags give files (the last flag wins).
fn atime_of(flags: &[String]) -> Atime {
    let mut a = Atime::Relative;
    for o in flags {
        match o.as_str() {
            "noatime" => a = Atime::Never,
            // `atime` only cancels noatime.
            "atime" if a == Atime::Never => a = Atime::Relative,
            "relatime" => a = Atime::Relative,
            "strictatime" | "norelatime" => a = Atime::Always,
            _ => {}
        }
    }
    a
}

/// Options accepted and ignored: they are either the default here or
/// meaningless for a FUSE mount (mount.fuse3 and Podman pass some of them).
const IGNORED: &[&str] = &[
    "rw",
    "default_permissions",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "defaults",
    "user",
    "nouser",
    "users",
    "auto_unmount",
];

/// Split an option string at commas, skipping empty entries (`a,,b`).
/// A backslash escapes the next character (so `\,` stays in the value).
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Split `lowerdir` at unescaped colons; `\:` is a literal colon, `\\` a
/// backslash. Layers after a `::` are data-only (reached only through
/// metacopy redirects); after the first `::` every separator must be `::`.
pub fn split_lowerdir(s: &str) -> Result<(Vec<PathBuf>, Vec<PathBuf>), ParamError> {
    let bad = |why: &str| ParamError::BadValue("lowerdir".into(), why.into());
    // Split into (path, number of colons after it).
    let mut parts: Vec<(String, usize)> = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ':' => {
                let mut colons = 1;
                while chars.peek() == Some(&':') {
                    chars.next();
                    colons += 1;
                }
                if colons > 2 {
                    return Err(bad("only single ':' or double '::' separators are allowed"));
                }
                if cur.is_empty() {
                    return Err(bad("empty layer path"));
                }
                parts.push((std::mem::take(&mut cur), colons));
            }
            _ => cur.push(c),
        }
    }
    if cur.is_empty() {
        return Err(bad(if parts.is_empty() {
            "empty layer path"
        } else {
            "unescaped trailing colon"
        }));
    }
    parts.push((cur, 0));
    let (mut regular, mut data) = (Vec::new(), Vec::new());
    let mut in_data = false;
    for (path, colons_after) in parts {
        if in_data {
            data.push(PathBuf::from(path))
        } else {
            regular.push(PathBuf::from(path))
        }
        match colons_after {
            2 => in_data = true,
            1 if in_data => return Err(bad("regular lower layers cannot follow data-only layers")),
            _ => {}
        }
    }
    Ok((regular, data))
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(n) = chars.next()
        {
            out.push(n);
            continue;
        }
        out.push(c);
    }
    out
}

impl Config {
    /// Parse every `-o` string given, in order (a later option overrides an earlier one).
    pub fn parse<S: AsRef<str>>(option_strings: &[S]) -> Result<Config, ParamError> {
        let mut cfg = Config {
            lowers: Vec::new(),
            data_lowers: Vec::new(),
            metacopy: false,
            index: false,
            verity: Verity::Off,
            upper: None,
            work: None,
            read_only: false,
            userxattr: false,
            redirect_dir: RedirectDir::On,
            uuid: UuidMode::Auto,
            xino: Xino::Auto,
            fsync: FsyncMode::Auto,
            callers: None,
            atime: Atime::Relative,
            dir_atime: Atime::Relative,
            acl: true,
            fuse_options: Vec::new(),
            debug: false,
            threads: 4,
            timeout: DEFAULT_TIMEOUT,
        };
        let mut have_lower = false;
        let mut redirect_explicit = false;
        for s in option_strings {
            for opt in split_options(s.as_ref()) {
                let (key, value) = match opt.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (opt.clone(), None),
                };
                redirect_explicit |= key == "redirect_dir";
                cfg.apply(&opt, &key, value, &mut have_lower)?;
            }
        }
        if !have_lower {
            return Err(ParamError::Missing("lowerdir"));
        }
        cfg.atime = atime_of(&cfg.fuse_options);
        cfg.dir_atime = match cfg.fuse_options.iter().any(|o| o == "nodiratime") {
            true => Atime::Never,
            false => cfg.atime,
        };
        // As the kernel: metacopy needs redirects (a renamed metacopy file finds
        // its data through one), and forces them on unless told otherwise.
        if cfg.metacopy {
            if cfg.userxattr {
                return Err(ParamError::Conflict("userxattr,metacopy=on".into()));
            }
            match (redirect_explicit, cfg.redirect_dir) {
                (_, RedirectDir::On) | (false, _) => cfg.redirect_dir = RedirectDir::On,
                (true, r) => {
                    let r = if r == RedirectDir::Follow {
                        "follow"
                    } else {
                        "nofollow"
                    };
                    return Err(ParamError::Conflict(format!(
                        "metacopy=on,redirect_dir={r}"
                    )));
                }
            }
        }
        // As the kernel: userxattr cannot carry redirects (an unprivileged user
        // could point them anywhere), so it means nofollow unless told otherwise.
        if cfg.userxattr {
            match (redirect_explicit, cfg.redirect_dir) {
                (true, RedirectDir::NoFollow) | (false, _) => {
                    cfg.redirect_dir = RedirectDir::NoFollow
                }
                (true, _) => {
                    return Err(ParamError::Conflict(
                        "userxattr,redirect_dir=on|follow".into(),
                    ));
                }
            }
        }
        match (&cfg.upper, &cfg.work) {
            (Some(_), None) => return Err(ParamError::Missing("workdir (upperdir needs one)")),
            (None, Some(_)) => {
                return Err(ParamError::Missing("upperdir (workdir given without it)"));
            }
            (None, None) => cfg.read_only = true,
            _ => {}
        }
        if cfg.fsync == FsyncMode::Volatile && cfg.upper.is_none() {
            return Err(ParamError::Conflict(
                "volatile needs upperdir and workdir".into(),
            ));
        }
        Ok(cfg)
    }

    fn apply(
        &mut self,
        opt: &str,
        key: &str,
        value: Option<String>,
        have_lower: &mut bool,
    ) -> Result<(), ParamError> {
        let need = |v: Option<String>| -> Result<String, ParamError> {
            match v {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(ParamError::BadValue(key.into(), "needs a value".into())),
            }
        };
        match key {
            "lowerdir" => {
                (self.lowers, self.data_lowers) = split_lowerdir(&need(value)?)?;
                *have_lower = true;
            }
            "upperdir" => self.upper = Some(PathBuf::from(unescape(&need(value)?))),
            "workdir" => self.work = Some(PathBuf::from(unescape(&need(value)?))),
            "ro" if value.is_none() => self.read_only = true,
            "userxattr" if value.is_none() => self.userxattr = true,
            "volatile" if value.is_none() => self.fsync = FsyncMode::Volatile,
            "fsync" => {
                self.fsync = match need(value)?.as_str() {
                    "auto" | "1" => FsyncMode::Auto,
                    "strict" => FsyncMode::Strict,
                    "volatile" | "0" => FsyncMode::Volatile,
                    v => {
                        return Err(ParamError::BadValue(
                            opt.into(),
                            format!("\"{v}\" is not auto, strict or volatile"),
                        ));
                    }
                }
            }
            "allow_other" if value.is_none() => self.callers = Some(Callers::All),
            "allow_root" if value.is_none() => self.callers = Some(Callers::OwnerAndRoot),
            "noallow_other" if value.is_none() => self.callers = Some(Callers::Owner),
            "acl" if value.is_none() => self.acl = true,
            "noacl" if value.is_none() => self.acl = false,
            "debug" if value.is_none() => self.debug = true,
            "timeout" | "entry_timeout" | "attr_timeout" => {
                let v = need(value)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 1e6)
                    .ok_or_else(|| {
                        ParamError::BadValue(opt.into(), "not a number of seconds".into())
                    })?;
                self.timeout = std::time::Duration::from_secs_f64(secs);
            }
            "threads" | "threaded" => {
                let v = need(value)?;
                let n: usize = v
                    .parse()
                    .map_err(|_| ParamError::BadValue(opt.into(), "not a number".into()))?;
                if n == 0 || n > 64 {
                    return Err(ParamError::BadValue(opt.into(), "must be 1..=64".into()));
                }
                self.threads = n;
            }
            // Features of the kernel overlay that this build does not implement yet:
            // only the values whose behaviour we really have are accepted.
            "redirect_dir" => {
                self.redirect_dir = match need(value)?.as_str() {
                    "on" => RedirectDir::On,
                    // The kernel's "off" follows redirects when redirect_always_follow
                    // is set, its default; it never writes them.
                    "follow" | "off" => RedirectDir::Follow,
                    "nofollow" => RedirectDir::NoFollow,
                    v => {
                        return Err(ParamError::BadValue(
                            opt.into(),
                            format!("\"{v}\" is not on, follow, nofollow or off"),
                        ));
                    }
                }
            }
            "metacopy" => self.metacopy = on_off(opt, &need(value)?)?,
            "index" => self.index = on_off(opt, &need(value)?)?,
            "nfs_export" => match need(value)?.as_str() {
                "off" => {}
                _ => return Err(ParamError::Unsupported(opt.into(), "the value off")),
            },
            "xino" => {
                self.xino = match need(value)?.as_str() {
                    "off" => Xino::Off,
                    "auto" => Xino::Auto,
                    "on" => Xino::On,
                    v => {
                        return Err(ParamError::BadValue(
                            opt.into(),
                            format!("\"{v}\" is not on, auto or off"),
                        ));
                    }
                }
            }
            "uuid" => {
                self.uuid = match need(value)?.as_str() {
                    "off" => UuidMode::Off,
                    "null" => UuidMode::Null,
                    "on" => UuidMode::On,
                    "auto" => UuidMode::Auto,
                    v => {
                        return Err(ParamError::BadValue(
                            opt.into(),
                            format!("\"{v}\" is not null, off, auto or on"),
                        ));
                    }
                }
            }
            "verity" => {
                self.verity = match need(value)?.as_str() {
                    "off" => Verity::Off,
                    "on" => Verity::On,
                    "require" => Verity::Require,
                    v => {
                        return Err(ParamError::BadValue(
                            opt.into(),
                            format!("\"{v}\" is not off, on or require"),
                        ));
                    }
                }
            }
            "fsname" | "subtype" | "context" | "fscontext" | "defcontext" | "rootcontext" => {
                // Labels and names: passed through to the kernel mount as given.
                self.fuse_options.push(opt.into());
            }
            k if value.is_none() && PASSTHROUGH_FLAGS.contains(&k) => {
                self.fuse_options.push(k.into())
            }
            k if value.is_none() && IGNORED.contains(&k) => {}
            _ => return Err(ParamError::Unknown(opt.into())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_style_string() {
        let c = Config::parse(&["lowerdir=/a:/b:/c,upperdir=/u,workdir=/w,,volatile"]).unwrap();
        assert_eq!(
            c.lowers,
            vec![PathBuf::from("/a"), "/b".into(), "/c".into()]
        );
        assert_eq!(c.upper, Some("/u".into()));
        assert_eq!(c.fsync, FsyncMode::Volatile);
        assert!(!c.read_only);
    }

    #[test]
    fn escaped_colon_and_comma() {
        let c = Config::parse(&[r"lowerdir=/a\:b:/c\,d"]).unwrap();
        assert_eq!(c.lowers, vec![PathBuf::from("/a:b"), "/c,d".into()]);
        assert!(c.read_only);
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(
            Config::parse(&["lowerdir=/a,bogus"]).unwrap_err(),
            ParamError::Unknown("bogus".into())
        );
        assert!(matches!(
            Config::parse(&["lowerdir=/a,nfs_export=on"]).unwrap_err(),
            ParamError::Unsupported(..)
        ));
        assert!(matches!(
            Config::parse(&["lowerdir=/a,index=maybe"]).unwrap_err(),
            ParamError::BadValue(..)
        ));
        assert!(Config::parse(&["lowerdir=/a,index=on"]).unwrap().index);
        assert_eq!(
            Config::parse(&["lowerdir=/a,verity=require"])
                .unwrap()
                .verity,
            Verity::Require
        );
        assert!(matches!(
            Config::parse(&["lowerdir=/a,verity=maybe"]).unwrap_err(),
            ParamError::BadValue(..)
        ));
        assert!(matches!(
            Config::parse(&["lowerdir=/a,userxattr,redirect_dir=on"]).unwrap_err(),
            ParamError::Conflict(..)
        ));
        let c = Config::parse(&["lowerdir=/a,userxattr"]).unwrap();
        assert_eq!(c.redirect_dir, RedirectDir::NoFollow);
        let c = Config::parse(&["lowerdir=/a,redirect_dir=off"]).unwrap();
        assert_eq!(c.redirect_dir, RedirectDir::Follow);
        let c = Config::parse(&["lowerdir=/a:/b::/d1::/d2"]).unwrap();
        assert_eq!(c.lowers, vec![PathBuf::from("/a"), "/b".into()]);
        assert_eq!(c.data_lowers, vec![PathBuf::from("/d1"), "/d2".into()]);
        for bad in [
            "lowerdir=/a::/d:/e",
            "lowerdir=/a:::/d",
            "lowerdir=/a:",
            "lowerdir=::/d",
        ] {
            assert!(
                matches!(Config::parse(&[bad]).unwrap_err(), ParamError::BadValue(..)),
                "{bad}"
            );
        }
        assert!(matches!(
            Config::parse(&["lowerdir=/a,metacopy=on,redirect_dir=follow"]).unwrap_err(),
            ParamError::Conflict(..)
        ));
        let c = Config::parse(&["lowerdir=/a,redirect_dir=off,metacopy=on"]);
        assert!(c.is_err(), "an explicit redirect_dir=off conflicts too");
        let c = Config::parse(&["lowerdir=/a,metacopy=on"]).unwrap();
        assert_eq!(c.redirect_dir, RedirectDir::On);
        assert_eq!(
            Config::parse(&["upperdir=/u,workdir=/w"]).unwrap_err(),
            ParamError::Missing("lowerdir")
        );
        assert!(matches!(
            Config::parse(&["lowerdir=/a,upperdir=/u"]).unwrap_err(),
            ParamError::Missing(_)
        ));
        assert!(matches!(
            Config::parse(&["lowerdir=/a,fsync=sometimes"]).unwrap_err(),
            ParamError::BadValue(..)
        ));
    }

    #[test]
    fn atime_flags_last_wins() {
        let at = |o: &str| Config::parse(&[format!("lowerdir=/a,{o}")]).unwrap();
        assert_eq!(at("rw").atime, Atime::Relative);
        assert_eq!(at("noatime").atime, Atime::Never);
        assert_eq!(at("noatime,atime").atime, Atime::Relative);
        assert_eq!(at("strictatime,noatime").atime, Atime::Never);
        assert_eq!(at("noatime,strictatime").atime, Atime::Always);
        let c = at("strictatime,nodiratime");
        assert_eq!((c.atime, c.dir_atime), (Atime::Always, Atime::Never));
    }

    #[test]
    fn later_options_and_passthrough() {
        let c = Config::parse(&["lowerdir=/a", "noatime,nodev,index=off,rw,allow_other"]).unwrap();
        assert_eq!(c.fuse_options, vec!["noatime".to_string(), "nodev".into()]);
        assert_eq!(c.callers, Some(Callers::All));
        let c = Config::parse(&["lowerdir=/a,allow_other,noallow_other"]).unwrap();
        assert_eq!(c.callers, Some(Callers::Owner), "the last one counts");
        let c = Config::parse(&["lowerdir=/a,allow_root"]).unwrap();
        assert_eq!(c.callers, Some(Callers::OwnerAndRoot));
        assert_eq!(Config::parse(&["lowerdir=/a"]).unwrap().callers, None);
    }
}
