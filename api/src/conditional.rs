//! Request header logic of the index and icon routes (pure): content negotiation and
//! conditional requests.

/// True when `Accept-Encoding` admits gzip (`gzip`, `x-gzip` or `*` with a non-zero q;
/// an explicit `gzip;q=0` refuses it).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let mut gzip_q: Option<f32> = None;
    let mut star_q: Option<f32> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .filter_map(|v| v.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip_q = Some(q),
            "*" => star_q = Some(q),
            _ => {}
        }
    }
    gzip_q.or(star_q).is_some_and(|q| q > 0.0)
}

/// True when `If-None-Match` lists one of `etags` (weak comparison, as RFC 9110 asks
/// for this header) or is `*`.
pub fn none_match(if_none_match: Option<&str>, etags: &[&str]) -> bool {
    let Some(header) = if_none_match else {
        return false;
    };
    header.split(',').map(str::trim).any(|tag| {
        tag == "*" || {
            let opaque = tag.strip_prefix("W/").unwrap_or(tag);
            etags
                .iter()
                .any(|e| e.strip_prefix("W/").unwrap_or(e) == opaque)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(Some("GZIP")));
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("br, x-gzip")));
        assert!(!accepts_gzip(None));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("*, gzip;q=0")));
        assert!(!accepts_gzip(Some("*;q=0")));
    }

    #[test]
    fn etag_matching() {
        let tags = ["\"abc\"", "\"abc-gzip\""];
        assert!(none_match(Some("\"abc\""), &tags));
        assert!(none_match(Some("\"abc-gzip\""), &tags));
        assert!(none_match(Some("\"x\", \"abc\""), &tags));
        assert!(none_match(Some("W/\"abc\""), &tags));
        assert!(none_match(Some("*"), &tags));
        assert!(!none_match(Some("\"abcd\""), &tags));
        assert!(!none_match(Some("abc"), &tags));
        assert!(!none_match(None, &tags));
        assert!(!none_match(Some(""), &tags));
        // An icon's one strong tag.
        assert!(none_match(Some("W/\"abc\""), &["\"abc\""]));
        assert!(none_match(Some("\"x\", \"abc\""), &["\"abc\""]));
    }
}
