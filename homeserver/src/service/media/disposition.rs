//! How media is presented to browsers: which content types may be shown
//! inline, and a `Content-Disposition` value (RFC 6266) that no filename can
//! break out of. Anything not known to be safe is an attachment, so an
//! uploaded HTML page or SVG never runs as part of the homeserver's origin.

/// Types a browser renders without running scripts in our origin.
const INLINE_TYPES: &[&str] = &[
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The content type served for media uploaded without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Whether `content_type` (parameters allowed) may be shown inline.
pub fn is_inline_safe(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

/// Whether a stored content type is fit to be sent back as a header: a
/// `type/subtype` of visible ASCII, with optional parameters.
pub fn is_valid_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    content_type.len() <= 255
        && content_type.bytes().all(|b| (b' '..=b'~').contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(kind, sub)| !kind.is_empty() && !sub.is_empty() && !sub.contains('/'))
}

/// RFC 5987 `attr-char`, which is also RFC 7230 `tchar`: these may stand in
/// `filename=` unquoted and stay unescaped in `filename*=`.
fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b)
}

/// `inline` or `attachment`, with the filename when there is one: plain
/// `filename=` when it is a token, otherwise the percent-encoded UTF-8
/// `filename*=` form, so quotes, semicolons and line breaks stay inert.
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline_safe(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = filename.filter(|n| !n.is_empty()) else {
        return kind.to_owned();
    };
    if name.bytes().all(is_attr_char) {
        return format!("{kind}; filename={name}");
    }
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if is_attr_char(b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename*=utf-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_types_are_inline() {
        assert!(is_inline_safe("image/png"));
        assert!(is_inline_safe("IMAGE/JPEG; charset=x"));
        assert!(is_inline_safe("video/mp4"));
        for unsafe_type in [
            "text/html",
            "image/svg+xml",
            "application/javascript",
            "application/pdf",
            "text/xml",
            "",
        ] {
            assert!(!is_inline_safe(unsafe_type), "{unsafe_type}");
        }
    }

    #[test]
    fn plain_names_stay_plain() {
        assert_eq!(
            content_disposition("image/png", Some("cat.png")),
            "inline; filename=cat.png"
        );
        assert_eq!(content_disposition("text/html", None), "attachment");
        assert_eq!(content_disposition("text/html", Some("")), "attachment");
    }

    #[test]
    fn hostile_names_are_escaped() {
        assert_eq!(
            content_disposition("text/html", Some("a\"; filename=evil.html\r\nX: y")),
            "attachment; filename*=utf-8''a%22%3B%20filename%3Devil.html%0D%0AX%3A%20y"
        );
        assert_eq!(
            content_disposition("image/gif", Some("日本.gif")),
            "inline; filename*=utf-8''%E6%97%A5%E6%9C%AC.gif"
        );
        assert_eq!(
            content_disposition("application/pdf", Some("../../etc/passwd")),
            "attachment; filename*=utf-8''..%2F..%2Fetc%2Fpasswd"
        );
    }

    #[test]
    fn content_types_are_checked() {
        assert!(is_valid_content_type("image/png"));
        assert!(is_valid_content_type("text/plain; charset=utf-8"));
        for bad in [
            "",
            "png",
            "image/",
            "/png",
            "a/b/c",
            "text/plain\r\nX: y",
            "tëxt/plain",
        ] {
            assert!(!is_valid_content_type(bad), "{bad:?}");
        }
    }
}
