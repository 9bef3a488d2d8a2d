//! OpenPGP envelopes: how coffer seals blobs, and how readers open them.
//!
//! Every stored blob is a complete OpenPGP message ([RFC 9580]) that
//! `gpg --decrypt` (GnuPG 2.2) reads:
//!
//! ```text
//! PKESK v3 (one per recipient key)          [RFC 9580 §5.1]
//! SEIPD v1 (AES-256, with MDC)              [RFC 9580 §5.13.1]
//! └── Literal Data, format 'b'              [RFC 9580 §5.9]
//!     └── a zstd frame of the chunk or tree
//! ```
//!
//! All blobs of one pack share one session key: a [`PackSealer`] makes the
//! PKESK packets once and repeats their bytes in front of every blob it seals,
//! so a pack costs one public-key operation per recipient. On the read side an
//! [`Opener`] caches session keys by the bytes of the PKESK packets, so it too
//! does one secret-key operation per pack.
//!
//! SEIPD v1 is forced (never v2/AEAD) because GnuPG 2.2, the version in
//! Debian 12, reads nothing newer; see docs/DESIGN.md. The SEIPD packet is
//! written, and read back when it has coffer's shape, by `crate::seipd` with
//! OpenSSL (sequoia's MDC hashing was the bottleneck); sequoia makes keys and
//! PKESKs, and reads every message of another shape or that fails a check.
//!
//! [RFC 9580]: https://www.rfc-editor.org/rfc/rfc9580.html

use crate::error::{Error, Result};
use crate::seipd;
use sequoia_openpgp as openpgp;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use openpgp::cert::prelude::*;
use openpgp::crypto::{Password, SessionKey};
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::packet::prelude::*;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{Features, KeyFlags, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle};

static POLICY: StandardPolicy<'static> = StandardPolicy::new();
const SYM: SymmetricAlgorithm = SymmetricAlgorithm::AES256;

thread_local! {
    /// Set while sequoia parses a message inside `catch_unwind`.
    static GUARDED_PARSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is parsing a message whose panic is caught and
/// becomes a damaged-object error: for a panic hook, which should not
/// print such a panic as a crash.
pub fn in_guarded_parse() -> bool {
    GUARDED_PARSE.with(std::cell::Cell::get)
}

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
    keys: Vec<Key<PublicParts, UnspecifiedRole>>,
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

/// Seals blobs for one pack: one session key, PKESK packets made once.
pub struct PackSealer {
    session_key: SessionKey,
    pkesk_bytes: Vec<u8>,
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

/// Generates a writer's signing key: a Curve25519 v4 certificate whose only
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
    key: Key<SecretParts, UnspecifiedRole>,
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

/// Signs `payload` with `signer` and encrypts the signed message to
/// `recipients` (SEIPD v1): what `gpg --decrypt` reads and verifies.
pub fn seal_signed(
    recipients: &Recipients,
    signer: &SnapshotSigner,
    payload: &[u8],
) -> Result<Vec<u8>> {
    use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Signer};
    use std::io::Write;
    let sealer = PackSealer::new(recipients)?;
    let keypair = signer
        .key
        .clone()
        .into_keypair()
        .map_err(|e| Error::pgp("using the writer's signing key", e))?;
    let mut out = sealer.pkesk_bytes.clone();
    let failed = |e| Error::pgp("signing and encrypting a snapshot", e);
    let message = Message::new(&mut out);
    let message = Encryptor::with_session_key(message, SYM, sealer.session_key.clone())
        .map_err(failed)?
        .build()
        .map_err(failed)?;
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
        .map_err(|e| Error::pgp("signing and encrypting a snapshot", e))?;
    literal.finalize().map_err(failed)?;
    Ok(out)
}

/// The writers' certificates a repository lists: the only keys whose
/// signatures make a snapshot genuine.
pub struct Writers {
    certs: Vec<Cert>,
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
    keys: Vec<(KeyHandle, Key<SecretParts, UnspecifiedRole>)>,
}

impl SecretKeys {
    /// Loads every secret key in the file (armored or binary, one or many
    /// certificates, as `coffer key generate` or `gpg --export-secret-keys`
    /// write them). Encrypted keys are unlocked with `passphrase`.
    /// The file must be private to its owner unless `check` says otherwise.
    pub fn from_file(
        path: &Path,
        passphrase: Option<&str>,
        check: crate::keyfile::ModeCheck,
    ) -> Result<Self> {
        let bytes = crate::keyfile::read_secret(path, "the secret key", check)?;
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

/// Opens sealed messages, caching one session key per set of PKESK packets.
pub struct Opener {
    keys: SecretKeys,
    session_keys: Mutex<HashMap<Vec<u8>, SessionKey>>,
}

impl Opener {
    /// An opener over these secret keys.
    pub fn new(keys: SecretKeys) -> Self {
        Self {
            keys,
            session_keys: Mutex::new(HashMap::new()),
        }
    }

    /// Decrypts one message and returns its literal data. `object` names the
    /// stored object in errors. Fails on anything not encrypted, on a failed
    /// integrity check (MDC), and when no key fits.
    pub fn open(&self, object: &str, message: &[u8]) -> Result<Vec<u8>> {
        match self.open_fast(message) {
            Some(plain) => Ok(plain),
            None => self.open_with_sequoia(object, message),
        }
    }

    /// Decrypts a message that must also carry a valid signature by one of
    /// `writers` (a snapshot). An unsigned message, or one signed by any
    /// other key, is [`Error::Forged`]: anyone with the public certificates
    /// can encrypt, only a writer can sign.
    pub fn open_signed(&self, object: &str, message: &[u8], writers: &Writers) -> Result<Vec<u8>> {
        let (plain, helper) =
            self.decrypt_with(object, message, Helper::new(self, Some(writers)))?;
        if !helper.signed {
            return Err(Error::Forged {
                key: object.to_string(),
                what: "it carries no valid signature of a writer listed in config".into(),
            });
        }
        Ok(plain)
    }

    /// Opens a message of exactly the shape coffer writes, or returns `None`
    /// (another shape, no fitting key, any failed check) and leaves it to
    /// sequoia, which reads any valid message and says what is wrong.
    fn open_fast(&self, message: &[u8]) -> Option<Vec<u8>> {
        let parts = seipd::split(message)?;
        let key = match self.cached(parts.pkesks) {
            Some(key) => key,
            None => {
                let pkesks = openpgp::PacketPile::from_bytes(parts.pkesks).ok()?;
                let pkesks: Vec<PKESK> = pkesks
                    .into_children()
                    .filter_map(|p| match p {
                        Packet::PKESK(p) => Some(p),
                        _ => None,
                    })
                    .collect();
                let (algo, key) = self.session_key(&pkesks, Some(SYM))?;
                if algo != Some(SYM) {
                    return None;
                }
                self.remember(parts.pkesks.to_vec(), key.clone());
                key
            }
        };
        seipd::open(&key, &parts.seipd)
    }

    /// The first session key one of our secret keys gets out of `pkesks`.
    fn session_key(
        &self,
        pkesks: &[PKESK],
        sym_algo: Option<SymmetricAlgorithm>,
    ) -> Option<(Option<SymmetricAlgorithm>, SessionKey)> {
        for pkesk in pkesks {
            for (handle, key) in &self.keys.keys {
                let matches = match pkesk.recipient() {
                    Some(r) => r.aliases(handle),
                    None => true,
                };
                if !matches {
                    continue;
                }
                let Ok(mut pair) = key.clone().into_keypair() else {
                    continue;
                };
                if let Some(found) = pkesk.decrypt(&mut pair, sym_algo) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Opens any OpenPGP message through sequoia's streaming decryptor.
    fn open_with_sequoia(&self, object: &str, message: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .decrypt_with(object, message, Helper::new(self, None))?
            .0)
    }

    /// Runs sequoia's decryptor with `helper`; fails unless the message was
    /// encrypted. Returns the plaintext and the helper (what it saw).
    ///
    /// sequoia 2.4 panics on some malformed messages (found by fuzzing: a
    /// SEIPD v1 packet too short for its prefix and MDC hits an `unwrap` in
    /// `PacketParser::decrypt_`; docs/upstream/ holds the report to file);
    /// a panic there is damage to `object`, never the end of the process.
    fn decrypt_with<'a>(
        &'a self,
        object: &str,
        message: &[u8],
        helper: Helper<'a>,
    ) -> Result<(Vec<u8>, Helper<'a>)> {
        let damaged =
            |e: openpgp::anyhow::Error| Error::damaged(object, format!("cannot decrypt: {e:#}"));
        let run = std::panic::AssertUnwindSafe(|| {
            let mut decryptor = DecryptorBuilder::from_bytes(message)
                .map_err(damaged)?
                .with_policy(&POLICY, None, helper)
                .map_err(damaged)?;
            let mut out = Vec::new();
            decryptor
                .read_to_end(&mut out)
                .map_err(|e| Error::damaged(object, format!("cannot decrypt: {e}")))?;
            Ok((out, decryptor.into_helper()))
        });
        GUARDED_PARSE.with(|g| g.set(true));
        let caught = std::panic::catch_unwind(run);
        GUARDED_PARSE.with(|g| g.set(false));
        let (out, helper) = caught.unwrap_or_else(|_| {
            Err(Error::damaged(
                object,
                "malformed OpenPGP message (the parser gave up on it)",
            ))
        })?;
        if !helper.encrypted {
            return Err(Error::damaged(object, "not an encrypted message"));
        }
        Ok((out, helper))
    }

    fn cached(&self, pkesks: &[u8]) -> Option<SessionKey> {
        self.session_keys
            .lock()
            .ok()
            .and_then(|m| m.get(pkesks).cloned())
    }

    fn remember(&self, pkesks: Vec<u8>, key: SessionKey) {
        if let Ok(mut map) = self.session_keys.lock() {
            // Bounded: one entry per pack; forget all when it grows large.
            if map.len() >= 65_536 {
                map.clear();
            }
            map.insert(pkesks, key);
        }
    }
}

struct Helper<'a> {
    opener: &'a Opener,
    /// Whether the message was encrypted.
    encrypted: bool,
    /// Whose signatures count; `None` ignores signatures.
    writers: Option<&'a Writers>,
    /// Whether one of `writers` signed it, and the signature checked out.
    signed: bool,
}

impl<'a> Helper<'a> {
    /// A helper that has seen nothing yet; signatures count only by
    /// `writers`, and not at all without them.
    fn new(opener: &'a Opener, writers: Option<&'a Writers>) -> Self {
        Self {
            opener,
            encrypted: false,
            writers,
            signed: false,
        }
    }
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.writers.map(|w| w.certs.clone()).unwrap_or_default())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure.iter() {
            match layer {
                MessageLayer::Encryption { .. } => self.encrypted = true,
                // Signatures inside the encryption only: one outside it
                // could have been added by anyone to any ciphertext.
                MessageLayer::SignatureGroup { results } if self.encrypted => {
                    self.signed |= self.writers.is_some() && results.iter().any(|r| r.is_ok());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let mut cache_key = Vec::new();
        for p in pkesks {
            Packet::from(p.clone()).serialize(&mut cache_key)?;
        }
        if let Some(sk) = self.opener.cached(&cache_key) {
            if decrypt(Some(SYM), &sk) {
                return Ok(None);
            }
        }
        if let Some((algo, sk)) = self.opener.session_key(pkesks, sym_algo) {
            if decrypt(algo, &sk) {
                self.opener.remember(cache_key, sk);
                return Ok(None);
            }
        }
        Err(openpgp::anyhow::anyhow!(
            "no secret key given fits this message (is it the admin key of this repository?)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
    use openpgp::types::DataFormat;
    use std::io::Write;

    fn keys() -> (Recipients, Opener) {
        let generated = generate_key("test").unwrap();
        let certs = normalize_certs(&generated.cert_armored, "test cert").unwrap();
        let keys = SecretKeys::from_bytes(&generated.secret_armored, "test key", None).unwrap();
        (Recipients::from_armored(&certs).unwrap(), Opener::new(keys))
    }

    /// How blobs were sealed before core/src/seipd.rs: sequoia's streaming
    /// writer (partial body lengths). Repositories hold such blobs.
    fn seal_with_sequoia(sealer: &PackSealer, payload: &[u8]) -> Vec<u8> {
        let mut out = sealer.pkesk_bytes.clone();
        let message = Message::new(&mut out);
        let message = Encryptor::with_session_key(message, SYM, sealer.session_key.clone())
            .unwrap()
            .build()
            .unwrap();
        let mut literal = LiteralWriter::new(message)
            .format(DataFormat::Binary)
            .build()
            .unwrap();
        literal.write_all(payload).unwrap();
        literal.finalize().unwrap();
        out
    }

    #[test]
    fn own_writer_and_sequoia_agree_both_ways() {
        let (recipients, opener) = keys();
        let sealer = PackSealer::new(&recipients).unwrap();
        for len in [0usize, 10, 191, 192, 8383, 8384, 100_000, 3 << 20] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let ours = sealer.seal(&payload).unwrap();
            assert_eq!(opener.open_with_sequoia("ours", &ours).unwrap(), payload);
            let theirs = seal_with_sequoia(&sealer, &payload);
            // The first open of a pack decrypts the PKESK; later ones hit the cache.
            for _ in 0..2 {
                assert_eq!(opener.open_fast(&theirs).as_deref(), Some(&payload[..]));
                assert_eq!(opener.open_fast(&ours).as_deref(), Some(&payload[..]));
            }
        }
        assert_eq!(opener.session_keys.lock().unwrap().len(), 1);
    }

    #[test]
    fn flipped_bits_anywhere_are_damage_never_other_bytes() {
        let (recipients, opener) = keys();
        let sealer = PackSealer::new(&recipients).unwrap();
        let payload = vec![42u8; 20_000];
        let good = sealer.seal(&payload).unwrap();
        for at in (0..good.len()).step_by(97) {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            match opener.open("data/ab/cd", &bad) {
                Ok(plain) => assert_eq!(plain, payload, "flip at {at} gave other bytes"),
                Err(e) => assert!(e.to_string().contains("data/ab/cd"), "{e}"),
            }
        }
    }

    #[test]
    fn seal_and_open_round_trip_with_cached_session_key() {
        let generated = generate_key("test").unwrap();
        let certs = normalize_certs(&generated.cert_armored, "test cert").unwrap();
        let recipients = Recipients::from_armored(&certs).unwrap();
        let sealer = PackSealer::new(&recipients).unwrap();
        let a = sealer.seal(b"first blob").unwrap();
        let b = sealer.seal(b"second blob").unwrap();
        let keys = SecretKeys::from_bytes(&generated.secret_armored, "test key", None).unwrap();
        let opener = Opener::new(keys);
        assert_eq!(opener.open("a", &a).unwrap(), b"first blob");
        assert_eq!(opener.session_keys.lock().unwrap().len(), 1);
        assert_eq!(opener.open("b", &b).unwrap(), b"second blob");
        assert_eq!(opener.session_keys.lock().unwrap().len(), 1);
    }

    #[test]
    fn tampered_message_is_damage_not_data() {
        let generated = generate_key("test").unwrap();
        let certs = normalize_certs(&generated.cert_armored, "c").unwrap();
        let recipients = Recipients::from_armored(&certs).unwrap();
        let mut sealed = seal_message(&recipients, &[7u8; 4096]).unwrap();
        let n = sealed.len();
        sealed[n - 100] ^= 1;
        let keys = SecretKeys::from_bytes(&generated.secret_armored, "k", None).unwrap();
        let err = Opener::new(keys).open("data/xx/yy", &sealed).unwrap_err();
        assert!(err.to_string().contains("data/xx/yy"), "{err}");
    }

    fn writer(name: &str) -> (SnapshotSigner, Writers) {
        let generated = generate_signing_key(name).unwrap();
        let signer = SnapshotSigner::from_armored(&generated.secret_armored, name).unwrap();
        let cert = String::from_utf8(generated.cert_armored).unwrap();
        assert!(signer
            .fingerprint()
            .eq_ignore_ascii_case(&generated.fingerprint));
        (signer, Writers::from_armored(&[cert]).unwrap())
    }

    #[test]
    fn only_a_listed_writer_signature_opens_a_signed_message() {
        let (recipients, opener) = keys();
        let (signer, writers) = writer("writer");
        let (other, _) = writer("someone else");
        let sealed = seal_signed(&recipients, &signer, b"{\"snapshot\":1}").unwrap();
        let opened = opener
            .open_signed("snapshots/a", &sealed, &writers)
            .unwrap();
        assert_eq!(opened, b"{\"snapshot\":1}");
        // What anyone with the public certificate can make: encrypted, unsigned.
        let unsigned = seal_message(&recipients, b"{}").unwrap();
        let err = opener
            .open_signed("snapshots/b", &unsigned, &writers)
            .unwrap_err();
        assert!(matches!(err, Error::Forged { .. }), "{err}");
        assert!(err.to_string().contains("snapshots/b"), "{err}");
        // Signed, but by a key the repository does not list.
        let stranger = seal_signed(&recipients, &other, b"{}").unwrap();
        let err = opener
            .open_signed("snapshots/c", &stranger, &writers)
            .unwrap_err();
        assert!(matches!(err, Error::Forged { .. }), "{err}");
        // Damage is still damage, never "forged".
        let mut flipped = sealed.clone();
        let n = flipped.len();
        flipped[n - 30] ^= 1;
        let err = opener
            .open_signed("snapshots/d", &flipped, &writers)
            .unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        // A signing key is not a decryption key, and a secret key file is
        // needed: the certificate alone signs nothing.
        let generated = generate_signing_key("w").unwrap();
        assert!(SnapshotSigner::from_armored(&generated.cert_armored, "w.cert").is_err());
    }

    /// Found by fuzz/ (target config): a message whose SEIPD v1 body is
    /// shorter than its prefix and MDC made sequoia 2.4 panic.
    #[test]
    fn a_seipd_packet_too_short_for_its_mdc_is_damage_not_a_panic() {
        let (recipients, opener) = keys();
        let sealer = PackSealer::new(&recipients).unwrap();
        let good = sealer.seal(b"x").unwrap();
        let split = seipd::split(&good).unwrap();
        for body_len in 1..40usize {
            // PKESKs, then a SEIPD v1 packet (tag 18, new format) holding
            // the first body_len bytes of the real one's body.
            let mut bad = split.pkesks.to_vec();
            bad.extend_from_slice(&[0xc0 | 18, body_len as u8]);
            bad.extend_from_slice(&split.seipd[..body_len]);
            let err = opener.open("data/ab/cd", &bad).unwrap_err();
            assert!(matches!(err, Error::Damaged { .. }), "{body_len}: {err}");
        }
    }

    #[test]
    fn certificate_is_not_a_secret_key() {
        let generated = generate_key("test").unwrap();
        let err = SecretKeys::from_bytes(&generated.cert_armored, "admin.cert", None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("holds no secret key"), "{err}");
    }
}
