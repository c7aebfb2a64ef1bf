//! The `oidc-authz` command line: `serve`, `validate` and `explain`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oidc_authz::config::Config;
use oidc_authz::rule_source;

/// mimalloc instead of the system allocator: every Check allocates and frees the request's
/// strings, and glibc's malloc cost ~9 % of the process's CPU under load (README, "Why these
/// crates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "oidc-authz",
    version,
    about = "OpenID Connect login at the Envoy gateway (ext_authz v3)",
    long_about = "OpenID Connect login at the Envoy gateway.\n\n\
        Envoy's ext_authz filter asks oidc-authz about every request over gRPC: it allows the \
        request (adding identity headers for the backend), sends a browser to the identity \
        provider (302) or answers an API client 401, or refuses (403). A small HTTP listener \
        serves /oauth2/* (the login callback, sign-out, ...), /healthz, /readyz and /metrics.\n\n\
        Start with `validate`, try URLs with `explain`, then `serve`. The configuration file \
        is described in docs/configuration.md.",
    after_help = "Environment:\n  \
        ${NAME} in the configuration   substituted in string values; an unset variable is an error naming the field\n  \
        OIDC_AUTHZ_LOG                 log filter for `serve` (default info), e.g. debug or oidc_authz=debug\n  \
        OIDC_AUTHZ_LOG_FORMAT=json     logs as JSON lines instead of text\n  \
        OTEL_EXPORTER_OTLP_ENDPOINT    send traces over OTLP/gRPC (also OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); unset: no exporter\n  \
        OTEL_SERVICE_NAME              service.name of the traces (default oidc-authz)\n  \
        SSL_CERT_FILE, SSL_CERT_DIR    the CA roots rediss:// trusts instead of the system's (point SSL_CERT_FILE at a private CA)\n\n\
        Exit status: 0 success; 2 invalid configuration (or a URL that explain cannot read); 1 another failure.\n\
        Logs go to stderr. Secrets, tokens and cookies are never logged."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ext_authz gRPC server and the HTTP listener.
    #[command(
        long_about = "Run oidc-authz: the gRPC listener (ext_authz v3 Check and grpc.health.v1, \
        server.grpc_listen, default 0.0.0.0:9001), the HTTP listener (/oauth2/*, /healthz, /readyz, \
        /metrics; server.http_listen, default 0.0.0.0:9002) and, when server.admin_token is set, the \
        admin listener (rule API and console; server.admin_listen, default 127.0.0.1:9003).\n\n\
        The rule store is opened first: an empty store receives the config file's rules; a store \
        that already holds rules keeps them (a warning says so when the config's rules differ). \
        The store is followed while running (file edits within a second, Redis changes within a \
        second); SIGHUP reloads the rule store at once (not the configuration file: restart for that). \
        SIGTERM or Ctrl-C stops accepting, drains in-flight requests and exits 0.\n\n\
        An invalid configuration is refused with every error listed, exit status 2."
    )]
    Serve {
        /// The configuration file (YAML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file, print every error, exit 0 (valid) or 2 (invalid).
    #[command(
        long_about = "Check a configuration file without starting anything, and print every \
        error (file, rule, field, what is wrong). Exit status 0 when valid, 2 when not.\n\n\
        Checked: the YAML, unknown keys, ${ENV} variables that are not set, listen addresses, \
        session secrets (each at least 32 bytes), admin_token (at least 16 characters), Redis \
        URLs (syntax only), rules_store, and each rule (name, URLs, redirect path \
        /oauth2/callback, plain http only on loopback, cookie_domain, scope, conditions, \
        domains, client_secret or client_secret_file). With a file rule store that already \
        exists, the store's rules are checked too, and the count printed is theirs.\n\n\
        Never touches the network: a Redis store is not contacted and the identity \
        providers are not asked. Prints a line starting `warning:` (still exit 0) when \
        default_action: allow leaves hosts that no rule governs unprotected."
    )]
    Validate {
        /// The configuration file (YAML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show which rule decides a URL, and what it decides. Never touches the network.
    #[command(
        long_about = "Show which rule decides a request to URL, which condition matched, and \
        what is decided (JSON on stdout): action allow (public, or default_action: allow), login \
        (credentials of that rule are needed) or deny (default_action: deny, or a host that is not a \
        host name: Check answers 400).\n\n\
        For a login, `without_credentials` says what a request with no session or token gets: a \
        302 to the identity provider for a browser navigation (GET or HEAD), else 401. The host and \
        path are read exactly as Check reads them. Sessions, tokens and `allowed` (403) are not \
        evaluated, and the network is never used: with a file rule store that exists its rules \
        are explained, otherwise (inline, Redis) the config file's own rules."
    )]
    Explain {
        /// The configuration file (YAML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The request's absolute URL, e.g. https://app.example.com/admin?x=1 (the query is ignored).
        #[arg(long)]
        url: String,
        /// The request's method: GET and HEAD count as a browser navigation (302 to the IdP), others as an API call (401).
        #[arg(long, default_value = "GET")]
        method: String,
    },
}

fn load(path: &std::path::Path) -> Result<(Config, oidc_authz::rules::RuleSet), ExitCode> {
    let (config, own_rules) = rule_source::load_config(path).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{} error(s); configuration is invalid", errors.0.len());
        ExitCode::from(2)
    })?;
    let rules = rule_source::initial_rules_with(&config, own_rules).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(2)
    })?;
    Ok((config, rules))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match load(&config) {
            Ok((_, rules)) => {
                if let Some(warning) = oidc_authz::decision::unprotected_hosts(&rules) {
                    eprintln!("warning: {}: {warning}", config.display());
                }
                println!(
                    "{}: OK ({} rules, {} enabled)",
                    config.display(),
                    rules.all().len(),
                    rules.enabled().count()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Explain { config, url, method } => {
            let (_, rules) = match load(&config) {
                Ok(x) => x,
                Err(code) => return code,
            };
            match oidc_authz::decision::explain_url(&rules, &url) {
                Ok(explanation) => {
                    let mut value = serde_json::to_value(&explanation).unwrap_or_default();
                    if explanation.action == "login" {
                        let browser =
                            oidc_authz::authorize::is_browser_navigation(&method, Some("text/html"), None);
                        value["without_credentials"] = serde_json::Value::String(
                            if browser {
                                "302 to the identity provider (browser navigation)"
                            } else {
                                "401"
                            }
                            .into(),
                        );
                    }
                    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve { config } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Logs and traces (`OIDC_AUTHZ_LOG*`, `OTEL_*`); the exporter lives on the runtime.
            let telemetry = {
                let _runtime = runtime.enter();
                oidc_authz::telemetry::init()
            };
            let code = serve(&runtime, &config);
            // Buffered spans go out before the process ends (SIGTERM drains, then lands here).
            telemetry.shutdown();
            code
        }
    }
}

fn serve(runtime: &tokio::runtime::Runtime, config: &std::path::Path) -> ExitCode {
    // The file's own rules are compiled too, so an invalid one refuses to start even when the
    // store holds other rules.
    let (config, compiled) = match rule_source::load_config(config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("refusing to start: the configuration is invalid");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(oidc_authz::server::serve(config, compiled)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(oidc_authz::server::ServeError::Config(errors)) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("oidc-authz: {e}");
            ExitCode::FAILURE
        }
    }
}
