//! One bench scenario's verdict, in the same shape for every bench of the workspace: the
//! figure over several runs (median, min, max), the baseline measured in the same runs,
//! their ratio, the goal and whether it was met. `tests/scripts/bench.sh` runs every bench
//! and prints these rows as one table, plus one JSON line per scenario.
//!
//! Each bench calls [`Scenario::report`] once per scenario. The row goes to stdout; when
//! `SHELFSYNC_BENCH_REPORT` names a file, the JSON line is appended to it and the table row
//! to the same name with `.md` appended. Under `SHELFSYNC_BENCH_QUICK=1` ([`quick`]) the
//! benches run tiny sizes to prove they still work: the goal is then "not judged".

use super::measure::stats;
use serde::Serialize;
use std::io::Write;

/// Whether the bench runs in quick mode (`SHELFSYNC_BENCH_QUICK=1`): tiny sizes, one run,
/// no verdict. CI runs it to prove each scenario still works.
pub fn quick() -> bool {
    std::env::var("SHELFSYNC_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// A size knob: `name` from the environment, else `quick_default` in quick mode, else
/// `full_default`.
pub fn knob(name: &str, full_default: usize, quick_default: usize) -> usize {
    let default = if quick() { quick_default } else { full_default };
    super::measure::env_usize(name, default)
}

/// What a scenario must reach to meet its goal.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Goal {
    /// The median of the per-run ratios (figure / baseline) is at least this.
    RatioAtLeast(f64),
    /// The median of the per-run ratios is at most this (for costs and latencies).
    RatioAtMost(f64),
    /// The median figure is at least this (in the figure's unit).
    AtLeast(f64),
    /// The median figure is at most this (in the figure's unit).
    AtMost(f64),
}

impl Goal {
    fn met(self, median_figure: f64, median_ratio: Option<f64>) -> bool {
        match self {
            Goal::RatioAtLeast(goal) => median_ratio.is_some_and(|r| r >= goal),
            Goal::RatioAtMost(goal) => median_ratio.is_some_and(|r| r <= goal),
            Goal::AtLeast(goal) => median_figure >= goal,
            Goal::AtMost(goal) => median_figure <= goal,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Goal::RatioAtLeast(goal) => format!(">= {goal}x"),
            Goal::RatioAtMost(goal) => format!("<= {goal}x"),
            Goal::AtLeast(goal) => format!(">= {goal} {unit}"),
            Goal::AtMost(goal) => format!("<= {goal} {unit}"),
        }
    }
}

/// One scenario's measurements, filled run by run.
#[derive(Debug, Clone)]
pub struct Scenario {
    name: String,
    unit: String,
    baseline_name: Option<String>,
    goal: Goal,
    figures: Vec<f64>,
    baselines: Vec<f64>,
}

/// The JSON line of one scenario.
#[derive(Debug, Serialize)]
struct Line<'a> {
    scenario: &'a str,
    unit: &'a str,
    runs: usize,
    median: f64,
    min: f64,
    max: f64,
    baseline: Option<&'a str>,
    baseline_median: Option<f64>,
    ratio_median: Option<f64>,
    ratio_min: Option<f64>,
    ratio_max: Option<f64>,
    goal: Goal,
    /// `None` in quick mode: sizes too small to judge.
    met: Option<bool>,
    quick: bool,
}

impl Scenario {
    /// A scenario named `name` (for example `local_sales`), whose figure is in `unit`.
    pub fn new(name: impl Into<String>, unit: impl Into<String>, goal: Goal) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
            baseline_name: None,
            goal,
            figures: Vec::new(),
            baselines: Vec::new(),
        }
    }

    /// Names the baseline each run is compared with (for example "raw SQLite loop").
    pub fn baseline(mut self, name: impl Into<String>) -> Self {
        self.baseline_name = Some(name.into());
        self
    }

    /// One run's figure without a baseline.
    pub fn record(&mut self, figure: f64) {
        self.figures.push(figure);
    }

    /// One run's figure and the baseline measured in the same run.
    pub fn record_pair(&mut self, figure: f64, baseline: f64) {
        self.figures.push(figure);
        self.baselines.push(baseline);
    }

    /// The median of the per-run ratios, if there is a baseline.
    pub fn ratio_median(&self) -> Option<f64> {
        self.ratios().map(|r| stats(&r).0)
    }

    fn ratios(&self) -> Option<Vec<f64>> {
        (!self.baselines.is_empty()).then(|| {
            self.figures
                .iter()
                .zip(&self.baselines)
                .map(|(figure, baseline)| figure / baseline)
                .collect()
        })
    }

    /// Prints the scenario's row and appends its JSON line (and row) to the report file.
    /// Panics when no run was recorded: a scenario that measured nothing must not pass.
    pub fn report(&self) {
        assert!(!self.figures.is_empty(), "scenario {} recorded no run", self.name);
        let (median, min, max) = stats(&self.figures);
        let ratios = self.ratios();
        let ratio = ratios.as_deref().map(stats);
        let quick = quick();
        let met = (!quick).then(|| self.goal.met(median, ratio.map(|r| r.0)));
        let line = Line {
            scenario: &self.name,
            unit: &self.unit,
            runs: self.figures.len(),
            median,
            min,
            max,
            baseline: self.baseline_name.as_deref(),
            baseline_median: (!self.baselines.is_empty()).then(|| stats(&self.baselines).0),
            ratio_median: ratio.map(|r| r.0),
            ratio_min: ratio.map(|r| r.1),
            ratio_max: ratio.map(|r| r.2),
            goal: self.goal,
            met,
            quick,
        };
        let json = serde_json::to_string(&line).expect("a scenario line serializes");
        let row = self.row(&line);
        println!("{row}");
        println!("BENCH_RESULT {json}");
        if let Some(path) = std::env::var_os("SHELFSYNC_BENCH_REPORT") {
            append(std::path::Path::new(&path), &json);
            let mut rows = path;
            rows.push(".md");
            append(std::path::Path::new(&rows), &row);
        }
    }

    fn row(&self, line: &Line<'_>) -> String {
        let figure = |v: f64| format_figure(v);
        let ratio = match (line.ratio_median, line.ratio_min, line.ratio_max) {
            (Some(m), Some(lo), Some(hi)) => format!("{m:.2}x ({lo:.2}-{hi:.2})"),
            _ => "-".into(),
        };
        let baseline = match (line.baseline, line.baseline_median) {
            (Some(name), Some(median)) => format!("{} ({name})", figure(median)),
            _ => "-".into(),
        };
        let met = match line.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not judged (quick)",
        };
        format!(
            // The columns of the table tests/scripts/bench.sh prints.
            "| {} | {} {} | {} | {} | {} | {} | {} | {} | {} |",
            line.scenario,
            figure(line.median),
            line.unit,
            figure(line.min),
            figure(line.max),
            line.runs,
            baseline,
            ratio,
            self.goal.describe(&self.unit),
            met
        )
    }
}

fn format_figure(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

fn append(path: &std::path::Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening the bench report {}: {e}", path.display()));
    writeln!(file, "{line}").expect("writing the bench report");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_goal_is_judged_on_the_median_of_the_per_run_ratios() {
        let mut s = Scenario::new("x", "ev/s", Goal::RatioAtLeast(3.0)).baseline("raw");
        s.record_pair(30.0, 10.0);
        s.record_pair(20.0, 10.0);
        s.record_pair(40.0, 10.0);
        assert_eq!(s.ratio_median(), Some(3.0));
        assert!(Goal::RatioAtLeast(3.0).met(30.0, s.ratio_median()));
        assert!(!Goal::RatioAtLeast(3.1).met(30.0, s.ratio_median()));
    }

    #[test]
    fn absolute_goals_compare_the_median_figure() {
        assert!(Goal::AtMost(50.0).met(49.9, None));
        assert!(!Goal::AtMost(50.0).met(50.1, None));
        assert!(Goal::AtLeast(200_000.0).met(200_000.0, None));
        assert!(
            !Goal::RatioAtLeast(1.0).met(10.0, None),
            "a ratio goal without a baseline is not met"
        );
    }

    #[test]
    #[should_panic(expected = "recorded no run")]
    fn a_scenario_without_runs_cannot_report() {
        Scenario::new("empty", "ev/s", Goal::AtLeast(1.0)).report();
    }
}
