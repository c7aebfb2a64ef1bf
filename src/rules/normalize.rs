//! Request host and path in the one canonical form the rule engine matches against, so that a
//! condition cannot be bypassed by spelling the same resource another way (`ADMIN.example.com`,
//! `/%61dmin`, `//admin`, `/x/../admin`). Request data is hostile: nothing here panics, and the
//! work is linear in the input's length.

use std::fmt;

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

/// Why a request's `Host` was refused: it is not a DNS name or an IP literal with an optional
/// numeric port, so it cannot be matched against `domains` the way Envoy and the backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHost(&'static str);

impl fmt::Display for BadHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Longest host name DNS allows (RFC 1035 2.3.4), and longest label.
const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Validates a request's authority and returns its host in the form rules match: lowercased,
/// port removed, one trailing dot removed. Anything else a client might put there (userinfo
/// `x@host`, two trailing dots, `%`, spaces, an empty label, two ports, a non-numeric port) is
/// refused: a name that Envoy routes one way and a rule reads another must never reach the rule
/// walk.
pub fn parse_host(authority: &str) -> Result<String, BadHost> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest
            .split_once(']')
            .ok_or(BadHost("an IPv6 literal without its closing `]`"))?;
        literal
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| BadHost("not an IPv6 address between `[` and `]`"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(BadHost("text after the IPv6 literal"))?,
            ),
        };
        (authority.get(..literal.len() + 2).unwrap_or(authority), port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadHost("the port is not a number (or there are two ports)"));
        }
    }
    if host.starts_with('[') {
        return Ok(host.to_ascii_lowercase());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(BadHost("the host is empty"));
    }
    if name.len() > MAX_HOST_LEN {
        return Err(BadHost("the host name is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(BadHost("the host name has an empty label (`..`)"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(BadHost("a label of the host name is longer than 63 characters"));
        }
        // Letters, digits, `-`, and `_` (found in real DNS names); never `@`, `%`, spaces,
        // or non-ASCII (a browser sends an IDN as punycode).
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BadHost(
                "the host holds a character a DNS name cannot (such as `@`, `%`, `:` or a space)",
            ));
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// The ways a path can be read by a backend other than the canonical one. Whitelist matching
/// never calls an ambiguous path public; blacklist matching tries every reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ambiguity(u8);

impl Ambiguity {
    /// `%2F`: a separator when a backend decodes before it splits.
    pub const ENCODED_SLASH: Ambiguity = Ambiguity(1);
    /// A literal `\` or `%5C`: a separator for Windows servers and some proxies.
    pub const BACKSLASH: Ambiguity = Ambiguity(2);
    /// `;` or `%3B` in a segment: Tomcat and Spring drop `;params`, so `..;x` is `..`.
    pub const SEGMENT_PARAMETERS: Ambiguity = Ambiguity(4);
    /// `%25` followed by two hex digits: a backend that decodes twice sees another character.
    pub const DOUBLE_ENCODING: Ambiguity = Ambiguity(8);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Ambiguity) -> bool {
        self.0 & other.0 == other.0
    }

    fn insert(&mut self, other: Ambiguity) {
        self.0 |= other.0;
    }

    /// Names of the flags set, for `explain`.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Ambiguity::ENCODED_SLASH, "an encoded `/` (%2F)"),
            (Ambiguity::BACKSLASH, "a `\\` or %5C"),
            (Ambiguity::SEGMENT_PARAMETERS, "segment parameters (`;`)"),
            (Ambiguity::DOUBLE_ENCODING, "double percent-encoding (%25XX)"),
        ]
        .into_iter()
        .filter(|(flag, _)| self.contains(*flag))
        .map(|(_, name)| name)
        .collect()
    }
}

/// A request path as the rule engine sees it: the canonical form, what makes it ambiguous, and
/// (only when it is ambiguous) every other reading a backend may make of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    canonical: String,
    ambiguity: Ambiguity,
    /// Readings other than `canonical`, distinct, most-decoded first; empty when unambiguous,
    /// so a plain request costs one string.
    others: Vec<String>,
    /// Whether `others[0]` is the most-decoded reading (it is unless that equals `canonical`).
    decoded_differs: bool,
}

/// How one backend reads a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    /// `%2F` decoded to `/` before the path is split.
    encoded_slash: bool,
    /// `\` and `%5C` are separators.
    backslash: bool,
    /// `%25XX` decoded once more.
    double_decode: bool,
    params: Params,
}

/// What a reading does with `;` in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Params {
    /// `;` is an ordinary character (RFC 3986).
    Keep,
    /// A literal `;` ends the segment (Tomcat strips before decoding).
    StripLiteral,
    /// A literal or decoded `;` (`%3B`) ends the segment.
    StripDecoded,
}

impl Reading {
    const CANONICAL: Reading = Reading {
        encoded_slash: false,
        backslash: false,
        double_decode: false,
        params: Params::Keep,
    };

    /// Every reading that differs from the canonical one for a path with `ambiguity`,
    /// the most-decoded first.
    fn all_for(ambiguity: Ambiguity) -> impl Iterator<Item = Reading> {
        if ambiguity.is_empty() {
            return Vec::new().into_iter();
        }
        let choices = |flag: Ambiguity| {
            if ambiguity.contains(flag) {
                &[true, false][..]
            } else {
                &[false][..]
            }
        };
        // `%25XX` can hide any of the other characters, so double decoding widens every choice.
        let double = ambiguity.contains(Ambiguity::DOUBLE_ENCODING);
        let widen = |flag: Ambiguity| if double { &[true, false][..] } else { choices(flag) };
        let params: &[Params] = if ambiguity.contains(Ambiguity::SEGMENT_PARAMETERS) || double {
            &[Params::StripDecoded, Params::StripLiteral, Params::Keep]
        } else {
            &[Params::Keep]
        };
        let mut out = Vec::new();
        for &double_decode in choices(Ambiguity::DOUBLE_ENCODING) {
            for &encoded_slash in widen(Ambiguity::ENCODED_SLASH) {
                for &backslash in widen(Ambiguity::BACKSLASH) {
                    for &params in params {
                        let reading = Reading {
                            encoded_slash,
                            backslash,
                            double_decode,
                            params,
                        };
                        if reading != Reading::CANONICAL {
                            out.push(reading);
                        }
                    }
                }
            }
        }
        out.into_iter()
    }

    /// The path as this reading sees it, in canonical spelling: escapes this reading decodes
    /// are decoded, the rest kept as uppercase `%XX`; `;params` dropped when it strips them;
    /// dot-segments resolved and repeated slashes merged.
    fn apply(self, path: &str) -> String {
        // Tomcat drops `;params` before it decodes, so `%3B` is not a parameter there.
        let stripped;
        let path = if self.params == Params::StripLiteral {
            stripped = strip_segment_parameters(path, self.backslash);
            stripped.as_str()
        } else {
            path
        };
        let once = decode_escapes(path, self, false);
        let decoded = if self.double_decode {
            decode_escapes(&once, self, true)
        } else {
            once
        };
        let without_params = match self.params {
            Params::StripDecoded => strip_segment_parameters(&decoded, false),
            Params::Keep | Params::StripLiteral => decoded,
        };
        remove_dot_segments(&without_params)
    }
}

impl RequestPath {
    /// `raw` is Envoy's :path, which may include "?query" and "#frag" (strip both).
    pub fn parse(raw: &str) -> RequestPath {
        let path = raw.split_once(['?', '#']).map_or(raw, |(path, _)| path);
        // The canonical reading, with the spelling before dot-segments kept to look at.
        let spelled = decode_escapes(path, Reading::CANONICAL, false);
        let ambiguity = ambiguity_of(&spelled);
        let canonical = remove_dot_segments(&spelled);
        let mut others: Vec<String> = Vec::new();
        let mut decoded_differs = false;
        // The first reading is the most-decoded one.
        for (i, reading) in Reading::all_for(ambiguity).enumerate() {
            let seen = reading.apply(path);
            if seen != canonical && !others.contains(&seen) {
                decoded_differs |= i == 0;
                others.push(seen);
            }
        }
        RequestPath {
            canonical,
            ambiguity,
            others,
            decoded_differs,
        }
    }

    /// Canonical form: %-encoded UNRESERVED chars (ALPHA / DIGIT / "-" / "." / "_" / "~")
    /// decoded; other %XX kept encoded with uppercase hex; dot-segments resolved (RFC 3986 5.2.4,
    /// never above root); repeated slashes merged; always starts with "/"; empty -> "/".
    /// A literal `\` and `;` are ordinary characters here.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// What makes the path readable in more than one way; empty for an ordinary path.
    pub fn ambiguity(&self) -> Ambiguity {
        self.ambiguity
    }

    /// Whether a backend may read the path other than as `canonical()`: such a path is never
    /// public through a whitelist condition.
    pub fn is_ambiguous(&self) -> bool {
        !self.ambiguity.is_empty()
    }

    /// Every reading of the path, the canonical one first: RFC 3986 dot-segment removal with
    /// any combination of `%2F` as `/`, `\` and `%5C` as `/`, one extra percent-decoding and
    /// Tomcat-style `;params` stripping. Blacklist conditions are tried against each.
    pub fn readings(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.canonical.as_str()).chain(self.others.iter().map(String::as_str))
    }

    /// The most-decoded reading: separators decoded, `%25XX` decoded once more, `;params`
    /// removed. Equal to `canonical()` for an unambiguous path.
    pub fn decoded(&self) -> &str {
        match self.others.first() {
            Some(most) if self.decoded_differs => most,
            _ => &self.canonical,
        }
    }
}

/// What makes a path ambiguous, read from its canonical spelling before dot-segments are
/// resolved (where every `%` starts an escape, hex digits are literal, `\\` and `;` literal).
fn ambiguity_of(spelled: &str) -> Ambiguity {
    let mut ambiguity = Ambiguity::default();
    let bytes = spelled.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => ambiguity.insert(Ambiguity::BACKSLASH),
            b';' => ambiguity.insert(Ambiguity::SEGMENT_PARAMETERS),
            b'%' => match bytes.get(i + 1..i + 3) {
                Some(b"2F") => ambiguity.insert(Ambiguity::ENCODED_SLASH),
                Some(b"5C") => ambiguity.insert(Ambiguity::BACKSLASH),
                Some(b"3B") => ambiguity.insert(Ambiguity::SEGMENT_PARAMETERS),
                // `%25` then two hex digits: a second decoding makes another character.
                Some(b"25")
                    if bytes
                        .get(i + 3..i + 5)
                        .is_some_and(|pair| pair.iter().all(|&d| hex_value(d).is_some())) =>
                {
                    ambiguity.insert(Ambiguity::DOUBLE_ENCODING)
                }
                _ => {}
            },
            _ => {}
        }
    }
    ambiguity
}

/// One pass over the `%` escapes as `reading` decodes them; everything it does not decode is
/// kept encoded with uppercase hex. A `%` that starts no escape is spelled `%25`. `second` is the extra pass of
/// a double-decoding reading: only `%25XX` is decoded there (to `%XX`, then read again).
fn decode_escapes(path: &str, reading: Reading, second: bool) -> String {
    let mut out = String::with_capacity(path.len());
    let mut parts = path.split('%');
    if let Some(first) = parts.next() {
        push_literal(&mut out, first, reading, second);
    }
    for part in parts {
        let bytes = part.as_bytes();
        let escape = match (bytes.first(), bytes.get(1)) {
            (Some(&hi), Some(&lo)) => hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        let Some(value) = escape else {
            // A `%` that starts no escape is a literal `%`, spelled as one: `%25`.
            if second {
                out.push('%');
            } else {
                push_escape(&mut out, b'%');
            }
            push_literal(&mut out, part, reading, second);
            continue;
        };
        // The two hex digits are ASCII, so byte 2 is a character boundary.
        let mut rest = part.get(2..).unwrap_or("");
        let value = if second {
            // `%25XX` -> `%XX`, read as an escape; any other escape stays as it is.
            let inner = match rest.as_bytes() {
                [hi, lo, ..] if value == b'%' => hex_value(*hi).zip(hex_value(*lo)).map(|(h, l)| h * 16 + l),
                _ => None,
            };
            match inner {
                Some(inner) => {
                    rest = rest.get(2..).unwrap_or("");
                    inner
                }
                None => {
                    push_escape(&mut out, value);
                    push_literal(&mut out, rest, reading, second);
                    continue;
                }
            }
        } else {
            value
        };
        match value {
            b'/' if reading.encoded_slash => out.push('/'),
            b'\\' if reading.backslash => out.push('/'),
            b';' if reading.params == Params::StripDecoded => out.push(';'),
            v if is_unreserved(v) => out.push(char::from(v)),
            v => push_escape(&mut out, v),
        }
        push_literal(&mut out, rest, reading, second);
    }
    out
}

fn push_escape(out: &mut String, value: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(value >> 4)]));
    out.push(char::from(HEX[usize::from(value & 0xF)]));
}

/// Copies literal path text, percent-encoding (uppercase) what a browser would have encoded:
/// non-ASCII bytes, spaces and controls. `/café` and `/caf%C3%A9` are then one path. A `\` is
/// a separator for a reading that says so. The second pass of a double decoding copies text the
/// first pass already wrote, unchanged.
fn push_literal(out: &mut String, text: &str, reading: Reading, second: bool) {
    if second {
        out.push_str(text);
        return;
    }
    for &b in text.as_bytes() {
        if b >= 0x80 || b <= 0x20 || b == 0x7F {
            push_escape(out, b);
        } else if b == b'\\' && reading.backslash {
            out.push('/');
        } else {
            out.push(char::from(b));
        }
    }
}

/// Drops each segment's `;params` (`/a;x/..;y/b` -> `/a/../b`). Segments end at `/`, and at `\\`
/// too when `backslash` says it is a separator.
fn strip_segment_parameters(path: &str, backslash: bool) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_params = false;
    for c in path.chars() {
        match c {
            '/' => in_params = false,
            '\\' if backslash => in_params = false,
            ';' => in_params = true,
            _ => {}
        }
        if !in_params {
            out.push(c);
        }
    }
    out
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
        assert!(!RequestPath::parse("/a?x=%2F").is_ambiguous());
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
    fn a_percent_that_starts_no_escape_is_spelled_as_one() {
        assert_eq!(canonical("/%zz"), "/%25zz");
        assert_eq!(canonical("/%"), "/%25");
        assert_eq!(canonical("/a%2"), "/a%252");
        assert_eq!(canonical("/%%41"), "/%25A");
        assert_eq!(canonical("/%é"), "/%25%C3%A9");
    }

    #[test]
    fn raw_non_ascii_and_spaces_are_seen_percent_encoded() {
        assert_eq!(
            canonical("/café/./ü//日本"),
            "/caf%C3%A9/%C3%BC/%E6%97%A5%E6%9C%AC"
        );
        assert_eq!(canonical("/caf%c3%a9"), canonical("/café"));
        assert_eq!(canonical("/a b"), "/a%20b");
        assert_eq!(canonical("/é%"), "/%C3%A9%25");
    }

    #[test]
    fn literal_backslash_is_ordinary_in_canonical_but_a_separator_when_decoded() {
        let path = RequestPath::parse("/public\\..\\admin");
        assert_eq!(path.canonical(), "/public\\..\\admin");
        assert_eq!(path.decoded(), "/admin");
        assert!(path.is_ambiguous());
    }

    #[test]
    fn encoded_separators_are_detected_in_any_case() {
        for raw in ["/a%2Fb", "/a%2fb"] {
            assert_eq!(
                RequestPath::parse(raw).ambiguity(),
                Ambiguity::ENCODED_SLASH,
                "{raw}"
            );
        }
        for raw in ["/a%5Cb", "/a%5cb", "/a\\b"] {
            assert_eq!(RequestPath::parse(raw).ambiguity(), Ambiguity::BACKSLASH, "{raw}");
        }
        for raw in ["/a/b", "/a%2eb", "/a%2", "/a?b;c=%2F%25%32%66"] {
            assert!(!RequestPath::parse(raw).is_ambiguous(), "{raw}");
        }
    }

    #[test]
    fn segment_parameters_are_ambiguous_and_stripped_in_the_decoded_reading() {
        for (raw, decoded) in [
            ("/public/..;/admin", "/admin"),
            ("/public/%2e%2e;/admin", "/admin"),
            ("/public/..;x/admin", "/admin"),
            ("/admin;x", "/admin"),
            ("/;x/admin", "/admin"),
            ("/public/..%3B/admin", "/admin"),
            ("/a;b/c;d", "/a/c"),
        ] {
            let path = RequestPath::parse(raw);
            assert!(path.ambiguity().contains(Ambiguity::SEGMENT_PARAMETERS), "{raw}");
            assert_eq!(path.decoded(), decoded, "{raw}");
        }
        // The canonical reading keeps them: `..;` is an ordinary segment there.
        assert_eq!(canonical("/public/%2e%2e;/admin"), "/public/..;/admin");
    }

    #[test]
    fn double_encoding_is_ambiguous_and_decoded_once_more() {
        for (raw, decoded) in [
            ("/public/..%252fadmin", "/admin"),
            ("/public/%252e%252e/admin", "/admin"),
            ("/public/%25%32%65%25%32%65/admin", "/admin"),
            ("/x/..%255cadmin", "/admin"),
            ("/admin%253Bx", "/admin"),
        ] {
            let path = RequestPath::parse(raw);
            assert!(path.ambiguity().contains(Ambiguity::DOUBLE_ENCODING), "{raw}");
            assert_eq!(path.decoded(), decoded, "{raw}");
        }
        for raw in ["/a%25", "/a%25zz", "/a%25%2"] {
            assert!(!RequestPath::parse(raw).is_ambiguous(), "{raw}");
        }
    }

    #[test]
    fn readings_cover_each_way_a_backend_may_read_the_path() {
        let path = RequestPath::parse("/admin/..;x");
        let readings: Vec<&str> = path.readings().collect();
        // RFC 3986 keeps `..;x` as a file under /admin; Tomcat reads `..` and climbs out.
        assert_eq!(readings.first(), Some(&"/admin/..;x"));
        assert!(readings.contains(&"/"), "{readings:?}");
        let path = RequestPath::parse("/admin%2F..");
        let readings: Vec<&str> = path.readings().collect();
        assert!(readings.contains(&"/admin%2F.."), "{readings:?}");
        assert!(readings.contains(&"/"), "{readings:?}");
        assert_eq!(RequestPath::parse("/plain/path").readings().count(), 1);
    }

    #[test]
    fn host_names_and_ip_literals_are_accepted() {
        for (authority, host) in [
            ("Example.COM:8443", "example.com"),
            ("admin.example.com", "admin.example.com"),
            ("admin.example.com.", "admin.example.com"),
            ("admin.example.com.:443", "admin.example.com"),
            ("127.0.0.1:9000", "127.0.0.1"),
            ("[::1]:80", "[::1]"),
            ("[FE80::1]", "[fe80::1]"),
            ("localhost", "localhost"),
            ("_acme.example.com", "_acme.example.com"),
            ("xn--caf-dma.example", "xn--caf-dma.example"),
        ] {
            assert_eq!(parse_host(authority).as_deref(), Ok(host), "{authority}");
        }
    }

    #[test]
    fn hosts_that_are_not_host_names_are_refused() {
        for authority in [
            "x@admin.example.com",
            "admin.example.com..",
            "admin.example.com:443:1",
            "admin%2eexample.com",
            "admin example.com",
            "admin..example.com",
            ".admin.example.com",
            "",
            ".",
            ":80",
            "admin.example.com:",
            "admin.example.com:http",
            "admin.example.com:123456",
            "[::1",
            "[::1]x",
            "[::1]:80:1",
            "[not-v6]",
            "é.example.com",
            "admin.example.com\\@evil",
            "a\u{0}b",
        ] {
            assert!(parse_host(authority).is_err(), "{authority:?} should be refused");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(parse_host(&long_label).is_err());
        let long_name = "a.".repeat(127) + "com";
        assert!(parse_host(&long_name).is_err());
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
            assert!(!path.is_ambiguous());
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
