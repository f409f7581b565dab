//! The `ovlfs` command: mount an overlay (both the fuse-overlayfs and the
//! mount.fuse3 calling conventions).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use ovlfs::daemon::{self, MountRequest};
use ovlfs::params::Config;
use ovlfs::sys;

const ABOUT: &str = "Linux OverlayFS in userspace: mounts the union of lower directories \
and one writable upper directory through FUSE, with the kernel overlay's semantics and on-disk format.";

const AFTER_HELP: &str = "\
OPTIONS (-o, comma separated; empty entries are ignored):
  lowerdir=L1:L2:...     lower layers, leftmost on top; \\: escapes a colon (required)
  upperdir=U             writable upper layer (needs workdir)
  workdir=W              scratch dir on the same filesystem as U, not nested with it
  ro                     read-only mount (also implied without upperdir; one lower suffices)
  userxattr              overlay xattrs in user.overlay.* instead of trusted.overlay.*
  fsync=auto|strict|volatile, volatile
                         fsync copied-up data (auto), also the directories (strict), or
                         never (volatile: marks W/work/incompat/volatile, as the kernel does)
  allow_other            let every user in, permissions checked as the kernel overlay does
                         (the default as root; as an ordinary user, the default where
                         /etc/fuse.conf has user_allow_other, else refused with that reason)
  noallow_other          only the mounting user may use the mount (FUSE's own default)
  acl|noacl              POSIX ACLs enforced, inherited and kept in step with chmod, as the
                         kernel overlay does (default acl); noacl: file modes only
  allow_root             the mounting user and root
  default_permissions    accepted; always in effect
  suid,nosuid,dev,nodev,exec,noexec,atime,noatime,sync,async,dirsync
                         generic mount flags (dev and suid are on by default, as in the kernel)
  threads=N              worker threads serving requests (default 4)
  timeout=SECONDS        how long the kernel caches names and attributes (default 60)
  debug                  log every request (same as -d)
  redirect_dir=on|follow|nofollow|off
                         on (default): renaming a lower or merged directory writes a
                         redirect, as the kernel with redirect_dir=on; follow/off: redirects
                         are followed, never written (such renames give EXDEV, the kernel's
                         default); nofollow: meeting a redirect gives EPERM
  uuid=auto|on|null|off  the UUID origins carry and the upper root's uuid xattr (default auto,
                         as the kernel: on for a fresh upper, null for an older one)
  xino=auto|on|off       inode numbers across filesystems: auto/on as the kernel's xino
                         (default auto); off: ovlfs's own unique numbering
  metacopy=on|off        metadata-only copy-up for attribute/xattr changes, link, rename
                         (default off, as the kernel; on implies redirect_dir=on)
  lowerdir=L1::D1::D2    data-only layers after ::, reached only by metacopy redirects
  index=on|off           on: hard links of lower files survive copy-up, through W/index
                         as the kernel's index=on (default off, as the kernel)
  verity=off|on|require  fs-verity digests of metacopy data: recorded and checked (on),
                         required (require); default off, as the kernel
  nfs_export=off         accepted; nfs_export=on is NOT SUPPORTED YET and refused
  remount,ro|rw,...      change the flags of a live mount (as mount -o remount runs it);
                         overlay options cannot change

Copy-up records origin (and impure) as the kernel does, so inode numbers stay the
same across copy-up and remount.

A move whose redirect would exceed 256 bytes copies the directory tree up instead.

NOT SUPPORTED YET: nfs_export, POSIX ACL enforcement, running as an
ordinary user.

EXAMPLES:
  ovlfs -o lowerdir=/l1:/l2,upperdir=/u,workdir=/w /mnt
  mount -t fuse.ovlfs overlay /mnt -o lowerdir=/l,upperdir=/u,workdir=/w
  umount /mnt";

#[derive(Parser, Debug)]
#[command(
    name = "ovlfs",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    tool: Option<Tool>,
    /// Mount options (may be given several times)
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,
    /// Log every request; implies -f
    #[arg(short = 'd')]
    debug: bool,
    /// [SOURCE] MOUNTPOINT: a source name (as mount.fuse3 passes it) is optional
    #[arg(value_name = "SOURCE|MOUNTPOINT", num_args = 1..=2, required = true)]
    paths: Vec<PathBuf>,
}

/// Tools that work on layer directories offline.
#[derive(Subcommand, Debug)]
enum Tool {
    /// What an upper layer changes relative to its lowers, as docker diff prints it:
    /// A added, C changed, D deleted (whiteouts, and entries hidden by an opaque dir)
    #[command(
        after_help = "EXAMPLE:\n  ovlfs diff --upper /var/lib/c1/upper --lower /img/l2:/img/l1\n  \
                            C /etc\n  A /etc/new.conf\n  D /etc/old.conf"
    )]
    Diff(DiffArgs),
    /// Return an overlay to its factory state (OpenWrt's firstboot): empty the upper and
    /// workdir, keeping the paths given. The new upper is built beside the old one and
    /// swapped in with one rename, so an interruption never leaves a half-reset upper.
    #[command(
        after_help = "EXAMPLE:\n  ovlfs reset --upper /overlay/upper --workdir /overlay/work \\\n    \
                            --keep /etc/config/network --keep-file /etc/sysupgrade.conf"
    )]
    Reset(ResetArgs),
    /// Turn an upper into a new lower layer (docker commit): stacked as NEW:L1:L2 it shows
    /// the same view, with redirects and metacopy files resolved into plain files and
    /// directories; or, with --flatten, write the merged view of a stack into one directory
    #[command(
        after_help = "EXAMPLES:\n  ovlfs commit --upper /c1/upper --lower /img/l2:/img/l1 --into /img/l3\n  \
                            ovlfs commit --flatten --lower /img/l3:/img/l2:/img/l1 --into /img/flat\n  \
                            ovlfs commit --in-place --upper /c1/upper --workdir /c1/work --lower /img/l2:/img/l1\n\n\
                            --in-place builds the merged top lower beside it, swaps it in, then empties the\n\
                            upper and workdir; if interrupted, run it again (or ovlfs fsck -y) to finish."
    )]
    Commit(CommitArgs),
    /// Check an overlay's layers offline and repair what can be repaired (exit codes as
    /// e2fsck: 0 clean, 1 repaired, 4 left uncorrected, 8 operational error)
    #[command(
        after_help = "EXAMPLE:\n  ovlfs fsck -o lowerdir=/l2:/l1,upperdir=/u,workdir=/w -n\n\n\
                            Checked so far: orphan whiteouts, OCI whiteouts and opaque markers in the upper,\n\
                            invalid and dangling redirects, missing impure marks, metacopy files without data,\n\
                            workdir leftovers, a dirty volatile mount, index temporaries, bad, stale and orphan\n\
                            index entries, index nlink counts, origin handles the kernel ignores, an upper root\n\
                            tied to other lowers, moved directories shown twice (missing whiteout, duplicate\n\
                            redirect), an interrupted commit --in-place.\n\
                            NOT SUPPORTED YET: verity digests, redirects inside lower layers."
    )]
    Fsck(FsckArgs),
    /// Write what an upper changes as an OCI image layer (tar, .tar.gz or .tar.zst):
    /// whiteouts as .wh.NAME, opaque dirs as .wh..wh..opq, metacopy files with their data,
    /// moved dirs expanded, xattrs in PAX records, hard links as tar links; reproducible.
    /// Prints the blob digest and the diff_id.
    #[command(
        after_help = "EXAMPLES:\n  ovlfs export --upper /c1/upper --lower /img/l2:/img/l1 -o layer.tar.gz\n  \
                            sha256:3b1f...  layer.tar.gz (diff_id sha256:9c0e..., 12 entries, 2 whiteouts)\n  \
                            ovlfs export --upper /c1/upper --lower /img/l1 -o - --compression zstd | ..."
    )]
    Export(ExportArgs),
    /// Unpack an OCI image layer (tar, gzip or zstd, detected from its first bytes) into a
    /// new layer directory in overlay form: .wh.NAME as a 0/0 whiteout, .wh..wh..opq as the
    /// opaque xattr. Path traversal, symlinked paths, links out of the layer, oversized
    /// headers and truncated archives are refused, and nothing is left behind.
    #[command(after_help = "EXAMPLES:\n  ovlfs apply layer.tar.gz /img/l3\n  \
                            mount -t overlay overlay -o lowerdir=/img/l3:/img/l2:/img/l1 /mnt\n  \
                            curl ... | ovlfs apply - /img/l3\n\n\
                            Needs root for device nodes and files of other owners\n\
                            (applying those as an ordinary user is NOT SUPPORTED YET).")]
    Apply(ApplyArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// The upper layer
    #[arg(long, value_name = "DIR")]
    upper: PathBuf,
    /// The lower layers, topmost first, separated by ':'
    #[arg(long, value_name = "L1:L2:...")]
    lower: String,
    /// The overlay's workdir: with index=on, the names of a hard-linked lower file not
    /// linked up yet show the copy in its index, and are followed only with it
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// The archive to write ('-': stdout)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// none, gzip or zstd (default: from the file name; none for stdout)
    #[arg(long, value_name = "KIND")]
    compression: Option<String>,
    /// The layers keep overlay xattrs in user.overlay.*
    #[arg(long)]
    userxattr: bool,
    /// Print a JSON summary
    #[arg(long)]
    json: bool,
    /// Read the layers even while a mounted overlay uses them
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct ApplyArgs {
    /// The layer archive ('-': stdin)
    #[arg(value_name = "LAYER.tar[.gz|.zst]")]
    archive: PathBuf,
    /// The new layer directory (must not exist, or be empty)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Write overlay xattrs (the opaque mark) in user.overlay.*
    #[arg(long)]
    userxattr: bool,
    /// Print a JSON summary
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FsckArgs {
    /// The overlay's options: lowerdir=...,upperdir=...,workdir=... (workdir optional)
    #[arg(short = 'o', value_name = "OPTIONS", required = true)]
    options: Vec<String>,
    /// Check only, change nothing
    #[arg(short = 'n', conflicts_with_all = ["yes", "preen"])]
    no: bool,
    /// Repair everything that can be repaired
    #[arg(short = 'y')]
    yes: bool,
    /// Repair what is safe without asking (the same repairs as -y)
    #[arg(short = 'p')]
    preen: bool,
    /// List every problem (the default prints a summary line per problem too)
    #[arg(short = 'v')]
    verbose: bool,
    /// Print the findings as JSON
    #[arg(long)]
    json: bool,
    /// Check even while a mounted overlay uses the layers
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct CommitArgs {
    /// The upper layer to commit (not with --flatten)
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "flatten",
        conflicts_with = "flatten"
    )]
    upper: Option<PathBuf>,
    /// The lower layers, topmost first, separated by ':'
    #[arg(long, value_name = "L1:L2:...")]
    lower: String,
    /// The new layer directory to write (must not exist)
    #[arg(long, value_name = "NEW", required_unless_present = "in_place")]
    into: Option<PathBuf>,
    /// Write the whole merged view of --lower, without whiteouts
    #[arg(long)]
    flatten: bool,
    /// Merge the upper down into the top lower (the first of --lower) and empty the
    /// upper and --workdir
    #[arg(long, conflicts_with_all = ["flatten", "into"], requires_all = ["upper", "workdir"])]
    in_place: bool,
    /// The overlay's workdir: with index=on, its index is read for the names of
    /// hard-linked lower files not linked up yet (with --in-place: emptied with the upper)
    #[arg(long, value_name = "DIR", conflicts_with = "flatten")]
    workdir: Option<PathBuf>,
    /// The layers keep overlay xattrs in user.overlay.*
    #[arg(long)]
    userxattr: bool,
    /// Print a JSON summary
    #[arg(long)]
    json: bool,
    /// Read the layers even while a mounted overlay uses them
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct ResetArgs {
    /// The upper layer
    #[arg(long, value_name = "DIR")]
    upper: PathBuf,
    /// The overlay's workdir
    #[arg(long, value_name = "DIR")]
    workdir: PathBuf,
    /// A path (in the merged view) to keep as it is in the upper; may be repeated
    #[arg(long, value_name = "PATH")]
    keep: Vec<PathBuf>,
    /// A file listing paths to keep, one per line ('#' comments)
    #[arg(long, value_name = "FILE")]
    keep_file: Vec<PathBuf>,
    /// The layers keep overlay xattrs in user.overlay.* (as mounted with userxattr)
    #[arg(long)]
    userxattr: bool,
    /// Print a JSON object {"kept":[...],"absent":[...]}
    #[arg(long)]
    json: bool,
    /// Reset even while a mounted overlay uses the layers (it will see them vanish)
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct DiffArgs {
    /// The upper layer
    #[arg(long, value_name = "DIR")]
    upper: PathBuf,
    /// The lower layers, topmost first, separated by ':' (\: escapes a colon)
    #[arg(long, value_name = "L1:L2:...")]
    lower: String,
    /// The overlay's workdir: with index=on, the names of a hard-linked lower file not
    /// linked up yet show the copy in its index, and are followed only with it
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Print a JSON array of {"kind","path"} instead
    #[arg(long)]
    json: bool,
    /// The layers keep overlay xattrs in user.overlay.* (as mounted with userxattr)
    #[arg(long)]
    userxattr: bool,
    /// Read the layers even while a mounted overlay uses them
    #[arg(long)]
    force: bool,
}

fn run_tool(tool: Tool) -> Result<i32> {
    match tool {
        Tool::Diff(a) => {
            let lowers = tool_layers(
                "diff",
                &a.lower,
                &[Some(&a.upper), a.workdir.as_deref()],
                a.force,
            )?;
            let stack = ovlfs::tools::Stack {
                upper: &a.upper,
                work: a.workdir.as_deref(),
                lowers: &lowers,
                userxattr: a.userxattr,
            };
            let changes = ovlfs::tools::diff::diff(&stack).context("diff")?;
            if a.json {
                println!("{}", ovlfs::tools::diff::to_json(&changes));
            } else {
                let mut out = String::new();
                for c in &changes {
                    out.push_str(&format!("{} {}\n", c.kind.letter(), c.path.display()));
                }
                print!("{out}");
            }
            Ok(0)
        }
        Tool::Commit(a) => {
            let lowers = tool_layers(
                "commit",
                &a.lower,
                &[a.upper.as_deref(), a.workdir.as_deref()],
                a.force,
            )?;
            let (r, shown) = match (&a.upper, &a.workdir, &a.into) {
                (Some(upper), Some(work), _) if a.in_place => {
                    let r = ovlfs::tools::commit_in_place::commit_in_place(
                        upper,
                        work,
                        &lowers,
                        a.userxattr,
                    )
                    .context("commit --in-place")?;
                    (r, lowers[0].clone())
                }
                (_, _, Some(into)) => (
                    ovlfs::tools::commit::commit(
                        a.upper.as_deref(),
                        a.workdir.as_deref(),
                        &lowers,
                        into,
                        a.userxattr,
                    )
                    .context("commit")?,
                    into.clone(),
                ),
                _ => anyhow::bail!("commit needs --into, or --in-place with --upper and --workdir"),
            };
            if a.json {
                println!(
                    "{{\"entries\":{},\"whiteouts\":{},\"bytes\":{}}}",
                    r.entries, r.whiteouts, r.bytes
                );
            } else {
                println!(
                    "{}: {} entries, {} whiteouts, {} bytes of data",
                    shown.display(),
                    r.entries,
                    r.whiteouts,
                    r.bytes
                );
            }
            Ok(0)
        }
        Tool::Export(a) => run_export(a),
        Tool::Apply(a) => {
            let archive = (a.archive.as_os_str() != "-").then_some(a.archive.as_path());
            let r = ovlfs::tools::apply::apply(archive, &a.dir, a.userxattr).context("apply")?;
            if a.json {
                println!(
                    "{{\"digest\":\"{}\",\"entries\":{},\"whiteouts\":{},\"opaque\":{},\"bytes\":{},\"dropped_xattrs\":{}}}",
                    r.digest, r.entries, r.whiteouts, r.opaque, r.bytes, r.dropped_xattrs
                );
            } else {
                println!(
                    "{}: {} entries, {} whiteouts, {} opaque dirs, {} bytes of data from {}",
                    a.dir.display(),
                    r.entries,
                    r.whiteouts,
                    r.opaque,
                    r.bytes,
                    r.digest
                );
                if r.dropped_xattrs > 0 {
                    eprintln!(
                        "ovlfs: apply: {} overlay xattrs in the archive were not applied",
                        r.dropped_xattrs
                    );
                }
            }
            Ok(0)
        }
        // Operational errors are exit code 8 for fsck, as e2fsck.
        Tool::Fsck(a) => Ok(run_fsck(a).unwrap_or_else(|e| {
            eprintln!("ovlfs: fsck: {e:#}");
            8
        })),
        Tool::Reset(a) => {
            if !a.force {
                ovlfs::tools::check_not_mounted(&[a.upper.as_path(), a.workdir.as_path()])?;
            }
            let mut keep = a.keep.clone();
            for f in &a.keep_file {
                keep.extend(ovlfs::tools::reset::read_keep_file(f)?);
            }
            let r = ovlfs::tools::reset::reset(&a.upper, &a.workdir, &keep, a.userxattr)
                .context("reset")?;
            let list = |v: &[PathBuf]| {
                v.iter()
                    .map(|p| ovlfs::tools::json_string(&p.to_string_lossy()))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            if a.json {
                println!(
                    "{{\"kept\":[{}],\"absent\":[{}]}}",
                    list(&r.kept),
                    list(&r.absent)
                );
            } else {
                for p in &r.kept {
                    println!("kept {}", p.display());
                }
                for p in &r.absent {
                    println!("absent {} (not in the upper: nothing to keep)", p.display());
                }
            }
            Ok(0)
        }
    }
}

/// A tool's `--lower` list, after refusing what it cannot take and (unless
/// `force`) layers a mounted overlay uses.
/// The lower layers of `--lower`, after checking that no mounted overlay
/// uses them or `others` (upper, workdir).
fn tool_layers(
    tool: &str,
    lower: &str,
    others: &[Option<&std::path::Path>],
    force: bool,
) -> Result<Vec<PathBuf>> {
    let (lowers, data) =
        ovlfs::params::split_lowerdir(lower).map_err(|e| anyhow::anyhow!("--lower: {e}"))?;
    if !data.is_empty() {
        anyhow::bail!("--lower: data-only layers (::) are not supported by {tool} yet");
    }
    if !force {
        let mut paths: Vec<&std::path::Path> = lowers.iter().map(|p| p.as_path()).collect();
        paths.extend(others.iter().flatten());
        ovlfs::tools::check_not_mounted(&paths)?;
    }
    Ok(lowers)
}

fn run_export(a: ExportArgs) -> Result<i32> {
    use ovlfs::tools::Compression;
    let lowers = tool_layers(
        "export",
        &a.lower,
        &[Some(&a.upper), a.workdir.as_deref()],
        a.force,
    )?;
    let to_stdout = a.output.as_os_str() == "-";
    let compression = match &a.compression {
        Some(c) => Compression::parse(c)
            .ok_or_else(|| anyhow::anyhow!("--compression {c:?}: expected none, gzip or zstd"))?,
        None if to_stdout => Compression::None,
        None => Compression::for_path(&a.output),
    };
    if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!("-o -: refusing to write an archive to a terminal");
    }
    let out = (!to_stdout).then_some(a.output.as_path());
    let stack = ovlfs::tools::Stack {
        upper: &a.upper,
        work: a.workdir.as_deref(),
        lowers: &lowers,
        userxattr: a.userxattr,
    };
    let r = ovlfs::tools::export::export(&stack, out, compression).context("export")?;
    let line = if a.json {
        format!(
            "{{\"digest\":\"{}\",\"diff_id\":\"{}\",\"size\":{},\"entries\":{},\"whiteouts\":{},\"bytes\":{}}}",
            r.digest, r.diff_id, r.size, r.entries, r.whiteouts, r.bytes
        )
    } else {
        format!(
            "{}  {} (diff_id {}, {} entries, {} whiteouts, {} bytes of data)",
            r.digest,
            a.output.display(),
            r.diff_id,
            r.entries,
            r.whiteouts,
            r.bytes
        )
    };
    // The archive may be on stdout: the summary goes to stderr then.
    if to_stdout {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(0)
}

fn run_fsck(a: FsckArgs) -> Result<i32> {
    let cfg = Config::parse(&a.options).map_err(|e| anyhow::anyhow!("-o: {e}"))?;
    let upper = cfg
        .upper
        .clone()
        .ok_or_else(|| anyhow::anyhow!("-o: fsck needs upperdir="))?;
    if !a.force {
        let mut paths: Vec<&std::path::Path> = vec![upper.as_path()];
        paths.extend(cfg.work.as_deref());
        ovlfs::tools::check_not_mounted(&paths)?;
    }
    let repair = (a.yes || a.preen) && !a.no;
    let r = ovlfs::tools::fsck::fsck(
        &upper,
        cfg.work.as_deref(),
        &cfg.lowers,
        cfg.userxattr,
        cfg.uuid == ovlfs::params::UuidMode::Off,
        repair,
    )
    .context("fsck")?;
    if a.json {
        let items: Vec<String> = r
            .findings
            .iter()
            .map(|f| {
                format!(
                    "{{\"path\":{},\"problem\":\"{}\",\"detail\":{},\"repaired\":{}}}",
                    ovlfs::tools::json_string(&f.path.to_string_lossy()),
                    f.problem,
                    ovlfs::tools::json_string(&f.detail),
                    f.repaired
                )
            })
            .collect();
        println!("[{}]", items.join(","));
    } else {
        for f in &r.findings {
            let state = if f.repaired { "repaired" } else { "found" };
            if a.verbose {
                println!("{state} {}: {} ({})", f.problem, f.path.display(), f.detail);
            } else {
                println!("{state} {}: {}", f.problem, f.path.display());
            }
        }
        if r.findings.is_empty() {
            println!("clean");
        }
    }
    Ok(r.exit_code())
}

fn init_logging(debug: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OVLFS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if debug { "debug" } else { "warn" })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    if let Some(tool) = cli.tool {
        init_logging(false);
        let code = run_tool(tool)?;
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    if let Some(flags) = remount_flags(&cli.options)? {
        let mountpoint = cli.paths.last().expect("clap enforces 1..=2 paths");
        return sys::remount(mountpoint, flags).map_err(|e| {
            anyhow::anyhow!(
                "remount of {}: {}",
                mountpoint.display(),
                std::io::Error::from_raw_os_error(e.0)
            )
        });
    }
    let mut config = Config::parse(&cli.options)?;
    config.debug |= cli.debug;
    init_logging(config.debug);
    let (source, mountpoint) = match cli.paths.as_slice() {
        [m] => ("ovlfs".to_string(), m.clone()),
        [s, m] => (s.to_string_lossy().into_owned(), m.clone()),
        _ => unreachable!("clap enforces 1..=2 paths"),
    };
    // As mount(8): a relative mount point is taken from the current directory
    // (the daemon leaves it when it detaches).
    let mountpoint = std::fs::canonicalize(&mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    let foreground = cli.foreground || config.debug;
    daemon::run(MountRequest {
        config,
        mountpoint,
        source,
        foreground,
    })
}

/// `-o remount,...` (as mount(8) passes it through mount.fuse3): the mount's
/// new flags; the daemon keeps serving, the kernel enforces them. `None`:
/// not a remount. Overlay options cannot change on a remount (as the kernel).
fn remount_flags(options: &[String]) -> Result<Option<libc::c_ulong>> {
    let opts: Vec<&str> = options.iter().flat_map(|o| o.split(',')).collect();
    if !opts.contains(&"remount") {
        return Ok(None);
    }
    let mut flags: libc::c_ulong = 0;
    for o in opts {
        match o {
            "remount" | "rw" | "" | "defaults" | "suid" | "dev" | "exec" | "atime" | "async" => {}
            "ro" => flags |= libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            // As the kernel overlay through mount(2): every other option is
            // ignored, silently, on a remount (mount helpers pass the whole
            // option list again, and scripts read what is printed).
            _ => {}
        }
    }
    Ok(Some(flags))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ovlfs: {e:#}");
        std::process::exit(1);
    }
}
