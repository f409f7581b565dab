//! Scripted scenarios for the data-path operations: fsync/fdatasync,
//! fallocate (allocate and punch), lseek SEEK_DATA/SEEK_HOLE (on the
//! fixture's sparse file, after copy-up and after punching), copy_file_range
//! (lower read-only fd into an upper file, and between upper files), mmap
//! (shared read of lower files, shared write + msync + read back) and statfs.
//! The fixture's `sparse.bin` has data at [0, 4 KiB) and [3 MiB, 3 MiB + 4 KiB).
use crate::common::ops::{Op, OpenMode};
use crate::scenarios::Scenario;
use crate::steps::*;

const MIB: u64 = 1 << 20;

#[rustfmt::skip]
pub fn scenarios() -> Vec<Scenario> {
    use OpenMode::*;
    let rw = |name, steps| Scenario {
        name,
        read_only: false,
        steps,
    };
    vec![
        rw(
            "io_seek_lower",
            vec![
                ok(fdopen(0, "sparse.bin", RdOnly)), ok(seek_data(0, 0)), ok(seek_hole(0, 0)),
                ok(seek_data(0, 4096)), ok(seek_hole(0, 3 * MIB)), ok(seek_data(0, 100)),
                er(seek_data(0, 3 * MIB + 4096), "ENXIO"), er(seek_hole(0, 4 * MIB), "ENXIO"),
                ok(fsync(0)), ok(fdatasync(0)), er(falloc(0, 0, 100), "EBADF"), er(punch(0, 0, 4096), "EBADF"),
                ok(fdopen(1, "big.bin", RdOnly)), ok(seek_hole(1, 0)), ok(seek_data(1, MIB)),
                ok(fdopen(3, "fifo", RdOnly)), er(seek_data(3, 0), "ESPIPE"), any(fsync(3)),
                er(falloc(3, 0, 10), "EBADF"), ok(fdopen(3, "empty.txt", RdOnly)), er(seek_data(3, 0), "ENXIO"),
                er(seek_hole(3, 0), "ENXIO"), ok(fdopen(3, "a", RdOnly)), ok(fsync(3)), ok(fdatasync(3)),
                // Last: the kernel gives EINVAL on a directory.
                any(seek_data(3, 0)), any(seek_hole(3, 0)),
            ],
        ),
        // Where the copy-up of a sparse file leaves holes (the kernel copies
        // data in 1 MiB chunks).
        rw(
            "io_seek_copy_up",
            vec![
                ok(fdopen(1, "sparse.bin", RdWr)), ok(seek_hole(1, 0)), ok(seek_data(1, 4096)),
                ok(seek_hole(1, 3 * MIB)), ok(punch(1, 0, 4096)), ok(seek_data(1, 0)), ok(seek_hole(1, 0)),
            ],
        ),
        // fallocate and punching, on a copied-up file emptied by a punch
        // first (so the copy-up's own hole layout does not matter) and on
        // files created in the upper.
        rw(
            "io_falloc_punch",
            vec![
                ok(fdopen(0, "sparse.bin", RdOnly)), ok(fdopen(1, "sparse.bin", RdWr)), ok(punch(1, 0, 8 * MIB)),
                er(seek_data(1, 0), "ENXIO"), ok(seek_hole(1, 0)), ok(fdread(0)), ok(fdwrite(1, 3 * MIB, 4096)),
                ok(fdwrite(1, 0, 4096)), ok(seek_hole(1, 0)), ok(seek_data(1, 4096)), ok(seek_hole(1, 3 * MIB)),
                ok(punch(1, 3 * MIB + 100, 200)), ok(seek_hole(1, 3 * MIB)), ok(fdread(1)), ok(fdread(0)),
                ok(falloc(1, 5 * MIB, 4096)), ok(fdstat(1)), any(seek_data(1, 4 * MIB)), any(seek_hole(1, 5 * MIB)),
                ok(falloc(1, 0, 100)), ok(fdstat(0)), ok(fsync(1)), ok(fdatasync(1)), ok(fdwrite(1, 2 * MIB, 10)),
                ok(seek_data(1, MIB)), ok(seek_hole(1, 2 * MIB)), ok(punch(1, 0, 8 * MIB)), er(seek_data(1, 0), "ENXIO"),
                ok(fdstat(1)), ok(read("sparse.bin")), ok(stat("sparse.bin")),
                ok(fdopen(2, "newfile", RdWrCreat)), ok(falloc(2, 0, 10_000)), er(seek_data(2, 0), "ENXIO"),
                ok(seek_hole(2, 0)), ok(fdwrite(2, 100_000, 5)), ok(seek_hole(2, 0)), ok(seek_data(2, 20_000)),
                ok(punch(2, 4096, 4096)), ok(fdread(2)), ok(fsync(2)), ok(fdstat(2)),
                ok(fdopen(3, "empty.txt", RdWr)), er(seek_data(3, 0), "ENXIO"), ok(falloc(3, 10, 10)),
                ok(seek_hole(3, 0)), ok(fdstat(3)), ok(fdopen(3, "merged/common", WrOnly)), ok(falloc(3, 0, 3 * MIB)),
                ok(fdstat(3)), ok(read("merged/common")),
            ],
        ),
        rw(
            "io_copy_range",
            vec![
                ok(fdopen(2, "merged/common", RdOnly)), ok(fdopen(3, "newfile", RdWrCreat)),
                ok(cfr(2, 3, 0, 0, 100)), ok(fdread(3)), ok(fdopen(2, "big.bin", RdOnly)),
                ok(cfr(2, 3, 4096, 10, 70_000)), ok(cfr(2, 3, MIB, MIB, MIB)), ok(fdread(3)), ok(read("newfile")),
                ok(fdstat(3)), er(cfr(3, 2, 0, 0, 10), "EBADF"), ok(fdopen(1, "merged/l2file", RdWr)),
                ok(cfr(3, 1, 0, 100, 5000)), er(cfr(1, 1, 0, 10, 100), "EINVAL"), ok(cfr(1, 1, 0, 10_000, 100)),
                ok(fdread(1)), ok(read("merged/l2file")), ok(fdopen(0, "sparse.bin", RdOnly)),
                ok(cfr(0, 3, 0, 0, 4 * MIB)), ok(fdread(3)), ok(fdopen(0, "a/b/l2file", RdOnly)),
                ok(fdopen(1, "a/b/l1file", Append)), any(cfr(0, 1, 0, 0, 10)), ok(fdopen(1, "empty.txt", WrOnly)),
                ok(cfr(0, 1, 0, 0, 10)), ok(cfr(0, 1, 100, 0, 10)), ok(read("empty.txt")), ok(stat("empty.txt")),
                ok(fdopen(0, "a", RdOnly)), any(cfr(0, 3, 0, 0, 10)), ok(fdopen(0, "fifo", RdOnly)),
                any(cfr(0, 3, 0, 0, 10)), ok(fdopen(0, "merged/sub/x", RdOnly)), ok(fdopen(1, "merged/sub/y", RdWr)),
                ok(cfr(0, 1, 0, 1, 2)), ok(fdread(1)), ok(fdread(0)),
            ],
        ),
        rw(
            "io_mmap_statfs",
            vec![
                ok(mmap_read("big.bin")), ok(mmap_read("merged/common")), ok(mmap_read("sparse.bin")),
                ok(mmap_read("empty.txt")), ok(mmap_read("sym_rel")), any(mmap_read("fifo")), any(mmap_read("a")),
                er(mmap_read("hidden.txt"), "ENOENT"), ok(fdopen(0, "merged/l1file", RdOnly)),
                ok(mmap_write("merged/l1file", 10, 100)), ok(fdread(0)), ok(read("merged/l1file")),
                ok(stat("merged/l1file")), ok(mmap_write("a/b/c/deep.txt", 3, 4)),
                ok(mmap_write("big.bin", MIB + 7, 5000)), ok(read("big.bin")), ok(mmap_read("big.bin")),
                ok(mmap_write("empty.txt", 0, 10)), er(mmap_write("a", 0, 1), "EISDIR"),
                ok(mmap_write("opq/new1", 4, 100)), ok(mmap_write("hl1", 0, 3)), ok(read("hl2")), ok(stat("hl1")),
                ok(create("newf")), ok(truncate("newf", 10_000)), ok(mmap_write("newf", 8000, 4000)),
                ok(mmap_read("newf")), ok(stat("newf")),
                ok(statfs("")), ok(statfs("merged/common")), ok(statfs("a/b/c/d")), ok(statfs("fifo")),
                ok(statfs("sym_dir")), er(statfs("hidden.txt"), "ENOENT"), er(statfs("sym_abs"), "ENOENT"),
                ok(touch_now("merged/common")), ok(stat("merged/common")), ok(touch_now("a/b")), ok(stat("a/b")),
                er(touch_now("hidden.txt"), "ENOENT"), ok(Op::FdClose { slot: 0 }),
            ],
        ),
    ]
}
