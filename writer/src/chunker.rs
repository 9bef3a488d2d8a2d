//! Content-defined chunking (FastCDC 2020) with the repository's parameters.
//!
//! Small files (under the minimum chunk size) are one chunk and are read in
//! one call; larger ones stream through `fastcdc::v2020::StreamCDC`, whose
//! gear table is seeded from the chunk-id key so boundaries leak less.

use coffer_core::config::ChunkerParams;
use fastcdc::v2020::{Normalization, StreamCDC};
use std::io::Read;

/// Splits readers into chunks.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
}

impl Chunker {
    /// A chunker for these parameters and gear seed.
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        Self { params, seed }
    }

    /// Files smaller than this are one chunk.
    pub fn min_size(&self) -> u64 {
        u64::from(self.params.min_size)
    }

    /// Calls `each` with every chunk of `source`, in order. `size_hint` is the
    /// expected length (a file's size), used to take the one-chunk path.
    pub fn chunk<R: Read>(
        &self,
        mut source: R,
        size_hint: Option<u64>,
        mut each: impl FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if let Some(size) = size_hint.filter(|&s| s < self.min_size()) {
            let mut buf = Vec::with_capacity(size as usize + 1);
            (&mut source).take(self.min_size()).read_to_end(&mut buf)?;
            if (buf.len() as u64) < self.min_size() {
                if !buf.is_empty() {
                    each(buf)?;
                }
                return Ok(());
            }
            // The file grew past the minimum while we read: chunk it all.
            return self.stream(std::io::Cursor::new(buf).chain(source), each);
        }
        self.stream(source, each)
    }

    fn stream<R: Read>(
        &self,
        source: R,
        mut each: impl FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let level = match self.params.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let cdc = StreamCDC::with_level_and_seed(
            source,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            level,
            self.seed,
        );
        for chunk in cdc {
            match chunk {
                Ok(c) => each(c.data)?,
                Err(fastcdc::v2020::Error::IoError(e)) => return Err(e),
                Err(fastcdc::v2020::Error::Empty) => break,
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(c: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.chunk(data, Some(data.len() as u64), |ch| {
            out.push(ch);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn chunks_reassemble_and_resync_after_an_edit() {
        let c = Chunker::new(ChunkerParams::default(), 42);
        let mut data = vec![0u8; 12 << 20];
        let mut x = 1u64;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let a = chunks(&c, &data);
        assert!(a.len() > 4, "{} chunks", a.len());
        assert_eq!(a.concat(), data);
        data[6 << 20] ^= 0xff;
        let b = chunks(&c, &data);
        let changed = b.iter().filter(|ch| !a.contains(ch)).count();
        assert!(changed <= 2, "{changed} chunks changed for one byte");
        assert_eq!(chunks(&c, b"small"), vec![b"small".to_vec()]);
        assert!(chunks(&c, b"").is_empty());
    }
}
