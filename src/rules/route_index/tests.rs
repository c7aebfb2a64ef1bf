//! Unit tests of domain-pattern intersection; the index as a whole is checked against the walk by
//! the property tests in `decision::tests::index`.

use super::*;

const PATTERNS: &[&str] = &[
    "*",
    "example.com",
    "a.example.com",
    "b.a.example.com",
    "xa.example.com",
    "other.net",
    "*.example.com",
    "*.a.example.com",
    "*.b.a.example.com",
    "*.xa.example.com",
    "*.net",
    "*.other.net",
];

const HOSTS: &[&str] = &[
    "",
    "com",
    "example.com",
    "a.example.com",
    "b.a.example.com",
    "c.b.a.example.com",
    "xa.example.com",
    "y.xa.example.com",
    "z.example.com",
    "other.net",
    "w.other.net",
    "net",
    "a.net",
];

fn parse(pattern: &str) -> DomainPattern {
    match DomainPattern::parse(pattern) {
        Ok(parsed) => parsed,
        Err(message) => panic!("{pattern:?} should parse: {message}"),
    }
}

#[test]
fn intersection_matches_exactly_the_hosts_both_patterns_match() {
    for a in PATTERNS.iter().map(|p| parse(p)) {
        for b in PATTERNS.iter().map(|p| parse(p)) {
            let both = intersect(&a, &b);
            for host in HOSTS {
                let expected = a.matches(host) && b.matches(host);
                let got = both.as_ref().is_some_and(|p| p.matches(host));
                assert_eq!(got, expected, "{a:?} ∩ {b:?} = {both:?} on {host:?}");
            }
        }
    }
}

#[test]
fn intersection_examples() {
    let any = parse("*");
    let apex = parse("example.com");
    let sub = parse("a.example.com");
    let wild = parse("*.example.com");
    let deeper = parse("*.a.example.com");
    let other = parse("*.xa.example.com");
    assert_eq!(intersect(&any, &sub), Some(sub.clone()));
    assert_eq!(intersect(&wild, &any), Some(wild.clone()));
    assert_eq!(intersect(&sub, &wild), Some(sub.clone()));
    assert_eq!(
        intersect(&wild, &apex),
        None,
        "a wildcard does not match its apex"
    );
    assert_eq!(intersect(&wild, &deeper), Some(deeper.clone()));
    assert_eq!(
        intersect(&deeper, &other),
        None,
        "suffixes that only share characters"
    );
}
