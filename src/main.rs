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
    about = "OpenID Connect login at the Envoy gateway (ext_authz v3)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ext_authz gRPC server and the HTTP listener.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file, print every error, exit 0 (valid) or 2 (invalid).
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show which rule decides a URL, and what it decides. Never touches the network.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        url: String,
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
