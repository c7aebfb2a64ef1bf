//! Who a request is: the identity taken from a verified token's claims, and the `allowed`
//! claim checks applied to it on every request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::oidc::claims::{Claims, GroupsClaim};
use crate::rules::Allowed;

/// The identity headers' source. Built only from a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub sub: String,
    /// Only an email that counts: one whose `email_verified` claim is not `false`, or any email
    /// when the rule allows unverified ones (see `email_unverified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `email` is kept although its `email_verified` claim is `false`, because the rule that
    /// built this identity sets `allow_unverified_email`. Another rule (or this one, once the
    /// setting is turned off) does not count such an email for its `allowed` lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_unverified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Session id at the IdP, for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Bounds on what a token may make us carry around.
const MAX_GROUPS: usize = 256;
const MAX_CLAIM_LEN: usize = 1024;

impl Identity {
    /// Takes the identity claims of a verified token. Values that are not strings, too long or
    /// hold control characters (they would become header values) are left out. So is a group
    /// holding `,` (the groups header is comma-joined: it would read as several groups), and an
    /// email whose `email_verified` claim is `false` unless `allow_unverified_email` (the rule's
    /// setting) says it counts anyway.
    pub fn from_claims(claims: &Claims, allow_unverified_email: bool) -> Option<Identity> {
        let text = |k: &str| claims.text(k).filter(|s| header_safe(s)).map(str::to_string);
        let sub = text("sub")?;
        let group_ok = |s: &&str| header_safe(s) && !s.contains(',');
        let groups = match claims.groups() {
            GroupsClaim::Many(items) => items
                .iter()
                .filter_map(Value::as_str)
                .filter(group_ok)
                .take(MAX_GROUPS)
                .map(str::to_string)
                .collect(),
            GroupsClaim::One(s) => Some(s).filter(group_ok).map(str::to_string).into_iter().collect(),
            GroupsClaim::None => Vec::new(),
        };
        let verified = claims.email_verified();
        let email = text("email").filter(|_| verified || allow_unverified_email);
        Some(Identity {
            sub,
            email_unverified: email.is_some() && !verified,
            email,
            preferred_username: text("preferred_username"),
            groups,
            sid: text("sid"),
        })
    }

    /// The email that counts for a rule with this `allow_unverified_email` setting.
    pub fn email_for(&self, allow_unverified_email: bool) -> Option<&str> {
        self.email
            .as_deref()
            .filter(|_| !self.email_unverified || allow_unverified_email)
    }
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_LEN && !s.chars().any(|c| c.is_control())
}

/// Why an authenticated user is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed {
    /// The failed requirement, e.g. `allowed.groups`.
    pub requirement: &'static str,
    pub detail: String,
}

/// Applies the rule's `allowed` checks. Every non-empty list must be satisfied.
pub fn check_allowed(allowed: &Allowed, id: &Identity) -> Result<(), NotAllowed> {
    let email = id
        .email_for(allowed.allow_unverified_email)
        .map(str::to_ascii_lowercase);
    if !allowed.emails.is_empty()
        && !email
            .as_ref()
            .is_some_and(|e| allowed.emails.iter().any(|a| a == e))
    {
        return Err(NotAllowed {
            requirement: "allowed.emails",
            detail: "your email address is not on this rule's list".into(),
        });
    }
    if !allowed.email_domains.is_empty() {
        let domain = email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_string());
        if !domain.is_some_and(|d| allowed.email_domains.contains(&d)) {
            return Err(NotAllowed {
                requirement: "allowed.email_domains",
                detail: "your email domain is not allowed by this rule".into(),
            });
        }
    }
    if !allowed.groups.is_empty() && !id.groups.iter().any(|g| allowed.groups.contains(g)) {
        return Err(NotAllowed {
            requirement: "allowed.groups",
            detail: "you are in none of the groups this rule requires".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(email: &str, groups: &[&str]) -> Identity {
        Identity {
            sub: "u".into(),
            email: Some(email.into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_allowed_lets_everyone_in() {
        assert!(check_allowed(&Allowed::default(), &id("a@b.c", &[])).is_ok());
    }

    #[test]
    fn email_domain_and_group_lists_are_each_required() {
        let a = Allowed {
            email_domains: vec!["example.com".into()],
            groups: vec!["ops".into()],
            ..Default::default()
        };
        assert!(check_allowed(&a, &id("x@EXAMPLE.com", &["ops"])).is_ok());
        assert_eq!(
            check_allowed(&a, &id("x@evil.com", &["ops"]))
                .unwrap_err()
                .requirement,
            "allowed.email_domains"
        );
        assert_eq!(
            check_allowed(&a, &id("x@example.com", &["dev"]))
                .unwrap_err()
                .requirement,
            "allowed.groups"
        );
    }

    #[test]
    fn claims_with_control_characters_are_dropped() {
        let c = json!({"sub": "u1", "email": "a@b\r\nx-evil: 1", "groups": ["a", "b\n", 3, "c,d"]});
        let i = Identity::from_claims(&Claims::from(c.as_object().cloned().unwrap()), false).unwrap();
        assert_eq!(i.email, None);
        assert_eq!(i.groups, vec!["a".to_string()]);
    }

    fn from(claims: serde_json::Value, allow_unverified_email: bool) -> Identity {
        Identity::from_claims(
            &Claims::from(claims.as_object().cloned().unwrap()),
            allow_unverified_email,
        )
        .unwrap()
    }

    #[test]
    fn an_email_with_email_verified_false_does_not_count() {
        for verified in [json!(false), json!("false"), json!("FALSE")] {
            let i = from(
                json!({"sub": "u", "email": "a@example.com", "email_verified": verified}),
                false,
            );
            assert_eq!(i.email, None, "email_verified: {verified}");
            let domains = Allowed {
                email_domains: vec!["example.com".into()],
                ..Default::default()
            };
            assert_eq!(
                check_allowed(&domains, &i).unwrap_err().requirement,
                "allowed.email_domains"
            );
            let emails = Allowed {
                emails: vec!["a@example.com".into()],
                ..Default::default()
            };
            assert_eq!(
                check_allowed(&emails, &i).unwrap_err().requirement,
                "allowed.emails"
            );
        }
        // A missing claim, or anything but false, counts as verified.
        for claims in [
            json!({"sub": "u", "email": "a@example.com"}),
            json!({"sub": "u", "email": "a@example.com", "email_verified": true}),
            json!({"sub": "u", "email": "a@example.com", "email_verified": "true"}),
        ] {
            let i = from(claims.clone(), false);
            assert_eq!(i.email.as_deref(), Some("a@example.com"), "{claims}");
            assert!(!i.email_unverified);
        }
    }

    #[test]
    fn allow_unverified_email_counts_an_unverified_email_for_that_rule_only() {
        let claims = json!({"sub": "u", "email": "a@example.com", "email_verified": false});
        let i = from(claims, true);
        assert_eq!(i.email.as_deref(), Some("a@example.com"));
        assert!(i.email_unverified);
        let mut allowed = Allowed {
            email_domains: vec!["example.com".into()],
            allow_unverified_email: true,
            ..Default::default()
        };
        assert!(check_allowed(&allowed, &i).is_ok());
        // The same identity (a session) on a rule without the setting: the email does not count.
        allowed.allow_unverified_email = false;
        assert_eq!(
            check_allowed(&allowed, &i).unwrap_err().requirement,
            "allowed.email_domains"
        );
        assert_eq!(i.email_for(false), None);
        assert_eq!(i.email_for(true), Some("a@example.com"));
    }

    #[test]
    fn a_string_groups_claim_holding_a_comma_is_dropped_not_split() {
        let i = from(json!({"sub": "u", "groups": "admins,ops"}), false);
        assert!(i.groups.is_empty(), "{:?}", i.groups);
        let a = Allowed {
            groups: vec!["admins".into()],
            ..Default::default()
        };
        assert_eq!(check_allowed(&a, &i).unwrap_err().requirement, "allowed.groups");
        let i = from(json!({"sub": "u", "groups": "admins"}), false);
        assert_eq!(i.groups, vec!["admins".to_string()]);
        let i = from(json!({"sub": "u", "groups": ["ops", "admins,ops"]}), false);
        assert_eq!(i.groups, vec!["ops".to_string()]);
    }
}
