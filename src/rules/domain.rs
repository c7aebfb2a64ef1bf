//! Domain patterns (`*`, `*.example.com`, `a.example.com`) of authorization conditions and rule
//! `domains`: checked once when the configuration is loaded, so that matching a request's host is
//! a plain string comparison.

/// A host pattern from the configuration, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// `*`: every host.
    Any,
    /// `a.example.com`: that host only.
    Exact(String),
    /// `*.example.com`, held as its suffix including the leading dot (`.example.com`): any
    /// subdomain at any depth, not the apex.
    Wildcard(String),
}

/// The longest DNS name (RFC 1035), without a trailing dot.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

impl DomainPattern {
    /// "*" -> Any; "*.example.com" -> Wildcard (any subdomain at any depth, NOT the apex);
    /// "a.example.com" -> Exact. Lowercases. Errors (a readable message) for empty, "*.",
    /// "a.*.com", "*foo.com", spaces, ports, IP-literal brackets, or characters outside
    /// `[a-z0-9.-]` and the leading `*.`.
    pub fn parse(s: &str) -> Result<DomainPattern, String> {
        if s == "*" {
            return Ok(DomainPattern::Any);
        }
        let lower = s.to_ascii_lowercase();
        let result = match lower.strip_prefix("*.") {
            Some(name) => check_name(name).map(|()| DomainPattern::Wildcard(format!(".{name}"))),
            None => check_name(&lower).map(|()| DomainPattern::Exact(lower.clone())),
        };
        result.map_err(|reason| format!("invalid domain pattern {s:?}: {reason}"))
    }

    /// `host` is already normalized (lowercase, no port, no trailing dot).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            DomainPattern::Any => true,
            DomainPattern::Exact(name) => host == name,
            // The label(s) before the suffix must be non-empty: the apex itself does not match.
            DomainPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|sub| !sub.is_empty()),
        }
    }

    /// Back to the configuration form.
    pub fn as_str(&self) -> String {
        match self {
            DomainPattern::Any => "*".to_owned(),
            DomainPattern::Exact(name) => name.clone(),
            DomainPattern::Wildcard(suffix) => format!("*{suffix}"),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a domain is required, as in \"a.example.com\" or \"*.example.com\"".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Err(match c {
            '*' => "'*' is allowed only as the whole pattern or as a leading \"*.\" label".into(),
            ':' => "must not hold a port: hosts are matched without their port".into(),
            '[' | ']' => "IP-literal addresses in brackets are not supported".into(),
            c if c.is_whitespace() => "must not contain whitespace".into(),
            c if !c.is_ascii() => {
                format!("invalid character {c:?}: write internationalized names in punycode (xn--…)")
            }
            c => format!("invalid character {c:?}: allowed are letters, digits, '-' and '.'"),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (leading, trailing or doubled '.')".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "label {label:?} is longer than {MAX_LABEL_LEN} characters"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DomainPattern {
        match DomainPattern::parse(s) {
            Ok(pattern) => pattern,
            Err(message) => panic!("{s:?} should parse: {message}"),
        }
    }

    #[test]
    fn star_alone_matches_every_host() {
        let any = parse("*");
        assert_eq!(any, DomainPattern::Any);
        assert!(any.matches("example.com"));
        assert!(any.matches("a.b.c"));
        assert!(any.matches(""));
    }

    #[test]
    fn exact_domain_matches_only_that_host() {
        let exact = parse("a.example.com");
        assert_eq!(exact, DomainPattern::Exact("a.example.com".into()));
        assert!(exact.matches("a.example.com"));
        assert!(!exact.matches("b.a.example.com"));
        assert!(!exact.matches("example.com"));
        assert!(!exact.matches("a.example.com.evil"));
    }

    #[test]
    fn patterns_are_lowercased() {
        assert_eq!(
            parse("ADMIN.Example.COM"),
            DomainPattern::Exact("admin.example.com".into())
        );
        assert_eq!(
            parse("*.EXAMPLE.com"),
            DomainPattern::Wildcard(".example.com".into())
        );
    }

    #[test]
    fn wildcard_matches_subdomains_at_any_depth() {
        let wildcard = parse("*.example.com");
        assert_eq!(wildcard, DomainPattern::Wildcard(".example.com".into()));
        assert!(wildcard.matches("a.example.com"));
        assert!(wildcard.matches("a.b.c.example.com"));
    }

    #[test]
    fn wildcard_does_not_match_apex_or_lookalikes() {
        let wildcard = parse("*.example.com");
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches(".example.com"));
        assert!(!wildcard.matches("badexample.com"));
        assert!(!wildcard.matches("a.example.com.evil.net"));
    }

    #[test]
    fn ip_addresses_and_single_labels_are_exact_domains() {
        assert_eq!(parse("10.0.0.1"), DomainPattern::Exact("10.0.0.1".into()));
        assert_eq!(parse("localhost"), DomainPattern::Exact("localhost".into()));
        assert_eq!(parse("*.com"), DomainPattern::Wildcard(".com".into()));
    }

    #[test]
    fn as_str_gives_back_the_config_form() {
        for s in ["*", "*.example.com", "a.example.com"] {
            assert_eq!(parse(s).as_str(), s);
        }
        assert_eq!(parse("A.Example.com").as_str(), "a.example.com");
    }

    #[test]
    fn malformed_patterns_are_rejected_with_a_reason() {
        for bad in [
            "",
            "*.",
            "a.*.com",
            "*foo.com",
            "**",
            "*.*.example.com",
            "a b.com",
            " a.com",
            "a.com:443",
            "[::1]",
            "a_b.com",
            "a..com",
            ".a.com",
            "a.com.",
            "é.com",
            "a/b",
        ] {
            match DomainPattern::parse(bad) {
                Ok(pattern) => panic!("{bad:?} should be rejected, got {pattern:?}"),
                Err(message) => assert!(message.contains("invalid domain pattern"), "{message}"),
            }
        }
    }

    #[test]
    fn rejection_messages_name_the_problem() {
        let message = |s: &str| DomainPattern::parse(s).err().unwrap_or_default();
        assert!(message("a.com:443").contains("port"));
        assert!(message("a.*.com").contains("'*'"));
        assert!(message("a b").contains("whitespace"));
        assert!(message("*.").contains("domain is required"));
    }

    #[test]
    fn overlong_names_and_labels_are_rejected() {
        let label = "a".repeat(64);
        assert!(DomainPattern::parse(&format!("{label}.com")).is_err());
        let long = ["abcdefghij"; 26].join(".");
        assert!(long.len() > 253);
        assert!(DomainPattern::parse(&long).is_err());
    }
}
