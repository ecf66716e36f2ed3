//! What a scenario found: named figures with units, and the targets of
//! issue 8 marked met or not.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procs::Cpu;

/// Peak RSS every scenario must stay under.
pub const RSS_TARGET_BYTES: u64 = 150 * 1024 * 1024;

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// What ran, with its sizes.
    pub setup: String,
    pub figures: Vec<Figure>,
    pub targets: Vec<Target>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub goal: String,
    pub met: bool,
}

impl Report {
    pub fn new(scenario: &'static str, setup: String) -> Self {
        Self {
            scenario,
            setup,
            figures: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn figure(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
        });
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// CPU milliseconds per delivery of hookrelay, nats-server and Redis
    /// over a phase of `deliveries`, each and summed, as figures named
    /// `{prefix}cpu_ms_per_delivery` and so on; returns the sum. A server
    /// whose CPU could not be read is left out, with a note saying why, and
    /// so is the sum.
    pub fn cpu_per_delivery(&mut self, prefix: &str, used: &Cpu, deliveries: u64) -> Option<f64> {
        let per = |seconds: f64| seconds * 1000.0 / deliveries.max(1) as f64;
        let mut total = Some(per(used.hookrelay));
        self.figure(
            format!("{prefix}cpu_ms_per_delivery_hookrelay"),
            per(used.hookrelay),
            "ms",
        );
        for (name, seconds) in [("nats", &used.nats), ("redis", &used.redis)] {
            match seconds {
                Ok(seconds) => {
                    self.figure(
                        format!("{prefix}cpu_ms_per_delivery_{name}"),
                        per(*seconds),
                        "ms",
                    );
                    total = total.map(|t| t + per(*seconds));
                }
                Err(why) => {
                    self.note(format!(
                        "{prefix}cpu_ms_per_delivery_{name} and {prefix}cpu_ms_per_delivery left out: {why}"
                    ));
                    total = None;
                }
            }
        }
        if let Some(total) = total {
            self.figure(format!("{prefix}cpu_ms_per_delivery"), total, "ms");
        }
        total
    }

    pub fn target(&mut self, goal: String, met: bool) {
        self.targets.push(Target { goal, met });
    }

    /// A figure by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value)
    }

    /// `delivered` per second next to the bare `ceiling`, and their ratio.
    pub fn against_ceiling(&mut self, delivered: f64, ceiling: f64) {
        self.figure("deliveries_per_sec", delivered, "/s");
        self.figure("ceiling_per_sec", ceiling, "/s");
        self.figure("ratio_to_ceiling", 100.0 * delivered / ceiling, "%");
    }

    /// p50, p99 and p99.9 of a latency histogram in microseconds, as ms.
    pub fn latency(&mut self, histogram: &Histogram<u64>) {
        if histogram.is_empty() {
            return;
        }
        for (name, quantile) in [
            ("latency_p50", 0.5),
            ("latency_p99", 0.99),
            ("latency_p999", 0.999),
        ] {
            let ms = histogram.value_at_quantile(quantile) as f64 / 1000.0;
            self.figure(name, ms, "ms");
        }
        self.figure("latency_max", histogram.max() as f64 / 1000.0, "ms");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== {}: {}", self.scenario, self.setup)?;
        for figure in &self.figures {
            let value = if figure.value.abs() >= 100.0 || figure.value.fract() == 0.0 {
                format!("{:.0}", figure.value)
            } else if figure.value.abs() < 1.0 {
                format!("{:.4}", figure.value)
            } else {
                format!("{:.2}", figure.value)
            };
            writeln!(f, "  {:<34} {:>12} {}", figure.name, value, figure.unit)?;
        }
        for target in &self.targets {
            let mark = if target.met { "met    " } else { "NOT MET" };
            writeln!(f, "  [{mark}] {}", target.goal)?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}
