#!/usr/bin/env bash
# Run pjdfstest on a fresh overlay (empty lower, tmpfs upper) served by either
# the kernel overlay or ovlfs, from inside the mount.
#
# Usage: tests/pjdfstest/run.sh ovlfs|kernel [TEST_PATTERN...]
#
# Environment:
#   OVLFS_BIN          ovlfs binary (default: target/release/ovlfs if newer, else target/debug/ovlfs)
#   PJDFSTEST_OUT      directory for the results (default: target/pjdfstest)
#   PJDFSTEST_TIMEOUT  seconds before the suite is killed (default: 900)
#   PJDFSTEST_NAPTIME  seconds between timestamp-changing steps (default: 0.1)
#
# Writes $PJDFSTEST_OUT/<impl>.log (full output) and $PJDFSTEST_OUT/<impl>.failed
# (one failed test name per line, sorted), prints the summary line, and exits 0
# when the suite ran to its summary (whatever it counted), non-zero when the setup
# or the suite itself broke. Needs root (mounts, user switching).
set -euo pipefail

impl=${1:-}
case "$impl" in
ovlfs | kernel) shift ;;
*)
    echo "usage: $0 ovlfs|kernel [TEST_PATTERN...]" >&2
    exit 2
    ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${PJDFSTEST_OUT:-$repo/target/pjdfstest}
timeout_s=${PJDFSTEST_TIMEOUT:-900}
naptime=${PJDFSTEST_NAPTIME:-0.1}

if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: needs root (mounts, and pjdfstest switches users)" >&2
    exit 2
fi
pjdfstest=$(command -v pjdfstest || true)
if [[ -z $pjdfstest && -x ${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest ]]; then
    pjdfstest=${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest
fi
if [[ -z $pjdfstest ]]; then
    echo "run.sh: pjdfstest not found (cargo install pjdfstest --locked)" >&2
    exit 3
fi

if [[ $impl == ovlfs ]]; then
    bin=${OVLFS_BIN:-}
    if [[ -z $bin ]]; then
        bin=$repo/target/debug/ovlfs
        if [[ -x $repo/target/release/ovlfs && (! -x $bin || $repo/target/release/ovlfs -nt $bin) ]]; then
            bin=$repo/target/release/ovlfs
        fi
    fi
    if [[ ! -x $bin ]]; then
        echo "run.sh: ovlfs binary $bin not found (cargo build, or set OVLFS_BIN)" >&2
        exit 2
    fi
fi

# The dummy users of the config below: nobody/nogroup exist on Debian; "tests" may not.
if ! getent passwd tests >/dev/null; then
    echo 'tests:x:::pjdfstest:/:/usr/sbin/nologin' | newusers
fi

mkdir -p "$out"
log=$out/$impl.log
failed=$out/$impl.failed
rm -f "$log" "$failed"

scratch=$(mktemp -d /tmp/ovlfs-pjdfstest.XXXXXX)
mnt=$scratch/m

# Abort a FUSE connection that no longer answers, so unmounting cannot hang.
fuse_abort() {
    local dev
    dev=$(mountpoint -d "$mnt" 2>/dev/null) || return 0
    if [[ -w /sys/fs/fuse/connections/${dev#*:}/abort ]]; then
        echo 1 >"/sys/fs/fuse/connections/${dev#*:}/abort" || true
    fi
}

cleanup() {
    cd /
    if mountpoint -q "$mnt"; then
        umount "$mnt" 2>/dev/null || { fuse_abort; umount -l "$mnt" || true; }
    fi
    # The ovlfs daemon holds the layers open until it exits: give it a moment.
    for _ in $(seq 50); do
        umount "$scratch" 2>/dev/null && break
        sleep 0.1
    done
    if mountpoint -q "$scratch"; then umount -l "$scratch" || true; fi
    rmdir "$scratch" 2>/dev/null || true
}
trap cleanup EXIT

mount -t tmpfs -o mode=0755 ovlfs-pjdfstest "$scratch"
mkdir "$scratch"/{lower,upper,work,m,secondary}
cat >"$scratch/pjdfstest.toml" <<TOML
[features]
posix_fallocate = {}
utimensat = {}
utime_now = {}
rename_ctime = {}
# Another file system for the EXDEV cases.
secondary_fs = "$scratch/secondary"

[settings]
# The layers are on tmpfs (nanosecond timestamps).
naptime = $naptime
# The erofs cases remount the mount point read-only, which an overlay in use refuses.
allow_remount = false

[dummy_auth]
entries = [ ["nobody", "nogroup"], ["tests", "tests"] ]
TOML

opts="lowerdir=$scratch/lower,upperdir=$scratch/upper,workdir=$scratch/work"
case "$impl" in
kernel) mount -t overlay overlay -o "$opts" "$mnt" ;;
ovlfs) "$bin" -o "$opts,allow_other" "$mnt" ;;
esac
if ! mountpoint -q "$mnt"; then
    echo "run.sh: $impl did not mount on $mnt" >&2
    exit 2
fi

echo "pjdfstest on $impl ($(findmnt -no FSTYPE "$mnt")), log in $log"
cd "$mnt"
start=$SECONDS
rc=0
RUST_BACKTRACE=0 timeout -k 10 "$timeout_s" "$pjdfstest" -c "$scratch/pjdfstest.toml" -p "$mnt" "$@" \
    >"$log" 2>&1 </dev/null || rc=$?
cd /
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    fuse_abort
    echo "run.sh: pjdfstest on $impl timed out after ${timeout_s}s; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 4
fi

grep -E '[[:space:]]FAILED$' "$log" | awk '{print $1}' | sort -u >"$failed" || true
summary=$(grep -E '^Summary: ' "$log" | tail -n 1 || true)
if [[ -z $summary ]]; then
    echo "run.sh: pjdfstest on $impl exited $rc without a summary; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 5
fi
echo "$impl: $summary ($((SECONDS - start))s)"
if [[ -s $failed ]]; then
    echo "$impl: failed tests (also in $failed):"
    sed 's/^/  /' "$failed"
fi
