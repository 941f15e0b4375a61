//! Gzip bodies assembled from separately compressed pieces, so that an answer whose
//! parts did not change is not compressed again.
//!
//! Each piece is a raw deflate stream of non-final blocks ending on a sync flush (an
//! empty stored block): such streams can be concatenated, and each starts without a
//! dictionary, so a piece compresses the same wherever it stands. The gzip member is a
//! fixed header, the pieces, an empty final block, then the CRC-32 of all the bytes
//! (combined from the pieces' CRCs) and their length. Equal pieces in equal order give
//! equal bytes.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

/// Gzip header: deflate, no flags, no modification time, no extra flags, unknown OS
/// (what `flate2::GzEncoder` writes by default).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// An empty final block with fixed Huffman codes: BFINAL=1, BTYPE=01, end-of-block.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// One piece of a gzip body: its deflate blocks and the CRC-32 and length of its bytes.
#[derive(Debug, Clone)]
pub struct Piece {
    /// Shared with every body served from it (see [`member`]).
    deflate: Bytes,
    crc: crc32fast::Hasher,
    /// Length of the uncompressed bytes.
    bytes: usize,
}

impl Piece {
    /// Compresses `bytes` (CPU work: call it off the async executor).
    pub fn new(bytes: &[u8]) -> Self {
        let mut crc = crc32fast::Hasher::new();
        crc.update(bytes);
        Self {
            deflate: Bytes::from(deflate_sync(bytes)),
            crc,
            bytes: bytes.len(),
        }
    }

    /// Compressed size.
    pub fn len(&self) -> usize {
        self.deflate.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deflate.is_empty()
    }
}

/// Raw deflate of `bytes`, ending on a sync flush (byte-aligned, not final).
fn deflate_sync(bytes: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(bytes.len() / 3 + 64);
    loop {
        let consumed = usize::try_from(compress.total_in()).unwrap_or(usize::MAX);
        let input = bytes.get(consumed..).unwrap_or_default();
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        // Compressing into a Vec with spare room cannot fail.
        let status = compress
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .unwrap_or(Status::StreamEnd);
        let done = compress.total_in() as usize == bytes.len();
        // The flush is complete once the output buffer was not filled up.
        if (done && out.len() < out.capacity()) || status == Status::StreamEnd {
            break;
        }
    }
    out
}

/// The gzip member holding the pieces' bytes in order, as the slices to send one after
/// another: the pieces' compressed bytes are shared, not copied.
pub fn member<'a>(pieces: impl IntoIterator<Item = &'a Piece>) -> Vec<Bytes> {
    let mut out = vec![Bytes::from_static(&HEADER)];
    let mut crc = crc32fast::Hasher::new();
    let mut length = 0usize;
    for piece in pieces {
        out.push(piece.deflate.clone());
        crc.combine(&piece.crc);
        length += piece.bytes;
    }
    let mut trailer = Vec::with_capacity(FINAL_BLOCK.len() + 8);
    trailer.extend_from_slice(&FINAL_BLOCK);
    trailer.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE: the length modulo 2^32.
    trailer.extend_from_slice(&(length as u32).to_le_bytes());
    out.push(Bytes::from(trailer));
    out
}

/// [`member`] in one buffer.
pub fn assemble<'a>(pieces: impl IntoIterator<Item = &'a Piece>) -> Vec<u8> {
    member(pieces).concat()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read;

    use super::*;

    /// The bytes a gzip member holds (the render tests use it too).
    pub(crate) fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn pieces_concatenate_into_one_valid_member() {
        let texts: Vec<Vec<u8>> = vec![
            b"{\"Registry\":\"/\",\"Results\":[".to_vec(),
            Vec::new(),
            "é".repeat(100_000).into_bytes(),
            b",".to_vec(),
            (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect(),
            b"]}".to_vec(),
        ];
        let pieces: Vec<Piece> = texts.iter().map(|t| Piece::new(t)).collect();
        let gzip = assemble(&pieces);
        assert_eq!(gunzip(&gzip), texts.concat());
        // Deterministic: equal pieces give equal bytes.
        assert_eq!(assemble(&pieces), gzip);
        assert_eq!(gunzip(&assemble(&[])), b"");
        // The whole stream is read by a strict decoder too (trailer checked).
        let mut decoder = flate2::read::MultiGzDecoder::new(&gzip[..]);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), texts.iter().map(Vec::len).sum::<usize>());
    }
}
