//! Running one operation in a forked child, optionally as another identity.
//!
//! The child sets its credentials with raw syscalls (they affect only the
//! calling thread, which is all a forked child has): setgroups, setresgid,
//! setresuid, in that order. Dropping uid 0 drops all capabilities; uid 0
//! with another gid keeps them. The child runs the operation, writes the
//! outcome to a pipe and `_exit`s (no destructors, no unwinding back into
//! the test harness). A child killed by a signal (e.g. SIGBUS from a
//! mapping) gives the outcome `Err("SIGNAL n")`.
//!
//! Note: the child inherits the test process's open fds and closes them on
//! exit; for files on a mount that is a FLUSH (as for any dup'ed fd).
use super::ops::{Outcome, Who};
use super::{errno, errno_name};

fn set_creds(who: Who) -> Result<(), String> {
    let Some((uid, gid, groups)) = who.creds() else {
        return Ok(());
    };
    let gids: Vec<libc::gid_t> = groups.to_vec();
    let step = |what: &str, r: libc::c_long| {
        if r < 0 {
            Err(format!("HARNESS: {what}: {}", errno_name(errno())))
        } else {
            Ok(())
        }
    };
    unsafe {
        step(
            "setgroups",
            libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()),
        )?;
        step(
            "setresgid",
            libc::syscall(libc::SYS_setresgid, gid, gid, gid),
        )?;
        step(
            "setresuid",
            libc::syscall(libc::SYS_setresuid, uid, uid, uid),
        )?;
    }
    Ok(())
}

fn write_all_fd(fd: i32, mut b: &[u8]) {
    while !b.is_empty() {
        let n = unsafe { libc::write(fd, b.as_ptr() as *const _, b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

/// Ops run in this process hold it shared from start to end; `fork` takes it
/// exclusively. So no child is ever forked while another test thread holds a
/// transient fd (a FIFO reader, say) that the child would copy: a copied
/// reader, even for the microseconds until the child closes it, lets that
/// thread's next FIFO write succeed where it expects ENXIO.
pub static FORK_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Forks; the child takes `who`'s credentials and runs `f`; its outcome is
/// returned here.
pub fn run_forked(who: Who, f: impl FnOnce() -> Outcome) -> Outcome {
    let mut p = [0i32; 2];
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        panic!("HARNESS: pipe2: {}", errno_name(errno()));
    }
    let gate = FORK_GATE.write().unwrap_or_else(|e| e.into_inner());
    let pid = unsafe { libc::fork() };
    // The child must not touch the gate (its copy stays locked); it never does:
    // ops in the child run without it.
    drop(gate);
    if pid < 0 {
        panic!("HARNESS: fork: {}", errno_name(errno()));
    }
    if pid == 0 {
        unsafe { libc::close(p[0]) };
        // FIFO ends held in fd slots across ops are copied by the fork too:
        // drop them (transient ones are kept out by FORK_GATE).
        for fd in 3..4096 {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if fd != p[1]
                && unsafe { libc::fstat(fd, &mut st) } == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFIFO
            {
                unsafe { libc::close(fd) };
            }
        }
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            set_creds(who)?;
            f()
        }))
        .unwrap_or_else(|_| Err("HARNESS: panic in child".into()));
        let msg = match out {
            Ok(s) => format!("O{s}"),
            Err(e) => format!("E{e}"),
        };
        write_all_fd(p[1], msg.as_bytes());
        unsafe { libc::_exit(0) };
    }
    unsafe { libc::close(p[1]) };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = unsafe { libc::read(p[0], chunk.as_mut_ptr() as *mut _, chunk.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
    }
    unsafe { libc::close(p[0]) };
    let mut status = 0;
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if errno() != libc::EINTR {
            panic!("HARNESS: waitpid: {}", errno_name(errno()));
        }
    }
    if libc::WIFSIGNALED(status) {
        return Err(format!("SIGNAL {}", libc::WTERMSIG(status)));
    }
    let s = String::from_utf8_lossy(&buf).into_owned();
    match s.split_at_checked(1) {
        Some(("O", rest)) => Ok(rest.to_string()),
        Some(("E", rest)) => Err(rest.to_string()),
        _ => Err(format!("HARNESS: child sent {s:?}, status {status}")),
    }
}
