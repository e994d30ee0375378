//! Warm containers for the HTTP API: a container from an image, made before the request
//! that wants it, so that a create only gives it its id, process and limits.
//!
//! ```text
//!  launcher: Pool (one socket per warm monitor)
//!    │  fork
//!    ▼
//!  warm monitor: overlay rootfs in <data>/containers/.warm/<wid>, container <wid> in
//!    │  <root>/.warm, its init waiting for a process (CreateOptions::late_process)
//!    │  ◄── ClaimRequest (id, data dir, process, limits)
//!    │  init takes the process; cgroup limits written; <wid>'s data dir renamed onto the
//!    │  request's, its state dir onto <root>/<id>; config.json and state.json rewritten
//!    ▼  ──► Created { pid }; from here on, an ordinary monitor (monitor.rs)
//! ```
//!
//! A warm container is made for an image once a request names it (the first request of
//! an image is created the usual way), with that request's limits; as many per image as
//! the request says (the service's `warm_containers`), for the [`MAX_IMAGES`] images
//! requested last; a claimed one is replaced once the claim is answered. It is never
//! used for an image replaced since it was made (the image rootfs's device, inode and
//! ctime are compared at claim).
//!
//! What differs from a container created for the request: its cgroup keeps the warm
//! name (`corral/warm-<launcher pid>-<n>`; the state names it), and the overlay's
//! mount options show the warm directory it was mounted in.
//!
//! Warm containers go away when their image is requested no more (another image takes
//! their place), when the launcher exits (each warm monitor sees its socket close and
//! removes its container), and at the service's start ([`clean_stale`]).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::SigSet;
use nix::unistd::Pid;

use super::error::{ErrorKind, LauncherError, kind_of};
use super::monitor::{self, abandon};
use super::protocol::{
    ClaimRequest, MAX_PACKET, Outcome, SANDBOX_CONTROLLERS, decode, encode, packet_pair,
    recv_packet, send_packet,
};
use crate::images::ContainerRootfs;
use crate::runtime::create::{CreateOptions, Created, create_with};
use crate::runtime::linux::cgroups::{Cgroup, CgroupPath};
use crate::runtime::linux::sync::LateProcess;
use crate::runtime::ops;
use crate::runtime::state::{Store, now_rfc3339};
use crate::service::sandbox;

/// Images with warm containers at once: the least recently requested one's go first.
pub const MAX_IMAGES: usize = 2;
/// The directory of warm containers, in the state root and in the containers' data dir.
pub const WARM_DIR: &str = ".warm";
/// The CPU share of a warm container's cgroup until it is claimed (v1 `cpu.shares`; the
/// least there is), so that its setup takes only CPU time no request wants. The v1
/// default is given back at claim (v2: the default `cpu.weight`).
const WARM_SHARES: u64 = 2;
/// The nice value of a warm monitor (and so of its init) until the claim, for the same
/// reason.
const WARM_NICE: i32 = 19;
/// After a warm container of an image fails to be made, none is tried for this long.
const BACKOFF: Duration = Duration::from_secs(30);
/// How long the launcher, when it exits, waits for its warm monitors to remove theirs.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// `(dev, ino, ctime, ctime_nsec)` of a directory: a new directory at the same path (an
/// image deleted and uploaded again) differs, even should it get the same inode number.
pub type DirId = (u64, u64, i64, i64);

pub fn dir_id(path: &Path) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

/// The state store of warm containers (`<root>/.warm`).
pub fn store(root: &Path) -> Store {
    Store::new(root.join(WARM_DIR))
}

/// Where warm containers' data dirs live (`<data>/containers/.warm`), on the same file
/// system as the containers' own, which they are renamed into.
fn data_root(data: &Path) -> PathBuf {
    data.join(crate::service::containers::CONTAINERS_DIR)
        .join(WARM_DIR)
}

/// Removes every warm container left by a launcher that did not exit cleanly (killed,
/// or the host went down): their containers, rootfs mounts and directories. For the
/// service's start, before any launcher runs.
pub fn clean_stale(root: &Path, data: &Path) {
    let store = store(root);
    for id in store.ids().unwrap_or_default() {
        if let Err(e) = ops::delete(&store, &id, true) {
            tracing::warn!("remove stale warm container {id}: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(store.root());
    let dirs = std::fs::read_dir(data_root(data)).into_iter().flatten();
    for dir in dirs.filter_map(|e| e.ok()).map(|e| e.path()) {
        remove_data_dir(&dir);
    }
}

fn remove_data_dir(dir: &Path) {
    if let Err(e) = ContainerRootfs::unmount(dir) {
        tracing::warn!("unmount the rootfs of {}: {e}", dir.display());
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("remove {}: {e}", dir.display()),
    }
}

/// What warm containers of an image are made from: the last request of the image.
#[derive(Clone)]
struct Template {
    image: String,
    image_rootfs: PathBuf,
    layer_bytes: u64,
    /// The cap of each log (its logs are opened when it is made).
    log_limit: u64,
    params: sandbox::Params,
}

impl Template {
    fn of(c: &ClaimRequest) -> Self {
        Template {
            image: c.image.clone(),
            image_rootfs: c.image_rootfs.clone(),
            layer_bytes: c.layer_bytes,
            log_limit: c.log_limit,
            params: c.params.clone(),
        }
    }

    fn fits(&self, c: &ClaimRequest) -> bool {
        self.image == c.image
            && self.image_rootfs == c.image_rootfs
            && self.layer_bytes == c.layer_bytes
            && self.log_limit == c.log_limit
    }
}

/// A warm monitor, as the launcher sees it.
struct Spare {
    pid: Pid,
    sock: OwnedFd,
    wid: String,
    template: Template,
    /// The image rootfs's identity when the warm monitor was forked.
    image_id: Option<DirId>,
    /// Its container is made (it said so).
    ready: bool,
    /// The request it serves, once claimed.
    claimed: Option<u64>,
}

/// The launcher's warm containers.
pub(super) struct Pool {
    root: PathBuf,
    data: PathBuf,
    spares: Vec<Spare>,
    next: u64,
    /// Images by their last request, the most recent last.
    recent: Vec<String>,
    /// Images whose last warm container could not be made, and when.
    failed: HashMap<String, Instant>,
    /// Claims in progress, whose image is topped up once they are answered.
    refills: Vec<(u64, ClaimRequest)>,
}

impl Pool {
    pub(super) fn new(root: &Path, data: &Path) -> Self {
        Pool {
            root: root.to_path_buf(),
            data: data.to_path_buf(),
            spares: Vec::new(),
            next: 0,
            recent: Vec::new(),
            failed: HashMap::new(),
            refills: Vec::new(),
        }
    }

    /// The sockets to poll, in the order [`Pool::on_ready`] takes indexes in.
    pub(super) fn fds(&self) -> impl Iterator<Item = PollFd<'_>> {
        self.spares
            .iter()
            .map(|s| PollFd::new(s.sock.as_fd(), PollFlags::POLLIN))
    }

    pub(super) fn len(&self) -> usize {
        self.spares.len()
    }

    /// Hands request `seq` to a warm container that fits it; `false` when none does.
    /// Warm containers of the image made before it was replaced are dropped. Either
    /// way, the image's warm containers are topped up (from this request) for the next:
    /// at once when none was ready, after the claim is answered otherwise.
    pub(super) fn claim(&mut self, seq: u64, c: &ClaimRequest, blocked: &SigSet) -> bool {
        if self.hand_over(seq, c) {
            // Topped up once the claim is answered ([`Pool::answered`]): a fork now
            // would take the CPU from the claim.
            self.refills.push((seq, c.clone()));
            true
        } else {
            self.refill(c, blocked);
            false
        }
    }

    /// Tops up the image of claim `seq`, now answered.
    pub(super) fn answered(&mut self, seq: u64, blocked: &SigSet) {
        if let Some(i) = self.refills.iter().position(|(s, _)| *s == seq) {
            let (_, c) = self.refills.swap_remove(i);
            self.refill(&c, blocked);
        }
    }

    fn hand_over(&mut self, seq: u64, c: &ClaimRequest) -> bool {
        let now = dir_id(&c.image_rootfs);
        // Made from another image of this name: of no use to anyone.
        self.spares.retain(|s| {
            let stale = s.claimed.is_none()
                && s.template.image == c.image
                && (!s.template.fits(c) || s.image_id != now || now.is_none());
            !stale
        });
        if now.is_none() {
            return false;
        }
        let Ok(bytes) = encode(c) else { return false };
        while let Some(i) = self
            .spares
            .iter()
            .position(|s| s.ready && s.claimed.is_none() && s.template.fits(c))
        {
            match send_packet(self.spares[i].sock.as_fd(), &bytes) {
                Ok(()) => {
                    self.spares[i].claimed = Some(seq);
                    return true;
                }
                Err(e) => {
                    let gone = self.spares.swap_remove(i);
                    tracing::warn!("warm monitor {} is gone ({e})", gone.pid);
                    self.discard(&gone.wid);
                }
            }
        }
        false
    }

    /// Makes warm containers of `c`'s image up to `c.warm`, and drops those of
    /// images beyond the [`MAX_IMAGES`] requested last.
    fn refill(&mut self, c: &ClaimRequest, blocked: &SigSet) {
        self.recent.retain(|i| *i != c.image);
        self.recent.push(c.image.clone());
        while self.recent.len() > MAX_IMAGES {
            let old = self.recent.remove(0);
            // Dropping the socket is the warm monitor's cue to remove its container.
            self.spares
                .retain(|s| s.claimed.is_some() || s.template.image != old);
        }
        if self
            .failed
            .get(&c.image)
            .is_some_and(|t| t.elapsed() < BACKOFF)
        {
            return;
        }
        let template = Template::of(c);
        let have = self
            .spares
            .iter()
            .filter(|s| s.claimed.is_none() && s.template.image == c.image)
            .count();
        for _ in have..c.warm as usize {
            self.next += 1;
            let wid = format!("warm-{}-{}", std::process::id(), self.next);
            let image_id = dir_id(&template.image_rootfs);
            match spawn(&self.root, &self.data, &wid, &template, blocked) {
                Ok((pid, sock)) => self.spares.push(Spare {
                    pid,
                    sock,
                    wid,
                    template: template.clone(),
                    image_id,
                    ready: false,
                    claimed: None,
                }),
                Err(e) => {
                    tracing::warn!("fork a warm monitor for image {}: {e}", c.image);
                    return;
                }
            }
        }
    }

    /// Reads what warm monitor `i` sent. Returns the answer to a claim, `(seq, outcome)`,
    /// for the service; a warm monitor that answered a claim or went away is dropped.
    pub(super) fn on_ready(&mut self, i: usize, buf: &mut [u8]) -> Option<(u64, Outcome)> {
        let outcome = match recv_packet(self.spares[i].sock.as_fd(), buf) {
            Ok(Some(n)) => Some(decode(&buf[..n]).unwrap_or_else(|e| Outcome::error(&e))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("receive from warm monitor {}: {e}", self.spares[i].pid);
                None
            }
        };
        let spare = &mut self.spares[i];
        match (outcome, spare.claimed) {
            (Some(outcome), Some(seq)) => {
                self.spares.swap_remove(i);
                Some((seq, outcome))
            }
            (Some(Outcome::Created { .. }), None) => {
                spare.ready = true;
                None
            }
            (Some(outcome), None) => {
                tracing::warn!(
                    "make a warm container of image {}: {outcome:?}",
                    spare.template.image
                );
                self.failed
                    .insert(spare.template.image.clone(), Instant::now());
                self.spares.swap_remove(i);
                None
            }
            (None, claimed) => {
                let gone = self.spares.swap_remove(i);
                self.discard(&gone.wid);
                claimed.map(|seq| {
                    (
                        seq,
                        Outcome::Error {
                            kind: ErrorKind::Internal,
                            message: format!(
                                "the warm monitor (pid {}) exited while taking the container",
                                gone.pid
                            ),
                        },
                    )
                })
            }
        }
    }

    /// Removes what a warm monitor that died left (its own clean-up did not run).
    fn discard(&self, wid: &str) {
        let store = store(&self.root);
        if let Err(e) = ops::delete(&store, wid, true) {
            tracing::warn!("remove warm container {wid}: {e}");
        }
        remove_data_dir(&data_root(&self.data).join(wid));
    }

    /// Closes every warm monitor's socket and waits (briefly) for them to remove their
    /// containers. For the launcher's exit.
    pub(super) fn close(&mut self) {
        let pids: Vec<Pid> = self.spares.drain(..).map(|s| s.pid).collect();
        let deadline = Instant::now() + CLOSE_WAIT;
        for pid in pids {
            while Instant::now() < deadline {
                use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
                match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
                    _ => break,
                }
            }
        }
    }
}

/// Forks the warm monitor of container `wid`. Returns its pid and the launcher's end of
/// its socket.
fn spawn(
    root: &Path,
    data: &Path,
    wid: &str,
    t: &Template,
    blocked: &SigSet,
) -> Result<(Pid, OwnedFd), LauncherError> {
    let (ours, theirs) = packet_pair().map_err(LauncherError::sys("socketpair"))?;
    monitor::fork_with(&format!("the warm monitor {wid}"), ours, theirs, |sock| {
        life(root, data, wid, t, sock, blocked)
    })
}

/// The warm monitor's life; returns its exit code.
fn life(root: &Path, data: &Path, wid: &str, t: &Template, sock: OwnedFd, blocked: &SigSet) -> i32 {
    let tell = |outcome: &Outcome| {
        if let Ok(bytes) = encode(outcome) {
            let _ = send_packet(sock.as_fd(), &bytes);
        }
    };
    let dir = data_root(data).join(wid);
    let warm = match make(root, &dir, wid, t, sock.as_raw_fd(), blocked) {
        Ok(w) => w,
        Err(e) => {
            tell(&Outcome::error(&e));
            return 0;
        }
    };
    tell(&Outcome::Created {
        pid: warm.created.pid.as_raw(),
    });
    let Some(claim) = wait_for_claim(&sock, &warm.created) else {
        discard_own(root, &dir, &warm.created);
        return 0;
    };
    let taken = take(root, &dir, warm, &claim);
    match &taken {
        Ok(running) => tell(&Outcome::Created {
            pid: running.pid().as_raw(),
        }),
        Err(e) => tell(&Outcome::error(e)),
    }
    drop(sock);
    // The empty directory the service had made for the container, swapped out.
    let _ = std::fs::remove_dir(&dir);
    match taken {
        Ok(running) => monitor::supervise(running, &claim.id),
        Err(_) => 0,
    }
}

/// A warm container, as its monitor holds it.
struct Warm {
    created: Created,
    /// The read ends of the container's stdout and stderr.
    output: [OwnedFd; 2],
    /// The monitor's messages go where the launcher's go until the container is
    /// claimed (its stderr is the container's).
    log: tracing::subscriber::DefaultGuard,
    /// Its logs, open in its data dir (they move with it).
    logs: monitor::Logs,
}

/// Mounts the rootfs in `dir`, writes the bundle and creates the container, its init
/// waiting for a process. On failure, removes what it made.
fn make(
    root: &Path,
    dir: &Path,
    wid: &str,
    t: &Template,
    keep: i32,
    blocked: &SigSet,
) -> Result<Warm, LauncherError> {
    monitor::detach(keep, blocked, c"corral-monitor")?;
    // Made in whatever CPU time requests leave (see WARM_SHARES).
    set_nice(0, WARM_NICE);
    let log = monitor::log_to_launcher()?;
    let output = monitor::container_stdio()?;
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)
        .map_err(LauncherError::io(format!("create {}", parent.display())))?;
    std::fs::create_dir(dir).map_err(LauncherError::io(format!("create {}", dir.display())))?;
    let made = (|| {
        let rootfs = ContainerRootfs::mount(&t.image_rootfs, dir, t.layer_bytes)
            .map_err(|e| LauncherError::Setup(e.to_string()))?;
        let mut spec = t
            .params
            .spec(wid, rootfs.path())
            .map_err(LauncherError::Setup)?;
        if let Some(cpu) = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.resources_mut().as_mut())
            .and_then(|r| r.cpu_mut().as_mut())
        {
            cpu.set_shares(Some(WARM_SHARES));
        }
        // The config is handed to the runtime, not written: the bundle gets the
        // request's at claim (a new file: replacing one costs ext4 a flush).
        let bundle = dir.join("bundle");
        std::fs::create_dir(&bundle)
            .map_err(LauncherError::io(format!("create {}", bundle.display())))?;
        let opts = CreateOptions {
            id: wid.to_string(),
            bundle: bundle.clone(),
            cgroup_controllers: Some(SANDBOX_CONTROLLERS),
            late_process: true,
            loaded: Some(std::sync::Arc::new((bundle, spec))),
            ..CreateOptions::default()
        };
        let created =
            create_with(&store(root), &opts, None).map_err(|e| LauncherError::Refused {
                kind: kind_of(&e),
                message: e.to_string(),
            })?;
        let opened = monitor::Logs::open(dir, t.log_limit).and_then(|logs| {
            make_temp_files(&store(root).dir(wid), dir)?;
            Ok(logs)
        });
        match opened {
            Ok(logs) => Ok((created, logs)),
            Err(e) => {
                discard_own(root, dir, &created);
                Err(e)
            }
        }
    })();
    match made {
        Ok((created, logs)) => Ok(Warm {
            created,
            output,
            log,
            logs,
        }),
        Err(e) => {
            remove_data_dir(dir);
            Err(e)
        }
    }
}

/// Creates, empty, the temp files through which the claim writes the container's
/// records (state.json, config.json, the service's container.json): on ext4 a new inode
/// on the request's path costs a search for one not recently freed.
fn make_temp_files(state_dir: &Path, dir: &Path) -> Result<(), LauncherError> {
    use crate::runtime::atomic::temp_path;
    let files = [
        temp_path(&state_dir.join(crate::runtime::state::STATE_FILE)),
        temp_path(&dir.join("bundle").join("config.json")),
        temp_path(&dir.join(crate::service::containers::RECORD_FILE)),
    ];
    for f in files {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode the records are written with.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&f)
            .map_err(LauncherError::io(format!("create {}", f.display())))?;
    }
    Ok(())
}

/// Waits for the launcher's claim: `None` if its socket closes (the launcher drops this
/// warm container, or exits) or the init dies first.
fn wait_for_claim(sock: &OwnedFd, created: &Created) -> Option<ClaimRequest> {
    let mut buf = vec![0u8; MAX_PACKET + 1];
    loop {
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(created.pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            tracing::warn!("warm container {}: its init exited", created.record.id);
            return None;
        }
        return match recv_packet(sock.as_fd(), &mut buf) {
            Ok(Some(n)) => decode(&buf[..n]).ok(),
            _ => None,
        };
    }
}

/// Removes the monitor's own warm container: the container, then its data dir.
fn discard_own(root: &Path, dir: &Path, created: &Created) {
    abandon(&store(root), created);
    remove_data_dir(dir);
}

/// Makes the warm container the one `c` asks for: its process, its limits, its id and
/// its directory. On failure the container is removed: before its directory moved, with
/// that directory; after, the directory is the service's to remove.
fn take(
    root: &Path,
    dir: &Path,
    warm: Warm,
    c: &ClaimRequest,
) -> Result<monitor::Running, LauncherError> {
    let Warm {
        mut created,
        output,
        log,
        logs,
    } = warm;
    let bundle = c.data_dir.join("bundle");
    // The init takes its process on (identity, program lookup) while this monitor makes
    // the config and gives the container its limits, its directory and its id.
    let sent = cgroup_of(&created).and_then(|cg| {
        // The init takes its process at the usual CPU share, not the warm one.
        default_cpu_weight(&cg).map_err(|e| limits_error(&e))?;
        send_process(&mut created, c)?;
        let spec = c
            .params
            .spec(&c.id, &c.data_dir.join("rootfs"))
            .map_err(LauncherError::Setup)?;
        set_limits(&cg, &spec)?;
        Ok(spec)
    });
    let spec = match sent {
        Ok(s) => s,
        Err(e) => {
            discard_own(root, dir, &created);
            return Err(e);
        }
    };
    if let Err(e) = exchange(dir, &c.data_dir) {
        discard_own(root, dir, &created);
        return Err(LauncherError::sys(format!(
            "move {} to {}",
            dir.display(),
            c.data_dir.display()
        ))(e));
    }
    let warm_store = store(root);
    let main = Store::new(root);
    let wid = created.record.id.clone();
    if let Err(e) = rename_noreplace(&warm_store.dir(&wid), &main.dir(&c.id)) {
        abandon(&warm_store, &created);
        return Err(if e == nix::Error::EEXIST {
            LauncherError::Refused {
                kind: ErrorKind::AlreadyExists,
                message: format!("container with id {} already exists", c.id),
            }
        } else {
            LauncherError::sys(format!("move the state of {wid} to {}", c.id))(e)
        });
    }
    let rec = &mut created.record;
    rec.id = c.id.clone();
    rec.bundle = bundle.clone();
    rec.rootfs = c.data_dir.join("rootfs");
    rec.created = now_rfc3339();
    let done = save_state(&main, rec)
        .and_then(|()| {
            sandbox::write_config(&bundle, &spec)
                .map_err(LauncherError::io(format!("write {}", bundle.display())))
        })
        .and_then(|()| {
            created.process_taken().map_err(|e| LauncherError::Refused {
                kind: kind_of(&e),
                message: e.to_string(),
            })
        });
    if let Err(e) = done {
        abandon(&main, &created);
        return Err(e);
    }
    monitor::into_running(&main, created, output, logs, log)
}

/// Sends the request's process to the init, back at the usual priority. It is the
/// process of the config [`sandbox::Params::spec`] makes of the request.
fn send_process(created: &mut Created, c: &ClaimRequest) -> Result<(), LauncherError> {
    let late = LateProcess {
        args: c.params.args.clone(),
        env: c.params.env.clone(),
        cwd: c.params.cwd.clone().into(),
        uid: c.params.uid,
        gid: c.params.gid,
        additional_gids: Vec::new(),
        hostname: Some(sandbox::short_hostname(&c.id)),
    };
    // The request's process runs at the usual priority, and so does what is left of
    // the claim.
    set_nice(0, 0);
    set_nice(created.pid.as_raw(), 0);
    created
        .send_process(&late)
        .map_err(|e| LauncherError::Setup(format!("give the init its process: {e}")))
}

/// The warm container's cgroup, for its limits.
fn cgroup_of(created: &Created) -> Result<Cgroup, LauncherError> {
    let rec = &created.record;
    let path = CgroupPath::parse(Some(&rec.cgroup_path), &rec.id, rec.systemd_cgroup)
        .map_err(|e| LauncherError::Setup(e.to_string()))?;
    Cgroup::open_only(&path, SANDBOX_CONTROLLERS)
        .map_err(|e| LauncherError::Setup(format!("open the container's cgroup: {e}")))
}

fn limits_error(e: &dyn std::fmt::Display) -> LauncherError {
    LauncherError::Setup(format!("set the container's limits: {e}"))
}

/// Writes the request's limits to the container's cgroup (its CPU share is given back
/// before, by [`default_cpu_weight`]).
fn set_limits(cg: &Cgroup, spec: &oci_spec::runtime::Spec) -> Result<(), LauncherError> {
    // Only what a request sets: the device rules are the warm container's already.
    if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        let mut request = oci_spec::runtime::LinuxResources::default();
        request
            .set_memory(*r.memory())
            .set_pids(*r.pids())
            .set_cpu(r.cpu().clone());
        cg.apply(&request).map_err(|e| limits_error(&e))?;
    }
    Ok(())
}

/// Writes the claimed container's record under its id. The old record goes first: a
/// rename over an existing file costs ext4 a flush, and no one knows this id yet.
fn save_state(main: &Store, rec: &crate::runtime::state::Record) -> Result<(), LauncherError> {
    let lock = main
        .lock(&rec.id)
        .map_err(|e| LauncherError::Setup(e.to_string()))?;
    let path = main.dir(&rec.id).join(crate::runtime::state::STATE_FILE);
    std::fs::remove_file(&path).map_err(LauncherError::io(format!("remove {}", path.display())))?;
    main.save(&lock, rec)
        .map_err(|e| LauncherError::Setup(e.to_string()))
}

/// Swaps the warm container's directory with the (empty) one the service made for the
/// request: its removal waits until after the answer. Without one, a plain rename.
fn exchange(warm: &Path, request: &Path) -> nix::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(
        AT_FDCWD,
        warm,
        AT_FDCWD,
        request,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Err(nix::Error::ENOENT) => {
            renameat2(AT_FDCWD, warm, AT_FDCWD, request, RenameFlags::empty())
        }
        other => other,
    }
}

/// Gives a claimed container's cgroup the default CPU share back (see [`WARM_SHARES`]).
fn default_cpu_weight(cg: &Cgroup) -> std::io::Result<()> {
    use crate::runtime::linux::cgroups::CgroupMode;
    for (name, dir) in cg.host_dirs() {
        let (file, value) = if cg.mode() == CgroupMode::V2 {
            ("cpu.weight", "100")
        } else if name.split(',').any(|c| c == "cpu") {
            ("cpu.shares", "1024")
        } else {
            continue;
        };
        let path = dir.join(file);
        if path.exists() {
            std::fs::write(&path, value)?;
        }
    }
    Ok(())
}

/// `setpriority(PRIO_PROCESS, pid, nice)`; `pid` 0 is this process. Best effort: a
/// failure only costs speed.
fn set_nice(pid: i32, nice: i32) {
    // SAFETY: setpriority takes plain integers.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) };
    if r != 0 {
        tracing::debug!(
            "setpriority({pid}, {nice}): {}",
            std::io::Error::last_os_error()
        );
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> nix::Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        from,
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
}
