//! Container use cases of the HTTP service: create (from an image or an uploaded
//! bundle), inspect, start, kill, wait, logs, stats and delete.
//!
//! Nothing about a container is kept in memory: the runtime state (`--root`), the
//! container's directory under `<data>/containers/<id>` (its record, bundle, logs and
//! exit status, written by its monitor) are read at each request, so a restart of the
//! service finds every container as it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::dir_watch::DirWatch;
use super::launcher::{ClaimRequest, CreateRequest, ErrorKind, Launcher, LauncherError, read_exit};
use super::metrics::Metrics;
use super::{ServiceError, policy, sandbox};
use crate::bundle::extract::{self, Limits as TarLimits};
use crate::images::{ContainerRootfs, ImageStore};
use crate::runtime::atomic::write_atomic;
use crate::runtime::state::now_rfc3339;

/// What the service records about a container, next to its bundle and logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub created: String,
    /// The image it was made from; none for an uploaded bundle.
    pub image: Option<String>,
    /// The role of the token that created it.
    pub owner: String,
}

pub const RECORD_FILE: &str = "container.json";
/// The containers' directories, under the data dir.
pub const CONTAINERS_DIR: &str = "containers";
/// Where deleted containers' directories wait for their removal, in the containers' dir.
const TRASH_DIR: &str = ".trash";

/// The request to create a container from an image.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFromImage {
    /// The container id; generated when missing.
    pub id: Option<String>,
    pub image: String,
    #[serde(default)]
    pub process: ProcessRequest,
    /// Must be false: containers of the service have no terminal (logs instead).
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub resources: ResourcesRequest,
    /// Only `none` (a private network namespace with loopback) is supported.
    #[serde(default)]
    pub network: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessRequest {
    /// The program and its arguments (default `["sh"]`).
    pub args: Option<Vec<String>>,
    /// `KEY=VALUE` entries added to a default `PATH`.
    #[serde(default)]
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<UserRequest>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesRequest {
    /// Memory limit in bytes (swap is off).
    pub memory_bytes: Option<i64>,
    /// CPU limit in CPUs (for example 0.5).
    pub cpus: Option<f64>,
    /// Most processes and threads.
    pub pids: Option<i64>,
}

/// A container as the API shows it: the OCI state plus what the service knows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContainerView {
    pub id: String,
    /// `created`, `running` or `stopped`.
    pub status: String,
    pub pid: Option<i32>,
    pub bundle: String,
    pub created: String,
    pub image: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: Option<String>,
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
}

impl ContainerView {
    /// A container whose init lives (`created` or `running`), as a view would read it:
    /// for an answer that knows as much without reading the runtime's state.
    fn live(id: &str, status: &str, pid: i32, bundle: String, record: Record) -> Self {
        ContainerView {
            id: id.to_string(),
            status: status.into(),
            pid: Some(pid),
            bundle,
            created: record.created,
            image: record.image,
            exit_code: None,
            signal: None,
            oom_killed: false,
            finished_at: None,
            oci_version: crate::runtime::OCI_VERSION.into(),
        }
    }
}

/// The service's container use cases.
pub struct Containers {
    cfg: Arc<Config>,
    launcher: Arc<Launcher>,
    images: Arc<ImageStore>,
    metrics: Arc<Metrics>,
    dir: PathBuf,
    /// Removals of deleted containers' directories, in the background.
    removals: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl Containers {
    pub fn new(
        cfg: Arc<Config>,
        launcher: Arc<Launcher>,
        images: Arc<ImageStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServiceError> {
        let dir = cfg.data.join(CONTAINERS_DIR);
        let trash = dir.join(TRASH_DIR);
        std::fs::create_dir_all(&trash)
            .map_err(|e| ServiceError::io(format!("create {}", trash.display()), e))?;
        // What a service that stopped abruptly had not finished removing.
        for left in std::fs::read_dir(&trash).into_iter().flatten().flatten() {
            let path = left.path();
            let removed = ContainerRootfs::unmount(&path)
                .map_err(|e| e.to_string())
                .and_then(|()| std::fs::remove_dir_all(&path).map_err(|e| e.to_string()));
            if let Err(e) = removed {
                tracing::warn!("remove {}: {e}", path.display());
            }
        }
        // Containers whose state a service that stopped abruptly had moved aside.
        launcher
            .clean_detached()
            .map_err(|e| ServiceError::io("clean the runtime's removed containers".into(), e))?;
        Ok(Containers {
            cfg,
            launcher,
            images,
            metrics,
            dir,
            removals: Default::default(),
        })
    }

    pub fn launcher(&self) -> &Launcher {
        &self.launcher
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The ids of every container the service has.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(RECORD_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// Whether a container uses the image (for image deletion).
    pub fn image_in_use(&self, name: &str) -> bool {
        image_in_use(&self.cfg.data, name)
    }

    /// Claims a new container directory, failing if the id is taken or invalid.
    fn claim(&self, id: Option<String>) -> Result<(String, PathBuf), ServiceError> {
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        crate::runtime::id::validate(&id)
            .map_err(|e| ServiceError::new(ErrorKind::InvalidId, e.to_string()))?;
        if id.len() > 128 {
            return Err(ServiceError::new(
                ErrorKind::InvalidId,
                "invalid container id: longer than 128 bytes".to_string(),
            ));
        }
        // The service keeps its own directories (.trash, .warm) beside its containers'.
        if id.starts_with('.') {
            return Err(ServiceError::new(
                ErrorKind::InvalidId,
                format!("invalid container id {id:?}: a leading '.' is reserved"),
            ));
        }
        if self.ids().len() >= self.cfg.limits.max_containers {
            return Err(ServiceError::new(
                ErrorKind::Conflict,
                format!(
                    "the service holds its maximum of {} containers",
                    self.cfg.limits.max_containers
                ),
            ));
        }
        let dir = self.container_dir(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok((id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(ServiceError::new(
                ErrorKind::AlreadyExists,
                format!("container with id {id} already exists"),
            )),
            Err(e) => Err(ServiceError::io(format!("create {}", dir.display()), e)),
        }
    }

    /// Creates a container from a named image, with the sandbox defaults.
    pub async fn create_from_image(
        &self,
        req: CreateFromImage,
        strictness: policy::Strictness,
        owner: &str,
    ) -> Result<ContainerView, ServiceError> {
        if req.terminal {
            return Err(ServiceError::bad(
                "terminal: not supported by the service (read the logs instead)",
            ));
        }
        if let Some(n) = req.network.as_deref().filter(|n| *n != "none") {
            return Err(ServiceError::bad(format!(
                "network: {n:?} is not supported (only \"none\")"
            )));
        }
        let limits = &self.cfg.limits;
        let memory = clamp(
            "resources.memory_bytes",
            req.resources.memory_bytes,
            limits.default_memory_bytes,
            4 << 20,
            limits.max_memory_bytes,
        )?;
        let pids = clamp(
            "resources.pids",
            req.resources.pids,
            limits.default_pids,
            1,
            limits.max_pids,
        )?;
        let cpus = req.resources.cpus.unwrap_or(limits.default_cpus);
        if !(0.01..=limits.max_cpus).contains(&cpus) {
            return Err(ServiceError::bad(format!(
                "resources.cpus: {cpus} is outside 0.01..={}",
                limits.max_cpus
            )));
        }
        let image_rootfs = self
            .images
            .rootfs(&req.image)
            .map_err(|e| ServiceError::new(ErrorKind::BadRequest, e.to_string()))?;
        let args = req
            .process
            .args
            .clone()
            .unwrap_or_else(|| vec!["sh".into()]);
        if args.is_empty() {
            return Err(ServiceError::bad("process.args: must name a program"));
        }
        let mut env =
            vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
        for (i, e) in req.process.env.iter().enumerate() {
            if !e.contains('=') || e.contains('\0') {
                return Err(ServiceError::bad(format!(
                    "process.env[{i}]: expected KEY=VALUE"
                )));
            }
            env.push(e.clone());
        }
        super::exec_size::check(&[("process.args", &args), ("process.env", &env)])
            .map_err(ServiceError::bad)?;
        let cwd = req.process.cwd.clone().unwrap_or_else(|| "/".into());
        if strictness == policy::Strictness::Enforce {
            let mut violations = Vec::new();
            policy::system_paths::check(
                &policy::system_paths::ProcessPaths {
                    cwd: Some(("process.cwd", &cwd)),
                    args: Some(("process.args", &args)),
                    env: Some(("process.env", &req.process.env)),
                },
                &mut violations,
            );
            if !violations.is_empty() {
                return Err(ServiceError::policy(violations));
            }
        }
        let user = req.process.user.unwrap_or_default();
        let params = sandbox::Params {
            args,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            memory_bytes: memory,
            pids,
            cpu_quota_us: (cpus * sandbox::CPU_PERIOD_US as f64).round() as i64,
        };
        let (id, dir) = self.claim(req.id.clone())?;
        let mut undo = UndoDir {
            dir: dir.clone(),
            rootfs: false,
        };
        let layer = self.cfg.limits.writable_layer_bytes;
        if self.cfg.limits.warm_containers > 0 && fits_a_packet(&params) {
            // A warm container moves its mounted rootfs into the directory.
            undo.rootfs = true;
            let claim = ClaimRequest {
                id: id.clone(),
                data_dir: dir.clone(),
                log_limit: self.cfg.limits.max_log_bytes,
                image: req.image.clone(),
                image_rootfs: image_rootfs.clone(),
                layer_bytes: layer,
                params: params.clone(),
                warm: self.cfg.limits.warm_containers,
            };
            let how = Launch::Claim(claim);
            if let Some(view) = self
                .launch(&id, &dir, how, Some(req.image.clone()), owner, &mut undo)
                .await?
            {
                undo.disarm();
                self.metrics.count_created("warm");
                return Ok(view);
            }
            undo.rootfs = false;
        }
        let mount_dir = dir.clone();
        let rootfs = tokio::task::spawn_blocking(move || {
            ContainerRootfs::mount(&image_rootfs, &mount_dir, layer)
        })
        .await
        .map_err(|e| ServiceError::internal(format!("mount rootfs: {e}")))?
        .map_err(|e| ServiceError::internal(e.to_string()))?;
        undo.rootfs = true;
        let spec = params
            .spec(&id, rootfs.path())
            .map_err(ServiceError::internal)?;
        let bundle = dir.join("bundle");
        write_bundle(&bundle, &spec)?;
        let how = Launch::Create(self.create_request(&id, &dir, &bundle, true));
        let view = self
            .launch(&id, &dir, how, Some(req.image.clone()), owner, &mut undo)
            .await?;
        undo.disarm();
        self.metrics.count_created("image");
        view.ok_or_else(|| ServiceError::internal("the launcher made no container"))
    }

    /// Creates a container from an uploaded bundle (a tar of `config.json` + `rootfs/`),
    /// after the policy checks of its `config.json`.
    pub async fn create_from_bundle(
        &self,
        id: Option<String>,
        body: impl std::io::Read + Send + 'static,
        strictness: policy::Strictness,
        owner: &str,
    ) -> Result<ContainerView, ServiceError> {
        let (id, dir) = self.claim(id)?;
        let mut undo = UndoDir {
            dir: dir.clone(),
            rootfs: false,
        };
        let bundle = dir.join("bundle");
        std::fs::create_dir(&bundle)
            .map_err(|e| ServiceError::io(format!("create {}", bundle.display()), e))?;
        let limits = TarLimits {
            max_total_bytes: self.cfg.limits.max_upload_bytes,
            max_entries: self.cfg.limits.max_upload_entries,
            ..TarLimits::default()
        };
        let dest = bundle.clone();
        tokio::task::spawn_blocking(move || extract::extract(body, &dest, &limits))
            .await
            .map_err(|e| ServiceError::internal(format!("extract upload: {e}")))?
            .map_err(|e| {
                ServiceError::new(super::extract_error_kind(&e), format!("bundle upload: {e}"))
            })?;
        // The archive may hold symlinks (images need them): nothing the service reads or
        // hands to the runtime may be one.
        let text = read_nofollow(&bundle, "config.json")
            .map_err(|e| ServiceError::bad(format!("bundle upload: config.json: {e}")))?;
        let mut spec = crate::runtime::spec::parse(&text).map_err(|(field, reason)| {
            ServiceError::bad(format!(
                "config.json: {}: {reason}",
                if field.is_empty() {
                    "(document)"
                } else {
                    &field
                }
            ))
        })?;
        if let Some(p) = spec.process() {
            let args = p.args().clone().unwrap_or_default();
            let env = p.env().clone().unwrap_or_default();
            super::exec_size::check(&[("process.args", &args), ("process.env", &env)])
                .map_err(|e| ServiceError::bad(format!("config.json: {e}")))?;
        }
        if let Err(violations) = policy::check(&spec, &bundle, strictness) {
            return Err(ServiceError::policy(violations));
        }
        if strictness == policy::Strictness::Enforce {
            let violations = bundle_paths_without_symlinks(&spec, &bundle);
            if !violations.is_empty() {
                return Err(ServiceError::policy(violations));
            }
        }
        // The service chooses where the container's cgroup lives.
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(None);
        }
        write_bundle(&bundle, &spec)?;
        let how = Launch::Create(self.create_request(&id, &dir, &bundle, false));
        let view = self.launch(&id, &dir, how, None, owner, &mut undo).await?;
        undo.disarm();
        self.metrics.count_created("bundle");
        view.ok_or_else(|| ServiceError::internal("the launcher made no container"))
    }

    /// The launcher's request to create container `id` from `bundle`; `sandbox` for a
    /// container from an image (the service's sandbox config).
    fn create_request(&self, id: &str, dir: &Path, bundle: &Path, sandbox: bool) -> CreateRequest {
        CreateRequest {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            data_dir: dir.to_path_buf(),
            systemd_cgroup: false,
            log_limit: self.cfg.limits.max_log_bytes,
            sandbox,
        }
    }

    /// Has the launcher create the container, within `create_timeout_secs`; returns its
    /// view, or `None` if the launcher had no warm container for a [`Launch::Claim`]
    /// (nothing was made). A create
    /// that does not finish in time fails with [`ErrorKind::Timeout`]; it may still
    /// finish later, so the container is removed in the background once it has settled
    /// (its directory, and so its id, stays taken until then).
    async fn launch(
        &self,
        id: &str,
        dir: &Path,
        how: Launch,
        image: Option<String>,
        owner: &str,
        undo: &mut UndoDir,
    ) -> Result<Option<ContainerView>, ServiceError> {
        let secs = self.cfg.limits.create_timeout_secs;
        let launcher = self.launcher.clone();
        // A task of its own, so that the create's outcome is still seen after a timeout.
        let mut create = tokio::spawn(async move {
            match how {
                Launch::Create(req) => launcher.create(req).await.map(Some),
                Launch::Claim(req) => launcher.claim(req).await,
            }
        });
        let pid = match tokio::time::timeout(Duration::from_secs(secs), &mut create).await {
            Ok(joined) => {
                let pid = joined
                    .map_err(|e| ServiceError::internal(format!("create {id}: {e}")))?
                    .map_err(ServiceError::from)?;
                match pid {
                    Some(pid) => pid,
                    None => return Ok(None),
                }
            }
            Err(_) => {
                tracing::warn!(
                    container = id,
                    "the launcher did not create the container within {secs}s: removing it"
                );
                let cleanup =
                    abandon_create(self.launcher.clone(), id.to_string(), create, undo.take());
                tokio::spawn(cleanup);
                return Err(ServiceError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the launcher did not create container {id} within {secs}s (create_timeout_secs); whatever was created is being removed"
                    ),
                ));
            }
        };
        let record = Record {
            id: id.to_string(),
            created: now_rfc3339(),
            image,
            owner: owner.to_string(),
        };
        let data = serde_json::to_vec_pretty(&record)
            .map_err(|e| ServiceError::internal(e.to_string()))?;
        let path = dir.join(RECORD_FILE);
        write_atomic(&path, &data, 0o600)
            .map_err(|e| ServiceError::io(format!("write {}", path.display()), e))?;
        // What a view would read now: just created, its init waiting for start.
        let bundle = dir.join("bundle").to_string_lossy().into_owned();
        Ok(Some(ContainerView::live(
            id, "created", pid, bundle, record,
        )))
    }

    /// The container's view, or NotFound.
    pub async fn view(&self, id: &str) -> Result<ContainerView, ServiceError> {
        let record = self.record(id)?;
        let dir = self.container_dir(id);
        let exit = read_exit(&dir);
        // An exit record is written once the init is gone: the container has stopped,
        // whatever else the runtime's state still says.
        let state = match exit {
            Some(_) => None,
            None => match self.launcher.state(id).await {
                Ok(s) => Some(s),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
        };
        let (status, pid, bundle) = match &state {
            Some(s) => (s.oci.status.clone(), s.oci.pid, s.oci.bundle.clone()),
            None => (
                "stopped".to_string(),
                None,
                dir.join("bundle").to_string_lossy().into_owned(),
            ),
        };
        // The monitor writes exit.json after the init is gone: until then a container
        // whose init just died still reads "running" from its record, never "stopped"
        // without an exit status.
        let status = if status == "stopped" && exit.is_none() && state.is_some() {
            "running".to_string()
        } else {
            status
        };
        Ok(ContainerView {
            id: id.to_string(),
            status,
            pid,
            bundle,
            created: record.created,
            image: record.image,
            exit_code: exit.as_ref().and_then(|e| e.exit_code),
            signal: exit.as_ref().and_then(|e| e.signal),
            oom_killed: exit.as_ref().is_some_and(|e| e.oom_killed),
            finished_at: exit.map(|e| e.finished_at),
            oci_version: crate::runtime::OCI_VERSION.into(),
        })
    }

    pub async fn list(&self) -> Result<Vec<ContainerView>, ServiceError> {
        let mut out = Vec::new();
        for id in self.ids() {
            match self.view(&id).await {
                Ok(v) => out.push(v),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub async fn start(&self, id: &str) -> Result<ContainerView, ServiceError> {
        let record = self.record(id)?;
        // The runtime refuses what cannot be started (409), and says when there is no
        // such container in it (a container whose state is gone has stopped).
        let rec = self.launcher.start(id).await?;
        // Its program runs now (a view reads "running" too until the exit is recorded).
        let bundle = rec.bundle.to_string_lossy().into_owned();
        Ok(ContainerView::live(id, "running", rec.pid, bundle, record))
    }

    /// The service's record of container `id`, or NotFound (InvalidId for a bad id).
    fn record(&self, id: &str) -> Result<Record, ServiceError> {
        crate::runtime::id::validate(id)
            .map_err(|e| ServiceError::new(ErrorKind::InvalidId, e.to_string()))?;
        read_record(&self.container_dir(id)).ok_or_else(|| ServiceError::not_found(id))
    }

    pub async fn kill(
        &self,
        id: &str,
        signal: nix::sys::signal::Signal,
        all: bool,
    ) -> Result<(), ServiceError> {
        self.view(id).await?;
        Ok(self.launcher.kill(id, signal, all).await?)
    }

    /// Deletes the container: the runtime's part (refused while running unless `force`),
    /// then its rootfs mounts and its directory. A container whose exit is recorded
    /// leaves the runtime at once ([`Launcher::detach`]): its cgroup and state are
    /// removed in the background, with its directory.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), ServiceError> {
        let view = self.view(id).await?;
        if view.status == "running" && !force {
            return Err(ServiceError::new(
                ErrorKind::Conflict,
                format!("container {id} is running: stop it or delete with force=true"),
            ));
        }
        let detached = match view.finished_at {
            Some(_) => match self.launcher.detach(id).await {
                Ok(d) => d,
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let dir = self.container_dir(id);
        if detached.is_none() {
            match self.launcher.delete(id, force).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            // Let the monitor record the exit before the directory goes (bounded).
            let deadline = Instant::now() + Duration::from_secs(2);
            while read_exit(&dir).is_none() && Instant::now() < deadline && view.status != "created"
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // The id is free once the directory has moved aside; its rootfs mounts and files
        // are removed in the background.
        let trash = self
            .dir
            .join(TRASH_DIR)
            .join(format!("{id}.{}", uuid::Uuid::new_v4().simple()));
        // The rename is what decides between deletes of one id that race: the one that
        // moves the directory deleted the container, the others find it gone (404).
        let moved = match std::fs::rename(&dir, &trash) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ServiceError::not_found(id));
            }
            Err(e) => {
                tracing::debug!("move {} aside: {e}; removing it in place", dir.display());
                false
            }
        };
        let removal = async move {
            if let Some(d) = detached {
                let removed =
                    tokio::task::spawn_blocking(move || d.remove().map_err(|e| e.to_string()))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                if let Err(e) = removed {
                    tracing::warn!("remove a deleted container's state: {e}");
                }
            }
            remove_container_dir(if moved { trash } else { dir }).await
        };
        if !moved {
            return removal.await;
        }
        let mut removals = self.removals.lock().unwrap_or_else(|p| p.into_inner());
        while removals.try_join_next().is_some() {}
        removals.spawn(async move {
            if let Err(e) = removal.await {
                tracing::warn!("remove a deleted container's directory: {e}");
            }
        });
        Ok(())
    }

    /// Waits for the removal of deleted containers' directories (for a graceful stop).
    pub async fn close(&self) {
        let mut removals =
            std::mem::take(&mut *self.removals.lock().unwrap_or_else(|p| p.into_inner()));
        while removals.join_next().await.is_some() {}
    }

    /// Waits until the container has stopped (its exit recorded), at most `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerView, ServiceError> {
        let deadline = Instant::now() + timeout;
        let dir = self.container_dir(id);
        let exit_file = dir.join(super::launcher::EXIT_FILE);
        if exit_file.exists() {
            return self.view(id).await;
        }
        // The monitor renames exit.json into place: a watch on the directory wakes the
        // wait at once. Without one (out of inotify watches), it polls.
        let watch = DirWatch::new(&dir)
            .inspect_err(|e| tracing::debug!(container = id, "inotify: {e}; polling"))
            .ok();
        let mut last_view = Instant::now() - Duration::from_secs(1);
        let mut pause = Duration::from_millis(1);
        let started = Instant::now();
        loop {
            if exit_file.exists() {
                return self.view(id).await;
            }
            // Now and then, what the runtime says: a container whose monitor died has
            // no exit record to wait for.
            if last_view.elapsed() >= VIEW_EVERY {
                last_view = Instant::now();
                let view = self.view(id).await?;
                if view.finished_at.is_some() {
                    return Ok(view);
                }
                if view.status == "stopped" && view.pid.is_none() {
                    return Ok(view);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ServiceError::new(
                    ErrorKind::Conflict,
                    format!("container {id} still running after {}s", timeout.as_secs()),
                )
                .timeout());
            }
            let next_view = (last_view + VIEW_EVERY).saturating_duration_since(now);
            match &watch {
                Some(w) => w.changed(next_view.min(deadline - now)).await,
                None => {
                    tokio::time::sleep(pause).await;
                    // Every millisecond for the first 100 (short programs are the
                    // common case), then less and less often.
                    if started.elapsed() >= Duration::from_millis(100) {
                        pause = (pause + Duration::from_millis(1)).min(Duration::from_millis(10));
                    }
                }
            }
        }
    }

    pub fn dir_of(&self, id: &str) -> Result<PathBuf, ServiceError> {
        crate::runtime::id::validate(id)
            .map_err(|e| ServiceError::new(ErrorKind::InvalidId, e.to_string()))?;
        let dir = self.container_dir(id);
        if read_record(&dir).is_none() {
            return Err(ServiceError::not_found(id));
        }
        Ok(dir)
    }

    /// The container's cgroup usage, read from the cgroup its runtime record names.
    pub async fn stats(&self, id: &str) -> Result<serde_json::Value, ServiceError> {
        self.view(id).await?;
        let stats = self.launcher.stats(id).await?;
        serde_json::to_value(&stats).map_err(|e| ServiceError::internal(e.to_string()))
    }
}

fn clamp(
    field: &str,
    v: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ServiceError> {
    let v = v.unwrap_or(default);
    if v < min || v > max {
        return Err(ServiceError::bad(format!(
            "{field}: {v} is outside {min}..={max}"
        )));
    }
    Ok(v)
}

/// Reads `dir/name`, refusing a symlink at any point of the path.
fn read_nofollow(dir: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path)?.file_type().is_symlink() {
        return Err(std::io::Error::other("is a symlink"));
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)?;
    let mut out = Vec::new();
    f.by_ref().take(4 << 20).read_to_end(&mut out)?;
    Ok(out)
}

/// The policy checks paths as text; the runtime follows symlinks when it opens the
/// rootfs and bind sources. So in an uploaded bundle the rootfs and every bind source
/// must resolve beneath the bundle without a symlink on the way (openat2
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): `rootfs -> /` or `data -> /etc` are refused.
fn bundle_paths_without_symlinks(
    spec: &oci_spec::runtime::Spec,
    bundle: &Path,
) -> Vec<policy::Violation> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let Ok(dir) = std::fs::File::open(bundle) else {
        return vec![policy::Violation::new(
            "root.path",
            "the bundle cannot be opened",
        )];
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let check = |field: String, rel: &Path, want_dir: bool| -> Option<policy::Violation> {
        let rel = if rel.is_absolute() {
            rel.strip_prefix(bundle).unwrap_or(rel)
        } else {
            rel
        };
        match openat2(&dir, rel, how) {
            Ok(fd) => {
                let is_dir = nix::sys::stat::fstat(&fd)
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
                (want_dir && !is_dir)
                    .then(|| policy::Violation::new(field, "not a directory in the bundle"))
            }
            Err(e) => Some(policy::Violation::new(
                field,
                format!(
                    "{}: must be in the bundle, reached without symlinks ({e})",
                    rel.display()
                ),
            )),
        }
    };
    let mut out = Vec::new();
    if let Some(root) = spec.root() {
        out.extend(check("root.path".into(), root.path(), true));
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if let (true, Some(src)) = (bind, m.source()) {
            out.extend(check(format!("mounts[{i}].source"), src, false));
        }
    }
    out
}

/// Whether a container of the service whose data dir is `data` uses the image `name`
/// (from the records on disk: usable before the service runs).
pub fn image_in_use(data: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(data.join(CONTAINERS_DIR)) else {
        return false;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| read_record(&e.path()))
        .any(|r| r.image.as_deref() == Some(name))
}

fn read_record(dir: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(dir.join(RECORD_FILE)).ok()?).ok()
}

fn write_bundle(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), ServiceError> {
    sandbox::write_config(bundle, spec)
        .map_err(|e| ServiceError::io(format!("write {}/config.json", bundle.display()), e))
}

/// How often a wait asks the runtime about the container, besides watching for its exit
/// record.
const VIEW_EVERY: Duration = Duration::from_millis(50);

/// How the launcher makes a container.
enum Launch {
    /// From a bundle the service wrote or received.
    Create(CreateRequest),
    /// From a warm container of an image, if it has one.
    Claim(ClaimRequest),
}

/// Whether a claim for `params` fits the launcher's packets (a request whose arguments
/// and environment are larger is created the usual way).
fn fits_a_packet(params: &sandbox::Params) -> bool {
    let text: usize = params
        .args
        .iter()
        .chain(&params.env)
        .map(|s| s.len() + 8)
        .sum();
    text + params.cwd.len() < super::launcher::MAX_PACKET / 2
}

/// Unmounts the container's rootfs (if it has one) and removes its directory.
async fn remove_container_dir(dir: PathBuf) -> Result<(), ServiceError> {
    tokio::task::spawn_blocking(move || -> Result<(), ServiceError> {
        ContainerRootfs::unmount(&dir).map_err(|e| ServiceError::internal(e.to_string()))?;
        // The container's monitor may still be writing its last record (exit.json, a
        // log line) as the directory goes: try again briefly when a file appears.
        let mut tries = 0;
        loop {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(ServiceError::io(format!("remove {}", dir.display()), e)),
            }
        }
    })
    .await
    .map_err(|e| ServiceError::internal(format!("remove container directory: {e}")))?
}

/// How long a timed-out create may take to settle before it is cleaned up regardless.
const ABANDONED_CREATE_WAIT: Duration = Duration::from_secs(600);

/// Cleans up after a create that timed out: waits (bounded) for it to settle, deletes
/// the container from the runtime (it may exist, created or half-created), lets its
/// monitor record the exit, then unmounts and removes its directory.
async fn abandon_create(
    launcher: Arc<Launcher>,
    id: String,
    create: tokio::task::JoinHandle<Result<Option<i32>, LauncherError>>,
    undo: UndoDir,
) {
    let outcome = tokio::time::timeout(ABANDONED_CREATE_WAIT, create).await;
    let created = matches!(outcome, Ok(Ok(Ok(Some(_)))));
    // A runtime container of that id that this create did not make is not ours to delete.
    let ours = !matches!(&outcome, Ok(Ok(Err(e))) if e.kind() == ErrorKind::AlreadyExists);
    if ours {
        match launcher.delete(&id, true).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(container = id, "cleanup after a timed-out create: {e}"),
        }
    }
    if created {
        let deadline = Instant::now() + Duration::from_secs(2);
        while read_exit(&undo.dir).is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // UndoDir's drop unmounts and removes: blocking work.
    let _ = tokio::task::spawn_blocking(move || drop(undo)).await;
    tracing::info!(container = id, "removed after a timed-out create");
}

/// Removes a half-created container's directory (and its rootfs mounts) unless disarmed.
struct UndoDir {
    dir: PathBuf,
    rootfs: bool,
}

impl UndoDir {
    fn disarm(&mut self) {
        self.dir = PathBuf::new();
    }

    /// Hands the cleanup over to the returned guard, disarming this one.
    fn take(&mut self) -> UndoDir {
        UndoDir {
            dir: std::mem::take(&mut self.dir),
            rootfs: self.rootfs,
        }
    }
}

impl Drop for UndoDir {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if self.rootfs
            && let Err(e) = ContainerRootfs::unmount(&self.dir)
        {
            tracing::warn!("cleanup after failed create: {e}");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(
                "cleanup after failed create: remove {}: {e}",
                self.dir.display()
            );
        }
    }
}

impl From<LauncherError> for ServiceError {
    fn from(e: LauncherError) -> Self {
        ServiceError::new(e.kind(), e.to_string())
    }
}
