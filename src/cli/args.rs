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
    /// Run a new process inside a running container.
    Exec(Box<ExecArgs>),
    /// List the processes of a container.
    Ps {
        /// table (ps -ef style, via the host's ps) or json (a list of host pids).
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        id: String,
        /// Options for ps(1) (table format), default -ef.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Print a container's resource usage and OOM events as JSON lines.
    Events {
        id: String,
        /// Print the statistics once and exit.
        #[arg(long)]
        stats: bool,
        /// How often to print statistics (Go-style duration: 500ms, 5s, 1m).
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Change a container's cgroup limits.
    Update(Box<UpdateArgs>),
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

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The container id.
    pub id: String,
    /// The command and its arguments (unless --process is given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// An OCI process JSON file describing the process to run.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// A unix socket to send the pty master to.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// The working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE); repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// The user, as uid[:gid].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids; repeatable.
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// Add a capability to every set (CAP_NET_ADMIN); repeatable.
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privileges for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Return once the process runs (it is not waited for).
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's host pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Pass this many fds after stdio (3, 4, ...) on to the process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Exec even into a paused container.
    #[arg(long)]
    pub ignore_paused: bool,
    /// Refused: SELinux labels are not supported.
    #[arg(long)]
    pub process_label: Option<String>,
    /// Refused: AppArmor profiles are not supported.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Refused: running the process in a sub-cgroup is not supported.
    #[arg(long)]
    pub cgroup: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The container id.
    pub id: String,
    /// A JSON file of linux.resources to apply, or - for stdin (no other flag then).
    #[arg(short, long)]
    pub resources: Option<String>,
    /// Memory limit (bytes, or with a unit: 64m, 1g); -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Memory soft limit.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Kernel memory limit (cgroup v1 kernels that still have one; ignored with a
    /// warning elsewhere, as by runc).
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// CPU shares (relative weight).
    #[arg(long, alias = "cpu-share")]
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period; -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPUs the container may use (0-2,4).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes; -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block IO weight (10..=1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
}
