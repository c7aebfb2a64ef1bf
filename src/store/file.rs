//! `file:PATH` and `inline`: synchronous, blocking stores (the file is written with fsync), run
//! off the async workers by `store::Store`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StoreError, Version};
use crate::config::RuleConfig;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreFile {
    #[serde(default)]
    pub(super) rules: Vec<RuleConfig>,
}

/// `file:PATH`.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: PathBuf) -> FileStore {
        FileStore { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }
}

impl FileStore {
    /// The stored rules, or `None` when the file is missing or blank.
    pub fn load(&self) -> Result<Option<Vec<RuleConfig>>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        let file: StoreFile = serde_saphyr::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Some(file.rules))
    }

    /// Writes the whole rule set atomically; returns once it is durable.
    pub fn save(&self, rules: &[RuleConfig]) -> Result<(), StoreError> {
        let body = serde_json::to_string_pretty(&StoreFile {
            rules: rules.to_vec(),
        })
        .map_err(|e| self.io(e))?;
        // JSON is YAML: the file stays readable by `load` and by humans.
        let text = format!("# oidc-authz rule store: written by oidc-authz; edits are reloaded.\n{body}\n");
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| -> std::io::Result<()> {
            // The store holds client secrets: readable by this user only.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &self.path)?;
            // The rename is durable only once the directory is.
            std::fs::File::open(dir)?.sync_all()?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| self.io(e))
    }

    /// The file's modification time: changes when the file is edited outside this process.
    pub fn version(&self) -> Version {
        match std::fs::metadata(&self.path).and_then(|m| m.modified()) {
            Ok(t) => Version::new(format!("{t:?}")),
            Err(_) => Version::default(),
        }
    }

    pub fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// `inline`: the config file's rules; read-only.
pub struct InlineStore {
    pub(super) rules: Vec<RuleConfig>,
}

impl InlineStore {
    pub fn new(rules: Vec<RuleConfig>) -> InlineStore {
        InlineStore { rules }
    }
    pub fn load(&self) -> Result<Option<Vec<RuleConfig>>, StoreError> {
        Ok(Some(self.rules.clone()))
    }
    pub fn save(&self, _: &[RuleConfig]) -> Result<(), StoreError> {
        Err(StoreError::ReadOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> RuleConfig {
        serde_json::from_value(serde_json::json!({
            "name": name, "issuer": "https://idp.example.com",
            "redirect_url": "https://a.example.com/oauth2/callback",
            "client_id": "c", "client_secret": "s"
        }))
        .unwrap()
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oidc-authz-store-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("rules.yaml")
    }

    #[test]
    fn a_missing_file_is_an_empty_store() {
        let s = FileStore::new(temp_path("missing"));
        let _ = std::fs::remove_file(s.path());
        assert!(s.load().unwrap().is_none());
    }

    #[test]
    fn saved_rules_load_back_identically_with_secrets() {
        let s = FileStore::new(temp_path("roundtrip"));
        let rules = vec![rule("a"), rule("b")];
        s.save(&rules).unwrap();
        assert_eq!(s.load().unwrap(), Some(rules));
        // No temporary file is left behind.
        let dir = s.path().parent().unwrap();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_file_is_reported_not_loaded() {
        let s = FileStore::new(temp_path("corrupt"));
        std::fs::write(s.path(), "rules: [ {name: x, colour: blue} ]").unwrap();
        assert!(matches!(s.load(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn inline_store_refuses_writes() {
        let s = InlineStore {
            rules: vec![rule("a")],
        };
        assert!(matches!(s.save(&[]), Err(StoreError::ReadOnly)));
    }
}
