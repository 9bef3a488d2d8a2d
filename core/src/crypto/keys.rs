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
/// can use it) with an encryption subkey and a signing subkey (an admin
/// signs key changes with it).
pub fn generate_key(user_id: &str) -> Result<GeneratedKey> {
    let (cert, _revocation) = v4_builder(user_id)?
        .add_signing_subkey()
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

/// Adds a Curve25519 signing subkey to the one secret key in `secret`
/// (armored or binary; `source` names it): for an admin key made before
/// key changes, which has none. The primary key must be there (not a
/// GnuPG stub); a passphrase-protected one is unlocked with `passphrase`,
/// which then protects the new subkey too.
pub fn add_signing_subkey(
    secret: &[u8],
    source: &str,
    passphrase: Option<&str>,
) -> Result<GeneratedKey> {
    let certs = parse_certs(secret, source)?;
    let [cert] = &certs[..] else {
        return Err(Error::Config(format!(
            "{source} holds {} keys; give it one (gpg --export-secret-keys FINGERPRINT)",
            certs.len()
        )));
    };
    let fpr = cert.fingerprint();
    let valid = cert
        .with_policy(&POLICY, None)
        .map_err(|e| Error::pgp(format!("key {fpr} from {source}"), e))?;
    if valid
        .keys()
        .secret()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .is_some()
    {
        return Err(Error::Config(format!(
            "the key {fpr} in {source} has a signing key already"
        )));
    }
    let primary = cert
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .map_err(|_| {
            Error::Config(format!(
                "{source} holds no secret primary key for {fpr} (needed to bind a subkey)"
            ))
        })?;
    let password = passphrase.map(Password::from);
    let primary = match (&password, primary.secret().is_encrypted()) {
        (_, false) => primary,
        (Some(p), true) => primary.decrypt_secret(p).map_err(|e| {
            Error::pgp(format!("unlocking the primary key of {fpr} (wrong passphrase?)"), e)
        })?,
        (None, true) => {
            return Err(Error::Config(format!(
                "the primary key of {fpr} in {source} is protected by a passphrase: set                  COFFER_KEY_PASSPHRASE or use --passphrase-file"
            )))
        }
    };
    let primary = primary
        .into_keypair()
        .map_err(|e| Error::pgp(format!("using the primary key of {fpr}"), e))?;
    let cert = KeyBuilder::new(KeyFlags::empty().set_signing())
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_password(password)
        .subkey(valid)
        .and_then(|b| b.set_primary_key_signer(primary).attach_cert())
        .map_err(|e| Error::pgp(format!("adding a signing subkey to {fpr}"), e))?;
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

pub(crate) fn parse_certs(bytes: &[u8], source: &str) -> Result<Vec<Cert>> {
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

/// Refuses a certificate with a self-signature that does not verify:
/// sequoia would drop the key or user id it binds and go on, so a
/// damaged certificate in the repository could lose a recipient or a
/// signing subkey without a word.
pub(crate) fn whole(cert: &Cert, source: &str) -> Result<()> {
    if cert.bad_signatures().next().is_some() {
        return Err(Error::damaged(
            source,
            format!(
                "certificate {} has a self-signature that does not verify",
                cert.fingerprint()
            ),
        ));
    }
    Ok(())
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
            let source = format!("recipient #{}", i + 1);
            for cert in parse_certs(armored.as_bytes(), &source)? {
                whole(&cert, &source)?;
                keys.extend(encryption_keys(&cert, &source)?);
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

/// The first secret key of `valid` that may sign now: supported, alive,
/// not revoked, flagged for signing (a writer's, or an admin's).
pub(crate) fn secret_signing_key(
    valid: &ValidCert<'_>,
) -> Option<Key<SecretParts, UnspecifiedRole>> {
    valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .next()
        .map(|ka| ka.key().clone().role_into_unspecified())
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
        let key = secret_signing_key(&valid).ok_or_else(|| {
            Error::Config(format!("{source}: holds no usable secret signing key"))
        })?;
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
            let source = format!("config: writer #{}", i + 1);
            for cert in parse_certs(armored.as_bytes(), &source)? {
                whole(&cert, &source)?;
                out.push(cert);
            }
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

/// The one certificate in `armored`, whole (see [`whole`]).
fn one_whole_cert(armored: &str, source: &str) -> Result<Cert> {
    let certs = parse_certs(armored.as_bytes(), source)?;
    let [cert] = &certs[..] else {
        return Err(Error::damaged(
            source,
            format!("expected one certificate, found {}", certs.len()),
        ));
    };
    whole(cert, source)?;
    Ok(cert.clone())
}

/// Parses certificates from the repository (config, key changes) for
/// [`crate::format::key_change::KeyState`], strictly: one whole
/// certificate, usable for its role.
pub struct CertParser;

impl crate::format::key_change::CertCheck for CertParser {
    fn writer_fingerprint(&self, armored: &str, source: &str) -> Result<String> {
        let cert = one_whole_cert(armored, source)?;
        let valid = cert
            .with_policy(&POLICY, None)
            .map_err(|e| Error::pgp(format!("writer certificate in {source}"), e))?;
        if valid.keys().supported().for_signing().next().is_none() {
            return Err(Error::damaged(
                source,
                format!(
                    "writer certificate {} has no signing key",
                    cert.fingerprint()
                ),
            ));
        }
        Ok(cert.fingerprint().to_hex())
    }

    fn recipient_fingerprint(&self, armored: &str, source: &str) -> Result<String> {
        let cert = one_whole_cert(armored, source)?;
        encryption_keys(&cert, source)?;
        Ok(cert.fingerprint().to_hex())
    }
}

/// The first user id of the certificate in `armored`, if it has one that
/// is UTF-8 (for listings).
pub fn cert_user_id(armored: &str) -> Option<String> {
    let certs = parse_certs(armored.as_bytes(), "certificate").ok()?;
    let uid = certs.first()?.userids().next()?;
    String::from_utf8(uid.userid().value().to_vec()).ok()
}

/// The certificate an admin's key change carries, if it is whole: what
/// its signature is checked against once its fingerprint is an admin's.
pub fn signer_cert(armored: &str, source: &str) -> Result<Cert> {
    one_whole_cert(armored, source)
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
        use crate::crypto::keyfile::{read_key, KeyFileKind, ADMIN_KEY_NEEDED};
        let bytes = read_key(path, KeyFileKind::SecretKey, ADMIN_KEY_NEEDED, check)?;
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
