//! Data-path operations on open files: read/write loops, fsync, fallocate,
//! lseek (SEEK_DATA/SEEK_HOLE), copy_file_range, mmap and statfs. Each
//! returns a normalised [`Outcome`] (see ops.rs).
use super::exec::{check, err};
use super::ops::Outcome;
use super::tree::hash_bytes;
use super::{errno, errno_name};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

/// Reads to EOF (with `pread` from offset 0, else `read` from the file
/// position): `len=N hash=H`. `pread` on a FIFO is ESPIPE.
pub fn read_all(fd: i32, pread: bool) -> Outcome {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = unsafe {
            if pread {
                libc::pread(fd, buf.as_mut_ptr() as *mut _, buf.len(), data.len() as i64)
            } else {
                libc::read(fd, buf.as_mut_ptr() as *mut _, buf.len())
            }
        };
        if n < 0 {
            if errno() == libc::EAGAIN {
                break; // FIFO without writer data
            }
            return err();
        }
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n as usize]);
    }
    Ok(format!(
        "len={} hash={:016x}",
        data.len(),
        hash_bytes(&data)
    ))
}

/// Writes all of `data` (pwrite from `off`, or write at the file position).
pub fn write_all(fd: i32, data: &[u8], off: Option<u64>) -> Outcome {
    let mut done = 0usize;
    while done < data.len() || (data.is_empty() && done == 0) {
        let rest = &data[done..];
        let n = unsafe {
            match off {
                Some(o) => libc::pwrite(
                    fd,
                    rest.as_ptr() as *const _,
                    rest.len(),
                    (o + done as u64) as i64,
                ),
                None => libc::write(fd, rest.as_ptr() as *const _, rest.len()),
            }
        };
        if n < 0 {
            return err();
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(format!("wrote {done}"))
}

pub fn fsync(fd: i32, data_only: bool) -> Outcome {
    check(unsafe {
        if data_only {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
}

fn fstat_size(fd: i32) -> Result<i64, String> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(format!("fstat:{}", errno_name(errno())));
    }
    Ok(st.st_size)
}

pub fn fallocate(fd: i32, punch: bool, off: u64, len: u64) -> Outcome {
    let mode = if punch {
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
    } else {
        0
    };
    if unsafe { libc::fallocate(fd, mode, off as i64, len as i64) } < 0 {
        return err();
    }
    Ok(format!("ok size={}", fstat_size(fd)?))
}

pub fn lseek(fd: i32, off: u64, hole: bool) -> Outcome {
    // On a directory, SEEK_DATA/SEEK_HOLE never reach a FUSE daemon: the FUSE
    // kernel answers with generic_file_llseek (an offset or ENXIO) where the
    // kernel overlay says EINVAL. Not comparable, so not compared.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Ok("directory: not compared".into());
    }
    let whence = if hole {
        libc::SEEK_HOLE
    } else {
        libc::SEEK_DATA
    };
    let r = unsafe { libc::lseek(fd, off as i64, whence) };
    if r < 0 { err() } else { Ok(format!("at {r}")) }
}

pub fn copy_range(fd_in: i32, fd_out: i32, off_in: u64, off_out: u64, len: u64) -> Outcome {
    let (mut oi, mut oo) = (off_in as i64, off_out as i64);
    let mut done = 0u64;
    while done < len {
        let n = unsafe {
            libc::copy_file_range(fd_in, &mut oi, fd_out, &mut oo, (len - done) as usize, 0)
        };
        if n < 0 {
            return err();
        }
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    Ok(format!("copied {done}"))
}

/// Maps `len` bytes (at least 1) of `fd` shared with `prot`.
fn map(fd: i32, len: usize, prot: i32) -> Result<*mut u8, String> {
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len.max(1),
            prot,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if m == libc::MAP_FAILED {
        err()
    } else {
        Ok(m as *mut u8)
    }
}

/// MAP_SHARED read of the whole file: `len=N hash=H` (as a read).
pub fn mmap_read(fd: OwnedFd) -> Outcome {
    let size = fstat_size(fd.as_raw_fd())? as usize;
    let m = map(fd.as_raw_fd(), size, libc::PROT_READ)?;
    let data = unsafe { std::slice::from_raw_parts(m, size) }.to_vec();
    unsafe { libc::munmap(m as *mut _, size.max(1)) };
    Ok(format!(
        "len={} hash={:016x}",
        data.len(),
        hash_bytes(&data)
    ))
}

/// MAP_SHARED write of `data` at `off`, clipped to the file size, then
/// msync(MS_SYNC) and munmap: `mapped N, wrote M`.
pub fn mmap_write(fd: OwnedFd, off: u64, data: &[u8]) -> Outcome {
    let size = fstat_size(fd.as_raw_fd())? as usize;
    let m = map(fd.as_raw_fd(), size, libc::PROT_READ | libc::PROT_WRITE)?;
    let off = (off as usize).min(size);
    let n = data.len().min(size - off);
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), m.add(off), n) };
    let r = unsafe { libc::msync(m as *mut _, size.max(1), libc::MS_SYNC) };
    let msync_err = (r < 0).then(|| errno_name(errno()));
    unsafe { libc::munmap(m as *mut _, size.max(1)) };
    drop(fd);
    match msync_err {
        Some(e) => Err(format!("msync:{e}")),
        None => Ok(format!("mapped {size}, wrote {n}")),
    }
}

/// statfs: only what both implementations must agree on.
pub fn statfs(path: &CString) -> Outcome {
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut sf) } < 0 {
        return err();
    }
    Ok(format!(
        "namemax={} bsize>0={}",
        sf.f_namelen,
        sf.f_bsize > 0
    ))
}
