//! Property test of the user-token policy: random `config.json` documents mixing what it
//! allows and what it refuses, checked against an oracle written apart from the policy,
//! from DESIGN.md ("no host bind mounts outside the bundle, no host namespaces, no added
//! capabilities, no hooks, no devices, seccomp present") and what the runtime does with
//! each field. The oracle's rules, one per field:
//!
//! * `root.path` is the bundle's `rootfs`; `linux.rootfsPropagation` is not shared;
//!   masked and read-only paths include the runtime spec's defaults.
//! * mounts: destinations absolute without `..`; a bind (type `bind` or option
//!   `bind`/`rbind`) has a source inside the bundle (lexically, no `..`); any other mount
//!   is proc, sysfs, tmpfs, devpts, mqueue, cgroup or cgroup2 with a name, not a path,
//!   as source; proc only at /proc, sysfs only at /sys, cgroups only under
//!   /sys/fs/cgroup, and nothing else at or under /proc; sysfs and cgroups read-only (the
//!   last of `ro`/`rw`); no shared propagation; no id mapping of host id 0.
//! * process: `noNewPrivileges` true; capabilities listed (absent, the runtime leaves a
//!   root process all of them), each set within the default set; no AppArmor profile or
//!   SELinux label; no negative OOM score; no real-time scheduling or I/O class, no
//!   negative nice; `RLIMIT_RTPRIO` 0 and `RLIMIT_NICE` at most 20.
//! * namespaces: new pid, ipc, uts, mount and network ones; none joined by path.
//! * no id mapping of host id 0; no `linux.devices`; device cgroup rules that deny every
//!   device first, then allow only mknod or the standard devices (null, zero, full,
//!   random, urandom, tty, ptmx, pts).
//! * sysctls: well-formed names of namespaced ones (ipc: `kernel.msg*`, `kernel.sem`,
//!   `kernel.shm*`, `fs.mqueue.*`; network: `net.*`) whose namespace is new.
//! * seccomp present, restricting something, without a listener or SPEC_ALLOW.
//! * no hooks, cgroupsPath, mountLabel, intelRdt, personality, netDevices, unified.
//!
//! The property: the set of fields the policy names equals the oracle's (so a config
//! passes exactly when it asks for nothing refused). Seeded, see
//! [`crate::testing::seeded_runner`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use oci_spec::runtime::{Spec, get_default_maskedpaths, get_default_readonly_paths};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

use super::prop_oracle as oracle;
use super::{Strictness, check, default_capabilities};

const BUNDLE: &str = "/var/lib/corral/containers/c1/bundle";
const CASES: u32 = 3000;

/// One of `values`, the first (the safe choice, in most lists) seven times in eight: so
/// that a fair share of the configs ask for nothing refused, and the policy's "pass" is
/// tested too.
fn pick(values: Vec<Value>) -> impl Strategy<Value = Value> + Clone {
    prop_oneof![7 => Just(values[0].clone()), 1 => select(values)]
}

fn mount() -> impl Strategy<Value = Value> {
    let typ = pick(vec![
        json!("proc"),
        json!("sysfs"),
        json!("tmpfs"),
        json!("devpts"),
        json!("mqueue"),
        json!("cgroup"),
        json!("cgroup2"),
        json!("bind"),
        json!("none"),
        json!("ext4"),
        json!("overlay"),
        Value::Null,
    ]);
    let source = pick(vec![
        Value::Null,
        json!("proc"),
        json!("tmpfs"),
        json!("/dev/sda1"),
        json!("data"),
        json!("./data/sub"),
        json!(format!("{BUNDLE}/data")),
        json!(BUNDLE),
        json!("/etc"),
        json!("../../etc"),
        json!("data/../../x"),
        json!("/var/lib/corral/containers/c10/bundle/data"),
        json!(""),
    ]);
    let destination = pick(vec![
        json!("/proc"),
        json!("/proc/sys"),
        json!("/sys"),
        json!("/sys/fs/cgroup"),
        json!("/sys/fs/cgroup/x"),
        json!("/dev"),
        json!("/tmp"),
        json!("/"),
        json!("/./proc"),
        json!("data"),
        json!("/a/../proc"),
        json!("/procx"),
    ]);
    let options = subsequence(
        vec![
            "rbind", "bind", "ro", "rw", "nosuid", "rshared", "shared", "rslave", "ro",
        ],
        0..4,
    )
    .prop_shuffle();
    let idmap = pick(vec![
        Value::Null,
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        json!([{"containerID": 0, "hostID": 0, "size": 1}]),
        json!([{"containerID": 0, "hostID": 0, "size": 0}]),
    ]);
    let random =
        (typ, source, destination, options, idmap).prop_map(|(typ, source, dest, opts, idmap)| {
            let mut m = Map::new();
            put(&mut m, "destination", dest);
            put(&mut m, "type", typ);
            put(&mut m, "source", source);
            put(&mut m, "options", json!(opts));
            put(&mut m, "uidMappings", idmap);
            Value::Object(m)
        });
    let safe = select(vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["rw", "ro"]}),
        json!({"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]}),
    ]);
    prop_oneof![4 => safe, 1 => random]
}

fn capabilities() -> impl Strategy<Value = Value> {
    let defaults: Vec<&str> = default_capabilities().to_vec();
    let set = prop_oneof![
        16 => subsequence(defaults.clone(), 0..=defaults.len()).prop_map(|s| json!(s)),
        1 => (subsequence(defaults, 0..3), select(vec!["CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_NET_ADMIN"]))
            .prop_map(|(mut s, extra)| { s.push(extra); json!(s) }),
        1 => Just(Value::Null),
    ];
    prop_oneof![
        12 => vec(set, 5).prop_map(|sets| {
            let mut m = Map::new();
            for (name, set) in ["bounding", "effective", "permitted", "inheritable", "ambient"].iter().zip(sets) {
                put(&mut m, name, set);
            }
            Value::Object(m)
        }),
        1 => Just(Value::Null),
    ]
}

fn process() -> impl Strategy<Value = Value> {
    let fields = (
        pick(vec![json!(true), json!(true), json!(false), Value::Null]),
        capabilities(),
        pick(vec![Value::Null, json!(""), json!("unconfined")]),
        pick(vec![
            Value::Null,
            json!(""),
            json!("system_u:system_r:spc_t:s0"),
        ]),
        pick(vec![Value::Null, json!(-1000), json!(0), json!(500)]),
        pick(vec![
            Value::Null,
            json!({"policy": "SCHED_FIFO", "priority": 10}),
            json!({"policy": "SCHED_OTHER", "nice": -5}),
            json!({"policy": "SCHED_BATCH", "nice": 10}),
        ]),
        pick(vec![
            Value::Null,
            json!({"class": "IOPRIO_CLASS_RT", "priority": 0}),
            json!({"class": "IOPRIO_CLASS_BE", "priority": 4}),
        ]),
        pick(vec![
            json!([]),
            json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]),
            json!([{"type": "RLIMIT_RTPRIO", "hard": 0, "soft": 0}]),
            json!([{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}, {"type": "RLIMIT_RTPRIO", "hard": 5, "soft": 0}]),
            json!([{"type": "RLIMIT_NICE", "hard": 20, "soft": 20}]),
            json!([{"type": "RLIMIT_NICE", "hard": 40, "soft": 0}]),
        ]),
        pick(vec![json!(0), json!(1000)]),
    );
    prop_oneof![
        12 => fields.prop_map(|(nnp, caps, aa, se, oom, sched, io, rl, uid)| {
            let mut m = Map::new();
            put(&mut m, "args", json!(["sh"]));
            put(&mut m, "cwd", json!("/"));
            put(&mut m, "user", json!({"uid": uid, "gid": uid}));
            put(&mut m, "noNewPrivileges", nnp);
            put(&mut m, "capabilities", caps);
            put(&mut m, "apparmorProfile", aa);
            put(&mut m, "selinuxLabel", se);
            put(&mut m, "oomScoreAdj", oom);
            put(&mut m, "scheduler", sched);
            put(&mut m, "ioPriority", io);
            put(&mut m, "rlimits", rl);
            Value::Object(m)
        }),
        1 => Just(Value::Null),
    ]
}

fn namespaces() -> impl Strategy<Value = Value> {
    let all = vec![
        "pid", "network", "ipc", "uts", "mount", "cgroup", "user", "time",
    ];
    let n = all.len();
    // Mostly all of them (each namespace left out is a violation of its own).
    let listed = prop_oneof![
        8 => Just(all.clone()),
        1 => subsequence(all, 0..=n),
    ];
    (listed, vec(prop::bool::weighted(0.02), n)).prop_map(|(types, with_path)| {
        json!(
            types
                .iter()
                .zip(with_path)
                .map(|(t, p)| if p {
                    json!({"type": t, "path": format!("/proc/1/ns/{t}")})
                } else {
                    json!({"type": t})
                })
                .collect::<Vec<_>>()
        )
    })
}

fn device_rules() -> impl Strategy<Value = Value> {
    let deny_all = pick(vec![
        json!({"allow": false, "access": "rwm"}),
        json!({"allow": false, "type": "a"}),
    ]);
    let rule = pick(vec![
        json!({"allow": false, "access": "rwm"}),
        json!({"allow": true, "access": "rwm"}),
        json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}),
        json!({"allow": true, "type": "c", "major": 1, "minor": 9, "access": ""}),
        json!({"allow": true, "type": "c", "major": 136, "access": "rw"}),
        json!({"allow": true, "type": "c", "access": "m"}),
        json!({"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"}),
        json!({"allow": true, "type": "b", "major": -1, "minor": -1, "access": "m"}),
        json!({"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}),
        json!({"allow": true, "type": "c", "major": 1, "access": "r"}),
        json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwx"}),
        json!({"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}),
    ]);
    prop_oneof![
        12 => (deny_all, vec(rule.clone(), 0..3)).prop_map(|(first, mut rest)| {
            rest.insert(0, first);
            json!(rest)
        }),
        1 => vec(rule, 0..3).prop_map(|r| json!(r)),
        1 => Just(Value::Null),
    ]
}

fn seccomp() -> impl Strategy<Value = Value> {
    let base = pick(vec![
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}),
        json!({"defaultAction": "SCMP_ACT_ERRNO"}),
        json!({"defaultAction": "SCMP_ACT_ALLOW"}),
        json!({"defaultAction": "SCMP_ACT_LOG", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}),
        json!({"defaultAction": "SCMP_ACT_KILL_PROCESS"}),
    ]);
    prop_oneof![
        12 => (base, prop::bool::weighted(0.05), prop::bool::weighted(0.05)).prop_map(|(mut s, listener, spec_allow)| {
            if listener {
                s["listenerPath"] = json!("/run/x.sock");
            }
            if spec_allow {
                s["flags"] = json!(["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]);
            }
            s
        }),
        1 => Just(Value::Null),
    ]
}

fn linux() -> impl Strategy<Value = Value> {
    let masked = get_default_maskedpaths();
    let readonly = get_default_readonly_paths();
    let paths = |defaults: Vec<String>| {
        let fewer = defaults[1..].to_vec();
        let mut more = defaults.clone();
        more.push("/proc/interrupts".into());
        pick(vec![
            json!(defaults),
            json!(more),
            json!(fewer),
            Value::Null,
        ])
    };
    let some_sysctl = subsequence(
        vec![
            "net.ipv4.ip_forward",
            "kernel.shmmax",
            "kernel.sem",
            "kernel.msgmax",
            "fs.mqueue.msg_max",
            "kernel.core_pattern",
            "kernel.domainname",
            "vm.overcommit_memory",
            "net./../kernel/core_pattern",
            "net..x",
        ],
        0..3,
    )
    .prop_map(|keys| {
        json!(
            keys.into_iter()
                .map(|k| (k.to_string(), json!("1")))
                .collect::<Map<_, _>>()
        )
    });
    let sysctl = prop_oneof![4 => Just(Value::Null), 1 => some_sysctl];
    let idmap = pick(vec![
        Value::Null,
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        json!([{"containerID": 0, "hostID": 0, "size": 65536}]),
        json!([{"containerID": 1000, "hostID": 0, "size": 0}]),
    ]);
    let rare = |v: Value| prop_oneof![19 => Just(Value::Null), 1 => Just(v)];
    let owned = (
        rare(json!("/x")),
        pick(vec![
            Value::Null,
            Value::Null,
            json!(""),
            json!("system_u:object_r:x:s0"),
        ]),
        rare(json!({"closID": "x"})),
        rare(json!({"domain": "LINUX"})),
        pick(vec![
            Value::Null,
            Value::Null,
            json!({}),
            json!({"eth0": {}}),
        ]),
        pick(vec![
            Value::Null,
            Value::Null,
            json!({}),
            json!({"memory.max": "max"}),
        ]),
        rare(json!([{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}])),
        pick(vec![
            Value::Null,
            json!("rslave"),
            json!("private"),
            json!("shared"),
            json!("rshared"),
        ]),
    );
    (
        namespaces(),
        (idmap.clone(), idmap),
        device_rules(),
        sysctl,
        seccomp(),
        (paths(masked), paths(readonly)),
        owned,
    )
        .prop_map(
            |(ns, (uids, gids), devices, sysctl, seccomp, (masked, ro), owned)| {
                let (cgroups, label, rdt, personality, netdev, unified, nodes, propagation) = owned;
                let mut resources = Map::new();
                put(&mut resources, "devices", devices);
                put(&mut resources, "unified", unified);
                let mut m = Map::new();
                put(&mut m, "namespaces", ns);
                put(&mut m, "uidMappings", uids);
                put(&mut m, "gidMappings", gids);
                put(&mut m, "resources", Value::Object(resources));
                put(&mut m, "sysctl", sysctl);
                put(&mut m, "seccomp", seccomp);
                put(&mut m, "maskedPaths", masked);
                put(&mut m, "readonlyPaths", ro);
                put(&mut m, "cgroupsPath", cgroups);
                put(&mut m, "mountLabel", label);
                put(&mut m, "intelRdt", rdt);
                put(&mut m, "personality", personality);
                put(&mut m, "netDevices", netdev);
                put(&mut m, "devices", nodes);
                put(&mut m, "rootfsPropagation", propagation);
                Value::Object(m)
            },
        )
}

fn config() -> impl Strategy<Value = Value> {
    let root = pick(vec![
        json!({"path": "rootfs"}),
        json!({"path": "rootfs"}),
        json!({"path": "rootfs/", "readonly": true}),
        json!({"path": "/"}),
        json!({"path": "../rootfs"}),
        json!({"path": "rootfs/sub"}),
        Value::Null,
    ]);
    let hooks = pick(vec![
        Value::Null,
        json!({}),
        json!({"prestart": [], "poststop": []}),
        json!({"prestart": [{"path": "/bin/sh"}]}),
        json!({"createRuntime": [{"path": "/bin/sh"}]}),
        json!({"startContainer": [{"path": "/bin/sh"}]}),
        json!({"poststop": [{"path": "/bin/sh"}]}),
    ]);
    let linux = prop_oneof![12 => linux(), 1 => Just(Value::Null)];
    (root, process(), vec(mount(), 0..3), hooks, linux).prop_map(
        |(root, process, mounts, hooks, linux)| {
            let mut m = Map::new();
            put(&mut m, "ociVersion", json!("1.0.2"));
            put(&mut m, "root", root);
            put(&mut m, "process", process);
            put(&mut m, "mounts", json!(mounts));
            put(&mut m, "hooks", hooks);
            put(&mut m, "linux", linux);
            Value::Object(m)
        },
    )
}

/// Sets `key` unless `value` is null (absent).
fn put(m: &mut Map<String, Value>, key: &str, value: Value) {
    if !value.is_null() {
        m.insert(key.to_string(), value);
    }
}

#[test]
fn user_policy_refuses_exactly_what_the_oracle_refuses() {
    let mut runner = crate::testing::seeded_runner(CASES);
    let unread = AtomicU32::new(0);
    let passed = AtomicU32::new(0);
    let result = runner.run(&config(), |doc| {
        // Documents oci-spec cannot read never reach the policy (a 400 before it).
        let Ok(spec) = serde_json::from_value::<Spec>(doc.clone()) else {
            unread.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let found: BTreeSet<String> = match check(&spec, Path::new(BUNDLE), Strictness::Enforce) {
            Ok(()) => BTreeSet::new(),
            Err(v) => v.into_iter().map(|v| v.field).collect(),
        };
        let expected = oracle::refused_fields(&doc, BUNDLE);
        if expected.is_empty() {
            passed.fetch_add(1, Ordering::Relaxed);
        }
        if found != expected {
            return Err(TestCaseError::fail(format!(
                "policy names {found:?}, oracle {expected:?}"
            )));
        }
        // An admin token relaxes everything.
        if check(&spec, Path::new(BUNDLE), Strictness::Relaxed).is_err() {
            return Err(TestCaseError::fail("refused under Relaxed"));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator makes documents oci-spec reads: the cases are real ones.
    let (unread, passed) = (unread.into_inner(), passed.into_inner());
    eprintln!("policy property: {CASES} cases, {passed} configs passed, {unread} did not parse");
    assert!(unread < CASES / 100, "{unread} documents did not parse");
    // Both verdicts were tested.
    assert!(passed > CASES / 100, "only {passed} configs passed");
}
