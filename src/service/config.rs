//! The service's configuration: defaults, then a TOML file, then `CORRAL_*` environment
//! variables, then command-line flags (each overriding the one before).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::runs::RunsConfig;

/// What can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("environment variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// Limits that protect the service from its clients.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body (bundle and image uploads included), in bytes.
    pub max_body_bytes: u64,
    /// Largest uncompressed upload, in bytes.
    pub max_upload_bytes: u64,
    /// Most entries in an uploaded tar.
    pub max_upload_entries: u64,
    /// Requests handled at once; more are refused at once (429 with `Retry-After`).
    pub max_concurrent_requests: usize,
    /// Containers that may exist at once.
    pub max_containers: usize,
    /// Whole-request time limit of a handler (408). A wait may add up to an hour (its
    /// `?timeout=`), an upload `body_timeout_secs`; a followed log streams for as long
    /// as the container runs.
    pub request_timeout_secs: u64,
    /// A client must send a request's headers within this time, or its connection is
    /// closed (slow or stalled clients; also the idle limit between keep-alive requests).
    pub header_read_timeout_secs: u64,
    /// A request body (an upload included) must arrive whole within this time, or the
    /// request fails with 408 (a client that trickles its body).
    pub body_timeout_secs: u64,
    /// How long the launcher may take to create a container before the request fails
    /// with 504 (whatever was half created is then removed).
    pub create_timeout_secs: u64,
    /// Default and maximum memory limit of a container, in bytes.
    pub default_memory_bytes: i64,
    pub max_memory_bytes: i64,
    /// Default and maximum pids limit of a container.
    pub default_pids: i64,
    pub max_pids: i64,
    /// Default and maximum CPU limit, in CPUs (quota / period).
    pub default_cpus: f64,
    pub max_cpus: f64,
    /// Size of a container's writable layer over its image, in bytes.
    pub writable_layer_bytes: u64,
    /// Cap on each of a container's log files, in bytes.
    pub max_log_bytes: u64,
    /// Containers kept made ahead of requests, per image recently created from (two
    /// images at most): a create from an image then only gives one its id, process and
    /// limits. Two by default, so that creates in quick succession (a client's burst, or
    /// a create while the last claimed one is still being replaced) find one. 0 turns
    /// them off.
    pub warm_containers: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 512 << 20,
            max_upload_bytes: 2 << 30,
            max_upload_entries: 200_000,
            max_concurrent_requests: 64,
            max_containers: 256,
            request_timeout_secs: 60,
            header_read_timeout_secs: 10,
            body_timeout_secs: 300,
            create_timeout_secs: 30,
            default_memory_bytes: 256 << 20,
            max_memory_bytes: 4 << 30,
            default_pids: 256,
            max_pids: 4096,
            default_cpus: 1.0,
            max_cpus: 2.0,
            writable_layer_bytes: 256 << 20,
            max_log_bytes: 64 << 20,
            warm_containers: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// Runtime state (as `--root` of the CLI).
    pub root: PathBuf,
    /// Images, container data, logs.
    pub data: PathBuf,
    /// The bearer token file (`<role> <token> [name]` per line). Without one the
    /// service only starts on a loopback address, and then without authentication.
    pub tokens: Option<PathBuf>,
    /// A directory of built images (`make images` writes `build/images`): each
    /// `<name>/rootfs` is imported on start when the store lacks it or its
    /// `<name>/rootfs.stamp` changed since its import.
    pub images_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Reconfigure the host's cgroup2 mount with `favordynmods` on start, so that moving
    /// each new container into its cgroup does not wait for an RCU grace period (5 to
    /// 25 ms under load). Global to the host; see `runtime::linux::cgroups::favor_dynmods`.
    pub favor_dynmods: bool,
    pub limits: Limits,
    /// Judged runs (`POST /v1/runs`).
    pub runs: RunsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            root: PathBuf::from("/run/corral"),
            data: PathBuf::from("/var/lib/corral"),
            tokens: None,
            images_dir: None,
            log_format: LogFormat::Text,
            favor_dynmods: true,
            limits: Limits::default(),
            runs: RunsConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path` (TOML) over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
    }

    /// Applies `CORRAL_LISTEN`, `CORRAL_ROOT`, `CORRAL_DATA`, `CORRAL_TOKENS`,
    /// `CORRAL_IMAGES_DIR`, `CORRAL_FAVOR_DYNMODS`, `CORRAL_LOG_FORMAT` and `CORRAL_LIMITS_<KEY>` (any key of
    /// `[limits]`, upper case: `CORRAL_LIMITS_HEADER_READ_TIMEOUT_SECS=5`) from `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("CORRAL_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError::Env {
                name: "CORRAL_LISTEN".into(),
                reason: format!("{v:?}: {e}"),
            })?;
        }
        if let Some(v) = env("CORRAL_ROOT") {
            self.root = v.into();
        }
        if let Some(v) = env("CORRAL_DATA") {
            self.data = v.into();
        }
        if let Some(v) = env("CORRAL_TOKENS") {
            self.tokens = Some(v.into());
        }
        if let Some(v) = env("CORRAL_IMAGES_DIR") {
            self.images_dir = Some(v.into());
        }
        if let Some(v) = env("CORRAL_FAVOR_DYNMODS") {
            self.favor_dynmods = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: "CORRAL_FAVOR_DYNMODS".into(),
                        reason: format!("{v:?}: expected true or false"),
                    });
                }
            };
        }
        if let Some(v) = env("CORRAL_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Env {
                        name: "CORRAL_LOG_FORMAT".into(),
                        reason: format!("{v:?}: expected text or json"),
                    });
                }
            };
        }
        self.apply_limits_env(&env)
    }

    /// `CORRAL_LIMITS_<KEY>` for every key of [`Limits`], parsed as the key's type.
    fn apply_limits_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let invalid = |e: &dyn std::fmt::Display| ConfigError::Invalid(format!("limits: {e}"));
        let mut table = toml::Table::try_from(&self.limits).map_err(|e| invalid(&e))?;
        let mut changed = false;
        for (key, value) in table.iter_mut() {
            let name = format!("CORRAL_LIMITS_{}", key.to_ascii_uppercase());
            let Some(text) = env(&name) else {
                continue;
            };
            let parsed = match value {
                toml::Value::Integer(_) => text
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|e| e.to_string()),
                toml::Value::Float(_) => text
                    .trim()
                    .parse::<f64>()
                    .map(toml::Value::Float)
                    .map_err(|e| e.to_string()),
                _ => Err("not settable from the environment".to_string()),
            };
            *value = parsed.map_err(|e| ConfigError::Env {
                name: name.clone(),
                reason: format!("{text:?}: {e}"),
            })?;
            changed = true;
        }
        if changed {
            self.limits = table.try_into().map_err(|e| invalid(&e))?;
        }
        Ok(())
    }

    /// Refuses configurations that would be unsafe or cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tokens.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without bearer tokens: give a token file (--tokens or CORRAL_TOKENS)",
                self.listen
            )));
        }
        let l = &self.limits;
        if l.default_memory_bytes > l.max_memory_bytes
            || l.default_pids > l.max_pids
            || l.default_cpus > l.max_cpus
        {
            return Err(ConfigError::Invalid(
                "limits: a default is above its maximum".into(),
            ));
        }
        if l.warm_containers > 8 {
            return Err(ConfigError::Invalid(
                "limits: warm_containers is at most 8".into(),
            ));
        }
        self.runs.validate().map_err(ConfigError::Invalid)?;
        if l.request_timeout_secs == 0
            || l.header_read_timeout_secs == 0
            || l.body_timeout_secs == 0
            || l.create_timeout_secs == 0
        {
            return Err(ConfigError::Invalid(
                "limits: timeouts must be at least 1 second".into(),
            ));
        }
        if l.create_timeout_secs >= l.request_timeout_secs {
            return Err(ConfigError::Invalid(
                "limits: create_timeout_secs must be below request_timeout_secs".into(),
            ));
        }
        if !self.root.is_absolute() || !self.data.is_absolute() {
            return Err(ConfigError::Invalid(
                "root and data must be absolute paths".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "listen = \"127.0.0.1:9000\"\n[limits]\nmax_pids = 10\ndefault_pids = 5\n",
        )
        .unwrap();
        let mut c = Config::from_file(&p).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.max_pids, 10);
        assert_eq!(c.limits.max_containers, Limits::default().max_containers);
        assert_eq!(c.images_dir, None);
        assert!(c.favor_dynmods);
        c.apply_env(|k| match k {
            "CORRAL_DATA" => Some("/tmp/d".to_string()),
            "CORRAL_FAVOR_DYNMODS" => Some("false".to_string()),
            "CORRAL_IMAGES_DIR" => Some("/srv/images".to_string()),
            "CORRAL_LIMITS_HEADER_READ_TIMEOUT_SECS" => Some("3".to_string()),
            "CORRAL_LIMITS_MAX_CPUS" => Some("1.5".to_string()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.data, PathBuf::from("/tmp/d"));
        assert_eq!(c.images_dir, Some(PathBuf::from("/srv/images")));
        assert!(!c.favor_dynmods);
        assert_eq!(c.limits.header_read_timeout_secs, 3);
        assert_eq!(c.limits.max_cpus, 1.5);
        assert_eq!(c.limits.max_pids, 10);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "lisen = 1\n").unwrap();
        assert!(
            Config::from_file(&p)
                .unwrap_err()
                .to_string()
                .contains("lisen")
        );
        let mut c = Config::default();
        assert!(
            c.apply_env(|k| (k == "CORRAL_LISTEN").then(|| "nope".into()))
                .is_err()
        );
        let e = c
            .apply_env(|k| (k == "CORRAL_FAVOR_DYNMODS").then(|| "yes".into()))
            .unwrap_err();
        assert!(e.to_string().contains("CORRAL_FAVOR_DYNMODS"), "{e}");
        let e = c
            .apply_env(|k| (k == "CORRAL_LIMITS_BODY_TIMEOUT_SECS").then(|| "soon".into()))
            .unwrap_err();
        assert!(
            e.to_string().contains("CORRAL_LIMITS_BODY_TIMEOUT_SECS"),
            "{e}"
        );
        let zero = Config {
            limits: Limits {
                header_read_timeout_secs: 0,
                ..Limits::default()
            },
            ..Config::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn public_address_without_tokens_is_refused() {
        let c = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("without bearer tokens")
        );
    }

    #[test]
    fn warm_containers_are_bounded_and_settable_from_the_environment() {
        let mut c = Config::default();
        assert_eq!(c.limits.warm_containers, 2);
        c.apply_env(|k| (k == "CORRAL_LIMITS_WARM_CONTAINERS").then(|| "0".to_string()))
            .unwrap();
        assert_eq!(c.limits.warm_containers, 0);
        c.validate().unwrap();
        c.limits.warm_containers = 9;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("warm_containers")
        );
    }
}
