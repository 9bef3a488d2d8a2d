//! Where a sparse source file holds data: `SEEK_DATA` / `SEEK_HOLE`, so the
//! writer reads the data and skips the holes (a 100 GiB disk image with
//! 10 MiB in it is read as 10 MiB).

use std::os::fd::AsRawFd;

/// The byte ranges of `file` (of `size` bytes, `blocks` 512-byte blocks
/// allocated) that hold data, in order; `None` when it has no holes to
/// skip: fully allocated (the usual case, told by `st_blocks` without a
/// system call), or on a file system that cannot say.
pub(crate) fn data_ranges(
    file: &std::fs::File,
    size: u64,
    blocks: u64,
) -> std::io::Result<Option<Vec<(u64, u64)>>> {
    if blocks.saturating_mul(512) >= size {
        return Ok(None);
    }
    let fd = file.as_raw_fd();
    let seek = |offset: u64, whence: i32| -> std::io::Result<Option<u64>> {
        let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
        // SAFETY: lseek on an open descriptor has no other preconditions.
        let at = unsafe { libc::lseek(fd, offset, whence) };
        if at >= 0 {
            return Ok(Some(at as u64));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None), // no data after offset
            _ => Err(e),
        }
    };
    let mut ranges = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match seek(at, libc::SEEK_DATA) {
            Ok(Some(start)) if start < size => start,
            Ok(_) => break,
            // Not supported here: read it all.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        ranges.push((start, end));
        at = end;
    }
    Ok(Some(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn holes_are_skipped_and_dense_files_are_not_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sparse");
        let file = std::fs::File::create(&path).expect("create");
        file.write_all_at(b"head", 0).expect("write");
        file.write_all_at(b"middle", 64 << 20).expect("write");
        file.set_len(200 << 20).expect("extend");
        let meta = file.metadata().expect("stat");
        let ranges = data_ranges(&file, meta.size(), meta.blocks())
            .expect("seek")
            .expect("the test directory's file system has holes");
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        assert!(ranges[0].0 == 0 && ranges[0].1 >= 4 && ranges[0].1 < 64 << 20);
        assert!(ranges[1].0 <= 64 << 20 && ranges[1].1 >= (64 << 20) + 6);
        assert!(ranges[1].1 < 200 << 20, "the tail is a hole");

        let dense = dir.path().join("dense");
        std::fs::write(&dense, vec![1u8; 10_000]).expect("write");
        let file = std::fs::File::open(&dense).expect("open");
        let meta = file.metadata().expect("stat");
        assert_eq!(
            data_ranges(&file, meta.size(), meta.blocks()).unwrap(),
            None
        );
    }
}
