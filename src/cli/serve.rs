//! `corral serve`: the HTTP service. Configuration is read and checked, the images of
//! the images dir imported, the default image built and the token file prepared while the process is still single-threaded;
//! then the tokio runtime starts, the launcher is spawned, and the API serves until
//! SIGINT or SIGTERM (graceful shutdown: running requests finish, containers keep
//! running).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::api::auth::{Role, TokenStore};
use crate::api::serve::ServeOptions;
use crate::api::{AppState, router};
use crate::images::ImageStore;
use crate::service::config::{Config, LogFormat};
use crate::service::containers::Containers;
use crate::service::images::Images;
use crate::service::launcher::Launcher;
use crate::service::metrics::Metrics;
use crate::service::runs::Runs;

/// The flags of `serve`; each overrides the config file and the environment.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory: images, container bundles and logs (default /var/lib/corral).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Bearer token file (`<user|admin> <token> [name]` per line). Default:
    /// <data>/tokens, created with one admin token when listening on loopback.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// A directory of built images (`make images` writes build/images): each
    /// <name>/rootfs is imported on start when new or rebuilt (its rootfs.stamp changed).
    #[arg(long)]
    pub images_dir: Option<PathBuf>,
}

pub fn run(args: &ServeArgs, root: Option<PathBuf>) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(r) = root {
        cfg.root = r;
    }
    if let Some(d) = &args.data {
        cfg.data = d.clone();
    }
    if let Some(t) = &args.tokens {
        cfg.tokens = Some(t.clone());
    }
    if let Some(d) = &args.images_dir {
        cfg.images_dir = Some(d.clone());
    }
    cfg.validate()?;
    init_logging(cfg.log_format);
    tune_malloc();
    if cfg.favor_dynmods {
        favor_dynmods();
    }
    std::fs::create_dir_all(&cfg.data).with_context(|| format!("create {}", cfg.data.display()))?;
    let tokens = load_tokens(&mut cfg)?;
    let store = Arc::new(ImageStore::open(&cfg.data.join("images"))?);
    let images = Arc::new(Images::new(store.clone()));
    if let Some(dir) = &cfg.images_dir {
        images
            .sync_dir(dir, &cfg.data, &cfg.limits)
            .map_err(|e| anyhow::anyhow!("images dir {}: {e}", dir.display()))?;
    }
    images
        .bootstrap(&cfg.data)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = Arc::new(cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(serve(cfg, tokens, store, images))
}

async fn serve(
    cfg: Arc<Config>,
    tokens: TokenStore,
    store: Arc<ImageStore>,
    images: Arc<Images>,
) -> Result<()> {
    // The service runs from a sealed copy of its binary (cli::main): its launcher, and
    // so every container's init, is the same copy.
    let exe = std::path::PathBuf::from("/proc/self/exe");
    // Warm containers of a launcher that did not exit cleanly are of no use to anyone.
    crate::service::launcher::pool::clean_stale(&cfg.root, &cfg.data);
    let launcher = Arc::new(Launcher::spawn(&exe, &cfg.root, &cfg.data).await?);
    let metrics = Arc::new(Metrics::new());
    let runs = Arc::new(
        Runs::new(
            cfg.runs.clone(),
            &cfg.data,
            launcher.clone(),
            store.clone(),
            metrics.clone(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let containers = Arc::new(
        Containers::new(cfg.clone(), launcher, store, metrics.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let state = AppState {
        cfg: cfg.clone(),
        containers: containers.clone(),
        images,
        runs: runs.clone(),
        metrics,
        tokens: Arc::new(tokens),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))?;
    tracing::info!(address = %listener.local_addr()?, "corral serving");
    eprintln!("corral: listening on http://{}", listener.local_addr()?);
    let opts = ServeOptions {
        header_read_timeout: Duration::from_secs(cfg.limits.header_read_timeout_secs),
        // Followed logs stream until their container stops: do not wait for them long.
        shutdown_grace: Duration::from_secs(10),
    };
    crate::api::serve::serve(listener, router(state), opts, shutdown_signal())
        .await
        .context("serve HTTP")?;
    containers.close().await;
    runs.close().await;
    tracing::info!("corral stopped; containers keep running");
    Ok(())
}

/// glibc's malloc with fixed thresholds, so that the service gives back what a large
/// request freed. By default glibc raises its mmap threshold to the largest block freed
/// (up to 32 MiB) and its trim threshold to twice that: after one large body, blocks of
/// many MiB come from its heaps, a heap keeps up to 64 MiB free at its top, and
/// `malloc_trim` (`api::body::json`, after each large body) leaves the top of the
/// per-thread heaps alone. With blocks from 256 KiB up mapped on their own (and unmapped
/// when freed) and heaps trimmed past 1 MiB free at their top, the service went back to
/// its starting 10 to 12 MiB after bursts of 16 concurrent run bodies of 12 and 43 MiB,
/// where it had stayed 20 to 65 MiB above it. Left alone when the operator set glibc's
/// tunables (`GLIBC_TUNABLES`, `MALLOC_*_THRESHOLD_`). Called while the process is
/// single-threaded, before tokio starts.
fn tune_malloc() {
    let set_by_env = [
        "GLIBC_TUNABLES",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if set_by_env {
        return;
    }
    let tunables = [
        ("M_MMAP_THRESHOLD", libc::M_MMAP_THRESHOLD, 256 << 10),
        ("M_TRIM_THRESHOLD", libc::M_TRIM_THRESHOLD, 1 << 20),
    ];
    for (name, param, value) in tunables {
        // SAFETY: mallopt sets a tunable of glibc's allocator; nothing else runs yet.
        if unsafe { libc::mallopt(param, value) } != 1 {
            tracing::warn!("mallopt({name}, {value}) failed: glibc's dynamic thresholds");
        }
    }
}

/// `favordynmods` on the host's cgroup2 mount (see `Config::favor_dynmods`); a failure
/// only costs speed, so it is logged, not fatal.
fn favor_dynmods() {
    use crate::runtime::linux::cgroups::{DynMods, favor_dynmods};
    match favor_dynmods() {
        Ok(DynMods::Enabled(m)) => tracing::info!(
            "reconfigured the cgroup2 mount {} with favordynmods (cgroup migrations without an RCU grace period); favor_dynmods = false leaves it alone",
            m.display()
        ),
        Ok(DynMods::AlreadySet(m)) => {
            tracing::debug!("the cgroup2 mount {} has favordynmods", m.display())
        }
        Ok(DynMods::NoCgroup2) => tracing::info!(
            "no cgroup2 mount: cgroup migrations wait for an RCU grace period (favordynmods needs cgroup2)"
        ),
        Err(e) => tracing::warn!("favordynmods: {e}; containers start slower"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// The token store. Without a configured file, `<data>/tokens` is used, and created with
/// one admin token (printed once) when it does not exist: `make run` relies on this.
fn load_tokens(cfg: &mut Config) -> Result<TokenStore> {
    if let Some(p) = &cfg.tokens {
        let store = TokenStore::load(p)?;
        if store.is_empty() {
            bail!("token file {} holds no token", p.display());
        }
        return Ok(store);
    }
    let path = cfg.data.join("tokens");
    if !path.exists() {
        let token = TokenStore::generate_token()?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        writeln!(f, "# corral bearer tokens: <user|admin> <token> [name]")?;
        writeln!(f, "{} {token} admin", Role::Admin.as_str())?;
        eprintln!(
            "corral: created {} with an admin token; use it as:",
            path.display()
        );
        eprintln!("  export TOKEN={token}");
        eprintln!(
            "  curl -H \"Authorization: Bearer $TOKEN\" http://{}/v1/info",
            cfg.listen
        );
    }
    cfg.tokens = Some(path.clone());
    Ok(TokenStore::load(&path)?)
}
