//! The rule set in Redis, shared by every replica (see docs/rule-store.md).
//!
//! One hash, [`KEY`], holds the whole rule set: `rules` (the JSON of `{"rules": [...]}`, secrets
//! included, as in the file store), `version` (1, 2, 3… one per write) and `epoch` (a random
//! token chosen by the write that filled the empty store, so that a store emptied by a Redis
//! restart and filled again never repeats an earlier version). One key: atomic, and in one
//! Cluster slot.
//!
//! Every write is a compare-and-set in one Lua script: it writes only if the stored version is
//! the one the change was computed from, then publishes the new version on [`CHANNEL`]. The
//! write to the empty store (the import of the config's rules) is the same script expecting
//! "empty", so replicas starting together import once.

use std::sync::Arc;
use std::time::Duration;

use super::file::StoreFile;
use super::{Loaded, StoreError, Version};
use crate::config::RuleConfig;
use crate::redis_client::{RedisClient, RedisDown};

/// The hash holding the rule set (the braces make it a Cluster hash tag).
pub const KEY: &str = "oidc-authz:{rules}";
/// Where each write publishes the new version.
pub const CHANNEL: &str = "oidc-authz:{rules}:changed";
/// How often each replica compares the stored version with its own: the fallback of pub/sub
/// on one server…
pub const POLL: Duration = Duration::from_millis(500);
/// …and the only way on a Cluster (no subscription there), so more often: a change is still
/// followed well within 1 s.
pub const CLUSTER_POLL: Duration = Duration::from_millis(250);

/// KEYS[1] the hash; ARGV: [1] the expected version token ("" for an empty store), [2] the
/// rules JSON, [3] the channel, [4] the epoch to use if the store is empty. Answers the new
/// version token, or nil when the stored version is not the expected one.
const COMPARE_AND_SET: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'version', 'epoch')
local token = ''
if cur[1] then token = cur[1] .. '@' .. (cur[2] or '') end
if token ~= ARGV[1] then return false end
local v = (tonumber(cur[1]) or 0) + 1
local epoch = cur[2] or ARGV[4]
redis.call('HSET', KEYS[1], 'version', v, 'epoch', epoch, 'rules', ARGV[2])
redis.call('PUBLISH', ARGV[3], v)
return tostring(v) .. '@' .. epoch
"#;

pub struct RedisStore {
    client: Arc<RedisClient>,
    cluster: bool,
}

impl RedisStore {
    /// A store on `client`; `cluster` when it talks to a Redis Cluster (polled only).
    pub fn new(client: Arc<RedisClient>, cluster: bool) -> RedisStore {
        RedisStore { client, cluster }
    }

    pub fn poll_interval(&self) -> Duration {
        if self.cluster {
            CLUSTER_POLL
        } else {
            POLL
        }
    }

    pub fn describe(&self) -> String {
        format!("redis {}", self.client.describe())
    }

    fn down(&self, e: RedisDown) -> StoreError {
        StoreError::Unavailable {
            store: self.describe(),
            message: e.to_string(),
        }
    }

    pub async fn version(&self) -> Result<Version, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(KEY).arg("version").arg("epoch");
        let (version, epoch): (Option<String>, Option<String>) =
            self.client.query(&cmd).await.map_err(|e| self.down(e))?;
        Ok(token(version, epoch))
    }

    pub async fn load(&self) -> Result<Loaded, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(KEY).arg("version").arg("epoch").arg("rules");
        let (version, epoch, rules): (Option<String>, Option<String>, Option<String>) =
            self.client.query(&cmd).await.map_err(|e| self.down(e))?;
        let version = token(version, epoch);
        let Some(rules) = rules.filter(|_| !version.is_empty()) else {
            return Ok(Loaded::default());
        };
        Ok(Loaded {
            rules: Some(decode(&rules).map_err(|message| StoreError::Corrupt {
                path: format!("{} key {KEY}", self.describe()),
                message,
            })?),
            version,
        })
    }

    pub async fn save(&self, rules: &[RuleConfig], expected: &Version) -> Result<Version, StoreError> {
        let json = serde_json::to_string(&StoreFile {
            rules: rules.to_vec(),
        })
        .map_err(|e| StoreError::Io {
            path: self.describe(),
            message: e.to_string(),
        })?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(COMPARE_AND_SET)
            .arg(1)
            .arg(KEY)
            .arg(expected.token().unwrap_or(""))
            .arg(json)
            .arg(CHANNEL)
            .arg(format!("{:016x}", rand::random::<u64>()));
        let written: Option<String> = self.client.query(&cmd).await.map_err(|e| self.down(e))?;
        written.map(Version::new).ok_or(StoreError::Conflict)
    }

    pub fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        self.client.subscribe(CHANNEL)
    }
}

/// The version token the script compares: `"{version}@{epoch}"`, or empty.
fn token(version: Option<String>, epoch: Option<String>) -> Version {
    match version {
        Some(v) => Version::new(format!("{v}@{}", epoch.unwrap_or_default())),
        None => Version::default(),
    }
}

fn decode(json: &str) -> Result<Vec<RuleConfig>, String> {
    serde_json::from_str::<StoreFile>(json)
        .map(|f| f.rules)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tokens_match_what_the_script_builds() {
        assert!(token(None, None).is_empty());
        assert_eq!(token(Some("3".into()), Some("ab".into())).token(), Some("3@ab"));
        // The script's comparison string for a hash without an epoch field.
        assert_eq!(token(Some("1".into()), None).token(), Some("1@"));
    }

    #[test]
    fn stored_json_round_trips_with_secrets_and_refuses_unknown_fields() {
        let rule: RuleConfig = serde_json::from_value(serde_json::json!({
            "name": "a", "issuer": "https://idp.example.com",
            "redirect_url": "https://a.example.com/oauth2/callback",
            "client_id": "c", "client_secret": "s"
        }))
        .unwrap();
        let json = serde_json::to_string(&StoreFile {
            rules: vec![rule.clone()],
        })
        .unwrap();
        assert_eq!(decode(&json).unwrap(), vec![rule]);
        assert!(decode(r#"{"rules": [], "colour": 1}"#).is_err());
        assert!(decode("not json").is_err());
    }
}
