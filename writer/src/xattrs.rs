//! Extended attributes of a source entry: every name `llistxattr(2)` gives
//! (`user.`; `security.`: file capabilities, SELinux labels; `trusted.` when
//! run as root; `system.posix_acl_access` and `system.posix_acl_default`:
//! POSIX ACLs), each with its value, read without following a symlink.
//! Most files have none: that costs one `llistxattr` call.

use coffer_core::format::tree::Xattr;
use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A first buffer big enough for most attribute lists and values, so one
/// call usually does (a size query first would double the calls).
const FIRST_TRY: usize = 1024;

/// The attributes of `path` itself, sorted by name. A file system without
/// extended attributes has none; one removed between listing and reading
/// is left out.
pub(crate) fn read(path: &Path) -> io::Result<Vec<Xattr>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("the path contains a NUL byte"))?;
    let names = match sized(|buf| {
        // SAFETY: `c` is a valid path and `buf` is writable for its length.
        unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    }) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        other => other?,
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::other("a NUL in a name"))?;
        match value(&c, &cname) {
            Ok(value) => out.push(Xattr {
                name: name.to_vec(),
                value,
            }),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => {
                let name = String::from_utf8_lossy(name);
                return Err(io::Error::new(e.kind(), format!("{name}: {e}")));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The value of attribute `name` of `path` (not following a symlink).
fn value(path: &CStr, name: &CStr) -> io::Result<Vec<u8>> {
    sized(|buf| {
        // SAFETY: valid C strings; `buf` is writable for its length.
        unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// Runs `call` (a list or get call that fills a buffer and returns the
/// length, or -1) with a buffer that fits, growing it on ERANGE (the list
/// or value grew in between).
fn sized(call: impl Fn(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FIRST_TRY];
    loop {
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
        // Ask for the size (an empty buffer), then try again with it.
        let size = call(&mut []);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        buf = vec![0u8; (size as usize).max(buf.len() * 2)];
    }
}

/// `xattrs` split into those readers take ([`Xattr::is_storable`]) and a
/// description of each they would refuse (an S3 object's metadata can pass
/// Linux's limits; a tree holding one would be refused whole).
pub(crate) fn storable(mut xattrs: Vec<Xattr>) -> (Vec<Xattr>, Vec<String>) {
    let mut refused = Vec::new();
    xattrs.retain(|x| {
        let ok = x.is_storable();
        if !ok {
            refused.push(format!(
                "{:?} ({} bytes of name, {} of value): past Linux's limits (255-byte \
                 name, 64 KiB value), which readers enforce",
                String::from_utf8_lossy(&x.name[..x.name.len().min(64)]),
                x.name.len(),
                x.value.len()
            ));
        }
        ok
    });
    (xattrs, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each limit readers enforce on an attribute: what passes it is left
    /// out and described; the rest is kept as it was.
    #[test]
    fn attributes_readers_would_refuse_are_left_out_and_named() {
        let x = |name: Vec<u8>, value: usize| Xattr {
            name,
            value: vec![b'v'; value],
        };
        let long_name = [b"user.s3.meta.".to_vec(), vec![b'k'; 1024]].concat();
        let (kept, refused) = storable(vec![
            x(b"user.ok".to_vec(), 10),
            x(long_name, 1),
            x(b"user.big".to_vec(), 64 * 1024 + 1),
            x(b"user.a\0b".to_vec(), 1),
            x(Vec::new(), 1),
            x(vec![b'n'; 255], 64 * 1024),
        ]);
        assert_eq!(kept.len(), 2, "{refused:?}");
        assert_eq!(kept[0].name, b"user.ok");
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert!(refused[0].contains("1037 bytes of name"), "{}", refused[0]);
        assert!(refused[1].contains("65537 of value"), "{}", refused[1]);
    }

    fn set(path: &Path, name: &str, value: &[u8]) -> bool {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let n = CString::new(name).unwrap();
        // SAFETY: valid C strings and a readable value buffer.
        unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            ) == 0
        }
    }

    #[test]
    fn reads_every_attribute_sorted_with_values_longer_than_the_first_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(read(&f).unwrap().is_empty());
        let long = vec![7u8; 3 * FIRST_TRY];
        if !set(&f, "user.zz", b"last") {
            eprintln!("no user xattrs on this file system; skipped");
            return;
        }
        assert!(set(&f, "user.long", &long));
        assert!(set(&f, "user.empty", b""));
        let got = read(&f).unwrap();
        let names: Vec<&[u8]> = got.iter().map(|x| x.name.as_slice()).collect();
        assert_eq!(names, [&b"user.empty"[..], b"user.long", b"user.zz"]);
        assert_eq!(got[1].value, long);
        assert_eq!(got[2].value, b"last");
    }
}
