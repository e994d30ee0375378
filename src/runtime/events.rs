//! `events`: a container's resource usage and OOM kills, as runc prints them
//! (`{"type":"stats","id":..,"data":{"cpu":..,"memory":..,"pids":..}}`, `{"type":"oom",..}`).

use serde_json::{Value, json};

use super::error::{Error, Result};
use super::id;
use super::linux::cgroups::{Cgroup, CgroupStats};
use super::ops::cgroup_path;
use super::state::{Record, Store};
use super::status::{Status, status};

/// A container being watched.
pub struct Watch {
    store: Store,
    rec: Record,
    cg: Cgroup,
}

impl Watch {
    /// Opens a container that has not stopped.
    pub fn open(store: &Store, id: &str) -> Result<Self> {
        id::validate(id)?;
        let rec = store.load(id)?;
        let cg = Cgroup::open(&cgroup_path(&rec)?)?;
        let w = Watch {
            store: store.clone(),
            rec,
            cg,
        };
        if !w.running() {
            return Err(Error::status(format!("container {id} is not running")));
        }
        Ok(w)
    }

    /// Whether the container is still there and not stopped.
    pub fn running(&self) -> bool {
        self.store.dir(&self.rec.id).exists() && status(&self.store, &self.rec) != Status::Stopped
    }

    /// A `stats` event.
    pub fn stats(&self) -> Result<Value> {
        let s = self.cg.stats()?;
        Ok(json!({"type": "stats", "id": self.rec.id, "data": data(&s)}))
    }

    /// An `oom` event.
    pub fn oom_event(&self) -> Value {
        json!({"type": "oom", "id": self.rec.id})
    }

    /// Processes killed by the OOM killer so far (`None` when the kernel does not say).
    pub fn oom_kills(&self) -> Option<u64> {
        self.cg
            .stats()
            .ok()
            .and_then(|s| s.memory)
            .and_then(|m| m.oom_kill_count)
    }
}

/// runc's `types.Stats` shape, with the fields corral reads; an unlimited limit is
/// reported as the largest u64, as runc does on cgroup v2.
fn data(s: &CgroupStats) -> Value {
    let mut d = serde_json::Map::new();
    if let Some(c) = &s.cpu {
        d.insert(
            "cpu".into(),
            json!({"usage": {
                "total": c.usage_total_ns,
                "kernel": c.usage_system_ns,
                "user": c.usage_user_ns,
            }}),
        );
    }
    if let Some(m) = &s.memory {
        let mut usage = json!({
            "limit": m.limit.unwrap_or(u64::MAX),
            "usage": m.usage,
            "failcnt": 0,
        });
        if let Some(p) = m.peak {
            usage["max"] = json!(p);
        }
        d.insert("memory".into(), json!({"usage": usage}));
    }
    if let Some(p) = &s.pids {
        let mut v = json!({"current": p.current});
        if let Some(l) = p.limit {
            v["limit"] = json!(l);
        }
        d.insert("pids".into(), v);
    }
    Value::Object(d)
}
