//! Is an icon payload a real image? Pure: bytes in, dimensions or the reason out.
//!
//! Magic bytes alone say nothing: the 8-byte PNG signature passes them and shows as a
//! broken image. [`Check::Header`] parses each format's header up to its dimensions (cheap
//! enough for every index rendering); [`Check::Full`] decodes every pixel of a PNG with the
//! `png` crate and walks the structure of a JPEG, GIF or WebP to its end (no decoder for
//! those is at hand; a truncated or garbled file is still refused). What is stored is
//! checked fully.

use super::{IconError, IconFormat};

/// The largest icon side accepted, in pixels. AppStream icons are 64 and 128 px (256 at
/// 2x scale); anything far larger is not an icon, and bounds what a decode costs.
pub const MAX_SIDE_PX: u32 = 1024;

/// What the PNG decoder may allocate besides its row buffers (text and ICC chunks).
const PNG_DECODE_LIMIT_BYTES: usize = 8 * 1024 * 1024;

/// How much of an image to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The header up to the dimensions: enough to name an icon that was stored after a
    /// full check.
    Header,
    /// The whole image: decoded (PNG) or its structure walked to the end (JPEG, GIF,
    /// WebP). What ingest stores.
    Full,
}

/// Width and height in pixels, each `1..=MAX_SIDE_PX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    pub width: u32,
    pub height: u32,
}

/// Checks that `bytes` is an image of `format` (whose magic bytes were already matched).
pub fn check(format: IconFormat, bytes: &[u8], check: Check) -> Result<Dimensions, IconError> {
    let full = check == Check::Full;
    match format {
        IconFormat::Png => png(bytes, full),
        IconFormat::Jpeg => jpeg(bytes, full),
        IconFormat::Gif => gif(bytes, full),
        IconFormat::Webp => webp(bytes, full),
    }
}

fn invalid(format: IconFormat, reason: impl Into<String>) -> IconError {
    IconError::NotAnImage {
        format: format.content_type(),
        reason: reason.into(),
    }
}

fn dimensions(width: u32, height: u32) -> Result<Dimensions, IconError> {
    if width == 0 || height == 0 || width > MAX_SIDE_PX || height > MAX_SIDE_PX {
        return Err(IconError::BadDimensions {
            width,
            height,
            max: MAX_SIDE_PX,
        });
    }
    Ok(Dimensions { width, height })
}

fn u16_be(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 2)?;
    Some(u32::from(u16::from_be_bytes([b[0], b[1]])))
}

fn u16_le(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 2)?;
    Some(u32::from(u16::from_le_bytes([b[0], b[1]])))
}

fn u24_le(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 3)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], 0]))
}

fn u32_le(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Signature and IHDR (with its CRC); fully: every row decoded, every CRC and the zlib
/// stream checked, up to IEND.
fn png(bytes: &[u8], full: bool) -> Result<Dimensions, IconError> {
    let bad = |e: png::DecodingError| invalid(IconFormat::Png, e.to_string());
    let mut decoder = png::Decoder::new_with_limits(
        bytes,
        png::Limits {
            bytes: PNG_DECODE_LIMIT_BYTES,
        },
    );
    decoder.set_ignore_text_chunk(true);
    let header = decoder.read_header_info().map_err(bad)?;
    // Before anything is allocated for the pixels.
    let found = dimensions(header.width, header.height)?;
    if !full {
        return Ok(found);
    }
    let mut reader = decoder.read_info().map_err(bad)?;
    while reader.next_row().map_err(bad)?.is_some() {}
    reader.finish().map_err(bad)?;
    Ok(found)
}

/// SOI, then marker segments up to the frame header (SOFn) with the dimensions; fully:
/// on to the start of scan, and the file ends with EOI.
fn jpeg(bytes: &[u8], full: bool) -> Result<Dimensions, IconError> {
    let bad = |reason: &str| invalid(IconFormat::Jpeg, reason);
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return Err(bad("no start-of-image marker"));
    }
    let mut at = 2;
    let mut frame = None;
    loop {
        if bytes.get(at) != Some(&0xff) {
            return Err(bad("a segment does not start with a marker"));
        }
        while bytes.get(at) == Some(&0xff) {
            at += 1; // fill bytes
        }
        let marker = *bytes.get(at).ok_or_else(|| bad("truncated"))?;
        at += 1;
        match marker {
            0x01 | 0xd0..=0xd7 => continue, // no length, no payload
            0xd9 => return Err(bad("end of image before any scan")),
            _ => {}
        }
        let length = u16_be(bytes, at).ok_or_else(|| bad("truncated"))? as usize;
        let segment = bytes
            .get(at + 2..at + length.max(2))
            .filter(|_| length >= 2)
            .ok_or_else(|| bad("a segment runs past the end"))?;
        // SOF0..SOF15 carry the frame's dimensions; C4 (DHT), C8 (JPG), CC (DAC) do not.
        if matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            let (Some(height), Some(width)) = (u16_be(segment, 1), u16_be(segment, 3)) else {
                return Err(bad("short frame header"));
            };
            let found = dimensions(width, height)?;
            if !full {
                return Ok(found);
            }
            frame = Some(found);
        }
        if marker == 0xda {
            let found = frame.ok_or_else(|| bad("a scan before the frame header"))?;
            // Entropy-coded data follows; a complete file ends with EOI.
            return if bytes.ends_with(&[0xff, 0xd9]) {
                Ok(found)
            } else {
                Err(bad("no end-of-image marker"))
            };
        }
        at += length;
    }
}

/// Skips GIF data sub-blocks (length-prefixed, ended by a zero length); the position
/// after them.
fn skip_sub_blocks(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = usize::from(*bytes.get(at)?);
        at += 1;
        if length == 0 {
            return Some(at);
        }
        at += length;
    }
}

/// Header and logical screen; fully: every block up to the trailer, at least one image.
fn gif(bytes: &[u8], full: bool) -> Result<Dimensions, IconError> {
    let bad = |reason: &str| invalid(IconFormat::Gif, reason);
    let (Some(width), Some(height), Some(&flags)) =
        (u16_le(bytes, 6), u16_le(bytes, 8), bytes.get(10))
    else {
        return Err(bad("truncated header"));
    };
    let found = dimensions(width, height)?;
    if !full {
        return Ok(found);
    }
    let colour_table = |flags: u8| {
        if flags & 0x80 != 0 {
            3 * (2usize << (flags & 0x07))
        } else {
            0
        }
    };
    let mut at = 13 + colour_table(flags);
    let mut images = 0;
    loop {
        match bytes.get(at) {
            // Extension: introducer, label, sub-blocks.
            Some(0x21) => {
                at = skip_sub_blocks(bytes, at + 2).ok_or_else(|| bad("truncated extension"))?;
            }
            // Image: descriptor (9 bytes), local colour table, LZW code size, sub-blocks.
            Some(0x2c) => {
                let flags = *bytes
                    .get(at + 9)
                    .ok_or_else(|| bad("truncated image descriptor"))?;
                at += 10 + colour_table(flags) + 1;
                at = skip_sub_blocks(bytes, at).ok_or_else(|| bad("truncated image data"))?;
                images += 1;
            }
            Some(0x3b) if images > 0 => return Ok(found),
            Some(0x3b) => return Err(bad("no image before the trailer")),
            Some(_) => return Err(bad("unknown block")),
            None => return Err(bad("no trailer")),
        }
    }
}

/// RIFF header and the first chunk's dimensions (`VP8 `, `VP8L` or `VP8X`); fully: every
/// chunk within the file, and image data present.
fn webp(bytes: &[u8], full: bool) -> Result<Dimensions, IconError> {
    let bad = |reason: &str| invalid(IconFormat::Webp, reason);
    let riff_size = u32_le(bytes, 4).ok_or_else(|| bad("truncated"))? as usize;
    // The RIFF size counts from offset 8; a file cut short is smaller.
    let end = riff_size
        .checked_add(8)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| bad("shorter than its RIFF size"))?;
    let bytes = &bytes[..end];
    let chunk = |at: usize| -> Option<(&[u8], &[u8])> {
        let kind = bytes.get(at..at + 4)?;
        let size = u32_le(bytes, at + 4)? as usize;
        Some((kind, bytes.get(at + 8..(at + 8).checked_add(size)?)?))
    };
    let (kind, data) = chunk(12).ok_or_else(|| bad("truncated first chunk"))?;
    let (width, height) = match kind {
        b"VP8 " => {
            if data.get(3..6) != Some(&[0x9d, 0x01, 0x2a][..]) {
                return Err(bad("no VP8 start code"));
            }
            let (Some(width), Some(height)) = (u16_le(data, 6), u16_le(data, 8)) else {
                return Err(bad("truncated VP8 header"));
            };
            (width & 0x3fff, height & 0x3fff)
        }
        b"VP8L" => {
            let (Some(0x2f), Some(bits)) = (data.first(), u32_le(data, 1)) else {
                return Err(bad("no VP8L signature"));
            };
            ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
        }
        b"VP8X" => {
            let (Some(width), Some(height)) = (u24_le(data, 4), u24_le(data, 7)) else {
                return Err(bad("truncated VP8X header"));
            };
            (width + 1, height + 1)
        }
        _ => return Err(bad("unknown first chunk")),
    };
    let found = dimensions(width, height)?;
    if !full || kind != b"VP8X" {
        return Ok(found);
    }
    // Extended format: metadata chunks, then the image (or animation frames).
    let mut at = 12;
    let mut image = false;
    while at < bytes.len() {
        let (kind, data) = chunk(at).ok_or_else(|| bad("a chunk runs past the end"))?;
        image |= matches!(kind, b"VP8 " | b"VP8L" | b"ANMF");
        // Chunks are padded to an even size.
        at += 8 + data.len() + (data.len() & 1);
    }
    if image {
        Ok(found)
    } else {
        Err(bad("no image data"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2x3 JPEG and WebP (VP8X, ICCP, VP8) from Chromium's encoders (`canvas.toDataURL`).
    const CHROMIUM_JPEG: &[u8] = include_bytes!("testdata/chromium-2x3.jpg");
    const CHROMIUM_WEBP: &[u8] = include_bytes!("testdata/chromium-2x3.webp");

    /// The classic 1x1 transparent GIF.
    const GIF_1X1: &[u8] = &[
        0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0xff, 0xff,
        0xff, 0x00, 0x00, 0x00, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
    ];

    fn both(format: IconFormat, bytes: &[u8]) -> [Result<Dimensions, IconError>; 2] {
        [
            check(format, bytes, Check::Header),
            check(format, bytes, Check::Full),
        ]
    }

    fn reason(result: Result<Dimensions, IconError>) -> String {
        match result {
            Err(IconError::NotAnImage { reason, .. }) => reason,
            other => panic!("expected NotAnImage, got {other:?}"),
        }
    }

    #[test]
    fn real_images_pass_with_their_dimensions() {
        let png = super::super::tests::PNG_1X1;
        let one = Dimensions {
            width: 1,
            height: 1,
        };
        let two_by_three = Dimensions {
            width: 2,
            height: 3,
        };
        assert_eq!(both(IconFormat::Png, png), [Ok(one), Ok(one)]);
        assert_eq!(both(IconFormat::Gif, GIF_1X1), [Ok(one), Ok(one)]);
        assert_eq!(
            both(IconFormat::Jpeg, CHROMIUM_JPEG),
            [Ok(two_by_three), Ok(two_by_three)]
        );
        assert_eq!(
            both(IconFormat::Webp, CHROMIUM_WEBP),
            [Ok(two_by_three), Ok(two_by_three)]
        );
    }

    #[test]
    fn the_png_signature_alone_is_not_an_image() {
        for result in both(IconFormat::Png, b"\x89PNG\r\n\x1a\n") {
            assert!(!reason(result).is_empty());
        }
    }

    #[test]
    fn a_cut_or_corrupted_png_passes_the_header_check_only() {
        let png = super::super::tests::PNG_1X1;
        // Cut inside IDAT: the header is intact.
        let cut = &png[..png.len() - 20];
        assert!(check(IconFormat::Png, cut, Check::Header).is_ok());
        reason(check(IconFormat::Png, cut, Check::Full));
        // One bit flipped in the compressed pixels: the CRC no longer matches.
        let mut flipped = png.to_vec();
        flipped[45] ^= 0x01;
        assert!(check(IconFormat::Png, &flipped, Check::Header).is_ok());
        reason(check(IconFormat::Png, &flipped, Check::Full));
        // A colour type PNG does not have (5) is caught by the header check already.
        let mut header = png.to_vec();
        header[25] = 5;
        reason(check(IconFormat::Png, &header, Check::Header));
    }

    #[test]
    fn truncated_jpeg_gif_and_webp_fail_the_full_check() {
        let jpeg = CHROMIUM_JPEG;
        assert!(check(IconFormat::Jpeg, &jpeg[..jpeg.len() - 2], Check::Header).is_ok());
        reason(check(
            IconFormat::Jpeg,
            &jpeg[..jpeg.len() - 2],
            Check::Full,
        ));
        reason(check(IconFormat::Jpeg, &jpeg[..40], Check::Header));
        reason(check(IconFormat::Jpeg, &[0xff, 0xd8, 0xff], Check::Header));

        assert!(check(IconFormat::Gif, &GIF_1X1[..30], Check::Header).is_ok());
        reason(check(IconFormat::Gif, &GIF_1X1[..30], Check::Full));
        reason(check(IconFormat::Gif, b"GIF89a", Check::Header));
        // Header and trailer, no image.
        let mut empty = GIF_1X1[..19].to_vec();
        empty.push(0x3b);
        reason(check(IconFormat::Gif, &empty, Check::Full));

        let webp = CHROMIUM_WEBP;
        reason(check(
            IconFormat::Webp,
            &webp[..webp.len() - 1],
            Check::Header,
        ));
        reason(check(
            IconFormat::Webp,
            b"RIFF\x04\0\0\0WEBP",
            Check::Header,
        ));
        // VP8X whose image chunk is gone (RIFF size adjusted): only metadata.
        let mut no_image = webp[..30].to_vec();
        no_image[4..8].copy_from_slice(&22u32.to_le_bytes());
        assert!(check(IconFormat::Webp, &no_image, Check::Header).is_ok());
        reason(check(IconFormat::Webp, &no_image, Check::Full));
    }

    #[test]
    fn lossless_webp_headers_give_dimensions() {
        // VP8L: signature, then 14 bits width-1 and 14 bits height-1 (64x128).
        let bits: u32 = 63 | (127 << 14);
        let mut data = vec![0x2f];
        data.extend_from_slice(&bits.to_le_bytes());
        let mut file = b"RIFF".to_vec();
        file.extend_from_slice(&(4 + 8 + data.len() as u32).to_le_bytes());
        file.extend_from_slice(b"WEBPVP8L");
        file.extend_from_slice(&(data.len() as u32).to_le_bytes());
        file.extend_from_slice(&data);
        assert_eq!(
            check(IconFormat::Webp, &file, Check::Header),
            Ok(Dimensions {
                width: 64,
                height: 128
            })
        );
    }

    #[test]
    fn dimensions_must_be_those_of_an_icon() {
        let gif = |width: u16, height: u16| {
            let mut bytes = GIF_1X1.to_vec();
            bytes[6..8].copy_from_slice(&width.to_le_bytes());
            bytes[8..10].copy_from_slice(&height.to_le_bytes());
            check(IconFormat::Gif, &bytes, Check::Header)
        };
        assert!(gif(1024, 1024).is_ok());
        for (width, height) in [(0, 1), (1, 0), (1025, 1), (1, 5000)] {
            assert_eq!(
                gif(width, height),
                Err(IconError::BadDimensions {
                    width: width.into(),
                    height: height.into(),
                    max: MAX_SIDE_PX
                })
            );
        }
    }
}
