//! Property tests: however a path is spelled, a whitelist never calls public what a backend may
//! read as a protected path, and a blacklist never lets through what a backend may read as a
//! blacklisted one. Backend readings are modelled here independently of `rules::normalize`, on
//! bytes: RFC 3986 dot-segment removal, Tomcat-style `;params` stripping (before or after
//! decoding), one extra percent-decoding, `%2F` as `/`, and `\` as `/`, in every combination.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use std::sync::OnceLock;

use super::{blacklist, decide, rules, whitelist, RuleSet, Seen};

/// Cases per property, in `cargo test --release`.
const CASES: u32 = 20_000;

/// The pieces hostile paths are made of.
const PIECES: &[&str] = &[
    "/",
    "//",
    "..",
    ".",
    ";",
    ";x",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%25",
    "%252f",
    "%252F",
    "%252e",
    "%255c",
    "%3b",
    "%3B",
    "%253b",
    "\\",
    "%00",
    "%",
    "%32",
    "%66",
    "%65",
    "public",
    "PUBLIC",
    "Public",
    "admin",
    "ADMIN",
    "%61dmin",
    "%2561dmin",
    "secret",
    "static",
    "x",
    "a.js",
    "?",
    "#",
];

fn hostile_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(PIECES), 1..14)
        .prop_map(|pieces| format!("/{}", pieces.concat()))
}

/// How `;params` are handled by one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strip {
    None,
    BeforeDecoding,
    AfterDecoding,
}

#[derive(Debug, Clone, Copy)]
struct Backend {
    slash: bool,
    backslash: bool,
    double: bool,
    strip: Strip,
}

fn backends() -> Vec<Backend> {
    let mut all = Vec::new();
    for slash in [false, true] {
        for backslash in [false, true] {
            for double in [false, true] {
                for strip in [Strip::None, Strip::BeforeDecoding, Strip::AfterDecoding] {
                    all.push(Backend {
                        slash,
                        backslash,
                        double,
                        strip,
                    });
                }
            }
        }
    }
    all
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// One percent-decoding, as `backend` does it: a separator it does not split on stays escaped.
fn decode(bytes: &[u8], backend: Backend) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escape {
            Some(b'/') if !backend.slash => out.extend_from_slice(b"%2F"),
            Some(b'\\') if !backend.backslash => out.extend_from_slice(b"%5C"),
            Some(v) => out.push(v),
            None => {
                out.push(bytes[i]);
                i += 1;
                continue;
            }
        }
        i += 3;
    }
    out
}

fn strip_params(bytes: &[u8], backslash: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut skipping = false;
    for &b in bytes {
        if b == b'/' || (backslash && b == b'\\') {
            skipping = false;
        } else if b == b';' {
            skipping = true;
        }
        if !skipping {
            out.push(b);
        }
    }
    out
}

fn remove_dots(bytes: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut directory = false;
    for segment in bytes.split(|&b| b == b'/') {
        directory = matches!(segment, b"" | b"." | b"..");
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::new();
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if directory || out.is_empty() {
        out.push(b'/');
    }
    out
}

/// The path as `backend` reads it.
fn read(raw: &str, backend: Backend) -> Vec<u8> {
    let path = raw.split(['?', '#']).next().unwrap_or("").as_bytes();
    let mut bytes = path.to_vec();
    if backend.strip == Strip::BeforeDecoding {
        bytes = strip_params(&bytes, backend.backslash);
    }
    bytes = decode(&bytes, backend);
    if backend.double {
        bytes = decode(&bytes, backend);
    }
    if backend.backslash {
        for b in &mut bytes {
            if *b == b'\\' {
                *b = b'/';
            }
        }
    }
    if backend.strip == Strip::AfterDecoding {
        bytes = strip_params(&bytes, false);
    }
    remove_dots(&bytes)
}

/// Public in the whitelist below: prefix `/public`, or a regex for static scripts.
fn is_public(reading: &[u8]) -> bool {
    reading.starts_with(b"/public")
        || (reading.starts_with(b"/static/")
            && reading.ends_with(b".js")
            && reading[b"/static/".len()..]
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.'))
}

/// Protected by the blacklist below: prefix `/admin`, or exactly `/secret` (one trailing `/`).
fn is_blacklisted(reading: &[u8]) -> bool {
    reading.starts_with(b"/admin") || reading == b"/secret" || reading == b"/secret/"
}

/// The whitelist and blacklist under test, compiled once.
fn whitelist_rules() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        rules(&[whitelist(
            "corp",
            &[
                "{ path: /public }",
                "{ path: \"/static/[a-z0-9.]*\\\\.js\", match: regex }",
            ],
        )])
    })
}

fn blacklist_rules() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        rules(&[blacklist(
            "corp",
            &["{ path: /admin }", "{ path: /secret, match: exact }"],
        )])
    })
}

fn property_config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(property_config())]

    /// When a whitelist says public, every backend reads a public path.
    #[test]
    fn whitelist_public_means_public_for_every_backend(raw in hostile_path()) {
        if let Seen::Public(..) = decide(whitelist_rules(), "app.example.com", &raw) {
            for backend in backends() {
                let reading = read(&raw, backend);
                prop_assert!(
                    is_public(&reading),
                    "{raw:?} is public, but {backend:?} reads {:?}",
                    String::from_utf8_lossy(&reading)
                );
            }
        }
    }

    /// When any backend reads a blacklisted path, the blacklist asks for a login.
    #[test]
    fn blacklist_sees_what_any_backend_reads(raw in hostile_path()) {
        let seen = decide(blacklist_rules(), "app.example.com", &raw);
        for backend in backends() {
            let reading = read(&raw, backend);
            if is_blacklisted(&reading) {
                prop_assert!(
                    matches!(seen, Seen::Login(_, Some(_))),
                    "{backend:?} reads {raw:?} as {:?}, but the blacklist decided {seen:?}",
                    String::from_utf8_lossy(&reading)
                );
            }
        }
    }
}

/// The model itself: readings the issue names are produced.
#[test]
fn the_backend_model_reads_the_known_tricks() {
    let tomcat = Backend {
        slash: false,
        backslash: false,
        double: false,
        strip: Strip::BeforeDecoding,
    };
    assert_eq!(read("/public/%2e%2e;/admin", tomcat), b"/admin");
    let double = Backend {
        slash: true,
        backslash: false,
        double: true,
        strip: Strip::None,
    };
    assert_eq!(read("/public/..%252fadmin", double), b"/admin");
    let windows = Backend {
        slash: false,
        backslash: true,
        double: false,
        strip: Strip::None,
    };
    assert_eq!(read("/public\\..\\admin", windows), b"/admin");
}
