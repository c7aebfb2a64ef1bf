//! Request host and path in the one canonical form the rule engine matches against, so that a
//! condition cannot be bypassed by spelling the same resource another way (`ADMIN.example.com`,
//! `/%61dmin`, `//admin`, `/x/../admin`). Request data is hostile: nothing here panics, and the
//! work is linear in the input's length.

/// Host = authority lowercased, port removed. Handles "Example.COM:8443" -> "example.com",
/// "[::1]:80" -> "[::1]", trailing dot removed ("a.com." -> "a.com"). Never panics.
pub fn normalize_host(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        // IPv6 literal: the port, if any, follows the closing bracket.
        match authority.find(']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        }
    } else {
        match authority.split_once(':') {
            // A second colon means this is not `host:port`; leave it for no pattern to match.
            Some((host, port)) if !port.contains(':') => host,
            _ => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // ASCII only, as Envoy's own host matching: a Unicode-lowercasing step would let `K`
    // (U+212A KELVIN SIGN) stand in for `k` here while Envoy routes it elsewhere.
    host.to_ascii_lowercase()
}

/// A request path as the rule engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    canonical: String,
    /// Built only when it differs from `canonical`, so a plain request costs one string.
    decoded: Option<String>,
    has_encoded_separator: bool,
}

impl RequestPath {
    /// `raw` is Envoy's :path, which may include "?query" and "#frag" (strip both).
    pub fn parse(raw: &str) -> RequestPath {
        let path = raw.split_once(['?', '#']).map_or(raw, |(path, _)| path);
        let has_encoded_separator = holds_ambiguous_separator(path);
        let canonical = remove_dot_segments(&normalize_percent(path, false));
        let decoded = has_encoded_separator
            .then(|| remove_dot_segments(&normalize_percent(&path.replace('\\', "/"), true)));
        RequestPath {
            canonical,
            decoded,
            has_encoded_separator,
        }
    }

    /// Canonical form: %-encoded UNRESERVED chars (ALPHA / DIGIT / "-" / "." / "_" / "~")
    /// decoded; other %XX kept encoded with uppercase hex; dot-segments resolved (RFC 3986 5.2.4,
    /// never above root); repeated slashes merged; always starts with "/"; empty -> "/".
    /// A literal `\` is an ordinary character here.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// True when the raw path holds an encoded '/' or '\' (%2F, %2f, %5C, %5c), or a literal
    /// '\': a separator that some backends split on but `canonical()` does not.
    pub fn has_encoded_separator(&self) -> bool {
        self.has_encoded_separator
    }

    /// The path with %2F and %5C decoded to '/' too (backslash, literal or encoded, becomes '/'),
    /// then dot-segments resolved and slashes merged again. Equal to `canonical()` when
    /// `has_encoded_separator()` is false. Used by blacklist conditions so `/x%2F..%2Fadmin` is
    /// seen as `/admin`.
    pub fn decoded(&self) -> &str {
        self.decoded.as_deref().unwrap_or(&self.canonical)
    }
}

fn holds_ambiguous_separator(path: &str) -> bool {
    path.contains('\\')
        || path
            .as_bytes()
            .windows(3)
            .any(|w| matches!(w, [b'%', b'2', b'f' | b'F'] | [b'%', b'5', b'c' | b'C']))
}

/// One pass over the `%` escapes: unreserved characters decoded, separators decoded when asked,
/// everything else kept encoded with uppercase hex. Invalid escapes stay literal. Decoding happens
/// once: `%252e` stays `%252E`, as a backend decoding once would see `%2e`, not `.`.
fn normalize_percent(path: &str, decode_separators: bool) -> String {
    let mut out = String::with_capacity(path.len());
    let mut parts = path.split('%');
    if let Some(first) = parts.next() {
        push_literal(&mut out, first);
    }
    for part in parts {
        let bytes = part.as_bytes();
        let escape = match (bytes.first(), bytes.get(1)) {
            (Some(&hi), Some(&lo)) => hex_value(hi)
                .zip(hex_value(lo))
                .map(|(h, l)| (hi, lo, h * 16 + l)),
            _ => None,
        };
        let Some((hi, lo, value)) = escape else {
            out.push('%');
            push_literal(&mut out, part);
            continue;
        };
        if is_unreserved(value) {
            out.push(char::from(value));
        } else if decode_separators && (value == b'/' || value == b'\\') {
            out.push('/');
        } else {
            out.push('%');
            out.push(char::from(hi.to_ascii_uppercase()));
            out.push(char::from(lo.to_ascii_uppercase()));
        }
        // The two hex digits are ASCII, so byte 2 is a character boundary.
        push_literal(&mut out, part.get(2..).unwrap_or(""));
    }
    out
}

/// Copies literal path text, percent-encoding (uppercase) what a browser would have encoded:
/// non-ASCII bytes, spaces and controls. `/café` and `/caf%C3%A9` are then one path.
fn push_literal(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b >= 0x80 || b <= 0x20 || b == 0x7F {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        } else {
            out.push(char::from(b));
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 5.2.4 over '/'-separated segments, with empty segments (repeated slashes) dropped.
/// A `..` removes the last output segment, which was written once: linear overall.
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    let mut ends_in_directory = false;
    for segment in path.split('/') {
        ends_in_directory = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                if let Some(last) = out.rfind('/') {
                    out.truncate(last);
                }
            }
            _ => {
                out.push('/');
                out.push_str(segment);
            }
        }
    }
    if ends_in_directory || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(raw: &str) -> String {
        RequestPath::parse(raw).canonical().to_owned()
    }

    fn decoded(raw: &str) -> String {
        RequestPath::parse(raw).decoded().to_owned()
    }

    #[test]
    fn host_is_lowercased_without_port() {
        assert_eq!(normalize_host("Example.COM:8443"), "example.com");
        assert_eq!(normalize_host("ADMIN.example.com"), "admin.example.com");
        assert_eq!(normalize_host("example.com"), "example.com");
    }

    #[test]
    fn ipv6_host_keeps_brackets_and_drops_port() {
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host("[FE80::1]:443"), "[fe80::1]");
    }

    #[test]
    fn host_trailing_dot_is_removed() {
        assert_eq!(normalize_host("a.com."), "a.com");
        assert_eq!(normalize_host("A.com.:443"), "a.com");
    }

    #[test]
    fn malformed_hosts_never_panic() {
        for authority in [
            "", ":", ".", "[", "]", "[::1", "::1", "a:b:c", "é.COM:1", "[]:", ":80",
        ] {
            let _ = normalize_host(authority);
        }
        assert_eq!(normalize_host(":80"), "");
        assert_eq!(normalize_host("[::1"), "[::1");
        assert_eq!(normalize_host("É.COM"), "É.com");
    }

    #[test]
    fn query_and_fragment_are_stripped() {
        assert_eq!(canonical("/a/b?x=1#f"), "/a/b");
        assert_eq!(canonical("/a#f?x"), "/a");
        assert_eq!(canonical("/a?x=%2F"), "/a");
        assert!(!RequestPath::parse("/a?x=%2F").has_encoded_separator());
    }

    #[test]
    fn encoded_letter_cannot_bypass_exact_match() {
        assert_eq!(canonical("/%61dmin"), "/admin");
        assert_eq!(canonical("/%41DMIN"), "/ADMIN");
        assert_eq!(canonical("/%7euser/%2D%5f%2E"), "/~user/-_.");
    }

    #[test]
    fn repeated_slashes_are_merged() {
        assert_eq!(canonical("//admin"), "/admin");
        assert_eq!(canonical("/a///b//"), "/a/b/");
    }

    #[test]
    fn dot_segments_are_resolved_never_above_root() {
        assert_eq!(canonical("/x/../admin"), "/admin");
        assert_eq!(canonical("/a/./b/"), "/a/b/");
        assert_eq!(canonical("/.."), "/");
        assert_eq!(canonical("/../../a"), "/a");
        assert_eq!(canonical("/a/b/.."), "/a/");
        assert_eq!(canonical("/a/."), "/a/");
        assert_eq!(canonical("/a/..b/.c"), "/a/..b/.c");
    }

    #[test]
    fn encoded_dots_are_resolved_as_dot_segments() {
        assert_eq!(canonical("/%2e%2e/admin"), "/admin");
        assert_eq!(canonical("/public/%2E%2e/admin"), "/admin");
        assert_eq!(canonical("/a/%2e/b"), "/a/b");
    }

    #[test]
    fn empty_and_relative_paths_start_with_slash() {
        assert_eq!(canonical(""), "/");
        assert_eq!(canonical("?q"), "/");
        assert_eq!(canonical("admin"), "/admin");
        assert_eq!(canonical("*"), "/*");
    }

    #[test]
    fn reserved_escapes_stay_encoded_in_uppercase() {
        assert_eq!(canonical("/a%2fb"), "/a%2Fb");
        assert_eq!(canonical("/a%3fb%c3%a9"), "/a%3Fb%C3%A9");
        assert_eq!(canonical("/%00"), "/%00");
    }

    #[test]
    fn percent_is_decoded_only_once() {
        assert_eq!(canonical("/%252e%252e/admin"), "/%252e%252e/admin");
        assert_eq!(canonical("/%25%32%65"), "/%252e");
    }

    #[test]
    fn invalid_percent_sequences_stay_literal() {
        assert_eq!(canonical("/%zz"), "/%zz");
        assert_eq!(canonical("/%"), "/%");
        assert_eq!(canonical("/a%2"), "/a%2");
        assert_eq!(canonical("/%%41"), "/%A");
        assert_eq!(canonical("/%é"), "/%%C3%A9");
    }

    #[test]
    fn raw_non_ascii_and_spaces_are_seen_percent_encoded() {
        assert_eq!(
            canonical("/café/./ü//日本"),
            "/caf%C3%A9/%C3%BC/%E6%97%A5%E6%9C%AC"
        );
        assert_eq!(canonical("/caf%c3%a9"), canonical("/café"));
        assert_eq!(canonical("/a b"), "/a%20b");
        assert_eq!(canonical("/é%"), "/%C3%A9%");
    }

    #[test]
    fn literal_backslash_is_ordinary_in_canonical_but_a_separator_when_decoded() {
        let path = RequestPath::parse("/public\\..\\admin");
        assert_eq!(path.canonical(), "/public\\..\\admin");
        assert_eq!(path.decoded(), "/admin");
        assert!(path.has_encoded_separator());
    }

    #[test]
    fn encoded_separators_are_detected_in_any_case() {
        for raw in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb"] {
            assert!(RequestPath::parse(raw).has_encoded_separator(), "{raw}");
        }
        for raw in ["/a/b", "/a%2eb", "/a%252Fb", "/a%2"] {
            assert!(!RequestPath::parse(raw).has_encoded_separator(), "{raw}");
        }
    }

    #[test]
    fn encoded_slash_traversal_is_seen_decoded() {
        assert_eq!(decoded("/x%2F..%2Fadmin"), "/admin");
        assert_eq!(decoded("/x%2f..%2fadmin"), "/admin");
        assert_eq!(decoded("/x%5C..%5Cadmin"), "/admin");
        assert_eq!(decoded("/public%2F%2e%2e%2Fadmin"), "/admin");
        assert_eq!(decoded("/a%2F%2Fb"), "/a/b");
        assert_eq!(canonical("/x%2F..%2Fadmin"), "/x%2F..%2Fadmin");
    }

    #[test]
    fn decoded_equals_canonical_without_encoded_separator() {
        for raw in ["/", "/a/../b", "/%61", "//x//", "/%zz", "/é"] {
            let path = RequestPath::parse(raw);
            assert!(!path.has_encoded_separator());
            assert_eq!(path.decoded(), path.canonical(), "{raw}");
        }
    }

    #[test]
    fn hostile_paths_never_panic() {
        let long_dots = "/..".repeat(10_000);
        let long_percent = "%".repeat(10_000);
        let mixed = "/%2e%%2F\\é%5c.%/".repeat(1_000);
        for raw in [
            long_dots.as_str(),
            long_percent.as_str(),
            mixed.as_str(),
            "%",
            "%%",
            "%2",
            "\\",
        ] {
            let path = RequestPath::parse(raw);
            assert!(path.canonical().starts_with('/'));
            assert!(path.decoded().starts_with('/'));
        }
        assert_eq!(canonical(&long_dots), "/");
    }
}
