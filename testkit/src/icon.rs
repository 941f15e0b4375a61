//! Real PNG icons for test and sample images, encoded here (no image library): a solid
//! square of one colour, which a screenshot test can find on the rendered page.

use base64::Engine as _;

/// The AppStream icon labels Flatpak images carry.
pub const ICON_64_LABEL: &str = "org.freedesktop.appstream.icon-64";
pub const ICON_128_LABEL: &str = "org.freedesktop.appstream.icon-128";

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let length = u32::try_from(data.len()).expect("PNG chunk under 4 GiB");
    out.extend_from_slice(&length.to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A complete `size`x`size` 8-bit RGB PNG filled with `rgb`. The pixels are stored in
/// uncompressed deflate blocks, so the size is predictable: about `3 * size * size` bytes
/// (49 KB at 128 px).
pub fn png(rgb: [u8; 3], size: u32) -> Vec<u8> {
    // Each row: filter type 0 (None), then the pixels.
    let mut row = vec![0u8];
    for _ in 0..size {
        row.extend_from_slice(&rgb);
    }
    let raw = row.repeat(size as usize);
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = u16::try_from(block.len()).expect("blocks of at most 65535 bytes");
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, filter 0, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// `data:image/png;base64,...`, as Flatpak images carry icons in labels.
pub fn png_data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_iend_is_the_well_known_one() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
    }

    #[test]
    fn png_layout_and_size() {
        let bytes = png([1, 2, 3], 2);
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x02\0\0\0\x02"));
        assert!(bytes.ends_with(b"IEND\xae\x42\x60\x82"));
        assert!(png([0, 0, 0], 128).len() > 3 * 128 * 128);
    }
}
