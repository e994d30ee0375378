//! The runc-compatible command line. Errors leave as one line on stderr (and in --log),
//! with exit code 1; `run` exits with the container's code.

mod args;
mod logging;
mod manage;
mod serve;
mod spec;

use std::io::Write;

use anyhow::{Context as _, Result};
use clap::Parser;

pub use args::Cli;
use args::{Command, CreateArgs, ListFormat};

use crate::runtime::create::{CreateOptions, create};
use crate::runtime::state::Store;
use crate::runtime::{ops, run};

/// Entry point of the binary: parses arguments, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // The commands that make container processes run from a sealed copy of the binary
    // (CVE-2019-5736): a container must never reach the host's file.
    if matches!(
        cli.command,
        Command::Create(_) | Command::Run { .. } | Command::Exec(_) | Command::Serve(_)
    ) && let Err(e) = crate::runtime::linux::exe::reexec_sealed()
    {
        eprintln!("corral: {e}");
        return 1;
    }
    // `serve` sets up its own logging (its format and level come from its config).
    let guard = logging::init(&cli, !matches!(cli.command, Command::Serve(_)));
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            guard.error(&msg);
            eprintln!("corral: {msg}");
            1
        }
    }
}

fn create_options(cli: &Cli, a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds.min(i32::MAX as u32 - 3) as i32,
        systemd_cgroup: cli.systemd_cgroup,
        cgroup_controllers: None,
        loaded: None,
        fresh_netns: None,
        resolve_at_start: false,
        late_process: false,
    }
}

fn dispatch(cli: &Cli) -> Result<i32> {
    let root = cli.root.clone().unwrap_or_else(|| "/run/corral".into());
    let store = Store::new(&root);
    match &cli.command {
        Command::Create(a) => {
            create(&store, &create_options(cli, a))?;
        }
        Command::Start { id } => ops::start(&store, id)?,
        Command::State { id } => {
            let view = ops::state(&store, id)?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        Command::Kill { id, signal, all } => {
            let sig = crate::runtime::signal::parse(signal).map_err(anyhow::Error::msg)?;
            ops::kill(&store, id, sig, *all)?;
        }
        Command::Delete { id, force } => ops::delete(&store, id, *force)?,
        Command::Run { create, detach, .. } => {
            return Ok(run::run(&store, &create_options(cli, create), *detach)?);
        }
        Command::List { format, quiet } => list(&store, *format, *quiet)?,
        Command::Exec(a) => return manage::exec_cmd(&store, a),
        Command::Ps {
            format,
            id,
            ps_args,
        } => manage::ps(&store, id, *format, ps_args)?,
        Command::Pause { id } => crate::runtime::control::pause(&store, id)?,
        Command::Resume { id } => crate::runtime::control::resume(&store, id)?,
        Command::Events {
            id,
            stats,
            interval,
        } => manage::events(&store, id, *stats, interval)?,
        Command::Update(a) => manage::update(&store, a)?,
        Command::Spec { bundle, rootless } => spec::write(bundle, *rootless)?,
        Command::Serve(args) => serve::run(args, cli.root.clone())?,
        Command::Openapi => print!("{}", crate::api::openapi::yaml()),
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::runtime::features::document())?
            );
        }
        Command::Launcher { data } => crate::service::launcher::server::run(&root, data)?,
    }
    Ok(0)
}

fn list(store: &Store, format: ListFormat, quiet: bool) -> Result<()> {
    let all = ops::list(store)?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &all {
            writeln!(out, "{}", c.oci.id)?;
        }
        return Ok(());
    }
    if format == ListFormat::Json {
        writeln!(out, "{}", serde_json::to_string(&all)?)?;
        return Ok(());
    }
    let rows: Vec<[String; 6]> = all
        .iter()
        .map(|c| {
            [
                c.oci.id.clone(),
                c.oci.pid.unwrap_or(0).to_string(),
                c.oci.status.clone(),
                c.oci.bundle.clone(),
                c.created.clone(),
                if c.owner.is_empty() {
                    "root".into()
                } else {
                    c.owner.clone()
                },
            ]
        })
        .collect();
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end()).context("write to stdout")?;
    }
    Ok(())
}
