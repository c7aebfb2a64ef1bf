//! `${NAME}` substitution in every string value of the file, before it is deserialized, so that
//! secrets can stay out of it. An unset variable is an error naming the field (and the rule) it
//! was meant for.

use serde_json::Value;

/// The rule label for an error path like `rules[2].issuer`, for messages.
pub(super) fn rule_of_path(root: &Value, field: &str) -> Option<String> {
    let rest = field.strip_prefix("rules[")?;
    let idx: usize = rest.split(']').next()?.parse().ok()?;
    let name = root.get("rules")?.get(idx)?.get("name")?.as_str()?;
    Some(name.to_string())
}

/// Replaces `${NAME}` in every string value. Unset variables are reported with their path.
pub(super) fn substitute_env(
    value: &mut Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) if s.contains("${") => match substitute_str(s, env) {
            Ok(new) => *s = new,
            Err(var) => errors.push((path, var)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, format!("{path}[{i}]"), env, errors);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                substitute_env(v, p, env, errors);
            }
        }
        _ => {}
    }
}

fn substitute_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            out.push_str("${");
            rest = after;
            continue;
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
