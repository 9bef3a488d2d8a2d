//! OpenPGP keys and certificates: the admin's key (made, or read from a
//! file GnuPG exported), the recipients every blob is encrypted to, the
//! writers' signing keys and the certificates readers check them against.
//!
//! Keys are Curve25519 v4 certificates advertising SEIPD v1 only, the kind
//! GnuPG 2.2 (Debian 12) uses; see [`crate::crypto`] for the envelope.

use crate::error::{Error, Result};
use sequoia_openpgp as openpgp;
use std::path::Path;

use openpgp::cert::prelude::*;
use openpgp::crypto::Password;
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::packet::prelude::*;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::types::{Features, KeyFlags, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle};

/// The policy every certificate and message is judged by.
pub(super) static POLICY: StandardPolicy<'static> = StandardPolicy::new();
/// The one cipher coffer encrypts with.
pub(super) const SYM: SymmetricAlgorithm = SymmetricAlgorithm::AES256;

/// A new admin key, as armored secret key and armored certificate.
pub struct GeneratedKey {
    /// The armored transferable secret key (keep it secret).
    pub secret_armored: Vec<u8>,
    /// The armored public certificate (give it to `coffer init --recipient`).
    pub cert_armored: Vec<u8>,
    /// The certificate's fingerprint, for display.
    pub fingerprint: String,
}

/// Generates a Curve25519 OpenPGP key (v4, SEIPD v1 feature only, so GnuPG 2.2
/// can use it) with one encryption subkey.
pub fn generate_key(user_id: &str) -> Result<GeneratedKey> {
    let (cert, _revocation) = v4_builder(user_id)?
        .add_subkey(
            KeyFlags::empty()
                .set_storage_encryption()
                .set_transport_encryption(),
            None,
            None,
        )
        .generate()
        .map_err(|e| Error::pgp("generating a key", e))?;
    armor_generated(&cert)
}

/// Reads one or more certificates (armored or binary) and returns each as
/// armored text, public parts only. Fails on a certificate without a usable
/// encryption key.
pub fn normalize_certs(bytes: &[u8], source: &str) -> Result<Vec<String>> {
    let certs = parse_certs(bytes, source)?;
    let mut out = Vec::new();
    for cert in certs {
        encryption_keys(&cert, source)?;
        let armored = cert
            .armored()
            .to_vec()
            .map_err(|e| Error::pgp(format!("armoring the certificate from {source}"), e))?;
        out.push(String::from_utf8_lossy(&armored).into_owned());
    }
    Ok(out)
}

fn parse_certs(bytes: &[u8], source: &str) -> Result<Vec<Cert>> {
    let parser = openpgp::cert::CertParser::from_bytes(bytes)
        .map_err(|e| Error::pgp(format!("reading certificates from {source}"), e))?;
    let certs = parser
        .collect::<openpgp::Result<Vec<Cert>>>()
        .map_err(|e| Error::pgp(format!("reading certificates from {source}"), e))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{source} holds no OpenPGP certificate"
        )));
    }
    Ok(certs)
}

fn encryption_keys(cert: &Cert, source: &str) -> Result<Vec<Key<PublicParts, UnspecifiedRole>>> {
    let valid = cert.with_policy(&POLICY, None).map_err(|e| {
        Error::pgp(
            format!("certificate {} from {source}", cert.fingerprint()),
            e,
        )
    })?;
    let keys: Vec<_> = valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .for_transport_encryption()
        .map(|ka| ka.key().clone().parts_into_public().role_into_unspecified())
        .collect();
    if keys.is_empty() {
        return Err(Error::Config(format!(
            "certificate {} from {source} has no valid encryption key (expired, revoked, or signing-only?)",
            cert.fingerprint()
        )));
    }
    Ok(keys)
}

/// The public keys every blob is encrypted to.
pub struct Recipients {
    pub(super) keys: Vec<Key<PublicParts, UnspecifiedRole>>,
}

impl Recipients {
    /// Builds the recipient list from armored certificates (as in `config`).
    pub fn from_armored(certs: &[String]) -> Result<Self> {
        let mut keys = Vec::new();
        for (i, armored) in certs.iter().enumerate() {
            for cert in parse_certs(armored.as_bytes(), &format!("recipient #{}", i + 1))? {
                keys.extend(encryption_keys(&cert, &format!("recipient #{}", i + 1))?);
            }
        }
        if keys.is_empty() {
            return Err(Error::Config("the repository lists no recipient".into()));
        }
        Ok(Self { keys })
    }
}

/// subkey signs. `coffer init` makes one per repository; the secret half goes
/// into writer.key, the certificate into `config` (`writers`).
pub fn generate_signing_key(user_id: &str) -> Result<GeneratedKey> {
    let (cert, _revocation) = v4_builder(user_id)?
        .add_signing_subkey()
        .generate()
        .map_err(|e| Error::pgp("generating a signing key", e))?;
    armor_generated(&cert)
}

/// A Curve25519 v4 certificate with `user_id` that advertises SEIPD v1
/// only, the kind GnuPG 2.2 uses; subkeys are the caller's.
fn v4_builder(user_id: &str) -> Result<CertBuilder<'static>> {
    Ok(CertBuilder::new()
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_profile(openpgp::Profile::RFC4880)
        .map_err(|e| Error::pgp("selecting the v4 key profile", e))?
        .set_features(Features::empty().set_seipdv1())
        .map_err(|e| Error::pgp("setting key features", e))?
        .add_userid(user_id))
}

fn armor_generated(cert: &Cert) -> Result<GeneratedKey> {
    let secret_armored = cert
        .as_tsk()
        .armored()
        .to_vec()
        .map_err(|e| Error::pgp("armoring the secret key", e))?;
    let cert_armored = cert
        .armored()
        .to_vec()
        .map_err(|e| Error::pgp("armoring the certificate", e))?;
    Ok(GeneratedKey {
        secret_armored,
        cert_armored,
        fingerprint: cert.fingerprint().to_hex(),
    })
}

/// A writer's secret signing key (from writer.key). No `Debug`.
pub struct SnapshotSigner {
    pub(super) key: Key<SecretParts, UnspecifiedRole>,
    fingerprint: String,
}

impl SnapshotSigner {
    /// Reads the signing key out of an armored secret key; `source` names it
    /// in errors (never its contents).
    pub fn from_armored(bytes: &[u8], source: &str) -> Result<Self> {
        let certs = parse_certs(bytes, source)?;
        let [cert] = &certs[..] else {
            return Err(Error::Config(format!(
                "{source}: expected one signing key, found {}",
                certs.len()
            )));
        };
        let valid = cert
            .with_policy(&POLICY, None)
            .map_err(|e| Error::pgp(format!("signing key from {source}"), e))?;
        let key = valid
            .keys()
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .secret()
            .next()
            .ok_or_else(|| Error::Config(format!("{source}: holds no usable secret signing key")))?
            .key()
            .clone()
            .role_into_unspecified();
        if key.secret().is_encrypted() {
            return Err(Error::Config(format!(
                "{source}: the signing key is protected by a passphrase; writers need it unlocked"
            )));
        }
        Ok(Self {
            key,
            fingerprint: cert.fingerprint().to_hex(),
        })
    }

    /// The fingerprint of the certificate the key belongs to.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The writers' certificates a repository lists: the only keys whose
/// signatures make a snapshot genuine.
pub struct Writers {
    pub(super) certs: Vec<Cert>,
}

impl Writers {
    /// Parses the armored certificates of `config`'s `writers`.
    pub fn from_armored(certs: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        for (i, armored) in certs.iter().enumerate() {
            out.extend(parse_certs(
                armored.as_bytes(),
                &format!("config: writer #{}", i + 1),
            )?);
        }
        Ok(Self { certs: out })
    }

    /// Whether the repository lists no writer (made before snapshots were
    /// signed: its snapshots are not checked).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Whether the certificate with this fingerprint is listed.
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.certs
            .iter()
            .any(|c| c.fingerprint().to_hex().eq_ignore_ascii_case(fingerprint))
    }
}

/// Secret keys that can open blobs. No `Debug`; key material is zeroed by
/// sequoia when dropped.
pub struct SecretKeys {
    pub(super) keys: Vec<(KeyHandle, Key<SecretParts, UnspecifiedRole>)>,
}

impl SecretKeys {
    /// Loads every secret key in the file (armored or binary, one or many
    /// certificates, as `coffer key generate` or `gpg --export-secret-keys`
    /// write them). Encrypted keys are unlocked with `passphrase`.
    /// The file must be private to its owner unless `check` says otherwise.
    pub fn from_file(
        path: &Path,
        passphrase: Option<&str>,
        check: crate::crypto::keyfile::ModeCheck,
    ) -> Result<Self> {
        let bytes = crate::crypto::keyfile::read_secret(path, "the secret key", check)?;
        Self::from_bytes(&bytes, &path.display().to_string(), passphrase)
    }

    /// Like [`SecretKeys::from_file`], from bytes; `source` names them in errors.
    pub fn from_bytes(bytes: &[u8], source: &str, passphrase: Option<&str>) -> Result<Self> {
        let password = passphrase.map(Password::from);
        let mut keys = Vec::new();
        let mut locked = 0;
        for cert in parse_certs(bytes, source)? {
            for ka in cert.keys().secret() {
                let key = ka.key().clone().role_into_unspecified();
                let key = if key.secret().is_encrypted() {
                    match &password {
                        Some(p) => {
                            let id = key.keyid();
                            key.decrypt_secret(p).map_err(|e| {
                                Error::pgp(
                                    format!("unlocking key {id} from {source} (wrong passphrase?)"),
                                    e,
                                )
                            })?
                        }
                        None => {
                            locked += 1;
                            continue;
                        }
                    }
                } else {
                    key
                };
                keys.push((key.key_handle(), key));
            }
        }
        if keys.is_empty() {
            let why = if locked > 0 {
                "its secret keys are protected by a passphrase: set COFFER_KEY_PASSPHRASE or use --passphrase-file"
            } else {
                "it holds no secret key (is it a certificate? use the file from `coffer key generate --secret-out` or `gpg --export-secret-keys`)"
            };
            return Err(Error::Config(format!("cannot use {source}: {why}")));
        }
        Ok(Self { keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_not_a_secret_key() {
        let generated = generate_key("test").unwrap();
        let err = SecretKeys::from_bytes(&generated.cert_armored, "admin.cert", None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("holds no secret key"), "{err}");
    }
}
