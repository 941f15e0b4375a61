//! Icons carried in image labels as `data:` URIs (pure: parsing, sniffing, URLs).
//!
//! Flatpak images carry their AppStream icons in `org.freedesktop.appstream.icon-64` and
//! `-128` as `data:image/png;base64,...`. Returned as they are, they make up most of an
//! index response. regindex decodes them once at ingest, stores the bytes under their
//! sha256 and returns `<base>/icons/<sha256>.<ext>` instead; Flatpak resolves such a URL
//! against the index URL and fetches it through its HTTP cache.
//!
//! Nothing here trusts the label: the media type of the URI must agree with the magic bytes
//! of the payload, the payload must be valid base64, not larger than the configured limit,
//! and a real image of icon dimensions ([`image`]). A value that fails any check is not an
//! icon and is returned unchanged.

mod image;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

pub use self::image::{Check, Dimensions, MAX_SIDE_PX};
use crate::model::StringMap;

/// The label / annotation keys that hold icons.
pub const ICON_KEYS: [&str; 2] = [
    "org.freedesktop.appstream.icon-64",
    "org.freedesktop.appstream.icon-128",
];

/// The image formats accepted as icons. SVG is deliberately absent: served from the
/// index's own origin it could carry scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IconFormat {
    Png,
    Jpeg,
    Gif,
    Webp,
}

impl IconFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            IconFormat::Png => "image/png",
            IconFormat::Jpeg => "image/jpeg",
            IconFormat::Gif => "image/gif",
            IconFormat::Webp => "image/webp",
        }
    }

    /// File extension used in icon URLs.
    pub fn extension(self) -> &'static str {
        match self {
            IconFormat::Png => "png",
            IconFormat::Jpeg => "jpg",
            IconFormat::Gif => "gif",
            IconFormat::Webp => "webp",
        }
    }

    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.to_ascii_lowercase().as_str() {
            "image/png" => Some(IconFormat::Png),
            "image/jpeg" | "image/jpg" => Some(IconFormat::Jpeg),
            "image/gif" => Some(IconFormat::Gif),
            "image/webp" => Some(IconFormat::Webp),
            _ => None,
        }
    }

    pub fn from_extension(extension: &str) -> Option<Self> {
        match extension {
            "png" => Some(IconFormat::Png),
            "jpg" | "jpeg" => Some(IconFormat::Jpeg),
            "gif" => Some(IconFormat::Gif),
            "webp" => Some(IconFormat::Webp),
            _ => None,
        }
    }

    /// The format the magic bytes announce.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(IconFormat::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(IconFormat::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(IconFormat::Gif)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(IconFormat::Webp)
        } else {
            None
        }
    }
}

/// Why a label value is not a usable icon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IconError {
    #[error("not a data: URI")]
    NotDataUri,
    #[error("the data: URI has no ',' separating the header from the payload")]
    MissingComma,
    #[error("the data: URI is not base64-encoded")]
    NotBase64,
    #[error("unsupported media type {0:?} (png, jpeg, gif or webp expected)")]
    UnsupportedType(String),
    #[error("the payload is not valid base64: {0}")]
    BadBase64(String),
    #[error("the payload is empty")]
    Empty,
    #[error("the icon is {size} bytes, more than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("the payload's magic bytes do not match {declared}")]
    WrongMagic { declared: &'static str },
    #[error("the payload is not a valid {format} image: {reason}")]
    NotAnImage {
        format: &'static str,
        reason: String,
    },
    #[error("the image is {width}x{height} pixels; icons are 1 to {max} pixels a side")]
    BadDimensions { width: u32, height: u32, max: u32 },
}

/// A decoded, validated icon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icon {
    pub format: IconFormat,
    pub bytes: Vec<u8>,
    /// Lowercase hex sha256 of `bytes`: the icon's name.
    pub sha256: String,
    pub dimensions: Dimensions,
}

impl Icon {
    /// `<sha256>.<ext>`: the last path segment of the icon's URL.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.sha256, self.format.extension())
    }
}

/// True when `value` looks like a data URI at all (cheap pre-check before decoding).
pub fn is_data_uri(value: &str) -> bool {
    value
        .get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("data:"))
}

/// Parses `data:<type>[;params];base64,<payload>` into a validated icon of at most
/// `max_bytes` decoded bytes. `check` says how much of the image is verified: the icons
/// that are stored pass [`Check::Full`]; [`Check::Header`] is enough to find which stored
/// icon a value names.
pub fn parse_data_uri(value: &str, max_bytes: usize, check: Check) -> Result<Icon, IconError> {
    if !is_data_uri(value) {
        return Err(IconError::NotDataUri);
    }
    let rest = &value[5..];
    let (header, payload) = rest.split_once(',').ok_or(IconError::MissingComma)?;
    let mut parts = header.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or_default();
    let mut base64 = false;
    for parameter in parts {
        if parameter.eq_ignore_ascii_case("base64") {
            base64 = true;
        }
    }
    if !base64 {
        return Err(IconError::NotBase64);
    }
    let format = IconFormat::from_content_type(media_type)
        .ok_or_else(|| IconError::UnsupportedType(media_type.chars().take(100).collect()))?;
    // Reject before decoding: base64 carries 3 bytes per 4 characters, so a payload this
    // long cannot decode below the limit (whitespace aside, which is rare in labels).
    let payload = payload.trim();
    let estimated = payload.len() / 4 * 3;
    if estimated > max_bytes.saturating_add(3) && !payload.contains(char::is_whitespace) {
        return Err(IconError::TooLarge {
            size: estimated,
            max: max_bytes,
        });
    }
    let compact: String;
    let payload = if payload.contains(char::is_whitespace) {
        compact = payload.chars().filter(|c| !c.is_whitespace()).collect();
        compact.as_str()
    } else {
        payload
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| IconError::BadBase64(e.to_string()))?;
    if bytes.is_empty() {
        return Err(IconError::Empty);
    }
    if bytes.len() > max_bytes {
        return Err(IconError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    if IconFormat::sniff(&bytes) != Some(format) {
        return Err(IconError::WrongMagic {
            declared: format.content_type(),
        });
    }
    let dimensions = image::check(format, &bytes, check)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Icon {
        format,
        bytes,
        sha256,
        dimensions,
    })
}

/// The URL an icon is served at: `<base>/icons/<sha256>.<ext>`. With no base, the URL is
/// path-absolute (`/icons/...`), which clients resolve against the index URL.
pub fn icon_url(base_url: Option<&str>, file_name: &str) -> String {
    let base = base_url.unwrap_or("").trim_end_matches('/');
    format!("{base}/icons/{file_name}")
}

/// Parses the last path segment of an icon URL (`<64 hex>.<ext>`).
pub fn parse_file_name(name: &str) -> Option<(String, IconFormat)> {
    let (hash, extension) = name.split_once('.')?;
    if hash.len() != 64
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some((hash.to_owned(), IconFormat::from_extension(extension)?))
}

/// The icons of one label or annotation map, each with the key it came from, fully
/// checked ([`Check::Full`]): what is stored. Values that are not valid icons are skipped
/// and handed to `on_error` (for logging).
pub fn extract(
    map: &StringMap,
    max_bytes: usize,
    mut on_error: impl FnMut(&str, &IconError),
) -> Vec<(&'static str, Icon)> {
    let mut icons = Vec::new();
    for key in ICON_KEYS {
        let Some(value) = map.get(key) else { continue };
        if !is_data_uri(value) {
            continue; // already a URL: nothing to extract, and nothing wrong
        }
        match parse_data_uri(value, max_bytes, Check::Full) {
            Ok(icon) => icons.push((key, icon)),
            Err(e) => on_error(key, &e),
        }
    }
    icons
}

/// Replaces each icon data URI of `map` by the URL `resolve` gives for it. `resolve`
/// returns `None` for a value it has no stored icon for: that value stays as it is.
pub fn rewrite(map: &mut StringMap, mut resolve: impl FnMut(&str) -> Option<String>) {
    for key in ICON_KEYS {
        if let Some(value) = map.get_mut(key) {
            if is_data_uri(value) {
                if let Some(url) = resolve(value) {
                    *value = url;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A complete 1x1 PNG.
    pub const PNG_1X1: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f,
        0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60,
        0x60, 0x60, 0xf8, 0x0f, 0x00, 0x01, 0x04, 0x01, 0x00, 0x5f, 0xe5, 0xc3, 0x4b, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn parses_a_png_data_uri() {
        let uri = format!("data:image/png;base64,{}", b64(PNG_1X1));
        let icon = parse_data_uri(&uri, 1024, Check::Full).unwrap();
        assert_eq!(icon.format, IconFormat::Png);
        assert_eq!(icon.bytes, PNG_1X1);
        assert_eq!(icon.sha256, hex::encode(Sha256::digest(PNG_1X1)));
        assert_eq!(icon.file_name(), format!("{}.png", icon.sha256));
    }

    #[test]
    fn tolerates_case_parameters_and_line_breaks() {
        let encoded = b64(PNG_1X1);
        let (a, b) = encoded.split_at(20);
        let uri = format!("DATA:Image/PNG;charset=binary;BASE64,{a}\n{b}");
        assert_eq!(
            parse_data_uri(&uri, 1024, Check::Full).unwrap().bytes,
            PNG_1X1
        );
    }

    #[test]
    fn rejects_malformed_uris() {
        let good = b64(PNG_1X1);
        let cases: Vec<(String, IconError)> = vec![
            ("https://example.org/a.png".into(), IconError::NotDataUri),
            ("data:image/png;base64".into(), IconError::MissingComma),
            (format!("data:image/png,{good}"), IconError::NotBase64),
            (
                format!("data:image/svg+xml;base64,{good}"),
                IconError::UnsupportedType("image/svg+xml".into()),
            ),
            ("data:image/png;base64,".into(), IconError::Empty),
            (
                format!("data:image/jpeg;base64,{good}"),
                IconError::WrongMagic {
                    declared: "image/jpeg",
                },
            ),
            (
                format!("data:image/png;base64,{}", b64(b"<html>not a png</html>")),
                IconError::WrongMagic {
                    declared: "image/png",
                },
            ),
        ];
        for (uri, expected) in cases {
            assert_eq!(
                parse_data_uri(&uri, 1024, Check::Full).unwrap_err(),
                expected,
                "{uri}"
            );
        }
        assert!(matches!(
            parse_data_uri("data:image/png;base64,!!!not base64!!!", 1024, Check::Full),
            Err(IconError::BadBase64(_))
        ));
        assert!(matches!(
            parse_data_uri("data:", 1024, Check::Full),
            Err(IconError::MissingComma)
        ));
        // Multi-byte characters right after the prefix must not panic.
        assert!(parse_data_uri("dat\u{e9}:x", 1024, Check::Full).is_err());
        assert!(parse_data_uri("", 1024, Check::Full).is_err());
    }

    /// What sample images carried: the 8-byte PNG signature and nothing else. Its magic
    /// bytes are right; it is still not an image.
    #[test]
    fn rejects_the_png_signature_alone() {
        let uri = "data:image/png;base64,iVBORw0KGgo=";
        for check in [Check::Header, Check::Full] {
            assert!(
                matches!(
                    parse_data_uri(uri, 1024, check),
                    Err(IconError::NotAnImage {
                        format: "image/png",
                        ..
                    })
                ),
                "{check:?}"
            );
        }
        let mut labels = StringMap::new();
        labels.insert(ICON_KEYS[0].into(), uri.into());
        let mut errors = Vec::new();
        assert!(extract(&labels, 1024, |_, e| errors.push(e.to_string())).is_empty());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("the payload is not a valid image/png image"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn rejects_oversized_icons() {
        let uri = format!("data:image/png;base64,{}", b64(PNG_1X1));
        assert_eq!(
            parse_data_uri(&uri, PNG_1X1.len() - 1, Check::Full).unwrap_err(),
            IconError::TooLarge {
                size: PNG_1X1.len(),
                max: PNG_1X1.len() - 1
            }
        );
        assert!(parse_data_uri(&uri, PNG_1X1.len(), Check::Full).is_ok());
        // Far over the limit: refused before decoding.
        let huge = format!("data:image/png;base64,{}", "A".repeat(4_000_000));
        assert!(matches!(
            parse_data_uri(&huge, 1024, Check::Full),
            Err(IconError::TooLarge { .. })
        ));
    }

    #[test]
    fn sniffs_formats() {
        assert_eq!(IconFormat::sniff(PNG_1X1), Some(IconFormat::Png));
        assert_eq!(
            IconFormat::sniff(&[0xff, 0xd8, 0xff, 0xe0]),
            Some(IconFormat::Jpeg)
        );
        assert_eq!(IconFormat::sniff(b"GIF89a...."), Some(IconFormat::Gif));
        assert_eq!(
            IconFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(IconFormat::Webp)
        );
        assert_eq!(IconFormat::sniff(b"RIFF"), None);
        assert_eq!(IconFormat::sniff(b"<svg"), None);
    }

    #[test]
    fn urls_and_file_names() {
        let hash = "a".repeat(64);
        assert_eq!(
            icon_url(None, &format!("{hash}.png")),
            format!("/icons/{hash}.png")
        );
        assert_eq!(
            icon_url(Some("https://cdn.example.org/idx/"), &format!("{hash}.png")),
            format!("https://cdn.example.org/idx/icons/{hash}.png")
        );
        assert_eq!(
            parse_file_name(&format!("{hash}.png")),
            Some((hash.clone(), IconFormat::Png))
        );
        assert_eq!(parse_file_name(&format!("{hash}.svg")), None);
        assert_eq!(parse_file_name("../etc/passwd.png"), None);
        assert_eq!(parse_file_name(&format!("{}.png", "A".repeat(64))), None);
        assert_eq!(parse_file_name("nodot"), None);
    }

    #[test]
    fn extracts_and_rewrites_only_valid_icons() {
        let good = format!("data:image/png;base64,{}", b64(PNG_1X1));
        let mut labels = StringMap::new();
        labels.insert(ICON_KEYS[0].into(), good.clone());
        labels.insert(ICON_KEYS[1].into(), "data:image/png;base64,@@@".into());
        labels.insert("other".into(), good.clone());

        let mut errors = Vec::new();
        let icons = extract(&labels, 1024, |key, e| {
            errors.push((key.to_owned(), e.clone()))
        });
        assert_eq!(icons.len(), 1);
        assert_eq!(icons[0].0, ICON_KEYS[0]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, ICON_KEYS[1]);

        let mut rewritten = labels.clone();
        rewrite(&mut rewritten, |value| {
            parse_data_uri(value, 1024, Check::Full)
                .ok()
                .map(|icon| icon_url(None, &icon.file_name()))
        });
        assert_eq!(
            rewritten[ICON_KEYS[0]],
            icon_url(None, &icons[0].1.file_name())
        );
        assert_eq!(rewritten[ICON_KEYS[1]], labels[ICON_KEYS[1]]);
        assert_eq!(rewritten["other"], good, "only icon keys are rewritten");
    }
}
