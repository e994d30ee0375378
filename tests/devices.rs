//! `linux.resources.devices` through the CLI: what a container may open, from `create`
//! and after `update`, and the eBPF device program corral attaches to the container's
//! cgroup2 directory (on a v2 host its only cgroup; on a hybrid host its cgroup in the
//! unified hierarchy, beside the v1 devices controller).
//!
//! The assertions hold on both kinds of host. On a hybrid host one more checks that the
//! program enforces the rules by itself: with the v1 controller opened up to every
//! device, a denied device stays denied. A host without cgroup2 fails these tests: the
//! program cannot be checked there.

mod common;

use std::path::{Path, PathBuf};

use common::{Bundle, CORRAL, Corral, Outcome, tempdir};
use serde_json::{Value, json};

/// A character device number no driver registers (the "local/experimental" range):
/// when the device cgroup lets an open through, the kernel answers ENXIO.
const PROBE: (u32, u32) = (61, 0);

const DENIED: &str = "Operation not permitted";
const NO_DRIVER: &str = "No such device or address";

/// The container's cgroup2 directory, where corral attaches the program.
fn cgroup2_dir(c: &Corral, id: &str) -> PathBuf {
    let rel = c.cgroup_path(id);
    let rel = rel.trim_start_matches('/');
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup").join(rel)
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup/unified").join(rel)
    } else {
        panic!("no cgroup2 mount on this host: the eBPF device program cannot be checked")
    }
}

fn hybrid() -> bool {
    !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The number of device programs attached to the cgroup2 directory `dir` itself
/// (`BPF_PROG_QUERY`, attach type `BPF_CGROUP_DEVICE`).
fn attached_programs(dir: &Path) -> u32 {
    corral::runtime::linux::cgroups::attached_device_programs(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .len() as u32
}

/// A running container (`sleep`) with `/dev/probe` (see [`PROBE`]) and the devices
/// rules of `corral spec`, or `rules` in their place.
fn running(c: &Corral, name: &str, rules: Option<Value>) -> String {
    let id = c.id(name);
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]).push(
        "/linux/devices",
        json!({"path": "/dev/probe", "type": "c", "major": PROBE.0, "minor": PROBE.1,
               "fileMode": 0o666, "uid": 0, "gid": 0}),
    );
    if let Some(r) = rules {
        b.set("/linux/resources/devices", r);
    }
    c.create_and_start(&id, &b);
    id
}

/// What the container gets when it opens /dev/null for writing and reading, /dev/zero
/// and /dev/probe for reading (in that order): "" when the open succeeded, else the
/// shell's error (`sh: can't open '/dev/zero': Operation not permitted`).
fn probe(c: &Corral, id: &str) -> [String; 4] {
    let out = c
        .exec(&[
            "exec",
            id,
            "sh",
            "-c",
            "wr() { echo \"w $1:$( (exec 3>\"$1\") 2>&1 )\"; }; \
             rd() { echo \"r $1:$( (exec 3<\"$1\") 2>&1 )\"; }; \
             wr /dev/null; rd /dev/null; rd /dev/zero; rd /dev/probe",
        ])
        .ok();
    let lines = out.lines();
    let want = [
        "w /dev/null:",
        "r /dev/null:",
        "r /dev/zero:",
        "r /dev/probe:",
    ];
    assert_eq!(lines.len(), want.len(), "{out}");
    std::array::from_fn(|i| {
        let rest = lines[i].strip_prefix(want[i]);
        rest.unwrap_or_else(|| panic!("line {i}: {out}"))
            .to_string()
    })
}

#[track_caller]
fn assert_denied(got: &str) {
    assert!(
        got.contains(DENIED),
        "not refused by the device cgroup: {got:?}"
    );
}

/// /dev/probe opened past the device cgroup: ENXIO from the kernel, no driver.
#[track_caller]
fn assert_no_driver(got: &str) {
    assert!(got.contains(NO_DRIVER), "not let through: {got:?}");
}

/// `corral update -r` with these device rules, which must succeed.
fn update(c: &Corral, id: &str, rules: Value) {
    try_update(c, id, rules).ok();
}

fn try_update(c: &Corral, id: &str, rules: Value) -> Outcome {
    let dir = tempdir("corral-devices-");
    let file = dir.path().join("r.json");
    std::fs::write(&file, json!({ "devices": rules }).to_string()).unwrap();
    c.exec(&["update", "-r", file.to_str().unwrap(), id])
}

fn deny_all() -> Value {
    json!({"allow": false, "access": "rwm"})
}

fn char_rule(major: u32, minor: u32, access: &str) -> Value {
    json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": access})
}

#[test]
fn the_default_rules_allow_the_standard_devices_only() {
    let c = Corral::new("dev-default");
    let spec_rules = common::base_spec()["linux"]["resources"]["devices"].clone();
    assert_eq!(
        spec_rules,
        json!([deny_all()]),
        "corral spec changed its rules"
    );
    let id = running(&c, "a", None);
    assert_eq!(attached_programs(&cgroup2_dir(&c, &id)), 1);
    let [null_w, null_r, zero_r, probe_r] = probe(&c, &id);
    assert_eq!([null_w, null_r, zero_r], ["", "", ""]);
    assert_denied(&probe_r);
}

#[test]
fn update_changes_what_the_container_may_open() {
    let c = Corral::new("dev-update");
    let id = running(&c, "a", None);
    let dir = cgroup2_dir(&c, &id);

    // /dev/null read-only, nothing else (update appends no default rules).
    update(&c, &id, json!([deny_all(), char_rule(1, 3, "r")]));
    assert_eq!(
        attached_programs(&dir),
        1,
        "the old program was not replaced"
    );
    let [null_w, null_r, zero_r, probe_r] = probe(&c, &id);
    assert_denied(&null_w);
    assert_eq!(null_r, "");
    assert_denied(&zero_r);
    assert_denied(&probe_r);

    // Null read-write, zero, and the probe device.
    update(
        &c,
        &id,
        json!([
            deny_all(),
            char_rule(1, 3, "rw"),
            char_rule(1, 5, "r"),
            char_rule(PROBE.0, PROBE.1, "r")
        ]),
    );
    assert_eq!(attached_programs(&dir), 1);
    let [null_w, null_r, zero_r, probe_r] = probe(&c, &id);
    assert_eq!([null_w, null_r, zero_r], ["", "", ""]);
    assert_no_driver(&probe_r);

    if hybrid() {
        // The program alone enforces: open the v1 controller to every device, and the
        // write to /dev/null, which the program refuses, stays refused.
        update(&c, &id, json!([deny_all(), char_rule(1, 3, "r")]));
        let v1 = common::cgroup_dir("devices", &c.cgroup_path(&id));
        std::fs::write(v1.join("devices.allow"), "a").unwrap();
        let list = std::fs::read_to_string(v1.join("devices.list")).unwrap();
        assert_eq!(list.trim(), "a *:* rwm");
        let [null_w, null_r, zero_r, probe_r] = probe(&c, &id);
        assert_denied(&null_w);
        assert_eq!(null_r, "");
        assert_denied(&zero_r);
        assert_denied(&probe_r);
    }

    // Everything allowed: the program is detached.
    update(&c, &id, json!([{"allow": true, "access": "rwm"}]));
    assert_eq!(attached_programs(&dir), 0);
    let [null_w, null_r, zero_r, probe_r] = probe(&c, &id);
    assert_eq!([null_w, null_r, zero_r], ["", "", ""]);
    assert_no_driver(&probe_r);
}

#[test]
fn rules_that_allow_everything_attach_nothing() {
    let c = Corral::new("dev-allow");
    let id = running(&c, "a", Some(json!([{"allow": true, "access": "rwm"}])));
    assert_eq!(attached_programs(&cgroup2_dir(&c, &id)), 0);
    assert_no_driver(&probe(&c, &id)[3]);
    // No rules at all: nothing either.
    let id = c.id("b");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]).remove("/linux/resources/devices");
    c.create_and_start(&id, &b);
    assert_eq!(attached_programs(&cgroup2_dir(&c, &id)), 0);
}

/// Denying part of a wildcard exception is something the v1 kernel silently ignores.
/// On v2 corral refuses the list by index (as runc does), in `create` and `update`; on a
/// hybrid host the v1 controller decides alone (as before there was a program): the
/// container is made or updated, and no program is left attached.
#[test]
fn a_hole_in_a_wildcard_rule() {
    let c = Corral::new("dev-hole");
    let rules = json!([
        deny_all(),
        {"allow": true, "type": "c", "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}
    ]);
    let needles = [
        "linux.resources.devices[2]: invalid value c 1:3 w",
        "wildcard exception c *:* rwm",
    ];
    let id = running(&c, "a", None);
    let dir = cgroup2_dir(&c, &id);
    assert_eq!(attached_programs(&dir), 1);
    let out = try_update(&c, &id, rules.clone());
    if hybrid() {
        out.ok();
        assert_eq!(attached_programs(&dir), 0);
    } else {
        out.one_line_error(&needles);
        assert_eq!(
            attached_programs(&dir),
            1,
            "a refused update changed the program"
        );
    }

    let id = c.id("b");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"])
        .set("/linux/resources/devices", rules);
    if hybrid() {
        c.create_and_start(&id, &b);
        assert_eq!(attached_programs(&cgroup2_dir(&c, &id)), 0);
    } else {
        c.create(&id, &b).one_line_error(&needles);
        c.assert_nothing_left(&id, Some(&b));
    }
}

#[test]
fn features_report_device_rules_on_cgroup_v2() {
    common::require_root();
    let out = std::process::Command::new(CORRAL)
        .arg("features")
        .output()
        .unwrap();
    let out = Outcome::from_output("corral features", out).ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("features is JSON");
    assert_eq!(v["linux"]["cgroup"]["v2"], true, "{v}");
    assert_eq!(
        v["annotations"]["org.corral.cgroup.v2.devices.enabled"], "true",
        "{v}"
    );
}
