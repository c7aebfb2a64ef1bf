//! Test helpers shared by the unit tests: rules written as YAML through the real schema.

/// Removes the first newline and the common indentation, so YAML can sit indented in the code.
pub(crate) fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One entry of `rules:`: a valid rule named `name`, where `overrides` (YAML) replaces or adds
/// top-level keys.
pub(crate) fn rule(name: &str, overrides: &str) -> String {
    let overrides = dedent(overrides);
    let overridden: Vec<&str> = overrides
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':').map(|(key, _)| key.trim()))
        .collect();
    let defaults = [
        ("issuer", "https://idp.example.com"),
        ("redirect_url", "https://app.example.com/oauth2/callback"),
        ("client_id", "gateway"),
        ("client_secret", "client-secret"),
        ("cookie_domain", ".example.com"),
    ];
    let mut lines = vec![format!("name: {name}")];
    for (key, value) in defaults {
        if !overridden.contains(&key) {
            lines.push(format!("{key}: {value}"));
        }
    }
    lines.extend(
        overrides
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string),
    );
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(if i == 0 { "  - " } else { "    " });
        out.push_str(line);
        out.push('\n');
    }
    out
}
