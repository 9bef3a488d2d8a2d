//! Opening: the readers' side of the envelope. An [`Opener`] decrypts
//! blobs, trees, indexes and snapshots with the admin's secret keys,
//! caching one session key per set of PKESK packets (one secret-key
//! operation per pack). Messages of exactly coffer's shape are opened by
//! `crate::crypto::seipd` with OpenSSL; every other shape, and every one
//! that fails a check there, by sequoia, which says what is wrong.

use crate::crypto::keys::{SecretKeys, Writers, POLICY, SYM};
use crate::crypto::seipd;
use crate::error::{Error, Result};
use sequoia_openpgp as openpgp;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use openpgp::crypto::SessionKey;
use openpgp::packet::prelude::*;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::serialize::Serialize;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle};

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

/// What opening a message encrypted to none of the given keys says: a
/// snapshot written before this admin became a recipient, or after it
/// was removed, reads so (`Error::is_not_for_this_key`).
pub(crate) const NO_KEY_FITS: &str = "no secret key given fits this message";

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
    /// can encrypt, only a writer can sign. Returns the plaintext and the
    /// fingerprint of the writer certificate whose key signed it.
    pub fn open_signed(
        &self,
        object: &str,
        message: &[u8],
        writers: &Writers,
    ) -> Result<(Vec<u8>, String)> {
        let (plain, helper) =
            self.decrypt_with(object, message, Helper::new(self, Some(writers)))?;
        match helper.signer {
            Some(signer) => Ok((plain, signer)),
            None => Err(Error::Forged {
                key: object.to_string(),
                what: "it carries no valid signature of a writer of the repository".into(),
            }),
        }
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
    fn decrypt_with<'a>(
        &'a self,
        object: &str,
        message: &[u8],
        helper: Helper<'a>,
    ) -> Result<(Vec<u8>, Helper<'a>)> {
        // Without compression (refused by `inspect`) the plaintext is
        // shorter than the message; never read more than that.
        let limit = message.len() as u64;
        let builder = || DecryptorBuilder::from_bytes(message);
        self.decrypt_reading(object, builder, limit, helper, |plain| {
            let mut out = Vec::new();
            plain
                .read_to_end(&mut out)
                .map_err(|e| Error::damaged(object, format!("cannot decrypt: {e}")))?;
            Ok(out)
        })
    }

    /// Opens the message `reader` yields (at most `limit` bytes long) as a
    /// stream: `consume` reads the plaintext as it is decrypted, so no more
    /// than sequoia's buffer of it is ever held. The message's integrity is
    /// known only at its end: what `consume` made counts only if this
    /// returns `Ok` (an index read this way, never a snapshot, whose
    /// signature must hold before anything in it is believed).
    pub fn open_streaming<T>(
        &self,
        object: &str,
        reader: impl Read + Send + Sync,
        limit: u64,
        consume: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<T> {
        let builder =
            || DecryptorBuilder::from_reader(reader).map(|b| b.buffer_size(STREAM_BUFFER));
        Ok(self
            .decrypt_reading(object, builder, limit, Helper::new(self, None), consume)?
            .0)
    }

    /// Runs sequoia's decryptor over the message `builder` makes, with
    /// `helper`, and hands its plaintext to `consume`; then reads what
    /// `consume` left, to the end, so that the integrity check (MDC) has
    /// run. More than `limit` bytes of plaintext is damage (without
    /// compression, which `inspect` refuses, the plaintext is shorter than
    /// the message). Fails unless the message was encrypted. Returns what
    /// `consume` made and the helper (what it saw).
    ///
    /// sequoia 2.4 panics on some malformed messages (found by fuzzing: a
    /// SEIPD v1 packet too short for its prefix and MDC hits an `unwrap` in
    /// `PacketParser::decrypt_`; docs/upstream/ holds the report to file);
    /// a panic there is damage to `object`, never the end of the process.
    fn decrypt_reading<'a, 'm, T>(
        &'a self,
        object: &str,
        builder: impl FnOnce() -> openpgp::Result<DecryptorBuilder<'m>>,
        limit: u64,
        helper: Helper<'a>,
        consume: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<(T, Helper<'a>)>
    where
        'a: 'm,
    {
        let damaged =
            |e: openpgp::anyhow::Error| Error::damaged(object, format!("cannot decrypt: {e:#}"));
        let run = std::panic::AssertUnwindSafe(|| {
            let mut decryptor = builder()
                .map_err(damaged)?
                .with_policy(&POLICY, None, helper)
                .map_err(damaged)?;
            let mut plain = Counted {
                inner: (&mut decryptor).take(limit + 1),
                read: 0,
            };
            let made = consume(&mut plain)?;
            std::io::copy(&mut plain, &mut std::io::sink())
                .map_err(|e| Error::damaged(object, format!("cannot decrypt: {e}")))?;
            if plain.read > limit {
                return Err(Error::damaged(
                    object,
                    "its plaintext is longer than the message (coffer never writes that)",
                ));
            }
            Ok((made, decryptor.into_helper()))
        });
        GUARDED_PARSE.with(|g| g.set(true));
        let caught = std::panic::catch_unwind(run);
        GUARDED_PARSE.with(|g| g.set(false));
        let (made, helper) = caught.unwrap_or_else(|_| {
            Err(Error::damaged(
                object,
                "malformed OpenPGP message (the parser gave up on it)",
            ))
        })?;
        if !helper.encrypted {
            return Err(Error::damaged(object, "not an encrypted message"));
        }
        Ok((made, helper))
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

/// Plaintext sequoia holds back at most while a message is read as a
/// stream ([`Opener::open_streaming`]).
const STREAM_BUFFER: usize = 1 << 20;

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

struct Helper<'a> {
    opener: &'a Opener,
    /// Whether the message was encrypted.
    encrypted: bool,
    /// Whose signatures count; `None` ignores signatures.
    writers: Option<&'a Writers>,
    /// The certificate (fingerprint) of the first of `writers` whose
    /// signature checked out.
    signer: Option<String>,
}

impl<'a> Helper<'a> {
    /// A helper that has seen nothing yet; signatures count only by
    /// `writers`, and not at all without them.
    fn new(opener: &'a Opener, writers: Option<&'a Writers>) -> Self {
        Self {
            opener,
            encrypted: false,
            writers,
            signer: None,
        }
    }
}

impl VerificationHelper for Helper<'_> {
    /// Refuses a Compressed Data packet before it is inflated: coffer
    /// never writes one (blobs hold zstd frames; snapshots, indexes and
    /// the chunk-id key are stored as they are), and one that inflates a
    /// few megabytes into gigabytes is the cheapest way to exhaust a
    /// reader's memory.
    fn inspect(&mut self, pp: &openpgp::parse::PacketParser<'_>) -> openpgp::Result<()> {
        if let Packet::CompressedData(_) = pp.packet {
            return Err(openpgp::anyhow::anyhow!(
                "it holds a Compressed Data packet, which coffer never writes (left unread)"
            ));
        }
        Ok(())
    }

    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.writers.map(|w| w.certs.clone()).unwrap_or_default())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure.iter() {
            match layer {
                MessageLayer::Encryption { .. } => self.encrypted = true,
                // Signatures inside the encryption only: one outside it
                // could have been added by anyone to any ciphertext.
                MessageLayer::SignatureGroup { results }
                    if self.encrypted && self.writers.is_some() && self.signer.is_none() =>
                {
                    self.signer = results
                        .iter()
                        .flatten()
                        .next()
                        .map(|good| good.ka.cert().fingerprint().to_hex());
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
            "{NO_KEY_FITS} (is it the admin key of this repository?)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{
        generate_key, generate_signing_key, normalize_certs, Recipients, SnapshotSigner,
    };
    use crate::crypto::seal::{seal_message, seal_signed, PackSealer};
    use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
    use openpgp::types::DataFormat;
    use std::io::Write;

    fn keys() -> (Recipients, Opener) {
        let generated = generate_key("test").unwrap();
        let certs = normalize_certs(&generated.cert_armored, "test cert").unwrap();
        let keys = SecretKeys::from_bytes(&generated.secret_armored, "test key", None).unwrap();
        (Recipients::from_armored(&certs).unwrap(), Opener::new(keys))
    }

    /// Sequoia's streaming encryptor writing into `out` (which holds the
    /// pack's PKESK packets) with the pack's session key.
    fn sequoia_encryptor<'a>(sealer: &PackSealer, out: &'a mut Vec<u8>) -> Message<'a> {
        Encryptor::with_session_key(Message::new(out), SYM, sealer.session_key.clone())
            .unwrap()
            .build()
            .unwrap()
    }

    /// How blobs were sealed before core/src/crypto/seipd.rs: sequoia's streaming
    /// writer (partial body lengths). Repositories hold such blobs.
    fn seal_with_sequoia(sealer: &PackSealer, payload: &[u8]) -> Vec<u8> {
        let mut out = sealer.pkesk_bytes.clone();
        let mut literal = LiteralWriter::new(sequoia_encryptor(sealer, &mut out))
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
        let (opened, by) = opener
            .open_signed("snapshots/a", &sealed, &writers)
            .unwrap();
        assert_eq!(opened, b"{\"snapshot\":1}");
        assert_eq!(by, signer.fingerprint(), "the signer is named");
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

    /// What a put-only credential can store: an encrypted message whose
    /// Compressed Data packet inflates a few hundred KiB into 256 MiB. It
    /// is refused before any of it is inflated (coffer never compresses
    /// inside OpenPGP), signed or not.
    #[test]
    fn a_compressed_message_is_refused_before_it_inflates() {
        use openpgp::serialize::stream::Compressor;
        use openpgp::types::CompressionAlgorithm;
        let (recipients, opener) = keys();
        let (signer, writers) = writer("w");
        let sealer = PackSealer::new(&recipients).unwrap();
        let mut bomb = sealer.pkesk_bytes.clone();
        {
            let message = Compressor::new(sequoia_encryptor(&sealer, &mut bomb))
                .algo(CompressionAlgorithm::Zlib)
                .level(openpgp::types::CompressionLevel::best())
                .build()
                .unwrap();
            let mut literal = LiteralWriter::new(message).build().unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..256 {
                literal.write_all(&zeros).unwrap();
            }
            literal.finalize().unwrap();
        }
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let started = std::time::Instant::now();
        let err = opener.open("snapshots/bomb", &bomb).unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("Compressed Data"), "{err}");
        let err = opener
            .open_signed("snapshots/bomb", &bomb, &writers)
            .unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // The same message uncompressed and signed still opens.
        let plain = seal_signed(&recipients, &signer, b"{}").unwrap();
        assert_eq!(opener.open_signed("s", &plain, &writers).unwrap().0, b"{}");
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
}
