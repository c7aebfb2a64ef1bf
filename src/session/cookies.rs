//! Reading and writing our cookies: splitting the `cookie` request header, chunking values
//! above 4000 bytes into `name_1`, `name_2`, …, building `Set-Cookie` lines with the
//! configured attributes, and removing our cookies from what the backend sees.
//!
//! Pairs are separated by `;` only (RFC 6265 §4.2.1). A `,` is legal inside cookie values
//! that applications set (`prefs="a=1,b=2"`), so splitting on it would change cookies on their
//! way to the backend. Envoy joins HTTP/2 cookie crumbs and repeated `cookie` headers with
//! `"; "`, and the HTTP listener joins repeated headers with `"; "` too.

use std::borrow::Cow;

use cookie::{Cookie, SameSite as CookieSameSite};

use crate::config::SameSite;

/// Values above this are split into numbered chunks.
pub const CHUNK_SIZE: usize = 4000;
/// Never read more chunks than this (a bound on what a client can make us assemble).
pub const MAX_CHUNKS: usize = 12;

/// `name=value` pairs of a `cookie` header, separated by `;`.
pub fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|part| {
        let part = part.trim();
        let (name, value) = part.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        Some((name, value.trim().trim_matches('"')))
    })
}

/// The value of the first cookie called `name`.
pub fn get<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    pairs(header).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// Reads a possibly chunked value: `name`, or `name_1` + `name_2` + … when chunked.
pub fn get_chunked(header: &str, name: &str) -> Option<String> {
    RequestCookies::parse(header, name).session.map(Cow::into_owned)
}

pub fn chunk_name(name: &str, index: usize) -> String {
    format!("{name}_{index}")
}

/// Whether a cookie name belongs to the session cookie `base` (plain or a chunk).
pub fn is_session_cookie(name: &str, base: &str) -> bool {
    matches!(ours(name, base), Some(Ours::Session | Ours::Chunk(_)))
}

/// Prefix of login-state cookie names for session cookie `base`.
pub fn login_prefix(base: &str) -> String {
    format!("{base}_login_")
}

/// The `cookie` header read in one pass: our session cookie's value (joined from its chunks
/// when chunked), and what the backend is to receive in place of the header: every other
/// cookie byte for byte (only the whitespace between pairs is normalized to `"; "`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCookies<'a> {
    /// The first `base` cookie's value, else `base_1` + `base_2` + … (the first of each name,
    /// up to the first missing, at most `MAX_CHUNKS`).
    pub session: Option<Cow<'a, str>>,
    pub upstream: Upstream,
}

/// What the backend receives as its `cookie` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The header as the client sent it: none of our cookies was in it.
    Unchanged,
    /// Only our cookies were in it: the header is removed.
    Remove,
    /// The other cookies, each byte for byte, joined with `"; "`.
    Replace(String),
}

/// Which of our cookies a name is.
enum Ours {
    /// `base` itself.
    Session,
    /// `base_N`: chunk N (1-based) when N is written as `chunk_name` writes it.
    Chunk(Option<usize>),
    /// A login-state cookie (`base_login_…`).
    Login,
}

fn ours(name: &str, base: &str) -> Option<Ours> {
    let rest = name.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(Ours::Session);
    }
    let rest = rest.strip_prefix('_')?;
    if rest.starts_with("login_") {
        return Some(Ours::Login);
    }
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `base_01` is ours (removed upstream) but no chunk: chunks are written without zeros.
    let index = rest.parse::<usize>().ok().filter(|_| !rest.starts_with('0'));
    Some(Ours::Chunk(index))
}

impl<'a> RequestCookies<'a> {
    pub fn parse(header: &'a str, base: &str) -> RequestCookies<'a> {
        let mut plain: Option<&'a str> = None;
        let mut chunks: [Option<&'a str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
        let mut kept = String::new();
        let mut changed = false;
        for part in header.split(';') {
            let trimmed = part.trim();
            if trimmed.is_empty() {
                continue;
            }
            let (name, value) = match trimmed.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (trimmed, None),
            };
            let Some(which) = ours(name, base) else {
                if !kept.is_empty() {
                    kept.push_str("; ");
                }
                kept.push_str(trimmed);
                continue;
            };
            changed = true;
            // A part without `=` is no pair: removed, never read.
            let Some(value) = value else { continue };
            match which {
                Ours::Session => {
                    plain.get_or_insert(value);
                }
                Ours::Chunk(Some(n)) if (1..=MAX_CHUNKS).contains(&n) => {
                    if let Some(slot) = chunks.get_mut(n - 1) {
                        slot.get_or_insert(value);
                    }
                }
                Ours::Chunk(_) | Ours::Login => {}
            }
        }
        let session = match plain {
            Some(value) => Some(Cow::Borrowed(value)),
            None => chunks
                .first()
                .copied()
                .flatten()
                .map(|_| Cow::Owned(chunks.iter().map_while(|chunk| *chunk).collect::<String>())),
        };
        let upstream = match (changed, kept.is_empty()) {
            (false, _) => Upstream::Unchanged,
            (true, true) => Upstream::Remove,
            (true, false) => Upstream::Replace(kept),
        };
        RequestCookies { session, upstream }
    }
}

/// Cookie attributes shared by every cookie we set.
#[derive(Debug, Clone)]
pub struct CookieAttrs {
    pub secure: bool,
    pub same_site: SameSite,
    /// `Some(".example.com")` or host-only.
    pub domain: Option<String>,
}

impl CookieAttrs {
    /// A `Set-Cookie` value. `max_age` in seconds; 0 deletes.
    pub fn set_cookie(&self, name: &str, value: &str, max_age: i64) -> String {
        let mut c = Cookie::build((name.to_string(), value.to_string()))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(match self.same_site {
                SameSite::Lax => CookieSameSite::Lax,
                SameSite::Strict => CookieSameSite::Strict,
                SameSite::None => CookieSameSite::None,
            })
            .max_age(cookie::time::Duration::seconds(max_age.max(0)));
        if let Some(d) = &self.domain {
            c = c.domain(d.trim_start_matches('.').to_string());
        }
        c.build().to_string()
    }

    pub fn delete(&self, name: &str) -> String {
        self.set_cookie(name, "", 0)
    }

    /// `Set-Cookie` values that store `value` under `base`, chunked when large, and delete the
    /// other form (plain or extra chunks) the browser may still hold (`present` names).
    pub fn set_chunked<'a>(
        &self,
        base: &str,
        value: &str,
        max_age: i64,
        present: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut written: Vec<String> = Vec::new();
        if value.len() <= CHUNK_SIZE {
            out.push(self.set_cookie(base, value, max_age));
            written.push(base.to_string());
        } else {
            // Sealed values are base64url, so any byte index is a char boundary.
            for (i, chunk) in value.as_bytes().chunks(CHUNK_SIZE).enumerate() {
                let name = chunk_name(base, i + 1);
                out.push(self.set_cookie(&name, std::str::from_utf8(chunk).unwrap_or_default(), max_age));
                written.push(name);
            }
        }
        for name in present {
            if is_session_cookie(name, base) && !written.iter().any(|w| w == name) {
                out.push(self.delete(name));
            }
        }
        out
    }

    /// Deletes the session cookie in every form the browser holds.
    pub fn delete_chunked<'a>(&self, base: &str, present: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut out = vec![self.delete(base)];
        for name in present {
            if is_session_cookie(name, base) && name != base {
                out.push(self.delete(name));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header the backend gets, as the old `strip_ours` answered: `None` when it is removed.
    fn strip_ours(header: &str, base: &str) -> Option<String> {
        match RequestCookies::parse(header, base).upstream {
            Upstream::Unchanged => Some(header.to_string()),
            Upstream::Remove => None,
            Upstream::Replace(kept) => Some(kept),
        }
    }

    fn attrs() -> CookieAttrs {
        CookieAttrs {
            secure: true,
            same_site: SameSite::Lax,
            domain: Some(".example.com".into()),
        }
    }

    #[test]
    fn pairs_split_on_semicolons_only() {
        let h = "a=1; _oidc_authz=xyz;b=2; prefs=\"x=1,b=3\"";
        assert_eq!(get(h, "_oidc_authz"), Some("xyz"));
        assert_eq!(get(h, "b"), Some("2"), "a comma inside a value starts no pair");
        assert_eq!(get(h, "prefs"), Some("x=1,b=3"));
        assert_eq!(get(h, "c"), None);
    }

    #[test]
    fn strip_ours_keeps_values_with_commas_byte_for_byte() {
        let h = "prefs=\"a=1,b=2\"; _s=sealed; list=x,y,z; q=\"a, b\"";
        assert_eq!(
            strip_ours(h, "_s").as_deref(),
            Some("prefs=\"a=1,b=2\"; list=x,y,z; q=\"a, b\"")
        );
    }

    #[test]
    fn chunked_value_round_trips() {
        let value: String = "a".repeat(9000);
        let lines = attrs().set_chunked("_s", &value, 60, std::iter::empty());
        assert_eq!(lines.len(), 3);
        let header: Vec<String> = lines
            .iter()
            .map(|l| l.split(';').next().unwrap().to_string())
            .collect();
        assert_eq!(get_chunked(&header.join("; "), "_s").unwrap(), value);
    }

    #[test]
    fn plain_write_deletes_old_chunks() {
        let lines = attrs().set_chunked("_s", "small", 60, ["_s_1", "_s_2", "other"].into_iter());
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("_s_1=;"));
        assert!(lines.iter().all(|l| !l.starts_with("other")));
    }

    #[test]
    fn set_cookie_has_the_security_attributes() {
        let line = attrs().set_cookie("_s", "v", 60);
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Domain=example.com",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(line.contains(part), "{line} lacks {part}");
        }
    }

    #[test]
    fn strip_ours_keeps_other_cookies() {
        assert_eq!(
            strip_ours("a=1; _s=x; _s_1=y; _s_login_abc=z; _sx=keep", "_s").as_deref(),
            Some("a=1; _sx=keep")
        );
        assert_eq!(strip_ours("_s=x", "_s"), None);
        assert_eq!(strip_ours("a=1", "_s").as_deref(), Some("a=1"));
    }

    /// The pre-`RequestCookies` readers, kept as the reference the one-pass reader must agree
    /// with.
    mod reference {
        use super::super::{chunk_name, get, login_prefix, MAX_CHUNKS};

        fn is_session_cookie(name: &str, base: &str) -> bool {
            match name.strip_prefix(base) {
                Some("") => true,
                Some(rest) => rest
                    .strip_prefix('_')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
                None => false,
            }
        }

        pub fn get_chunked(header: &str, name: &str) -> Option<String> {
            if let Some(v) = get(header, name) {
                return Some(v.to_string());
            }
            let mut out = String::new();
            for i in 1..=MAX_CHUNKS {
                match get(header, &chunk_name(name, i)) {
                    Some(v) => out.push_str(v),
                    None if i == 1 => return None,
                    None => break,
                }
            }
            Some(out)
        }

        pub fn strip_ours(header: &str, base: &str) -> Option<String> {
            let login = login_prefix(base);
            let mut kept: Vec<&str> = Vec::new();
            let mut changed = false;
            for part in header.split(';') {
                let trimmed = part.trim();
                if trimmed.is_empty() {
                    continue;
                }
                let name = trimmed.split_once('=').map_or(trimmed, |(n, _)| n).trim();
                if is_session_cookie(name, base) || name.starts_with(&login) {
                    changed = true;
                } else {
                    kept.push(trimmed);
                }
            }
            if !changed {
                return Some(header.to_string());
            }
            if kept.is_empty() {
                None
            } else {
                Some(kept.join("; "))
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn one_pass_reader_agrees_with_the_two_scans(
            parts in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "_s", "_s_1", "_s_2", "_s_3", "_s_13", "_s_01", "_s_", "_s_login_ab",
                        "_sx", "a", "", " _s ", "_S",
                    ]),
                    proptest::option::of("[a-c\\\" ,=]{0,4}"),
                ),
                0..8,
            ),
            seps in proptest::collection::vec(proptest::sample::select(vec![";", "; ", " ;", ";;"]), 8),
        ) {
            let mut header = String::new();
            for (i, (name, value)) in parts.iter().enumerate() {
                if i > 0 {
                    header.push_str(seps[i % seps.len()]);
                }
                header.push_str(name);
                if let Some(v) = value {
                    header.push('=');
                    header.push_str(v);
                }
            }
            let parsed = RequestCookies::parse(&header, "_s");
            proptest::prop_assert_eq!(
                parsed.session.map(|s| s.into_owned()),
                reference::get_chunked(&header, "_s")
            );
            let upstream = match parsed.upstream {
                Upstream::Unchanged => Some(header.clone()),
                Upstream::Remove => None,
                Upstream::Replace(kept) => Some(kept),
            };
            proptest::prop_assert_eq!(upstream, reference::strip_ours(&header, "_s"));
        }
    }
}
