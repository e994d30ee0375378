//! Logging: to stderr, or with `--log FILE` to that file in runc's text or JSON format
//! (containerd and conmon read the last error line of a runtime's JSON log).

use std::fs::OpenOptions;
use std::io::Write;

use tracing_subscriber::EnvFilter;

use super::args::{Cli, LogFormat};

pub struct Guard {
    file: Option<std::path::PathBuf>,
    format: LogFormat,
}

impl Guard {
    /// Records the command's final error in the --log file, in runc's shape
    /// (`{"level":"error","msg":"...","time":"..."}` for JSON).
    pub fn error(&self, msg: &str) {
        let Some(path) = &self.file else { return };
        let time = crate::runtime::state::now_rfc3339();
        let line = match self.format {
            LogFormat::Json => {
                serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
            }
            LogFormat::Text => format!("time=\"{time}\" level=error msg={msg:?}"),
        };
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

pub fn init(cli: &Cli, install: bool) -> Guard {
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = EnvFilter::try_from_env("CORRAL_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let file = cli
        .log
        .as_ref()
        .and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    let Some(file) = file else {
        if !install {
            return Guard {
                file: None,
                format: cli.log_format,
            };
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .without_time()
            .try_init();
        return Guard {
            file: None,
            format: cli.log_format,
        };
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_target(false)
        .with_ansi(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Guard {
        file: cli.log.clone(),
        format: cli.log_format,
    }
}
