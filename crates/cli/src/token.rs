//! `switchboard token`: mints an HS256 token for testing and development.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use switchboard_server::auth::grants::RoomsClaim;
use switchboard_server::auth::mint_hs256;

/// Flags of `switchboard token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The user name (`sub` claim).
    #[arg(long)]
    sub: String,
    /// Room rights, repeatable: `PATTERN` (every right) or `PATTERN=right,right`
    /// (join, publish, presence), e.g. `--rooms 'chat:*' --rooms 'news:*=join'`.
    /// Without it the token carries no `rooms` claim: every right in every room.
    #[arg(long)]
    rooms: Vec<String>,
    /// Lifetime, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
    ttl: Duration,
    /// The HS256 secret (the server's `auth.hmac_secret`).
    #[arg(long, env = "SWITCHBOARD_AUTH_SECRET", hide_env_values = true)]
    secret: String,
}

/// `PATTERN` or `PATTERN=r1,r2` → the claim map.
fn rooms_claim(specs: &[String]) -> anyhow::Result<Option<RoomsClaim>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut claim = RoomsClaim::default();
    for spec in specs {
        let (pattern, rights) = match spec.split_once('=') {
            Some((pattern, rights)) => (
                pattern,
                rights
                    .split(',')
                    .map(str::trim)
                    .map(str::to_owned)
                    .collect(),
            ),
            None => (
                spec.as_str(),
                vec!["join".into(), "publish".into(), "presence".into()],
            ),
        };
        if pattern.is_empty() {
            bail!("empty room pattern in {spec:?}");
        }
        claim
            .0
            .entry(pattern.to_owned())
            .or_default()
            .extend(rights);
    }
    switchboard_server::auth::grants::Grants::from_claim(Some(&claim))
        .map_err(anyhow::Error::msg)?;
    Ok(Some(claim))
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    if args.secret.len() < 32 {
        bail!("the secret must be at least 32 bytes (as the server requires)");
    }
    let token = mint_hs256(
        args.secret.as_bytes(),
        &args.sub,
        rooms_claim(&args.rooms)?,
        args.ttl,
    )
    .context("minting the token")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_specs() {
        let claim = rooms_claim(&["chat:*".into(), "news:*=join".into()])
            .unwrap()
            .unwrap();
        assert_eq!(claim.0["chat:*"], vec!["join", "publish", "presence"]);
        assert_eq!(claim.0["news:*"], vec!["join"]);
        assert!(rooms_claim(&[]).unwrap().is_none());
        assert!(rooms_claim(&["x=fly".into()]).is_err());
    }
}
