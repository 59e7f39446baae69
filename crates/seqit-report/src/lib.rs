//! Run directories in, reports out: `seqit report RUN_DIR...` reads what the pipeline
//! stages wrote (augmentation statistics, IT/SIT data, training metrics, evaluation
//! metrics and per-item results) and renders a self-contained HTML page with inline SVG
//! charts ([`render_html`]) or a Markdown summary ([`render_markdown`]).
//!
//! The page shows option shares per Seq-Instruct iteration next to the paper's, length
//! distributions, loss curves, a results table of IT vs SIT with confidence intervals
//! and deltas, the paper's Figure-3 plots against SeqEval depth (chains and steps
//! passed by program check, the judge's following rate and quality), which kinds of
//! steps fail, and a sample browser.

#![deny(missing_docs)]

mod load;
mod svg;
mod table;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

pub use load::{load_runs, Eval, LengthSet, Run, RunData, Training};
use svg::{bar_chart, escape, line_chart, Axes, Series};
use table::{html_table, markdown_table, Cell, Table};

/// How [`render_html`] and [`render_markdown`] render.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Page heading and HTML `<title>`; by default `seqit report: <run labels>` (HTML) or
    /// `seqit report` (Markdown).
    pub title: Option<String>,
}

/// One number of an evaluation, with its 95% interval when the eval computed one.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Dotted path of the number in `metrics.json`, less `scores`, `overall`, `pass@k` and
    /// `metrics` (`scores.overall.quality` → `quality`).
    pub name: String,
    /// The number, or the mean of a `{mean, ci95}` summary, in the eval's own unit.
    pub value: f64,
    /// Low and high ends of the 95% interval.
    pub ci: Option<(f64, f64)>,
}

/// Keys of `metrics.json` that hold settings, counts or breakdowns, not headline scores.
const NOT_SCORES: &[&str] = &[
    "settings",
    "by_depth",
    // Breakdowns shown in their own section or too fine for the results table.
    "verifiable_by_kind",
    "first_failed_step",
    "parse_failures",
    "outcomes",
    "samples_per_problem",
    "skipped_k",
    "items",
    "n",
    "problems",
    "samples",
    "steps",
    "counts",
    "seqit_version",
    "k",
    // Wall time of the evaluation: how long it took, not how well the model did.
    "seconds",
];
/// Path segments dropped from metric names (`scores.overall.quality` → `quality`).
const NAME_NOISE: &[&str] = &["scores", "overall", "pass@k", "metrics"];

/// The headline metrics of an evaluation: numbers and `{mean, ci95}` summaries, found
/// anywhere in `metrics.json` outside settings and breakdowns.
pub fn headline_metrics(metrics: &Value) -> Vec<Metric> {
    let mut out = Vec::new();
    walk(metrics, &mut Vec::new(), &mut out);
    out
}

fn walk(value: &Value, path: &mut Vec<String>, out: &mut Vec<Metric>) {
    let name = || {
        path.iter()
            .filter(|s| !NAME_NOISE.contains(&s.as_str()))
            .cloned()
            .collect::<Vec<_>>()
            .join(".")
    };
    match value {
        Value::Object(map) if map.contains_key("mean") => {
            if let Some(mean) = map["mean"].as_f64() {
                out.push(Metric {
                    name: name(),
                    value: mean,
                    ci: ci_of(value),
                });
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                if NOT_SCORES.contains(&key.as_str()) {
                    continue;
                }
                path.push(key.clone());
                walk(v, path, out);
                path.pop();
            }
        }
        Value::Number(n) if !path.is_empty() => {
            if let Some(v) = n.as_f64() {
                out.push(Metric {
                    name: name(),
                    value: v,
                    ci: None,
                });
            }
        }
        _ => {}
    }
}

fn ci_of(summary: &Value) -> Option<(f64, f64)> {
    let ci = summary.get("ci95")?.as_array()?;
    Some((ci.first()?.as_f64()?, ci.get(1)?.as_f64()?))
}

/// One point of a by-depth curve: (depth, mean, 95% interval).
pub type DepthPoint = (f64, f64, Option<(f64, f64)>);

/// `by_depth` scores of a SeqEval eval for one score, named by its path under each
/// depth (`["quality"]`, `["verifiable", "chain_pass_rate"]`).
pub fn by_depth(metrics: &Value, score: &[&str]) -> Vec<DepthPoint> {
    let Some(depths) = metrics["scores"]["by_depth"].as_object() else {
        return vec![];
    };
    let mut points: Vec<DepthPoint> = depths
        .iter()
        .filter_map(|(d, v)| {
            let depth: f64 = d.parse().ok()?;
            let summary = score.iter().fold(v, |v, key| &v[*key]);
            let mean = summary["mean"].as_f64()?;
            Some((depth, mean, ci_of(summary)))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// One Figure-3 chart: a score against SeqEval depth, one line per evaluated model.
struct DepthChart {
    /// The score's path under each depth of `by_depth`.
    score: &'static [&'static str],
    title: &'static str,
    y_label: &'static str,
    y_range: (f64, f64),
}

const DEPTH_CHARTS: [DepthChart; 4] = [
    DepthChart {
        score: &["verifiable", "chain_pass_rate"],
        title: "Chains followed (checked by program) by depth",
        y_label: "every step done, in order",
        y_range: (0.0, 1.0),
    },
    DepthChart {
        score: &["verifiable", "step_pass_rate"],
        title: "Steps done (checked by program) by depth",
        y_label: "steps done in order",
        y_range: (0.0, 1.0),
    },
    DepthChart {
        score: &["following_rate"],
        title: "Following rate (judged) by SeqEval depth",
        y_label: "following rate",
        y_range: (0.0, 1.0),
    },
    DepthChart {
        score: &["quality"],
        title: "Quality (judged) by SeqEval depth",
        y_label: "quality (1-5)",
        y_range: (1.0, 5.0),
    },
];

/// How one kind of step fared in one eval.
struct KindRate {
    group: String,
    steps: u64,
    pass_rate: f64,
}

/// Step pass rates by kind of one eval.
fn step_kinds(metrics: &Value) -> BTreeMap<String, KindRate> {
    let Some(kinds) = metrics["scores"]["verifiable_by_kind"].as_object() else {
        return BTreeMap::new();
    };
    kinds
        .iter()
        .filter_map(|(kind, v)| {
            let group = v["group"].as_str().unwrap_or("other").to_string();
            let rate = KindRate {
                group,
                steps: v["steps"].as_u64()?,
                pass_rate: v["pass_rate"].as_f64()?,
            };
            Some((kind.clone(), rate))
        })
        .collect()
}

/// The headline of one run: program-checked chain pass rates of its models, and SIT − IT
/// over the chains both answered, with a paired bootstrap CI.
pub struct Verdict {
    /// Label of the run ([`Run::label`]).
    pub run: String,
    /// (model label, chain pass rate)
    pub rates: Vec<(String, Metric)>,
    /// SIT − IT in chain pass rate, when the run has one IT and one SIT model.
    pub difference: Option<Metric>,
    /// Chains both the IT and the SIT model answered.
    pub shared: usize,
}

impl Verdict {
    /// One sentence on what the difference shows.
    pub fn conclusion(&self) -> String {
        let Some(d) = &self.difference else {
            return "no IT/SIT pair to compare".into();
        };
        let points = |v: f64| format!("{:+.1}", 100.0 * v);
        let ci = d.ci.map_or(String::new(), |(lo, hi)| {
            format!(" [{}, {}]", points(lo), points(hi))
        });
        let reading = match d.ci {
            Some((lo, _)) if lo > 0.0 => "SIT follows more chains than IT (the 95% CI excludes 0)",
            Some((_, hi)) if hi < 0.0 => "SIT follows fewer chains than IT (the 95% CI excludes 0)",
            Some(_) => "no difference shown (the 95% CI includes 0)",
            None => "no confidence interval",
        };
        format!(
            "SIT − IT = {} points{ci}, paired bootstrap over {} chains: {reading}",
            points(d.value),
            self.shared
        )
    }
}

/// Verdicts of the runs that have program-checked SeqEval results.
pub fn verdicts(data: &RunData) -> Vec<Verdict> {
    use seqit_eval::benchmarks::{BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED};
    let several = data.runs.len() > 1;
    let mut out = Vec::new();
    for run in &data.runs {
        let checked: Vec<&Eval> = run
            .evals
            .iter()
            .filter(|e| !e.chain_passed.is_empty())
            .collect();
        if checked.is_empty() {
            continue;
        }
        let rates = checked
            .iter()
            .filter_map(|e| {
                let summary = &e.metrics["scores"]["overall"]["verifiable"]["chain_pass_rate"];
                Some((
                    eval_label(run, e, several),
                    Metric {
                        name: "chain_pass_rate".into(),
                        value: summary["mean"].as_f64()?,
                        ci: ci_of(summary),
                    },
                ))
            })
            .collect();
        let find = |kind: &str| {
            let found: Vec<&&Eval> = checked
                .iter()
                .filter(|e| e.data.as_deref() == Some(kind))
                .collect();
            (found.len() == 1).then(|| found[0])
        };
        let (mut difference, mut shared) = (None, 0);
        if let (Some(it), Some(sit)) = (find("it"), find("sit")) {
            let flag = |b: bool| f64::from(u8::from(b));
            let (sit_scores, it_scores): (Vec<f64>, Vec<f64>) = sit
                .chain_passed
                .iter()
                .filter_map(|(id, s)| Some((flag(*s), flag(*it.chain_passed.get(id)?))))
                .unzip();
            shared = sit_scores.len();
            if shared > 0 {
                let value = (sit_scores.iter().sum::<f64>() - it_scores.iter().sum::<f64>())
                    / shared as f64;
                let ci = seqit_eval::metrics::bootstrap_paired_diff_ci(
                    &sit_scores,
                    &it_scores,
                    BOOTSTRAP_RESAMPLES,
                    0.95,
                    BOOTSTRAP_SEED,
                )
                .map(|ci| (ci.low, ci.high));
                difference = Some(Metric {
                    name: "sit_minus_it".into(),
                    value,
                    ci,
                });
            }
        }
        out.push(Verdict {
            run: run.label.clone(),
            rates,
            difference,
            shared,
        });
    }
    out
}

fn verdict_rates(v: &Verdict) -> String {
    v.rates
        .iter()
        .map(|(name, m)| format!("{name} {}", fmt_metric(&Some(m.clone()))))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A model column of the results table.
struct Column {
    label: String,
    data: Option<String>,
    run: usize,
}

struct Results {
    columns: Vec<Column>,
    /// (benchmark, metric) → value per column
    rows: BTreeMap<(String, String), Vec<Option<Metric>>>,
    /// Per run with one IT and one SIT model: (run label, IT column, SIT column).
    pairs: Vec<(String, usize, usize)>,
}

fn results(data: &RunData) -> Results {
    let several = data.runs.len() > 1;
    let mut columns: Vec<Column> = Vec::new();
    let mut cells: Vec<((String, String), usize, Metric)> = Vec::new();
    for (r, run) in data.runs.iter().enumerate() {
        for eval in &run.evals {
            let label = run.model_label(&eval.model, several);
            let col = match columns.iter().position(|c| c.label == label) {
                Some(i) => i,
                None => {
                    columns.push(Column {
                        label,
                        data: eval.data.clone(),
                        run: r,
                    });
                    columns.len() - 1
                }
            };
            for metric in headline_metrics(&eval.metrics) {
                cells.push(((eval.benchmark.clone(), metric.name.clone()), col, metric));
            }
        }
    }
    let mut rows: BTreeMap<(String, String), Vec<Option<Metric>>> = BTreeMap::new();
    for (key, col, metric) in cells {
        rows.entry(key).or_insert_with(|| vec![None; columns.len()])[col] = Some(metric);
    }
    for row in rows.values_mut() {
        row.resize(columns.len(), None);
    }
    let mut pairs = Vec::new();
    for (r, run) in data.runs.iter().enumerate() {
        let of = |kind: &str| -> Vec<usize> {
            columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.run == r && c.data.as_deref() == Some(kind))
                .map(|(i, _)| i)
                .collect()
        };
        if let ([it], [sit]) = (of("it").as_slice(), of("sit").as_slice()) {
            pairs.push((run.label.clone(), *it, *sit));
        }
    }
    Results {
        columns,
        rows,
        pairs,
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_metric(m: &Option<Metric>) -> String {
    match m {
        None => "–".into(),
        Some(m) => match m.ci {
            Some((lo, hi)) => format!(
                "{} [{}, {}]",
                fmt_value(m.value),
                fmt_value(lo),
                fmt_value(hi)
            ),
            None => fmt_value(m.value),
        },
    }
}

fn delta(row: &[Option<Metric>], it: usize, sit: usize) -> Option<f64> {
    Some(row[sit].as_ref()?.value - row[it].as_ref()?.value)
}

/// HTML class of a delta: `pos`, `neg`, or empty when it is 0.
fn sign_class(d: f64) -> &'static str {
    if d > 0.0 {
        "pos"
    } else if d < 0.0 {
        "neg"
    } else {
        ""
    }
}

/// A model's name followed by the data it was trained on, when known: `sit (SIT)`.
fn with_data(name: String, data: Option<&str>) -> String {
    match data {
        Some(d) => format!("{name} ({})", d.to_uppercase()),
        None => name,
    }
}

/// ` (label)` of a run when the report has several, else nothing.
fn run_suffix(label: &str, several: bool) -> String {
    if several {
        format!(" ({label})")
    } else {
        String::new()
    }
}

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

fn shares(iteration: &Value, key: &str) -> Option<Vec<f64>> {
    let map = iteration[key].as_object()?;
    Some(
        LETTERS
            .iter()
            .map(|l| map.get(*l).and_then(Value::as_f64).unwrap_or(0.0))
            .collect(),
    )
}

fn histogram(sets: &[(&str, &[usize])]) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let max = sets
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0);
    let bins = 10usize;
    let width = (max / bins + 1).max(1);
    let categories = (0..bins)
        .map(|b| format!("{}–{}", b * width, (b + 1) * width - 1))
        .collect();
    let series = sets
        .iter()
        .map(|(name, values)| {
            let mut counts = vec![0.0; bins];
            for v in values.iter() {
                counts[(v / width).min(bins - 1)] += 1.0;
            }
            (name.to_string(), counts)
        })
        .collect();
    (categories, series)
}

fn mean(values: &[usize]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<usize>() as f64 / values.len() as f64
    }
}

/// Title of the section on program-checked verdicts, in both reports.
const VERDICT_TITLE: &str = "Verdict: sequential following checked by program";

/// Every training stage of the runs, with its label.
fn trainings(data: &RunData) -> Vec<(String, &Training)> {
    let several = data.runs.len() > 1;
    data.runs
        .iter()
        .flat_map(|run| {
            run.trainings.iter().map(move |t| {
                let name = run.model_label(&t.name, several);
                (with_data(name, t.data.as_deref()), t)
            })
        })
        .collect()
}

/// Steps, first and last loss and tokens of each training stage.
fn training_table(trainings: &[(String, &Training)]) -> Table {
    let loss = |l: Option<&(f64, f64)>| l.map_or("–".into(), |l| format!("{:.4}", l.1));
    let mut table = Table::new(["run", "steps", "first loss", "last loss", "tokens"]);
    for (name, t) in trainings {
        table.rows.push(vec![
            name.as_str().into(),
            t.losses.len().to_string().into(),
            loss(t.losses.first()).into(),
            loss(t.losses.last()).into(),
            t.tokens.to_string().into(),
        ]);
    }
    table
}

/// Records and mean words per instruction and per response of a run's data sets;
/// `set_heading` heads the column of set names.
fn lengths_table(run: &Run, set_heading: &str) -> Table {
    let mut table = Table::new([
        set_heading,
        "records",
        "mean instruction words",
        "mean response words",
    ]);
    for set in &run.lengths {
        table.rows.push(vec![
            set.name.as_str().into(),
            set.instruction_words.len().to_string().into(),
            format!("{:.1}", mean(&set.instruction_words)).into(),
            format!("{:.1}", mean(&set.response_words)).into(),
        ]);
    }
    table
}

/// A row per (benchmark, metric), a column per model, then SIT − IT of each run with one
/// IT and one SIT model; `several` names that run in the delta's heading.
fn results_table(res: &Results, several: bool) -> Table {
    let mut table = Table::new(["benchmark", "metric"]);
    table.headings.extend(
        res.columns
            .iter()
            .map(|c| with_data(c.label.clone(), c.data.as_deref())),
    );
    table.headings.extend(
        res.pairs
            .iter()
            .map(|(label, _, _)| format!("Δ SIT − IT{}", run_suffix(label, several))),
    );
    for ((bench, metric), row) in &res.rows {
        let mut cells: Vec<Cell> = vec![bench.as_str().into(), metric.as_str().into()];
        cells.extend(row.iter().map(|m| Cell::from(fmt_metric(m))));
        cells.extend(
            res.pairs
                .iter()
                .map(|(_, it, sit)| match delta(row, *it, *sit) {
                    Some(d) => Cell {
                        class: Some(sign_class(d)),
                        ..Cell::from(format!("{d:+.3}"))
                    },
                    None => "–".into(),
                }),
        );
        table.rows.push(cells);
    }
    table
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.pos { color: #0a7a2f; } .neg { color: #b3261e; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
svg.chart { background: #fff; border: 1px solid #eee; max-width: 100%; height: auto; font-family: inherit; }
details { border: 1px solid #ddd; border-radius: 4px; margin: .3em 0; padding: .3em .6em; }
summary { cursor: pointer; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: .5em; border-radius: 3px; }
.muted { color: #777; }
"#;

/// The self-contained HTML page (no scripts, no external resources).
pub fn render_html(data: &RunData, options: &Options) -> String {
    let title = options.title.clone().unwrap_or_else(|| {
        format!(
            "seqit report: {}",
            data.runs
                .iter()
                .map(|r| r.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    let several = data.runs.len() > 1;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );

    h.push_str("<section id=\"data\"><h2>Data</h2>\n");
    let mut any_data = false;
    for run in &data.runs {
        if let Some(stats) = &run.augment {
            any_data = true;
            html_shares(&mut h, run, stats, several);
        }
        if !run.lengths.is_empty() {
            any_data = true;
            html_lengths(&mut h, run, several);
        }
    }
    if !any_data {
        h.push_str("<p class=\"muted\">No augmentation output found.</p>\n");
    }
    h.push_str("</section>\n");

    h.push_str("<section id=\"training\"><h2>Training</h2>\n");
    let trainings = trainings(data);
    if trainings.is_empty() {
        h.push_str("<p class=\"muted\">No training runs found.</p>\n");
    } else {
        let series: Vec<Series> = trainings
            .iter()
            .map(|(name, t)| Series {
                name: name.clone(),
                points: t.losses.clone(),
                errors: vec![],
            })
            .collect();
        h.push_str(&line_chart(
            &Axes {
                title: "Training loss",
                x_label: "step",
                y_label: "loss",
                y_range: None,
                integer_x: true,
            },
            &series,
        ));
        html_table(&mut h, Some("training"), &training_table(&trainings));
    }
    h.push_str("</section>\n");

    let verdicts = verdicts(data);
    if !verdicts.is_empty() {
        let _ = writeln!(h, "<section id=\"verdict\"><h2>{VERDICT_TITLE}</h2>");
        for v in &verdicts {
            let _ = writeln!(
                h,
                "<p>{}Chains followed (every step done, in order): {}.</p>\n<p><strong>{}</strong>.</p>",
                if several { format!("<em>{}</em>: ", escape(&v.run)) } else { String::new() },
                escape(&verdict_rates(v)),
                escape(&v.conclusion())
            );
        }
        h.push_str("</section>\n");
    }

    h.push_str("<section id=\"results\"><h2>Results</h2>\n");
    let res = results(data);
    if res.rows.is_empty() {
        h.push_str("<p class=\"muted\">No evaluation results found.</p>\n");
    } else {
        html_table(&mut h, Some("results"), &results_table(&res, several));
        h.push_str("<p class=\"muted\">Brackets: bootstrap 95% confidence intervals where the evaluation computed them.</p>\n");
    }
    h.push_str("</section>\n");

    h.push_str("<section id=\"seqeval-depth\"><h2>SeqEval by depth</h2>\n");
    let seqeval: Vec<(String, &Eval)> = data
        .runs
        .iter()
        .flat_map(|run| {
            run.evals
                .iter()
                .filter(|e| e.metrics["scores"]["by_depth"].is_object())
                .map(move |e| (eval_label(run, e, several), e))
        })
        .collect();
    if seqeval.is_empty() {
        h.push_str("<p class=\"muted\">No SeqEval results found.</p>\n");
    } else {
        h.push_str("<div class=\"charts\">");
        for chart in &DEPTH_CHARTS {
            let series: Vec<Series> = seqeval
                .iter()
                .filter_map(|(name, e)| {
                    let points = by_depth(&e.metrics, chart.score);
                    (!points.is_empty()).then(|| Series {
                        name: name.clone(),
                        errors: points.iter().map(|p| p.2).collect(),
                        points: points.iter().map(|p| (p.0, p.1)).collect(),
                    })
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            h.push_str(&line_chart(
                &Axes {
                    title: chart.title,
                    x_label: "depth (instructions in the chain)",
                    y_label: chart.y_label,
                    y_range: Some(chart.y_range),
                    integer_x: true,
                },
                &series,
            ));
        }
        h.push_str("</div>\n");
    }
    h.push_str("</section>\n");
    html_step_kinds(&mut h, &seqeval);

    h.push_str("<section id=\"samples\"><h2>Samples</h2>\n");
    let mut any_samples = false;
    for run in &data.runs {
        for eval in &run.evals {
            if eval.samples.is_empty() {
                continue;
            }
            any_samples = true;
            let _ = writeln!(
                h,
                "<h3>{} · {}</h3>",
                escape(&eval.benchmark),
                escape(&eval_label(run, eval, several))
            );
            for item in &eval.samples {
                html_sample(&mut h, item);
            }
        }
    }
    if !any_samples {
        h.push_str("<p class=\"muted\">No per-item results found.</p>\n");
    }
    h.push_str("</section>\n</body></html>\n");
    h
}

/// Which steps fail: step pass rate per kind group (a bar per model) and per kind (a
/// table, hardest kinds first), from program-checked SeqEval results.
fn html_step_kinds(h: &mut String, seqeval: &[(String, &Eval)]) {
    let models: Vec<(&str, BTreeMap<String, KindRate>)> = seqeval
        .iter()
        .map(|(name, e)| (name.as_str(), step_kinds(&e.metrics)))
        .filter(|(_, kinds)| !kinds.is_empty())
        .collect();
    if models.is_empty() {
        return;
    }
    h.push_str("<section id=\"step-kinds\"><h2>Which steps fail (checked by program)</h2>\n");
    let groups: Vec<String> = ["format", "content", "computation", "dependent"]
        .iter()
        .map(|g| g.to_string())
        .filter(|g| {
            models
                .iter()
                .any(|(_, k)| k.values().any(|v| &v.group == g))
        })
        .collect();
    let series: Vec<(String, Vec<f64>)> = models
        .iter()
        .map(|(name, kinds)| {
            let rates = groups
                .iter()
                .map(|g| {
                    let (steps, passed) = kinds
                        .values()
                        .filter(|v| &v.group == g)
                        .fold((0u64, 0.0), |(n, p), v| {
                            (n + v.steps, p + v.pass_rate * v.steps as f64)
                        });
                    if steps == 0 {
                        0.0
                    } else {
                        passed / steps as f64
                    }
                })
                .collect();
            (name.to_string(), rates)
        })
        .collect();
    h.push_str(&bar_chart(
        &Axes {
            title: "Step pass rate by kind of step",
            x_label: "kind of step",
            y_label: "steps done in order",
            y_range: Some((0.0, 1.0)),
            integer_x: false,
        },
        &groups,
        &series,
    ));
    let mut kinds: Vec<&String> = models.iter().flat_map(|(_, k)| k.keys()).collect();
    kinds.sort();
    kinds.dedup();
    let mean_rate = |kind: &String| {
        let rates: Vec<f64> = models
            .iter()
            .filter_map(|(_, k)| k.get(kind))
            .map(|v| v.pass_rate)
            .collect();
        rates.iter().sum::<f64>() / rates.len().max(1) as f64
    };
    kinds.sort_by(|a, b| mean_rate(a).total_cmp(&mean_rate(b)).then(a.cmp(b)));
    let mut table = Table::new(["step kind", "group"]);
    table
        .headings
        .extend(models.iter().map(|(name, _)| name.to_string()));
    for kind in kinds {
        let group = models
            .iter()
            .find_map(|(_, k)| k.get(kind))
            .map_or("", |v| v.group.as_str());
        let mut cells: Vec<Cell> = vec![kind.as_str().into(), group.into()];
        cells.extend(models.iter().map(|(_, k)| match k.get(kind) {
            Some(rate) => Cell {
                note: Some(rate.steps.to_string()),
                ..Cell::from(format!("{:.2}", rate.pass_rate))
            },
            None => "–".into(),
        }));
        table.rows.push(cells);
    }
    html_table(h, None, &table);
    h.push_str("<p class=\"muted\">Share of steps of each kind done in order (steps checked in brackets), hardest first.</p>\n</section>\n");
}

fn eval_label(run: &Run, eval: &Eval, several: bool) -> String {
    with_data(run.model_label(&eval.model, several), eval.data.as_deref())
}

fn html_shares(h: &mut String, run: &Run, stats: &Value, several: bool) {
    let iterations = stats["per_iteration"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reference = stats["paper_reference"].as_str().unwrap_or("the paper");
    let _ = writeln!(
        h,
        "<h3>Seq-Instruct option shares{}</h3><p>{} items, {} iterations; paper: {}.</p>",
        escape(&run_suffix(&run.label, several)),
        stats["items"],
        stats["iterations"],
        escape(reference)
    );
    let mut table = Table::new(["iteration", "classified"]);
    for l in LETTERS {
        table
            .headings
            .extend([format!("{l} (ours)"), format!("{l} (paper)")]);
    }
    table
        .headings
        .extend(["unparsed", "failed rewrites"].map(String::from));
    let mut categories = Vec::new();
    let (mut ours, mut paper) = (Vec::new(), Vec::new());
    for it in &iterations {
        let n = it["iteration"].as_u64().unwrap_or(0);
        let own = shares(it, "shares").unwrap_or_default();
        let theirs = shares(it, "paper_shares");
        let mut cells: Vec<Cell> = vec![n.to_string().into(), it["classified"].to_string().into()];
        for (i, v) in own.iter().enumerate() {
            let p = theirs
                .as_ref()
                .map_or("–".into(), |t| format!("{:.0}%", t[i]));
            cells.extend([format!("{v:.1}%").into(), p.into()]);
        }
        cells.extend([
            it["unparsed_classifications"].to_string().into(),
            it["failed_rewrites"].to_string().into(),
        ]);
        table.rows.push(cells);
        for (i, l) in LETTERS.iter().enumerate() {
            categories.push(format!("{n}{l}"));
            ours.push(own.get(i).copied().unwrap_or(0.0));
            paper.push(theirs.as_ref().map_or(0.0, |t| t[i]));
        }
    }
    html_table(h, Some("shares"), &table);
    h.push_str(&bar_chart(
        &Axes {
            title: "Option shares per iteration (iteration + option)",
            x_label: "iteration and option (A decompose, B prefix, C suffix, D keep)",
            y_label: "% of classified items",
            y_range: Some((0.0, 100.0)),
            integer_x: false,
        },
        &categories,
        &[
            ("this run".into(), ours),
            (format!("paper ({reference})"), paper),
        ],
    ));
}

fn html_lengths(h: &mut String, run: &Run, several: bool) {
    let _ = writeln!(
        h,
        "<h3>Lengths of the training data{}</h3>",
        escape(&run_suffix(&run.label, several))
    );
    html_table(h, Some("lengths"), &lengths_table(run, "set"));
    h.push_str("<div class=\"charts\">");
    for (title, pick) in [
        ("Instruction length (words)", true),
        ("Response length (words)", false),
    ] {
        let sets: Vec<(&str, &[usize])> = run
            .lengths
            .iter()
            .map(|s| {
                let v = if pick {
                    &s.instruction_words
                } else {
                    &s.response_words
                };
                (s.name.as_str(), v.as_slice())
            })
            .collect();
        let (categories, series) = histogram(&sets);
        h.push_str(&bar_chart(
            &Axes {
                title,
                x_label: "words",
                y_label: "records",
                y_range: None,
                integer_x: false,
            },
            &categories,
            &series,
        ));
    }
    h.push_str("</div>\n");
}

fn html_sample(h: &mut String, item: &Value) {
    let text = |v: &Value| v.as_str().map(String::from);
    let prompt = text(&item["prompt"])
        .or_else(|| text(&item["instruction"]))
        .or_else(|| text(&item["task_id"]))
        .unwrap_or_default();
    let mut verdicts = Vec::new();
    if let Some(d) = item["depth"].as_u64() {
        verdicts.push(format!("depth {d}"));
    }
    if let Some(f) = item["following"]["all_steps"].as_bool() {
        verdicts.push(if f {
            "follows all steps ✓".into()
        } else {
            "misses a step ✗".into()
        });
    }
    if let Some(q) = item["quality"]["rating"].as_f64() {
        verdicts.push(format!("quality {q}"));
    }
    if let Some(p) = item["passed"].as_bool() {
        verdicts.push(if p {
            "passed ✓".into()
        } else {
            "failed ✗".into()
        });
    }
    let short: String = prompt.chars().take(110).collect();
    let _ = write!(
        h,
        "<details class=\"sample\"><summary>{}{} <span class=\"muted\">{}</span></summary>",
        escape(&short),
        if prompt.chars().count() > 110 {
            "…"
        } else {
            ""
        },
        escape(&verdicts.join(" · "))
    );
    let _ = write!(h, "<p><b>Prompt</b></p><pre>{}</pre>", escape(&prompt));
    if let Some(steps) = item["sub_steps"].as_array() {
        let attempted = item["following"]["steps"].as_array();
        h.push_str("<p><b>Sub-steps</b></p><ol>");
        for (i, step) in steps.iter().enumerate() {
            let mark = match attempted.and_then(|a| a.get(i)).and_then(Value::as_bool) {
                Some(true) => " ✓",
                Some(false) => " ✗",
                None => "",
            };
            let _ = write!(
                h,
                "<li>{}{mark}</li>",
                escape(step.as_str().unwrap_or_default())
            );
        }
        h.push_str("</ol>");
    }
    if let Some(out) = text(&item["output"]).or_else(|| text(&item["completion"])) {
        let _ = write!(h, "<p><b>Response</b></p><pre>{}</pre>", escape(&out));
    }
    for (label, raw) in [
        ("Following verdict", &item["following"]["judge_raw"]),
        ("Quality verdict", &item["quality"]["judge_raw"]),
    ] {
        if let Some(raw) = raw.as_str() {
            let _ = write!(h, "<p><b>{label}</b></p><pre>{}</pre>", escape(raw));
        }
    }
    h.push_str("</details>\n");
}

/// A Markdown summary: option shares, training, results with deltas, SeqEval by depth.
pub fn render_markdown(data: &RunData, options: &Options) -> String {
    let several = data.runs.len() > 1;
    let mut m = String::new();
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| "seqit report".into());
    let _ = writeln!(m, "# {title}\n");
    let verdicts = verdicts(data);
    if !verdicts.is_empty() {
        let _ = writeln!(m, "## {VERDICT_TITLE}\n");
        for v in &verdicts {
            if several {
                let _ = write!(m, "*{}*: ", v.run);
            }
            let _ = writeln!(
                m,
                "Chains followed (every step done, in order): {}.\n\n**{}.**\n",
                verdict_rates(v),
                v.conclusion()
            );
        }
    }
    for run in &data.runs {
        if let Some(stats) = &run.augment {
            markdown_shares(&mut m, run, stats, several);
        }
        if !run.lengths.is_empty() {
            markdown_table(&mut m, &lengths_table(run, "data"));
        }
    }
    let trainings = trainings(data);
    if !trainings.is_empty() {
        m.push_str("## Training\n\n");
        markdown_table(&mut m, &training_table(&trainings));
    }
    let res = results(data);
    if !res.rows.is_empty() {
        m.push_str("## Results\n\n");
        // The Markdown headings of the deltas name no run, even with several.
        markdown_table(&mut m, &results_table(&res, false));
    }
    for run in &data.runs {
        for eval in &run.evals {
            if let Some(table) = depth_table(&eval.metrics) {
                let _ = writeln!(
                    m,
                    "## SeqEval by depth — {}\n",
                    eval_label(run, eval, several)
                );
                markdown_table(&mut m, &table);
            }
        }
    }
    m
}

/// The option shares of each Seq-Instruct iteration, the paper's in one column.
fn markdown_shares(m: &mut String, run: &Run, stats: &Value, several: bool) {
    let _ = writeln!(
        m,
        "## Seq-Instruct option shares{} (paper: {})\n",
        if several {
            format!(" — {}", run.label)
        } else {
            String::new()
        },
        stats["paper_reference"].as_str().unwrap_or("?")
    );
    let mut table = Table::new(["iteration", "classified"]);
    table.headings.extend(LETTERS.map(String::from));
    table.headings.push("paper A/B/C/D".into());
    for it in stats["per_iteration"].as_array().into_iter().flatten() {
        let paper = shares(it, "paper_shares").map_or("–".into(), |p| {
            p.iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join("/")
        });
        let mut cells: Vec<Cell> = vec![
            it["iteration"].to_string().into(),
            it["classified"].to_string().into(),
        ];
        let own = shares(it, "shares").unwrap_or_default();
        cells.extend(own.iter().map(|v| Cell::from(format!("{v:.1}%"))));
        cells.push(paper.into());
        table.rows.push(cells);
    }
    markdown_table(m, &table);
}

/// A SeqEval eval's scores by depth, a column per score it has; `None` when it has
/// none.
fn depth_table(metrics: &Value) -> Option<Table> {
    let columns: Vec<(&str, Vec<DepthPoint>)> = DEPTH_CHARTS
        .iter()
        .map(|chart| (chart.y_label, by_depth(metrics, chart.score)))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if columns.is_empty() {
        return None;
    }
    let mut table = Table::new(["depth"]);
    table
        .headings
        .extend(columns.iter().map(|(name, _)| name.to_string()));
    for depth in 1..=4 {
        let mut cells: Vec<Cell> = vec![depth.to_string().into()];
        cells.extend(columns.iter().map(|(_, points)| {
            let point = points.iter().find(|p| p.0 == f64::from(depth));
            Cell::from(point.map_or("–".into(), |p| {
                fmt_metric(&Some(Metric {
                    name: String::new(),
                    value: p.1,
                    ci: p.2,
                }))
            }))
        }));
        table.rows.push(cells);
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_metrics_are_scores_only() {
        let metrics = serde_json::json!({
            "benchmark": "seqeval",
            "seconds": 22.6,
            "items": 5,
            "scores": {
                "overall": {
                    "following_rate": {"mean": 0.5, "ci95": [0.25, 0.75], "n": 4},
                    "quality": {"mean": null, "ci95": null, "n": 0},
                    "parse_failures": {"following": 1}
                }
            }
        });
        let found = headline_metrics(&metrics);
        let names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["following_rate"]);
        assert_eq!(found[0].value, 0.5);
        assert_eq!(found[0].ci, Some((0.25, 0.75)));
    }
}
