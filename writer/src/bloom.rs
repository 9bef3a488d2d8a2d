//! A blocked Bloom filter over blob ids: which ids the state's blob table
//! may hold, so a new chunk's lookup is answered in memory instead of by a
//! read of a random page of a table that, at 10M files, is a gigabyte.
//!
//! Blob ids are keyed BLAKE3 outputs, uniformly random, so the filter takes
//! its bit positions straight from the id's bytes: bytes 0..8 pick a
//! 512-bit block (one cache line), and eight 9-bit numbers from bytes 8..24
//! pick the bits in it. At 10 bits an id about 1-2% of absent ids answer
//! "maybe" (and go to the table); a present id always answers "maybe".
//!
//! It grows by layers: the ids found in the table when it is built, then
//! one layer per batch merged into the table later; an id may be present
//! if any layer says so.

use coffer_core::format::id::BlobId;

/// Bits a block holds: one 64-byte cache line.
const BLOCK_WORDS: usize = 8;
/// Bits set per id.
const PROBES: usize = 8;
/// Bits per id a layer is sized for.
const BITS_PER_ID: usize = 10;

/// The first 8 bytes of an id as a number, for maps and filters: ids are
/// uniformly random.
pub(crate) fn id_head(id: &BlobId) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(head)
}

/// One fixed-size blocked Bloom filter.
struct Layer {
    blocks: Vec<[u64; BLOCK_WORDS]>,
}

impl Layer {
    fn with_capacity(ids: usize) -> Self {
        let blocks = (ids * BITS_PER_ID).div_ceil(BLOCK_WORDS * 64).max(1);
        Self {
            blocks: vec![[0; BLOCK_WORDS]; blocks],
        }
    }

    /// The block and the bit positions in it for `id`.
    fn positions(&self, id: &BlobId) -> (usize, [u16; PROBES]) {
        let h = id_head(id);
        // Multiply-shift maps h onto 0..blocks without a division's bias.
        let block = ((u128::from(h) * self.blocks.len() as u128) >> 64) as usize;
        let mut bits = [0u16; PROBES];
        for (i, bit) in bits.iter_mut().enumerate() {
            let two = [id.0[8 + 2 * i], id.0[9 + 2 * i]];
            *bit = u16::from_le_bytes(two) & 511;
        }
        (block, bits)
    }

    fn insert(&mut self, id: &BlobId) {
        let (block, bits) = self.positions(id);
        let words = &mut self.blocks[block];
        for bit in bits {
            words[usize::from(bit / 64)] |= 1 << (bit % 64);
        }
    }

    fn may_contain(&self, id: &BlobId) -> bool {
        let (block, bits) = self.positions(id);
        let words = &self.blocks[block];
        bits.iter()
            .all(|&bit| words[usize::from(bit / 64)] & (1 << (bit % 64)) != 0)
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * BLOCK_WORDS * 8
    }
}

/// The ids a table may hold, as layers of blocked Bloom filters.
#[derive(Default)]
pub(crate) struct BlobFilter {
    layers: Vec<Layer>,
}

impl BlobFilter {
    /// Starts a new layer, sized for about `count` ids (more only raise its
    /// false positives); [`insert`](Self::insert) fills it.
    pub fn add_layer(&mut self, count: usize) {
        self.layers.push(Layer::with_capacity(count));
    }

    /// Adds `id` to the newest layer (starting one if there is none).
    pub fn insert(&mut self, id: &BlobId) {
        if self.layers.is_empty() {
            self.add_layer(0);
        }
        if let Some(layer) = self.layers.last_mut() {
            layer.insert(id);
        }
    }

    /// Whether `id` may have been added: false means it surely was not.
    pub fn may_contain(&self, id: &BlobId) -> bool {
        self.layers.iter().any(|l| l.may_contain(id))
    }

    /// Memory the layers take.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(Layer::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> BlobId {
        BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn added_ids_are_always_found_and_few_others_are() {
        let mut f = BlobFilter::default();
        assert!(!f.may_contain(&id(1)), "an empty filter holds nothing");
        let first: Vec<_> = (0..50_000).map(id).collect();
        f.add_layer(first.len());
        first.iter().for_each(|i| f.insert(i));
        let second: Vec<_> = (50_000..60_000).map(id).collect();
        f.add_layer(second.len());
        second.iter().for_each(|i| f.insert(i));
        assert!(first.iter().chain(&second).all(|i| f.may_contain(i)));
        let false_positives = (1_000_000..1_100_000)
            .filter(|&n| f.may_contain(&id(n)))
            .count();
        // Two layers at ~1.5% each.
        assert!(false_positives < 5_000, "{false_positives} of 100,000");
        assert!(false_positives > 0, "a Bloom filter this small has some");
        assert_eq!(f.bytes(), (50_000 * 10usize).div_ceil(512) * 64 + 12_544);
    }

    #[test]
    fn a_layer_sized_too_small_still_finds_everything() {
        let mut f = BlobFilter::default();
        let ids: Vec<_> = (0..10_000).map(id).collect();
        ids.iter().for_each(|i| f.insert(i));
        assert!(ids.iter().all(|i| f.may_contain(i)));
    }
}
