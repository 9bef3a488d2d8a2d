//! Signed, unencrypted messages: the key changes admins store under
//! `keys/` (docs/format.md §10). One-Pass Signature, Literal Data,
//! Signature: what `gpg --sign` writes and `gpg --decrypt` prints and
//! verifies.
//!
//! An [`AdminSigner`] is an admin's signing key, read from the same file
//! as their secret key; [`verify_signed`] checks a message against the
//! admins' certificates and says whose primary key the signer belongs to.

use crate::crypto::keys::{parse_certs, secret_signing_key, POLICY};
use crate::error::{Error, Result};
use sequoia_openpgp as openpgp;
use std::io::{Read, Write};

use openpgp::crypto::{KeyPair, Password};
use openpgp::packet::Packet;
use openpgp::parse::stream::{MessageLayer, MessageStructure, VerificationHelper, VerifierBuilder};
use openpgp::parse::Parse;
use openpgp::serialize::stream::{LiteralWriter, Message, Signer};
use openpgp::serialize::SerializeInto;
use openpgp::{Cert, KeyHandle};

/// An admin's secret signing key and the certificate it belongs to. No
/// `Debug`; sequoia zeroes the key material when dropped.
pub struct AdminSigner {
    cert: Cert,
    keypair: KeyPair,
}

impl AdminSigner {
    /// The signing key, in the secret key bytes `bytes` (`source` names
    /// them), of one of the certificates whose fingerprints are `admins` (a
    /// file may hold several keys, as `gpg --export-secret-keys` writes
    /// them).
    pub fn from_bytes(
        bytes: &[u8],
        source: &str,
        passphrase: Option<&str>,
        admins: &[String],
    ) -> Result<Self> {
        let certs = parse_certs(bytes, source)?;
        let Some(cert) = certs.into_iter().find(|c| {
            let fpr = c.fingerprint().to_hex();
            admins.iter().any(|a| a.eq_ignore_ascii_case(&fpr))
        }) else {
            return Err(Error::Config(format!(
                "{source} holds no key of this repository's admins (the recipients: {}); \
                 a key change must be signed by one of them",
                admins.join(", ")
            )));
        };
        let fpr = cert.fingerprint().to_hex();
        let valid = cert
            .with_policy(&POLICY, None)
            .map_err(|e| Error::pgp(format!("key {fpr} from {source}"), e))?;
        let Some(mut key) = secret_signing_key(&valid) else {
            return Err(Error::Config(format!(
                "the key {fpr} in {source} has no signing-capable key (keys from \
                 `coffer key generate` before key changes had none). Add one with \
                 `coffer key add-signing --key {source} --secret-out NEW.key` and use that, or in GnuPG with \
                 `gpg --quick-add-key {fpr} ed25519 sign` and export the secret key again"
            )));
        };
        if key.secret().is_encrypted() {
            let Some(p) = passphrase else {
                return Err(Error::Config(format!(
                    "the signing key of {fpr} in {source} is protected by a passphrase: set \
                     COFFER_KEY_PASSPHRASE or use --passphrase-file"
                )));
            };
            key = key.decrypt_secret(&Password::from(p)).map_err(|e| {
                Error::pgp(
                    format!("unlocking the signing key of {fpr} (wrong passphrase?)"),
                    e,
                )
            })?;
        }
        let keypair = key
            .into_keypair()
            .map_err(|e| Error::pgp(format!("using the signing key of {fpr}"), e))?;
        Ok(Self {
            cert: cert.strip_secret_key_material(),
            keypair,
        })
    }

    /// The fingerprint of the admin's certificate (its primary key).
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// The admin's public certificate, armored: carried in each change it
    /// signs, so that a reader has the signing subkey even where the
    /// repository knows an older copy of the certificate.
    pub fn cert_armored(&self) -> Result<String> {
        let armored = self
            .cert
            .armored()
            .to_vec()
            .map_err(|e| Error::pgp("armoring the admin's certificate", e))?;
        Ok(String::from_utf8_lossy(&armored).into_owned())
    }

    /// `payload` as a signed (not encrypted) binary OpenPGP message.
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        write_signed_literal(
            message,
            self.keypair.clone(),
            payload,
            "signing a key change",
        )?;
        Ok(out)
    }
}

/// Writes `payload` into `message` as One-Pass Signature, Literal Data
/// (binary) and Signature by `keypair`, and finishes the message: a key
/// change as is, a snapshot inside its encryption. `what` names it in
/// errors.
pub(super) fn write_signed_literal(
    message: Message<'_>,
    keypair: KeyPair,
    payload: &[u8],
    what: &str,
) -> Result<()> {
    let failed = |e| Error::pgp(what, e);
    let message = Signer::new(message, keypair)
        .map_err(failed)?
        .build()
        .map_err(failed)?;
    let mut literal = LiteralWriter::new(message)
        .format(openpgp::types::DataFormat::Binary)
        .build()
        .map_err(failed)?;
    literal
        .write_all(payload)
        .map_err(|e| Error::pgp(what, e))?;
    literal.finalize().map_err(failed)
}

/// The literal data of the signed message `message`, not verified: what a
/// reader needs to learn which certificate to verify it with (a change
/// carries its signer's). Never believe it before [`verify_signed`].
pub fn unverified_payload(object: &str, message: &[u8]) -> Result<Vec<u8>> {
    read_signed(object, message, Vec::new()).map(|(plain, _)| plain)
}

/// The literal data of `message` if it carries a good signature by one of
/// `certs`, with the fingerprint of that certificate's primary key.
pub fn verify_signed(object: &str, message: &[u8], certs: Vec<Cert>) -> Result<(Vec<u8>, String)> {
    let (plain, signer) = read_signed(object, message, certs)?;
    match signer {
        Some(fpr) => Ok((plain, fpr)),
        None => Err(Error::Forged {
            key: object.to_string(),
            what: "it carries no good signature by an admin of the repository".into(),
        }),
    }
}

/// Reads a signed message with `certs` to check it against: the literal
/// data and whose signature held (if any).
fn read_signed(
    object: &str,
    message: &[u8],
    certs: Vec<Cert>,
) -> Result<(Vec<u8>, Option<String>)> {
    let damaged =
        |e: openpgp::anyhow::Error| Error::damaged(object, format!("not a signed message: {e}"));
    let helper = Helper {
        certs,
        signer: None,
    };
    let mut verifier = VerifierBuilder::from_bytes(message)
        .map_err(damaged)?
        .with_policy(&POLICY, None, helper)
        .map_err(damaged)?;
    let mut plain = Vec::new();
    verifier
        .by_ref()
        .take(message.len() as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| Error::damaged(object, format!("not a signed message: {e}")))?;
    if plain.len() > message.len() {
        return Err(Error::damaged(object, "its literal data is longer than it"));
    }
    let signer = verifier.into_helper().signer;
    Ok((plain, signer))
}

struct Helper {
    certs: Vec<Cert>,
    signer: Option<String>,
}

impl VerificationHelper for Helper {
    /// Refuses compression before it inflates (coffer never writes it).
    fn inspect(&mut self, pp: &openpgp::parse::PacketParser<'_>) -> openpgp::Result<()> {
        if let Packet::CompressedData(_) = pp.packet {
            return Err(openpgp::anyhow::anyhow!(
                "it holds a Compressed Data packet, which coffer never writes"
            ));
        }
        Ok(())
    }

    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.certs.clone())
    }

    /// Exactly one layer, a signature group; the first good signature
    /// names the signer. A message without one is read (for
    /// [`unverified_payload`]) and has no signer.
    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let mut layers = structure.into_iter();
        match (layers.next(), layers.next()) {
            (Some(MessageLayer::SignatureGroup { results }), None) => {
                self.signer = results
                    .into_iter()
                    .flatten()
                    .next()
                    .map(|good| good.ka.cert().fingerprint().to_hex());
                Ok(())
            }
            _ => Err(openpgp::anyhow::anyhow!(
                "it is not one signed literal (is it encrypted, or nested?)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::generate_key;

    #[test]
    fn a_change_signed_by_an_admin_verifies_and_names_them() {
        let admin = generate_key("admin").unwrap();
        let other = generate_key("other").unwrap();
        let signer = AdminSigner::from_bytes(
            &admin.secret_armored,
            "admin.key",
            None,
            std::slice::from_ref(&admin.fingerprint),
        )
        .unwrap();
        let signed = signer.sign(b"{\"x\":1}").unwrap();
        let certs =
            |g: &crate::crypto::keys::GeneratedKey| parse_certs(&g.cert_armored, "cert").unwrap();
        let (plain, fpr) = verify_signed("keys/1", &signed, certs(&admin)).unwrap();
        assert_eq!(plain, b"{\"x\":1}");
        assert_eq!(fpr, admin.fingerprint);
        assert_eq!(unverified_payload("keys/1", &signed).unwrap(), b"{\"x\":1}");
        // Another key's certificate does not make it good.
        let err = verify_signed("keys/1", &signed, certs(&other)).unwrap_err();
        assert!(matches!(err, Error::Forged { .. }), "{err}");
        // One flipped byte anywhere: never good.
        for at in [signed.len() / 2, signed.len() - 10] {
            let mut bad = signed.clone();
            bad[at] ^= 1;
            assert!(verify_signed("keys/1", &bad, certs(&admin)).is_err());
        }
        // A key file of someone else is named as not an admin's.
        let err = AdminSigner::from_bytes(
            &other.secret_armored,
            "other.key",
            None,
            std::slice::from_ref(&admin.fingerprint),
        )
        .err()
        .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("holds no key of this repository's admins")));
    }
}
