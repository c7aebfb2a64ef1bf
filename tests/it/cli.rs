//! The release binary as users run it: `validate`, `explain`, and `serve` starting while the
//! IdP is down and draining on SIGTERM.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_oidc-authz");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("OIDC_AUTHZ_ADMIN_TOKEN", "ci-admin-token-ci-admin-token-0000")
        .env("OIDC_AUTHZ_SESSION_SECRET", "0123456789abcdef0123456789abcdef-ci")
        .env("CORP_CLIENT_SECRET", "corp-secret")
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("oidc-authz-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[test]
fn every_example_config_validates() {
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let (code, out, err) = run(&["validate", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {out}{err}", path.display());
    }
}

#[test]
fn invalid_configs_exit_2_and_name_the_field() {
    for (file, field) in [
        ("unknown-key.yaml", "colour"),
        ("duplicate-rule-name.yaml", "name"),
        ("redirect-path.yaml", "redirect_url"),
        ("bad-regex.yaml", "authorization.conditions[0].path"),
        ("short-secret.yaml", "session.secrets[0]"),
        ("http-issuer.yaml", "issuer"),
        ("unknown-server-key.yaml", "server.typo_listen"),
    ] {
        let path = format!("tests/configs/invalid/{file}");
        let (code, _, err) = run(&["validate", "--config", &path]);
        assert_eq!(code, 2, "{file}");
        assert!(err.contains(&format!("field \"{field}\"")), "{file}: {err}");
        assert!(err.contains(&path), "errors name the file: {err}");
    }
}

#[test]
fn validate_reports_every_error_at_once_with_the_rule_name() {
    let path = temp_config(
        "many",
        r#"
session:
  secrets: ["short"]
rules_store: inline
rules:
  - name: one
    issuer: https://idp.example.com
    redirect_url: https://a.example.com/wrong
    client_id: c
    client_secret: s
  - name: two
    issuer: https://idp.example.com
    redirect_url: https://a.example.com/oauth2/callback
    client_id: c
    client_secret: s
    authorization: { mode: whitelist, conditions: [ { path: "(", match: regex } ] }
"#,
    );
    let (code, _, err) = run(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("session.secrets[0]"), "{err}");
    assert!(err.contains("rule \"one\": field \"redirect_url\""), "{err}");
    assert!(
        err.contains("rule \"two\": field \"authorization.conditions[0].path\""),
        "{err}"
    );
}

#[test]
fn explain_names_the_rule_the_condition_and_the_action() {
    let (code, out, err) = run(&[
        "explain",
        "--config",
        "examples/oidc-authz.yaml",
        "--url",
        "https://www.example.com/public/logo.png",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "allow");
    assert_eq!(v["rule"], "corp");
    assert_eq!(v["condition"], 0);
    let (_, out, _) = run(&[
        "explain",
        "--config",
        "examples/oidc-authz.yaml",
        "--url",
        "https://www.example.com/%61dmin",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "login");
    assert_eq!(v["condition"], serde_json::Value::Null);
    let (_, out, _) = run(&[
        "explain",
        "--config",
        "examples/blacklist.yaml",
        "--url",
        "https://elsewhere.org/",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "deny");
    let (code, _, _) = run(&[
        "explain",
        "--config",
        "examples/oidc-authz.yaml",
        "--url",
        "not a url",
    ]);
    assert_eq!(code, 2);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_starts_while_the_idp_is_down_and_exits_0_on_sigterm() {
    let (grpc, http, idp) = (free_port(), free_port(), free_port());
    let path = temp_config(
        "serve",
        &format!(
            r#"
server:
  grpc_listen: 127.0.0.1:{grpc}
  http_listen: 127.0.0.1:{http}
session:
  secrets: ["0123456789abcdef0123456789abcdef"]
rules_store: inline
rules:
  - name: corp
    issuer: http://127.0.0.1:{idp}
    redirect_url: http://127.0.0.1:{http}/oauth2/callback
    client_id: c
    client_secret: s
"#
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready_answer = None;
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http)) {
            use std::io::Read;
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            ready_answer = Some(buf);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = ready_answer.expect("the HTTP listener comes up while the IdP is down");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("corp"), "readyz names the rule: {ready}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "serve must exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains("client_secret") && !err.contains("0123456789abcdef0123456789abcdef"),
        "no secrets in logs"
    );
}

#[test]
fn serve_refuses_an_invalid_config_with_the_same_messages() {
    let (code, _, err) = run(&["serve", "--config", "tests/configs/invalid/bad-regex.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("authorization.conditions[0].path"), "{err}");
}

#[test]
fn explain_never_shows_segment_parameter_tricks_as_public() {
    for url in [
        "https://www.example.com/static/..;/admin;x.js",
        "https://www.example.com/static/%2e%2e;/admin;x.js",
        "https://www.example.com/public/%2e%2e;/admin",
        "https://www.example.com/public/..%252fadmin",
    ] {
        let (code, out, err) = run(&["explain", "--config", "examples/oidc-authz.yaml", "--url", url]);
        assert_eq!(code, 0, "{url}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["action"], "login", "{url}: {out}");
    }
    let (_, out, _) = run(&[
        "explain",
        "--config",
        "examples/oidc-authz.yaml",
        "--url",
        "https://www.example.com/static/site.css",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "allow", "{out}");
}

#[test]
fn explain_shows_a_host_that_is_not_a_host_name_as_a_400() {
    let (code, out, err) = run(&[
        "explain",
        "--config",
        "examples/oidc-authz.yaml",
        "--url",
        "https://x@app.example.com/private",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "deny", "{out}");
    assert!(v["reason"].as_str().unwrap_or("").contains("400"), "{out}");
}

#[test]
fn validate_warns_when_default_allow_leaves_hosts_unprotected() {
    let rule = r#"
rules_store: inline
rules:
  - name: admin
    issuer: https://idp.example.com
    redirect_url: https://admin.example.com/oauth2/callback
    client_id: c
    client_secret: s
    domains: [admin.example.com]
    authorization: { mode: whitelist, conditions: [] }
"#;
    let session = "session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\n";
    let allow = temp_config("warn-allow", &format!("{session}default_action: allow\n{rule}"));
    let (code, out, err) = run(&["validate", "--config", allow.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning:"))
        .unwrap_or_else(|| panic!("no warning line: {err}"));
    assert!(warning.contains("admin.example.com"), "{warning}");
    assert!(warning.contains("unprotected"), "{warning}");

    let deny = temp_config("warn-deny", &format!("{session}default_action: deny\n{rule}"));
    let (code, out, err) = run(&["validate", "--config", deny.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("warning:"), "{err}");
}

/// Runs `serve` on `config` until its log holds `needle` (or 20 s pass), then stops it with
/// SIGTERM; answers everything it wrote on stdout and stderr (kept in a file next to the config:
/// the log line is found wherever the log goes).
pub(crate) fn serve_until_log_line(config: &std::path::Path, needle: &str) -> String {
    let log_path = config.with_extension("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("OIDC_AUTHZ_LOG", "info")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !read().contains(needle) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = read();
    let _ = std::fs::remove_file(&log_path);
    log
}

/// After the first start, a file store holds the rules and the config's `rules:` are no longer
/// imported: a config edited since then must not be ignored silently.
#[test]
fn serve_warns_when_a_file_store_that_holds_rules_ignores_the_config_rules() {
    let (grpc, http, idp) = (free_port(), free_port(), free_port());
    let rule = |name: &str| {
        format!(
            r#"
  - name: {name}
    issuer: http://127.0.0.1:{idp}
    redirect_url: http://127.0.0.1:{http}/oauth2/callback
    client_id: c
    client_secret: the-client-secret-value"#
        )
    };
    let path = temp_config(
        "ignored-rules",
        &format!(
            "server:\n  grpc_listen: 127.0.0.1:{grpc}\n  http_listen: 127.0.0.1:{http}\n\
             session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\n\
             rules_store: file:rules.yaml\nrules:{}{}\n",
            rule("corp"),
            rule("added-later")
        ),
    );
    let store = path.parent().unwrap().join("rules.yaml");
    std::fs::write(&store, format!("rules:{}\n", rule("corp"))).unwrap();

    let log = serve_until_log_line(&path, "were NOT imported");
    let line = log
        .lines()
        .find(|l| l.contains("were NOT imported"))
        .unwrap_or_else(|| panic!("no warning that the config's rules were ignored:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!(
            "rules_store file:{} already holds 1 rule(s)",
            store.display()
        )),
        "{line}"
    );
    assert!(
        line.contains("config file's 2 rule(s) (not as stored: added-later)"),
        "{line}"
    );
    assert!(line.contains(&format!("delete {}", store.display())), "{line}");
    assert!(
        !log.contains("the-client-secret-value"),
        "no secret in logs:\n{log}"
    );
    // The store was left as it was: the config's rules were not written into it.
    assert!(!std::fs::read_to_string(&store).unwrap().contains("added-later"));

    // The same rules as the store's: nothing is ignored, nothing is said.
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace(&rule("added-later"), ""),
    )
    .unwrap();
    let log = serve_until_log_line(&path, "listening");
    assert!(log.contains("listening"), "{log}");
    assert!(!log.contains("NOT imported"), "{log}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
