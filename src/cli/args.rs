//! The command line, in runc's shape: global flags, then one of the lifecycle commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "An OCI container runtime with runc's command line",
    long_about = None,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Root directory for container state [default: /run/corral].
    #[arg(long, global = true, env = "CORRAL_ROOT")]
    pub root: Option<PathBuf>,
    /// Also write log and error messages to this file.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// The format of --log.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug messages.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (needs a running systemd).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The container id.
    pub id: String,
    /// Path to the bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// A unix socket to send the pty master to (process.terminal = true).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root (for a ramdisk root).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: corral never creates a session keyring.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many fds after stdio (3, 4, ...) on to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container: set it up, leaving its process waiting for `start`.
    Create(CreateArgs),
    /// Start the process of a created container.
    Start { id: String },
    /// Print the OCI state of a container as JSON.
    State { id: String },
    /// Send a signal (name or number, default SIGTERM) to a container's init.
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Send it to every process of the container.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container and everything it holds.
    Delete {
        id: String,
        /// Kill the container first if it is still running.
        #[arg(short, long)]
        force: bool,
    },
    /// Create and start a container, wait for it, and delete it; exits with its code.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container is started.
        #[arg(short, long)]
        detach: bool,
        /// Accepted for runc compatibility (keeping a stopped container is not supported).
        #[arg(long, hide = true)]
        keep: bool,
    },
    /// List the containers under --root.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Print only the ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json to the bundle directory.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A spec for a container run by an unprivileged user (user namespace).
        #[arg(long)]
        rootless: bool,
    },
    /// Print the OCI features document: what this runtime implements.
    Features,
    /// Internal: the single-threaded process that `corral serve` starts to fork
    /// containers (its socket to the service is fd 3).
    #[command(hide = true)]
    Launcher {
        /// The service's data directory: container logs and exit records go below it.
        #[arg(long)]
        data: PathBuf,
    },
    /// Run the HTTP service.
    Serve(super::serve::ServeArgs),
    /// Print the OpenAPI document of the HTTP API (YAML).
    Openapi,
}
