//! One function per decoder of repository data, fed arbitrary bytes: each
//! must return (an error is fine) and never panic, hang or allocate without
//! bound. Used by the cargo-fuzz targets in fuzz/fuzz_targets/ and, over the
//! committed corpus, by core/tests/fuzz_corpus.rs on stable Rust.
//!
//! The keys in fuzz/keys/ exist only for this: an admin key the corpus's
//! messages are encrypted to, and a writer certificate that signed its
//! snapshots. They protect nothing.

use coffer_core::crypto::blob;
use coffer_core::crypto::{Opener, SecretKeys, Writers};
use coffer_core::format::chunk_key::ChunkIdKey;
use coffer_core::format::config::RepoConfig;
use coffer_core::format::id::{BlobId, PackId};
use coffer_core::format::index::{self, IndexFile};
use coffer_core::format::snapshot::Snapshot;
use coffer_core::format::tree::{Location, Tree};
use std::sync::OnceLock;

/// A fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// Every target, by name (the corpus directory's name).
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("snapshot", snapshot),
    ("tree", tree),
    ("index", index),
    ("blob", blob),
    ("message", message),
    ("key_change", key_change),
];

/// `config` as stored.
pub fn config(data: &[u8]) {
    if let Ok(config) = RepoConfig::from_json(data, "config") {
        let _ = Writers::from_armored(&config.writers);
        let _ = config.unseal_chunk_key(&keys().0);
    }
}

/// A snapshot's JSON (the plaintext of a `snapshots/` object).
pub fn snapshot(data: &[u8]) {
    if let Ok(s) = Snapshot::from_json(data, "snapshots/x") {
        let _ = s.time();
        let _ = s.to_json();
    }
}

/// A tree's JSON (the plaintext of a tree blob), and what readers compute
/// from a tree they accepted.
pub fn tree(data: &[u8]) {
    if let Ok(mut tree) = Tree::from_json(data, "tree") {
        for entry in &tree.entries {
            let _ = entry.chunk_starts().last();
            let _ = entry.extents().len();
            let _ = entry.display_name();
        }
        let _ = tree.to_json();
    }
}

/// An index object's JSON.
pub fn index(data: &[u8]) {
    // The streaming parse `check` and `prune` use takes exactly what the
    // whole parse takes, and sees the same packs.
    let whole = IndexFile::from_json(data, "index/x");
    let mut seen = Vec::new();
    let streamed = index::each_pack(data, "index/x", |p| seen.push(p));
    match (&whole, &streamed) {
        (Ok(whole), Ok(())) => {
            assert_eq!(whole.packs.len(), seen.len());
            for (pack, summary) in whole.packs.iter().zip(&seen) {
                assert_eq!(
                    (
                        pack.id,
                        pack.kind,
                        pack.size,
                        &pack.time,
                        pack.blobs.len() as u64
                    ),
                    (
                        summary.id,
                        summary.kind,
                        summary.size,
                        &summary.time,
                        summary.blob_count.0
                    )
                );
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "whole: {:?}, streamed: {:?}",
            whole.as_ref().map(|_| ()),
            streamed
        ),
    }
}

/// A stored blob: 4 bytes of claimed plaintext length (little endian),
/// then the blob's bytes as read from a pack.
pub fn blob(data: &[u8]) {
    let Some((len, stored)) = data.split_first_chunk::<4>() else {
        return;
    };
    let loc = Location {
        id: BlobId([0; 32]),
        pack: PackId([0; 32]),
        offset: 0,
        length: stored.len() as u64,
        raw_length: u64::from(u32::from_le_bytes(*len)) % (32 << 20),
    };
    let (opener, chunk_key, _) = keys();
    let _ = blob::decode(opener, chunk_key, &loc, "data/00/00", stored);
}

/// Any OpenPGP message, opened as a blob is and as a snapshot is.
pub fn message(data: &[u8]) {
    let (opener, _, writers) = keys();
    // The bound every reader relies on: no Compressed Data packet is
    // inflated, so what opens is never longer than the message.
    let streamed = opener.open_streaming("index/x", data, data.len() as u64, |plain| {
        let mut out = Vec::new();
        plain
            .read_to_end(&mut out)
            .map_err(|e| coffer_core::Error::damaged("index/x", e.to_string()))?;
        Ok(out)
    });
    if let (Ok(streamed), Ok(whole)) = (&streamed, &opener.open("data/00/00", data)) {
        assert!(streamed == whole, "a stream opened to other bytes");
    }
    for plain in [
        opener.open("data/00/00", data),
        opener
            .open_signed("snapshots/x", data, writers)
            .map(|(plain, _)| plain),
        streamed,
        // A key change is read before its signature is checked (to learn
        // its signer): the same bound, no panic.
        coffer_core::crypto::signed::unverified_payload("keys/x", data),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            plain.len() <= data.len(),
            "{} from {}",
            plain.len(),
            data.len()
        );
    }
}

/// The fuzzing keys: an opener over fuzz/keys/admin.key, a fixed chunk-id
/// key, and the writer certificate of fuzz/keys/writer.cert.
/// A key change as stored (a signed message), or its JSON: read unverified
/// as a reader does first, then parsed and applied to a state whose admin
/// is taken to have signed it and whose head it follows (so the rules
/// past the signature and the link, and the certificates inside, are what
/// the fuzzer reaches).
pub fn key_change(data: &[u8]) {
    use coffer_core::crypto::keys::CertParser;
    use coffer_core::crypto::signed::unverified_payload;
    use coffer_core::format::id::ObjectId;
    use coffer_core::format::key_change::{KeyChange, KeyState};
    let plain = unverified_payload("keys/x", data).ok();
    if let Some(plain) = &plain {
        assert!(
            plain.len() <= data.len(),
            "{} from {}",
            plain.len(),
            data.len()
        );
    }
    for json in [plain.as_deref(), Some(data)].into_iter().flatten() {
        let Ok(change) = KeyChange::from_json(json, "keys/x") else {
            continue;
        };
        let admin = String::from_utf8_lossy(include_bytes!("../keys/admin.cert")).into_owned();
        let writer = String::from_utf8_lossy(include_bytes!("../keys/writer.cert")).into_owned();
        let head = ObjectId::from_hex(&change.previous).unwrap_or(ObjectId([0; 32]));
        let mut state = KeyState {
            writers: Vec::new(),
            recipients: vec![admin],
            recipient_fingerprints: vec!["ADMIN".into()],
            chunk_id_key_sealed: String::new(),
            sealed_chunk_keys: Vec::new(),
            seq: change.seq.saturating_sub(1),
            head,
        };
        let applied = state.apply(
            &change,
            "keys/x",
            head,
            "ADMIN",
            &change.repository,
            &CertParser,
        );
        if applied.is_ok() {
            let _ = state.writer_certs();
            let _ = state.writer_by_fingerprint(&writer);
        }
        let _ = change.to_json();
    }
}

fn keys() -> &'static (Opener, ChunkIdKey, Writers) {
    static KEYS: OnceLock<(Opener, ChunkIdKey, Writers)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let secret = SecretKeys::from_bytes(include_bytes!("../keys/admin.key"), "fuzz key", None)
            .expect("fuzz/keys/admin.key");
        let cert = String::from_utf8_lossy(include_bytes!("../keys/writer.cert")).into_owned();
        let writers = Writers::from_armored(&[cert]).expect("fuzz/keys/writer.cert");
        (
            Opener::new(secret),
            ChunkIdKey::from_bytes([7; 32]),
            writers,
        )
    })
}
