//! The daemon's own process: credentials and umask, what /proc says of a
//! caller, daemonizing, and the signals that stop it.

use std::os::fd::{FromRawFd, OwnedFd};

use super::check;
use crate::errno::Errno;

/// The effective uid (0: root, possibly in a user namespace).
pub fn geteuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// Process umask is applied by the kernel before requests reach us; clear ours
/// so the modes we pass to the layers are taken as given.
pub fn clear_umask() {
    // SAFETY: always succeeds.
    unsafe { libc::umask(0) };
}

/// A field of /proc/PID/status (after its `NAME:`), if the process is there.
fn status_field(pid: u32, name: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::to_string)
}

/// Supplementary groups of a process, from /proc/PID/status.
pub fn process_groups(pid: u32) -> Vec<u32> {
    status_field(pid, "Groups")
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether process `pid` has capability `cap` in its effective set
/// (false when it cannot be told).
pub fn process_has_cap(pid: u32, cap: u32) -> bool {
    status_field(pid, "CapEff")
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1u64 << cap) != 0)
}

// ---- process control for daemonizing --------------------------------------------

pub fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0; 2];
    // SAFETY: fds is a two-element array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are fresh.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub enum Forked {
    Parent,
    Child,
}

/// fork(2). Call only while the process has a single thread.
pub fn fork() -> Result<Forked, Errno> {
    // SAFETY: the caller guarantees no other threads exist.
    match unsafe { libc::fork() } {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        _ => Ok(Forked::Parent),
    }
}

/// Detach from the terminal: new session, stdio to /dev/null (stderr kept if asked).
pub fn detach(keep_stderr: bool) {
    // SAFETY: setsid and dup2 on valid fds.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if !keep_stderr {
                libc::dup2(null, 2);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    let _ = std::env::set_current_dir("/");
}

// ---- signals ----------------------------------------------------------------------

const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn stop_sigset() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block the stop signals in this thread and every thread it spawns later,
/// so that one thread can wait for them with [`wait_stop_signal`].
pub fn block_stop_signals() {
    let set = stop_sigset();
    // SAFETY: valid set; changes only this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Wait until SIGTERM, SIGINT or SIGHUP arrives; returns its number.
pub fn wait_stop_signal() -> i32 {
    let set = stop_sigset();
    let mut sig = 0;
    // SAFETY: valid set and out pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
    sig
}
