//! `ovlfs fsck`: the offline checker fsck.overlay began and never finished.
//!
//! The merged view is walked as the kernel would show it: the upper layer
//! against the lower directories at each path (the same lookups `diff`
//! makes, redirects followed), and the lower directories the upper does not
//! cover. The workdir and the index are read first, and judged again once
//! the walk has counted who shows each indexed file. Each problem is
//! reported with its path; with repair on, the ones that have a safe repair
//! are repaired. Exit codes as e2fsck: 0 clean, 1 repaired, 4 left
//! uncorrected, 8 operational error.
//!
//! One file per concern: `walk` (the merged view: whiteouts, OCI markers,
//! redirects, impure, metacopy), `origin` (origin handles and the upper
//! root's tie to the lowers), `workdir` (W/work and the index entries'
//! names), `index` (what the index entries say against what the view
//! shows), `redirects` (a lower directory shown at two places). An
//! interrupted `commit --in-place` is found (and finished) before all that.

mod index;
mod origin;
mod redirects;
mod walk;
mod workdir;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::diff::{Diff, root_dirs};
use super::layers::{ToolError, open_dir};
use crate::engine::{Errno, Layer};
use crate::format::xattr::XattrNames;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    /// A stable short name, e.g. `orphan-whiteout`.
    pub problem: &'static str,
    pub detail: String,
    pub repaired: bool,
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub findings: Vec<Finding>,
}

impl FsckReport {
    /// e2fsck's exit codes: 0 clean, 1 all repaired, 4 some left.
    pub fn exit_code(&self) -> i32 {
        if self.findings.is_empty() {
            0
        } else if self.findings.iter().all(|f| f.repaired) {
            1
        } else {
            4
        }
    }
}

/// An object's identity: (st_dev, st_ino).
type Key = (u64, u64);

struct Fsck<'a> {
    view: Diff<'a>,
    x: XattrNames,
    repair: bool,
    upper_path: &'a Path,
    /// The workdir (W), where repairs build what they swap in.
    work_path: Option<&'a Path>,
    lower_paths: &'a [PathBuf],
    userxattr: bool,
    /// The lower layers with what identifies their filesystems, for decoding
    /// origin handles as the engine does.
    lowers: Vec<Layer>,
    uuid_off: bool,
    /// Whether origin handles can be judged: false when the upper root's
    /// origin says these are not the lower layers the upper was made on.
    origins_checked: bool,
    /// `W/index`, where there is one.
    index_dir: Option<OwnedFd>,
    /// Index entries of hard-linked lower files, judged after the walk.
    indexed: Vec<index::IndexEntry>,
    /// For each lower file an index entry stands for: the merged directories
    /// where one of its names shows from below.
    aliases: HashMap<Key, Vec<PathBuf>>,
    /// Every merged directory that shows a lower directory, by the identity
    /// of its topmost lower directory.
    places: HashMap<Key, Vec<redirects::Place>>,
    /// Merged directories that show a lower directory shown elsewhere too,
    /// by redirect: what shows below them is not counted.
    hidden: Vec<PathBuf>,
    report: FsckReport,
    /// Entries checked so far, on a terminal.
    progress: indicatif::ProgressBar,
}

impl Fsck<'_> {
    fn found(
        &mut self,
        path: PathBuf,
        problem: &'static str,
        detail: String,
        fix: impl FnOnce() -> Result<(), Errno>,
    ) {
        let repaired = self.repair
            && match fix() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(path = %path.display(), %e, "repair failed");
                    false
                }
            };
        self.report.findings.push(Finding {
            path,
            problem,
            detail,
            repaired,
        });
    }

    fn unfixable(&mut self, path: PathBuf, problem: &'static str, detail: String) {
        self.report.findings.push(Finding {
            path,
            problem,
            detail,
            repaired: false,
        });
    }
}

/// Check (and with `repair`, repair) a stack's upper layer and workdir.
/// `uuid_off`: the stack is mounted with uuid=off (origin handles carry null
/// UUIDs).
pub fn fsck(
    upper: &Path,
    work: Option<&Path>,
    lowers: &[PathBuf],
    userxattr: bool,
    uuid_off: bool,
    repair: bool,
) -> Result<FsckReport, ToolError> {
    // An in-place commit that merged the upper into the top lower but did
    // not empty it: finished first, as everything below depends on it.
    let mut interrupted = None;
    if let Some(l1) = lowers.first()
        && super::commit_in_place::interrupted(l1, upper, userxattr)
    {
        let repaired = match (repair, work) {
            (true, Some(w)) => super::commit_in_place::finish(upper, w, l1, userxattr)
                .inspect_err(|e| tracing::warn!(%e, "finishing the in-place commit failed"))
                .is_ok(),
            _ => false,
        };
        interrupted = Some(Finding {
            path: l1.clone(),
            problem: "commit-interrupted",
            detail: format!(
                "an in-place commit merged {} into this layer and was interrupted before emptying it{}",
                upper.display(),
                if work.is_none() {
                    " (repair needs workdir=)"
                } else {
                    ""
                }
            ),
            repaired,
        });
    }
    let lower_roots = lowers
        .iter()
        .map(|l| open_dir(l))
        .collect::<Result<Vec<_>, _>>()?;
    let lower_layers = lowers
        .iter()
        .map(|l| {
            crate::engine::open_layer(l).map_err(|e| ToolError::Io {
                path: l.clone(),
                what: "cannot open the lower layer",
                errno: match e {
                    crate::engine::SetupError::Io { errno, .. } => errno,
                    _ => Errno::ENOTDIR,
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let root = std::fs::File::open(upper).map_err(|e| ToolError::Io {
        path: upper.to_path_buf(),
        what: "cannot open the upper layer",
        errno: Errno::from(e),
    })?;
    let mut f = Fsck {
        view: Diff::new(userxattr, &lower_roots, upper),
        x: XattrNames::new(userxattr),
        repair,
        upper_path: upper,
        work_path: work,
        lower_paths: lowers,
        userxattr,
        lowers: lower_layers,
        uuid_off,
        origins_checked: true,
        index_dir: None,
        indexed: Vec::new(),
        aliases: HashMap::new(),
        places: HashMap::new(),
        hidden: Vec::new(),
        report: FsckReport::default(),
        progress: super::progress::bar(None, "fsck: entries checked"),
    };
    f.report.findings.extend(interrupted);
    f.check_root_origin(root.as_fd(), work);
    if let Some(w) = work {
        f.check_workdir(w)?;
    }
    let view = root_dirs(&lower_roots);
    f.walk(root.as_fd(), Path::new(""), &view)?;
    f.check_places();
    f.check_indexed();
    f.progress.finish_and_clear();
    Ok(f.report)
}
