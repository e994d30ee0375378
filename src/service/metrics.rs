//! The service's Prometheus metrics (`GET /metrics`), kept with `prometheus-client`
//! (the Prometheus project's own Rust client: typed families, text encoding).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::runs::result::RunResult;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FromLabel {
    from: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    executions: Family<VerdictLabel, Counter>,
    runs: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    pub queued: Gauge,
    pub running: Gauge,
    containers: Gauge,
    warm: Gauge,
    created: Family<FromLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("corral");
        let executions = Family::<VerdictLabel, Counter>::default();
        let runs = Family::<OutcomeLabel, Counter>::default();
        // 1 ms .. ~65 s.
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let queued = Gauge::default();
        let running = Gauge::default();
        let containers = Gauge::default();
        let warm = Gauge::default();
        let created = Family::<FromLabel, Counter>::default();
        registry.register(
            "executions",
            "Executions of judged runs (one per step or test case), by verdict",
            executions.clone(),
        );
        registry.register(
            "runs",
            "Judged run requests, by outcome (ok, failed, rejected, error)",
            runs.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Time to answer a judged run, queueing included",
            latency.clone(),
        );
        registry.register(
            "run_queue_depth",
            "Judged runs waiting for a slot",
            queued.clone(),
        );
        registry.register("runs_in_progress", "Judged runs executing", running.clone());
        registry.register(
            "containers_alive",
            "Containers in the runtime state roots (service containers and run containers), \
             warm ones left out",
            containers.clone(),
        );
        registry.register(
            "containers_warm",
            "Containers made ahead of requests (judged runs' and the API's), waiting for one",
            warm.clone(),
        );
        registry.register(
            "containers_created",
            "Containers created through the API, by what they were made from: warm (a warm \
             container of an image), image (an image, at the request) or bundle (an upload)",
            created.clone(),
        );
        Metrics {
            created,
            registry,
            executions,
            runs,
            latency,
            queued,
            running,
            containers,
            warm,
        }
    }

    /// Counts a finished run and its executions.
    pub fn observe(&self, result: &RunResult, seconds: f64) {
        for step in &result.steps {
            for r in &step.results {
                self.executions
                    .get_or_create(&VerdictLabel {
                        verdict: r.verdict().as_str().into(),
                    })
                    .inc();
            }
        }
        let outcome = match result.status {
            super::runs::result::Status::Ok => "ok",
            _ => "failed",
        };
        self.count(outcome);
        self.latency.observe(seconds);
    }

    /// Counts a container created through the API from `from` (`warm`, `image`,
    /// `bundle`).
    pub fn count_created(&self, from: &str) {
        self.created
            .get_or_create(&FromLabel { from: from.into() })
            .inc();
    }

    /// Counts a run that ended without a result: `rejected` (429) or `error`.
    pub fn count(&self, outcome: &str) {
        self.runs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The text exposition, with `(alive, warm)` as the current counts of containers.
    pub fn encode(&self, (alive, warm): (i64, i64)) -> Result<String, std::fmt::Error> {
        self.containers.set(alive);
        self.warm.set(warm);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
