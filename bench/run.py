#!/usr/bin/env python3
"""ovlfs side by side with the kernel overlay and fuse-overlayfs 1.10 / 2.0.

Builds one fixture, then runs each workload on every implementation,
interleaved (rep 1 on all, rep 2 on all, ...), each run on a fresh upper and
workdir and a fresh mount, and prints medians and the ratios ovlfs/kernel,
ovlfs/fo-1.10 and ovlfs/fo-2.0. Run as root. See README "Benchmark".

    bench/run.py [--reps 3] [--disk] [--only NAME,NAME] [--impls ovlfs,kernel,fo1,fo2]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "bench" / ".peers"
SMALL_DIRS, SMALL_FILES = 100, 200  # 20k small lower files
BIG_MIB = 1024


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=True, check=check, **kw)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- implementations -------------------------------------------------------

def ensure_peers(impls):
    if "fo1" in impls and not Path("/usr/bin/fuse-overlayfs").exists():
        log("installing fuse-overlayfs 1.x (apt-get)")
        sh("apt-get install -y fuse-overlayfs >/dev/null")
    if "fo2" in impls and not (PEERS / "bin" / "fuse-overlayfs").exists():
        log("installing fuse-overlayfs 2.x (cargo install; takes a few minutes)")
        sh(f"cargo install --quiet fuse-overlayfs --root {PEERS}")
    if not shutil.which("fio"):
        log("installing fio (apt-get)")
        sh("apt-get install -y fio >/dev/null")
    log("building ovlfs (release)")
    sh(f"cargo build --release --quiet --manifest-path {REPO}/Cargo.toml")


def mount(impl, lower, upper, work, mnt):
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if impl == "kernel":
        sh(f"mount -t overlay overlay -o {opts} {mnt}")
    elif impl == "ovlfs":
        sh(f"{REPO}/target/release/ovlfs -o {opts} {mnt}")
    elif impl == "fo1":
        sh(f"/usr/bin/fuse-overlayfs -o {opts} {mnt}")
    elif impl == "fo2":
        sh(f"{PEERS}/bin/fuse-overlayfs -o {opts} {mnt}")
    else:
        raise ValueError(impl)


def umount(mnt):
    for _ in range(50):
        if sh(f"umount {mnt}", check=False, stderr=subprocess.DEVNULL).returncode == 0:
            break
        time.sleep(0.1)
    else:
        sh(f"umount -l {mnt}", check=False)
    time.sleep(0.05)


def daemon_pid(mnt):
    """The pid of the FUSE daemon serving mnt (none for the kernel)."""
    out = sh("ps -eo pid=,args=", capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if str(mnt) in args and ("ovlfs" in args or "fuse-overlayfs" in args):
            return int(pid)
    return None


def rss_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def drop_caches():
    sh("sync; echo 3 > /proc/sys/vm/drop_caches")


# ---- fixture -----------------------------------------------------------------

def build_fixture(base):
    lower = base / "lower"
    if (lower / ".done").exists():
        return lower
    log(f"building the fixture in {lower}")
    shutil.rmtree(lower, ignore_errors=True)
    (lower / "big").mkdir(parents=True)
    sh(f"head -c {BIG_MIB}M /dev/urandom > {lower}/big/file")
    blob = os.urandom(1024)
    for d in range(SMALL_DIRS):
        p = lower / "small" / f"d{d:03}"
        p.mkdir(parents=True)
        for f in range(SMALL_FILES):
            (p / f"f{f:03}").write_bytes(blob)
    for d in range(75):  # 15k lower files for the mixed rm -rf
        p = lower / "rm" / f"d{d:02}"
        p.mkdir(parents=True)
        for f in range(200):
            (p / f"l{f:03}").write_bytes(b"x")
    # Many empty files for the memory workload (200k).
    for d in range(400):
        p = lower / "many" / f"d{d:03}"
        p.mkdir(parents=True)
        for f in range(500):
            (p / f"e{f:03}").touch()
    # A source tree in git for the build-like mix.
    src = lower / "src"
    regs = sorted(Path.home().glob(".cargo/registry/src/*"))
    tree = regs[0] if regs else Path("/usr/include")
    shutil.copytree(tree, src / "tree", symlinks=True)
    sh(f"cd {src} && git init -q && git add -A && git -c user.email=b@x -c user.name=b commit -qm fixture")
    # A small C project to compile.
    c = lower / "cproj"
    c.mkdir()
    for i in range(40):
        (c / f"m{i}.c").write_text(
            f"#include <stdio.h>\nint f{i}(int x) {{ int s = 0; for (int j = 0; j < x; j++) s += j * {i}; return s; }}\n")
    (c / "main.c").write_text("int main(void) { return 0; }\n")
    objs = " ".join(f"m{i}.o" for i in range(40))
    (c / "Makefile").write_text(f"prog: main.o {objs}\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O2 -c $< -o $@\n")
    # The tarball to unpack (the small tree), kept outside the layers.
    sh(f"tar -C {lower} -cf {base}/small.tar small")
    (lower / ".done").touch()
    return lower


# ---- workloads: (name, prepare, run, drop caches first) ----------------------
# prepare(m) runs untimed on the fresh mount; run(m) is timed.

def seq_write(m):
    sh(f"dd if=/dev/zero of={m}/newbig bs=1M count={BIG_MIB} conv=fdatasync status=none")


def seq_read(m):
    sh(f"dd if={m}/big/file of=/dev/null bs=1M status=none")


def rand_read(m):
    sh(f"fio --name=r --filename={m}/big/file --rw=randread --bs=4k --size={BIG_MIB}M "
       f"--io_size=256M --ioengine=psync --readonly --output=/dev/null")


def find_stat(m):
    sh(f"find {m}/small -printf '%s %i %m\\n' > /dev/null")


def ls_lr(m):
    sh(f"ls -lR {m}/small > /dev/null")


def create_10k(m):
    sh(f"mkdir {m}/new && cd {m}/new && seq -w 1 10000 | xargs touch")


def cat_20k(m):
    sh(f"find {m}/small -type f -print0 | xargs -0 cat > /dev/null")


def untar(m):
    sh(f"mkdir {m}/untar && tar -C {m}/untar -xf {BASE}/small.tar")


def chown_r(m):
    sh(f"chown -R 1000:1000 {m}/small")


def chmod_r(m):
    sh(f"chmod -R go-r {m}/small")


def rm_prepare(m):
    # Mixed: 15k lower files plus 15k created in the upper, in the same dirs.
    sh(f"for d in {m}/rm/d*; do (cd $d && seq -w 1 200 | sed 's/^/u/' | xargs touch); done")


def rm_rf(m):
    sh(f"rm -rf {m}/rm")


def append_1(m):
    sh(f"printf x >> {m}/big/file")


def git_status(m):
    sh(f"cd {m}/src && git status --porcelain > /dev/null && git diff --stat > /dev/null")


def compile_c(m):
    sh(f"make -s -j2 -C {m}/cproj > /dev/null")


def parallel(n):
    def run(m):
        procs = [subprocess.Popen(
            f"for d in $(seq -w {i} {n} 99); do cat {m}/small/d0$d/* > /dev/null; "
            f"mkdir -p {m}/par{i}; cp {m}/small/d0$d/f00* {m}/par{i}/; done",
            shell=True, executable="/bin/bash") for i in range(n)]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("parallel client failed")
    return run


WORKLOADS = [
    ("write 1 GiB + fdatasync", None, seq_write, False),
    ("read 1 GiB lower, cold", None, seq_read, True),
    ("read 1 GiB lower, warm", seq_read, seq_read, False),
    ("random 4k reads 256 MiB (fio)", None, rand_read, True),
    ("find + stat 20k, cold", None, find_stat, True),
    ("find + stat 20k, warm", find_stat, find_stat, False),
    ("ls -lR 20k", None, ls_lr, False),
    ("create 10k files", None, create_10k, False),
    ("cat 20k lower files", None, cat_20k, True),
    ("untar 20k files", None, untar, False),
    ("chown -R 20k (copy-up)", None, chown_r, False),
    ("chmod -R 20k (copy-up)", None, chmod_r, False),
    ("rm -rf 30k mixed", rm_prepare, rm_rf, False),
    ("append 1 byte to 1 GiB lower", None, append_1, False),
    ("git status + diff", None, git_status, True),
    ("compile 41 C files", None, compile_c, False),
    ("1 client: cat+copy 20k", None, parallel(1), False),
    ("8 clients: cat+copy 20k", None, parallel(8), False),
]


def run_once(impl, lower, base, prepare, run, cold):
    upper, work, mnt = base / f"u-{impl}", base / f"w-{impl}", base / f"m-{impl}"
    for p in (upper, work):
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir()
    mnt.mkdir(exist_ok=True)
    mount(impl, lower, upper, work, mnt)
    try:
        if prepare:
            prepare(mnt)
        if cold:
            drop_caches()
        t = time.perf_counter()
        run(mnt)
        return time.perf_counter() - t
    finally:
        umount(mnt)


def memory(impl, lower, base):
    """Daemon peak RSS after walking 200k files, and RSS after dropping caches."""
    if impl == "kernel":
        return None
    upper, work, mnt = base / f"u-{impl}", base / f"w-{impl}", base / f"m-{impl}"
    for p in (upper, work):
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir()
    mount(impl, lower, upper, work, mnt)
    try:
        sh(f"find {mnt}/many -printf '%i\\n' > /dev/null")
        pid = daemon_pid(mnt)
        peak = rss_kib(pid, "VmHWM") if pid else 0
        drop_caches()
        time.sleep(2)
        after = rss_kib(pid, "VmRSS") if pid else 0
        return peak / 1024, after / 1024
    finally:
        umount(mnt)


def main():
    global BASE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--disk", action="store_true", help="layers on /var/tmp instead of tmpfs")
    ap.add_argument("--only", default="", help="comma-separated substrings of workload names")
    ap.add_argument("--impls", default="ovlfs,kernel,fo1,fo2")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/run.py: run as root (it mounts)")
    impls = a.impls.split(",")
    ensure_peers(impls)
    BASE = Path("/var/tmp/ovlfs-bench") if a.disk else Path("/tmp/ovlfs-bench")
    BASE.mkdir(parents=True, exist_ok=True)
    if not a.disk and sh(f"mountpoint -q {BASE}", check=False).returncode != 0:
        sh(f"mount -t tmpfs -o size=12G ovlfs-bench {BASE}")
    lower = build_fixture(BASE)
    only = [s for s in a.only.split(",") if s]
    chosen = [w for w in WORKLOADS if not only or any(s in w[0] for s in only)]
    times = {w[0]: {i: [] for i in impls} for w in chosen}
    for rep in range(a.reps):
        for name, prep, run, cold in chosen:
            for impl in impls:
                t = run_once(impl, lower, BASE, prep, run, cold)
                times[name][impl].append(t)
                log(f"rep {rep + 1} {name:<32} {impl:<6} {t:8.3f} s")
    mem = {i: memory(i, lower, BASE) for i in impls} if not only or any("memory" in s for s in only) else {}
    report(times, impls, mem)


def report(times, impls, mem):
    label = {"ovlfs": "ovlfs", "kernel": "kernel", "fo1": "fo-1.10", "fo2": "fo-2.0"}
    cols = [label[i] for i in impls]
    ratios = [i for i in ("kernel", "fo1", "fo2") if i in impls and "ovlfs" in impls]
    head = f"| workload | " + " | ".join(cols) + " | " + " | ".join(f"ovlfs/{label[i]}" for i in ratios) + " |"
    print(head)
    print("|" + "---|" * (1 + len(cols) + len(ratios)))
    for name, by in times.items():
        med = {i: statistics.median(v) for i, v in by.items()}
        cells = [f"{med[i]:.3f}" for i in impls]
        rs = [f"{med['ovlfs'] / med[i]:.2f}" if med[i] > 0 else "-" for i in ratios]
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(rs) + " |")
    one = times.get("1 client: cat+copy 20k")
    eight = times.get("8 clients: cat+copy 20k")
    if one and eight:
        for i in impls:
            # The 8 clients split the same work the 1 client does alone.
            s = statistics.median(one[i]) / statistics.median(eight[i])
            print(f"scaling {label[i]}: 8 clients give {s:.2f}x the throughput of 1")
    for i, v in mem.items():
        if v:
            print(f"memory {label[i]}: peak RSS {v[0]:.1f} MiB after walking 200k files, {v[1]:.1f} MiB after drop_caches")


if __name__ == "__main__":
    main()
