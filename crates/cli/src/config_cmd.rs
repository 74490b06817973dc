//! `switchboard config check FILE` and `switchboard config show`: what a configuration file
//! means before a server is started with it.
//!
//! `show` prints the effective settings (defaults < file < `SWITCHBOARD_*` < flags) as TOML,
//! generated from the config struct itself (so a new setting appears without code here), with
//! secrets redacted.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use switchboard_server::{Config, Settings};

use crate::serve::ServeArgs;

/// `switchboard config ...`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a TOML configuration file: syntax, unknown keys, values, key and certificate
    /// files. Exit code 0 when `switchboard serve --config FILE` would start with it.
    Check {
        /// The file, e.g. /etc/switchboard/switchboard.toml.
        file: PathBuf,
    },
    /// Print the effective settings as TOML: the defaults, then the --config file,
    /// SWITCHBOARD_* variables and the flags given here (the same flags as `serve`). Secrets
    /// are redacted.
    Show(Box<ServeArgs>),
}

pub(crate) fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Check { file } => {
            let config = Config::from_file(&file)?;
            check(&config).with_context(|| format!("{} is not usable", file.display()))?;
            println!(
                "{}: ok (`switchboard config show --config {}` prints the effective settings)",
                file.display(),
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Show(args) => {
            let config = args.into_config()?;
            check(&config)?;
            print!("{}", render(&config)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `switchboard serve` checks before binding: values and the token key (the settings),
/// the TLS files.
fn check(config: &Config) -> anyhow::Result<()> {
    Settings::new(config.clone())?;
    for path in [&config.tls_cert, &config.tls_key].into_iter().flatten() {
        std::fs::metadata(path)
            .with_context(|| format!("cannot read TLS file {}", path.display()))?;
    }
    Ok(())
}

/// The configuration as JSON, with secrets redacted.
fn redacted(config: &Config) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(config).context("cannot serialize the configuration")?;
    redact(&mut value, "");
    Ok(value)
}

/// Replaces secrets: values of keys naming a secret or password, and passwords inside URLs.
fn redact(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            for (name, inner) in map.iter_mut() {
                redact(inner, name);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|inner| redact(inner, key)),
        Value::String(text) => {
            let key = key.to_ascii_lowercase();
            // `key`: the admin key (`[admin] key`); other `*_key` settings are file paths.
            if key.contains("secret") || key.contains("password") || key == "key" {
                *text = format!("[redacted: {} bytes]", text.len());
            } else if text.contains("://") {
                *text = crate::startup::redact_url_password(text);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[cfg(test)]
/// Every setting's dotted key (`listen`, `auth.hmac_secret`, `history.rooms`, ...), in the
/// struct's order. Settings that are unset (`None`) are included.
pub(crate) fn setting_keys(config: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    if let Ok(value) = serde_json::to_value(config) {
        collect_keys(&value, "", &mut keys);
    }
    keys
}

#[cfg(test)]
fn collect_keys(value: &Value, prefix: &str, keys: &mut Vec<String>) {
    let Value::Object(map) = value else { return };
    for (name, inner) in map {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match inner {
            Value::Object(_) => collect_keys(inner, &key, keys),
            _ => keys.push(key),
        }
    }
}

/// TOML text of the configuration: top-level keys first, then one `[table]` per section;
/// unset settings as comments.
fn render(config: &Config) -> anyhow::Result<String> {
    let value = redacted(config)?;
    let mut out = String::from(
        "# Effective configuration (defaults < --config file < SWITCHBOARD_* < flags).\n",
    );
    render_table(&value, "", &mut out)?;
    Ok(out)
}

fn render_table(value: &Value, path: &str, out: &mut String) -> anyhow::Result<()> {
    let Value::Object(map) = value else {
        bail!("not a table: {path}")
    };
    let mut tables = Vec::new();
    for (name, inner) in map {
        match inner {
            Value::Object(_) => tables.push((name, inner)),
            Value::Array(items) if items.iter().any(Value::is_object) => {
                tables.push((name, inner));
            }
            Value::Null => out.push_str(&format!("# {name} is not set\n")),
            _ => out.push_str(&format!("{name} = {}\n", scalar(inner)?)),
        }
    }
    for (name, inner) in tables {
        let full = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        match inner {
            Value::Array(items) => {
                for item in items {
                    out.push_str(&format!("\n[[{full}]]\n"));
                    render_table(item, &full, out)?;
                }
            }
            _ => {
                out.push_str(&format!("\n[{full}]\n"));
                render_table(inner, &full, out)?;
            }
        }
    }
    Ok(())
}

/// One TOML value (string, number, bool, or an array of those).
fn scalar(value: &Value) -> anyhow::Result<String> {
    Ok(match value {
        Value::String(text) => toml::Value::String(text.clone()).to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Array(items) => {
            let items: anyhow::Result<Vec<String>> = items.iter().map(scalar).collect();
            format!("[{}]", items?.join(", "))
        }
        Value::Null | Value::Object(_) => bail!("not a TOML scalar: {value}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(path: &str) -> String {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
    }

    /// A setting added to the config struct must be documented in the sample file and in
    /// docs/configuration.md (this fails until it is).
    #[test]
    fn every_setting_is_in_the_sample_config_and_the_docs() {
        let sample = repo_file("deploy/switchboard.toml");
        let docs = repo_file("docs/configuration.md");
        let keys = setting_keys(&Config::default());
        assert!(keys.len() > 30, "{keys:?}");
        let mut missing = Vec::new();
        for key in &keys {
            let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
            let in_sample = if table.is_empty() {
                sample.lines().any(|line| {
                    let line = line.trim_start_matches('#').trim_start();
                    line.starts_with(&format!("{name} =")) || line.starts_with(&format!("{name}="))
                })
            } else {
                // The key inside its table, e.g. `hmac_secret` after `[auth]`, or the table of
                // entries itself (`[[history.rooms]]`).
                sample.contains(&format!("[[{key}]]"))
                    || sample
                        .split(&format!("[{table}]"))
                        .nth(1)
                        .and_then(|rest| rest.split("\n[").next())
                        .is_some_and(|section| {
                            section.lines().any(|line| {
                                line.trim_start_matches('#')
                                    .trim_start()
                                    .starts_with(&format!("{name} ="))
                            })
                        })
            };
            if !in_sample {
                missing.push(format!("deploy/switchboard.toml: {key}"));
            }
            if !docs.contains(&format!("`{key}`")) {
                missing.push(format!("docs/configuration.md: `{key}`"));
            }
        }
        assert!(missing.is_empty(), "settings not documented: {missing:#?}");
    }

    #[test]
    fn the_sample_config_is_the_defaults() {
        let sample = Config::from_toml(&repo_file("deploy/switchboard.toml")).unwrap();
        assert_eq!(sample, Config::default());
    }

    #[test]
    fn show_round_trips_and_redacts() {
        let mut config = Config::default();
        config.auth.hmac_secret = Some("s".repeat(40));
        config.admin.key = Some("k".repeat(20));
        config.cluster.broker = "redis://:hunter2@10.0.0.5:6379".to_owned();
        config
            .history
            .rooms
            .push(switchboard_server::config::HistoryRoomConfig {
                pattern: "chat:*".to_owned(),
                size: 500,
                ttl: std::time::Duration::from_secs(3600),
            });
        let text = render(&config).unwrap();
        assert!(
            text.contains("hmac_secret = \"[redacted: 40 bytes]\""),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("key = \"[redacted: 20 bytes]\""), "{text}");
        assert!(text.contains("# public_key_file is not set"), "{text}");
        // What it prints is a valid config file (secrets aside).
        let mut back = Config::from_toml(&text).unwrap();
        back.auth.hmac_secret = config.auth.hmac_secret.clone();
        back.admin.key = config.admin.key.clone();
        back.cluster.broker = config.cluster.broker.clone();
        assert_eq!(back, config);
    }
}
