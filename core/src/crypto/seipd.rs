//! The SEIPD v1 packet ([RFC 9580 §5.13.1]) around one Literal Data packet,
//! written and read here with OpenSSL's AES-256-CFB and SHA-1.
//!
//! ```text
//! SEIPD v1:  version 1, then AES-256-CFB (IV zero, no resync) of
//!            prefix (16 random octets + the last two repeated)
//!            Literal Data packet: 'b', no file name, date 0, payload
//!            MDC packet: 0xD3 0x14, SHA-1(prefix .. literal packet, 0xD3 0x14)
//! ```
//!
//! Why not sequoia's streaming `Encryptor` / `Decryptor`: sequoia computes
//! the MDC with collision-detecting SHA-1 (sha1collisiondetection), which
//! took about 75% of the time to encrypt or decrypt a blob here and held
//! both near 100 MiB/s per core; the detection protects signatures over
//! attacker-chosen data and adds nothing to an MDC inside the encryption.
//! OpenSSL's SHA-1 and AES use the CPU's SHA and AES instructions. The bytes
//! are the same OpenPGP any implementation reads (GnuPG 2.2 included), and
//! only one exact shape is read here: anything else (another packet
//! layout, a failed check) returns `None` and the caller hands the message
//! to sequoia, which reads every valid message and names what is wrong.
//!
//! [RFC 9580 §5.13.1]: https://www.rfc-editor.org/rfc/rfc9580.html#section-5.13.1

use crate::error::{Error, Result};
use openssl::symm::{Cipher, Crypter, Mode};
use std::borrow::Cow;

const TAG_PKESK: u8 = 1;
const TAG_LITERAL: u8 = 11;
const TAG_SEIPD: u8 = 18;
/// The MDC packet's header, which the MDC hash covers too.
const MDC_HEADER: [u8; 2] = [0xD3, 0x14];
const SHA1_LEN: usize = 20;
/// Random prefix: one AES block plus its last two octets repeated.
const PREFIX_LEN: usize = 18;
const AES_BLOCK: usize = 16;
/// A Literal Data body's fields before the data: binary format, an empty
/// file name, date zero.
const LITERAL_FIELDS: [u8; 6] = [b'b', 0, 0, 0, 0, 0];

/// Appends one SEIPD v1 packet holding `payload` as literal data, encrypted
/// with `key` (an AES-256 session key).
pub(crate) fn seal(key: &[u8], payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let wrap = |e: openssl::error::ErrorStack| Error::pgp("encrypting a blob", e);
    let mut literal = Vec::with_capacity(16);
    put_header(
        TAG_LITERAL,
        LITERAL_FIELDS.len() + payload.len(),
        &mut literal,
    )?;
    literal.extend_from_slice(&LITERAL_FIELDS);

    let mut prefix = [0u8; PREFIX_LEN];
    openssl::rand::rand_bytes(&mut prefix[..AES_BLOCK]).map_err(wrap)?;
    prefix[AES_BLOCK] = prefix[AES_BLOCK - 2];
    prefix[AES_BLOCK + 1] = prefix[AES_BLOCK - 1];

    let mut sha = openssl::sha::Sha1::new();
    for part in [&prefix[..], &literal, payload, &MDC_HEADER] {
        sha.update(part);
    }
    let mdc = sha.finish();

    let plain_len = PREFIX_LEN + literal.len() + payload.len() + MDC_HEADER.len() + SHA1_LEN;
    put_header(TAG_SEIPD, 1 + plain_len, out)?;
    out.push(1);
    let start = out.len();
    // CFB is a stream mode: output as long as input (the spare block is
    // what `Crypter::update` asks for).
    out.resize(start + plain_len + AES_BLOCK, 0);
    let mut crypter = Crypter::new(
        Cipher::aes_256_cfb128(),
        Mode::Encrypt,
        key,
        Some(&[0u8; AES_BLOCK]),
    )
    .map_err(wrap)?;
    let mut at = start;
    for part in [&prefix[..], &literal, payload, &MDC_HEADER, &mdc] {
        at += crypter.update(part, &mut out[at..]).map_err(wrap)?;
    }
    at += crypter.finalize(&mut out[at..]).map_err(wrap)?;
    out.truncate(at);
    if at != start + plain_len {
        return Err(Error::pgp(
            "encrypting a blob",
            format!("AES-CFB wrote {} octets for {plain_len}", at - start),
        ));
    }
    Ok(())
}

/// A message of the shape coffer writes: PKESK packets, then one SEIPD
/// packet and nothing after it.
pub(crate) struct Split<'a> {
    /// The PKESK packets' bytes, as stored.
    pub pkesks: &'a [u8],
    /// The SEIPD packet's body (joined if it came in partial lengths).
    pub seipd: Cow<'a, [u8]>,
}

/// Splits `message` as [`Split`] says, or `None` if it has another shape.
pub(crate) fn split(message: &[u8]) -> Option<Split<'_>> {
    let mut rest = message;
    loop {
        let packet = next_packet(rest)?;
        match packet.tag {
            TAG_PKESK => rest = packet.rest,
            TAG_SEIPD if packet.rest.is_empty() && rest.len() < message.len() => {
                return Some(Split {
                    pkesks: &message[..message.len() - rest.len()],
                    seipd: packet.body,
                });
            }
            _ => return None,
        }
    }
}

/// Decrypts a SEIPD v1 body with `key` (AES-256) and returns the literal
/// data, or `None` unless the quick check and the MDC hold and the plaintext
/// is exactly one Literal Data packet.
pub(crate) fn open(key: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let (&version, ciphertext) = body.split_first()?;
    if version != 1 || ciphertext.len() < PREFIX_LEN + MDC_HEADER.len() + SHA1_LEN {
        return None;
    }
    let mut crypter = Crypter::new(
        Cipher::aes_256_cfb128(),
        Mode::Decrypt,
        key,
        Some(&[0u8; AES_BLOCK]),
    )
    .ok()?;
    let mut plain = vec![0u8; ciphertext.len() + AES_BLOCK];
    let mut n = crypter.update(ciphertext, &mut plain).ok()?;
    n += crypter.finalize(&mut plain[n..]).ok()?;
    plain.truncate(n);
    if plain[AES_BLOCK - 2..AES_BLOCK] != plain[AES_BLOCK..PREFIX_LEN] {
        return None;
    }
    let (hashed, mdc) = plain.split_at(plain.len() - SHA1_LEN);
    if !hashed.ends_with(&MDC_HEADER) {
        return None;
    }
    if !openssl::memcmp::eq(&openssl::sha::sha1(hashed), mdc) {
        return None;
    }
    let packets = &hashed[PREFIX_LEN..hashed.len() - MDC_HEADER.len()];
    let RawPacket { tag, body, rest } = next_packet(packets)?;
    if tag != TAG_LITERAL || !rest.is_empty() {
        return None;
    }
    let literal = body;
    // format, file name length, file name, 4-octet date, data
    let name_len = usize::from(*literal.get(1)?);
    literal.get(2 + name_len + 4..).map(<[u8]>::to_vec)
}

/// Appends a new-format packet header for a body of `len` octets.
fn put_header(tag: u8, len: usize, out: &mut Vec<u8>) -> Result<()> {
    out.push(0xC0 | tag);
    match len {
        0..=191 => out.push(len as u8),
        192..=8383 => {
            let l = len - 192;
            out.push((l >> 8) as u8 + 192);
            out.push(l as u8);
        }
        _ => {
            let l = u32::try_from(len).map_err(|_| {
                Error::pgp(
                    "encrypting a blob",
                    format!("{len} octets is too long for one packet"),
                )
            })?;
            out.push(255);
            out.extend_from_slice(&l.to_be_bytes());
        }
    }
    Ok(())
}

/// One packet read off the front of a buffer.
struct RawPacket<'a> {
    tag: u8,
    /// The body, partial lengths joined.
    body: Cow<'a, [u8]>,
    /// What follows the packet.
    rest: &'a [u8],
}

/// The first packet of `buf` (new format only).
fn next_packet(buf: &[u8]) -> Option<RawPacket<'_>> {
    let (&first, mut rest) = buf.split_first()?;
    if first & 0xC0 != 0xC0 {
        return None;
    }
    let mut joined: Option<Vec<u8>> = None;
    loop {
        let (len, partial, after) = body_length(rest)?;
        if after.len() < len {
            return None;
        }
        let (part, tail) = after.split_at(len);
        if partial {
            joined.get_or_insert_with(Vec::new).extend_from_slice(part);
            rest = tail;
            continue;
        }
        let body = match joined {
            None => Cow::Borrowed(part),
            Some(mut v) => {
                v.extend_from_slice(part);
                Cow::Owned(v)
            }
        };
        return Some(RawPacket {
            tag: first & 0x3F,
            body,
            rest: tail,
        });
    }
}

/// A new-format body length: (octets, whether more parts follow, the rest).
fn body_length(buf: &[u8]) -> Option<(usize, bool, &[u8])> {
    let (&o, rest) = buf.split_first()?;
    match o {
        0..=191 => Some((usize::from(o), false, rest)),
        192..=223 => {
            let (&o2, rest) = rest.split_first()?;
            Some((
                ((usize::from(o) - 192) << 8) + usize::from(o2) + 192,
                false,
                rest,
            ))
        }
        224..=254 => Some((1usize << (o & 0x1F), true, rest)),
        255 => {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            Some((usize::try_from(len).ok()?, false, &rest[4..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_round_trip_at_every_boundary() {
        for len in [0, 1, 191, 192, 193, 8383, 8384, 70_000, 16 << 20] {
            let mut buf = Vec::new();
            put_header(TAG_LITERAL, len, &mut buf).unwrap();
            let (n, partial, rest) = body_length(&buf[1..]).unwrap();
            assert_eq!((n, partial, rest.len()), (len, false, 0), "length {len}");
        }
    }

    #[test]
    fn partial_lengths_are_joined() {
        // 512 octets in a partial part (0xE9 = 2^9), then 3 more.
        let mut packet = vec![0xC0 | TAG_LITERAL, 0xE9];
        packet.extend(std::iter::repeat_n(7u8, 512));
        packet.extend_from_slice(&[3, 1, 2, 3, 0xC1]);
        let p = next_packet(&packet).unwrap();
        assert_eq!(p.tag, TAG_LITERAL);
        assert_eq!(p.body.len(), 515);
        assert_eq!(&p.body[512..], &[1, 2, 3]);
        assert_eq!(p.rest, &[0xC1]);
        // A part longer than what is left is no packet.
        assert!(next_packet(&packet[..300]).is_none());
    }

    #[test]
    fn sealed_packets_open_and_any_flipped_bit_is_refused() {
        let key = [9u8; 32];
        for len in [0usize, 1, 100, 5000, 100_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let mut packet = Vec::new();
            seal(&key, &payload, &mut packet).unwrap();
            let message = [&[0xC0 | TAG_PKESK, 0][..], &packet].concat();
            let parts = split(&message).unwrap();
            assert_eq!(parts.pkesks, &[0xC0 | TAG_PKESK, 0]);
            let seipd = parts.seipd.into_owned();
            assert_eq!(open(&key, &seipd).as_deref(), Some(&payload[..]));
            assert!(open(&[8u8; 32], &seipd).is_none(), "wrong key opened");
            for at in (0..seipd.len()).step_by(seipd.len() / 97 + 1) {
                let mut bad = seipd.to_vec();
                bad[at] ^= 0x10;
                assert!(open(&key, &bad).is_none(), "flip at {at} of {len}");
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_sequoia() {
        let mut packet = Vec::new();
        seal(&[1u8; 32], b"x", &mut packet).unwrap();
        assert!(split(&packet).is_none(), "no PKESK");
        let pkesk = [0xC1, 0];
        assert!(
            split(&[&pkesk[..], &packet, &pkesk].concat()).is_none(),
            "trailing packet"
        );
        let mut old_format = packet.clone();
        old_format[0] = 0x84;
        assert!(split(&[&pkesk[..], &old_format].concat()).is_none());
        assert!(split(&[&pkesk[..], &packet].concat()).is_some());
    }
}
