//! Sealing: one complete OpenPGP message per blob, all blobs of a pack
//! under one session key (see [`crate::crypto`] for the envelope).
//!
//! A [`PackSealer`] makes the PKESK packets once and repeats their bytes in
//! front of every blob it seals, so a pack costs one public-key operation
//! per recipient; the SEIPD packet is written by `crate::crypto::seipd`.
//! Snapshots are signed by a writer inside their encryption
//! ([`seal_signed`]).

use crate::crypto::keys::{Recipients, SnapshotSigner, SYM};
use crate::crypto::seipd;
use crate::crypto::signed::write_signed_literal;
use crate::error::{Error, Result};
use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::packet::prelude::*;
use openpgp::packet::PKESK;
use openpgp::serialize::Serialize;

/// Seals blobs for one pack: one session key, PKESK packets made once.
pub struct PackSealer {
    pub(super) session_key: SessionKey,
    pub(super) pkesk_bytes: Vec<u8>,
}

impl PackSealer {
    /// A fresh session key encrypted to every recipient key.
    pub fn new(recipients: &Recipients) -> Result<Self> {
        let session_key = SessionKey::new(SYM.key_size().map_err(|e| Error::pgp("AES-256", e))?)
            .map_err(|e| Error::pgp("making a session key", e))?;
        let mut pkesk_bytes = Vec::new();
        for key in &recipients.keys {
            let pkesk = PKESK3::for_recipient(SYM, &session_key, key)
                .map_err(|e| Error::pgp(format!("encrypting to key {}", key.keyid()), e))?;
            Packet::from(PKESK::from(pkesk))
                .serialize(&mut pkesk_bytes)
                .map_err(|e| Error::pgp("serializing a PKESK packet", e))?;
        }
        Ok(Self {
            session_key,
            pkesk_bytes,
        })
    }

    /// One complete OpenPGP message whose literal data is `payload`.
    pub fn seal(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.sealed_len_bound(payload.len()));
        self.seal_into(payload, &mut out)?;
        Ok(out)
    }

    /// [`PackSealer::seal`], appending the message to `out` (a pack being
    /// filled) instead of allocating it. On error `out` may hold part of it.
    pub fn seal_into(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.pkesk_bytes);
        seipd::seal(&self.session_key, payload, out)
    }

    /// At least the length of the message [`PackSealer::seal`] makes of a
    /// `payload_len`-byte payload (packet headers, prefix, MDC, spare block).
    pub fn sealed_len_bound(&self, payload_len: usize) -> usize {
        self.pkesk_bytes.len() + payload_len + 128
    }
}

/// Seals `payload` as a standalone message with its own session key.
pub fn seal_message(recipients: &Recipients, payload: &[u8]) -> Result<Vec<u8>> {
    PackSealer::new(recipients)?.seal(payload)
}

/// Signs `payload` with `signer` and encrypts the signed message to
/// `recipients` (SEIPD v1): what `gpg --decrypt` reads and verifies.
pub fn seal_signed(
    recipients: &Recipients,
    signer: &SnapshotSigner,
    payload: &[u8],
) -> Result<Vec<u8>> {
    use openpgp::serialize::stream::{Encryptor, Message};
    let sealer = PackSealer::new(recipients)?;
    let keypair = signer
        .key
        .clone()
        .into_keypair()
        .map_err(|e| Error::pgp("using the writer's signing key", e))?;
    let mut out = sealer.pkesk_bytes.clone();
    let what = "signing and encrypting a snapshot";
    let message = Message::new(&mut out);
    let message = Encryptor::with_session_key(message, SYM, sealer.session_key.clone())
        .map_err(|e| Error::pgp(what, e))?
        .build()
        .map_err(|e| Error::pgp(what, e))?;
    write_signed_literal(message, keypair, payload, what)?;
    Ok(out)
}
