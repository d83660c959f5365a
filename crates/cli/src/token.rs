//! `portcullis token mint` and `portcullis token jwks`: tokens and key sets from local keys,
//! with the same algorithm names and key rules as the gateway.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_policy::JwtAlg;

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a signed JWT.
    Mint {
        /// Algorithm: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
        #[arg(long)]
        alg: String,
        /// HMAC secret from this environment variable.
        #[arg(long, conflicts_with_all = ["secret_file", "key_file"])]
        secret_env: Option<String>,
        /// HMAC secret from this file.
        #[arg(long, conflicts_with = "key_file")]
        secret_file: Option<PathBuf>,
        /// PEM private key (PKCS#8; PKCS#1 for RSA) for RS*, PS*, ES*, EdDSA.
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long)]
        kid: Option<String>,
        #[arg(long)]
        sub: String,
        #[arg(long)]
        iss: Option<String>,
        #[arg(long)]
        aud: Option<String>,
        /// Lifetime: 30s, 15m, 1h, 1d.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Extra claims, NAME=VALUE (a JSON value, or a string); repeatable.
        #[arg(long = "claim", value_name = "NAME=VALUE")]
        claims: Vec<String>,
    },
    /// Print the JWKS (public parts only) of a private key.
    Jwks {
        #[arg(long)]
        alg: String,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        kid: Option<String>,
    },
}

fn alg(name: &str) -> Result<(JwtAlg, Algorithm), String> {
    let a = JwtAlg::ALL
        .into_iter()
        .find(|a| a.name() == name)
        .ok_or_else(|| {
            format!(
                "--alg {name}: not one of {}",
                JwtAlg::ALL.map(JwtAlg::name).join(", ")
            )
        })?;
    Ok((a, portcullis_gateway::jwt_algorithm(a)))
}

fn private_key(a: JwtAlg, path: &PathBuf) -> Result<EncodingKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("--key-file {}: {e}", path.display()))?;
    let key = match a {
        JwtAlg::RS256
        | JwtAlg::RS384
        | JwtAlg::RS512
        | JwtAlg::PS256
        | JwtAlg::PS384
        | JwtAlg::PS512 => EncodingKey::from_rsa_pem(&pem),
        JwtAlg::ES256 | JwtAlg::ES384 => EncodingKey::from_ec_pem(&pem),
        JwtAlg::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => return Err(format!("{} uses a secret, not --key-file", a.name())),
    };
    key.map_err(|e| {
        format!(
            "--key-file {}: not a {} private key: {e}",
            path.display(),
            a.name()
        )
    })
}

fn mint(cmd: TokenCommand) -> Result<String, String> {
    let TokenCommand::Mint {
        alg: name,
        secret_env,
        secret_file,
        key_file,
        kid,
        sub,
        iss,
        aud,
        ttl,
        claims,
    } = cmd
    else {
        return Err("internal: not a mint command".into());
    };
    let (a, algorithm) = alg(&name)?;
    let key = if a.is_hmac() {
        let secret = match (secret_env, secret_file) {
            (Some(var), None) => std::env::var(&var)
                .map_err(|_| format!("--secret-env {var}: not set"))?
                .into_bytes(),
            (None, Some(f)) => {
                // Trailing whitespace is not part of the secret, as in the gateway's `secret_file`.
                let mut v =
                    std::fs::read(&f).map_err(|e| format!("--secret-file {}: {e}", f.display()))?;
                while v.last().is_some_and(u8::is_ascii_whitespace) {
                    v.pop();
                }
                v
            }
            _ => return Err(format!("{name} needs --secret-env or --secret-file")),
        };
        EncodingKey::from_secret(&secret).map_err(|e| e.to_string())?
    } else {
        private_key(
            a,
            key_file
                .as_ref()
                .ok_or_else(|| format!("{name} needs --key-file"))?,
        )?
    };
    let ttl = portcullis_policy::units::duration(&ttl).map_err(|e| format!("--ttl: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut body = serde_json::json!({ "sub": sub, "iat": now, "exp": now + ttl.as_secs(), "jti": format!("{now:x}-{}", std::process::id()) });
    if let Some(i) = iss {
        body["iss"] = i.into();
    }
    if let Some(a) = aud {
        body["aud"] = a.into();
    }
    for c in claims {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| format!("--claim {c}: expected NAME=VALUE"))?;
        body[k] =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
    }
    let mut header = Header::new(algorithm);
    header.kid = kid;
    jsonwebtoken::encode(&header, &body, &key).map_err(|e| e.to_string())
}

fn jwks(cmd: TokenCommand) -> Result<String, String> {
    let TokenCommand::Jwks {
        alg: name,
        key_file,
        kid,
    } = cmd
    else {
        return Err("internal: not a jwks command".into());
    };
    let (a, algorithm) = alg(&name)?;
    let key = private_key(a, &key_file)?;
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&key, algorithm).map_err(|e| e.to_string())?;
    jwk.common.key_id = kid;
    serde_json::to_string_pretty(&serde_json::json!({ "keys": [jwk] })).map_err(|e| e.to_string())
}

pub(crate) fn run(cmd: TokenCommand) -> ExitCode {
    let out = match &cmd {
        TokenCommand::Mint { .. } => mint(cmd),
        TokenCommand::Jwks { .. } => jwks(cmd),
    };
    match out {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error.
            let _ = writeln!(stdout, "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis token: {e}");
            ExitCode::from(64)
        }
    }
}
