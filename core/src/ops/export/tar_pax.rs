//! The PAX records tar export writes before an entry: extended attributes
//! as `SCHILY.xattr.<name>` (raw value), POSIX ACLs as `SCHILY.acl.access`
//! and `SCHILY.acl.default` in their text form (what GNU tar `--acls` and
//! bsdtar read), and sparse files in the PAX 1.0 sparse format (GNU tar
//! and bsdtar recreate the holes).

use crate::format::tree::{Entry, Extent, Xattr};

/// The xattr holding a file's access ACL (kernel binary form).
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The xattr holding a directory's default ACL.
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// One record per extended attribute; ACLs as their text.
pub(super) fn xattr_records(xattrs: &[Xattr]) -> Vec<(String, Vec<u8>)> {
    xattrs
        .iter()
        .filter_map(|x| {
            let acl = |key: &str| Some((key.to_string(), acl_text(&x.value)?.into_bytes()));
            match x.name.as_slice() {
                ACL_ACCESS => acl("SCHILY.acl.access"),
                ACL_DEFAULT => acl("SCHILY.acl.default"),
                name => Some((
                    format!("SCHILY.xattr.{}", String::from_utf8_lossy(name)),
                    x.value.clone(),
                )),
            }
        })
        .collect()
}

/// A POSIX ACL in the kernel's xattr form (version 2: a 4-byte header,
/// then 8-byte entries of tag, permissions and id, little-endian) as
/// `acl_to_text` short form with numeric ids, e.g.
/// `user::rw-,user:65534:r--,group::r--,mask::r--,other::r--`. `None` if
/// it is not one.
fn acl_text(value: &[u8]) -> Option<String> {
    let (header, entries) = value.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*header) != 2 || entries.len() % 8 != 0 {
        return None;
    }
    let mut out = Vec::new();
    for e in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let who = match tag {
            0x01 => "user:".to_string(),
            0x02 => format!("user:{id}"),
            0x04 => "group:".to_string(),
            0x08 => format!("group:{id}"),
            0x10 => "mask:".to_string(),
            0x20 => "other:".to_string(),
            _ => return None,
        };
        let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
        out.push(format!(
            "{who}:{}{}{}",
            bit(4, 'r'),
            bit(2, 'w'),
            bit(1, 'x')
        ));
    }
    Some(out.join(","))
}

/// How a sparse file goes into the archive (PAX sparse format 1.0).
pub(super) struct Sparse {
    /// The `GNU.sparse.*` records.
    pub records: Vec<(String, Vec<u8>)>,
    /// The member's name in its header (the real one is a record).
    pub member_name: Vec<u8>,
    /// The map of data regions that starts the member's data, padded to
    /// a 512-byte block; the regions' bytes follow it.
    pub map: Vec<u8>,
}

impl Sparse {
    /// The records, header name and map of sparse file `e` at `path`.
    pub fn of(e: &Entry, path: &[u8]) -> Self {
        let mut regions: Vec<(u64, u64)> = Vec::new();
        let mut at = 0u64;
        for extent in e.extents() {
            match extent {
                Extent::Hole(length) => at += length,
                Extent::Data(c) => {
                    match regions.last_mut() {
                        Some((start, length)) if *start + *length == at => *length += c.raw_length,
                        _ => regions.push((at, c.raw_length)),
                    }
                    at += c.raw_length;
                }
            }
        }
        if regions
            .last()
            .is_none_or(|(start, length)| start + length < e.size)
        {
            // Ends in a hole: a last empty region at the end gives the size.
            regions.push((e.size, 0));
        }
        let mut map = format!("{}\n", regions.len());
        for (start, length) in &regions {
            map.push_str(&format!("{start}\n{length}\n"));
        }
        let mut map = map.into_bytes();
        map.resize(map.len().div_ceil(512) * 512, 0);
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let mut member_name = dir.to_vec();
        member_name.extend_from_slice(b"GNUSparseFile.0/");
        member_name.extend_from_slice(name);
        let records = vec![
            ("GNU.sparse.major".to_string(), b"1".to_vec()),
            ("GNU.sparse.minor".to_string(), b"0".to_vec()),
            ("GNU.sparse.name".to_string(), path.to_vec()),
            (
                "GNU.sparse.realsize".to_string(),
                e.size.to_string().into_bytes(),
            ),
        ];
        Self {
            records,
            member_name,
            map,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_acls_read_as_their_text_form() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 65534),
            (4, 5, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&v).as_deref(),
            Some("user::rw-,user:65534:r--,group::r-x,mask::r-x,other::---")
        );
        assert_eq!(acl_text(&v[..7]), None, "cut");
        assert_eq!(acl_text(b"\x01\0\0\0"), None, "other version");
    }
}
