//! Hand-written inline SVG charts: line charts and grouped bar charts with axes, ticks
//! and a legend. Small on purpose: the report needs a few chart kinds, not a library.

use std::fmt::Write;

/// A chart's size and the margins around its plot area, in SVG units: the title above
/// it, the axis labels left of and below it, the legend right of it.
struct Canvas {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

/// Every chart's canvas.
const CANVAS: Canvas = Canvas {
    width: 640.0,
    height: 320.0,
    left: 60.0,
    right: 150.0,
    top: 30.0,
    bottom: 45.0,
};

impl Canvas {
    /// x of the plot area's left and right edges.
    fn plot_x(&self) -> (f64, f64) {
        (self.left, self.width - self.right)
    }

    /// y of the plot area's bottom and top edges (SVG's y grows downwards).
    fn plot_y(&self) -> (f64, f64) {
        (self.height - self.bottom, self.top)
    }
}

/// Colour-blind-safe palette (Okabe–Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Optional error bars per point (low, high), same order as `points`.
    pub errors: Vec<Option<(f64, f64)>>,
}

pub struct Axes<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// Fixed y range (else from the data).
    pub y_range: Option<(f64, f64)>,
    /// Integer x ticks only (steps, depths).
    pub integer_x: bool,
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_ticks(lo: f64, hi: f64, integer: bool) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    if integer {
        step = step.max(1.0).round();
    }
    let start = (lo / step).ceil() * step;
    (0..)
        .map(|i| start + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-6)
        .collect()
}

fn fmt_tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e6 {
        format!("{}", v as i64)
    } else if v.abs() >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        let (x0, x1) = CANVAS.plot_x();
        x0 + (x - self.x.0) / (self.x.1 - self.x.0).max(1e-12) * (x1 - x0)
    }
    fn py(&self, y: f64) -> f64 {
        let (y0, y1) = CANVAS.plot_y();
        y0 - (y - self.y.0) / (self.y.1 - self.y.0).max(1e-12) * (y0 - y1)
    }
}

fn open(svg: &mut String, axes: &Axes, kind: &str) {
    let (x0, x1) = CANVAS.plot_x();
    let _ = write!(
        svg,
        r#"<svg class="chart {kind}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><title>{t}</title><text x="{cx}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{t}</text>"#,
        t = escape(axes.title),
        w = CANVAS.width,
        h = CANVAS.height,
        // The title is centred over the plot area, not the legend.
        cx = (x0 + x1) / 2.0,
    );
}

fn axes_lines(svg: &mut String, frame: &Frame, axes: &Axes, x_ticks: &[(f64, String)]) {
    let (x0, x1) = CANVAS.plot_x();
    let (y0, y1) = CANVAS.plot_y();
    let _ = write!(
        svg,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>"##
    );
    for tick in nice_ticks(frame.y.0, frame.y.1, false) {
        let y = frame.py(tick);
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{tx}" y="{ty:.1}" text-anchor="end" font-size="11">{l}</text>"##,
            tx = x0 - 6.0,
            ty = y + 4.0,
            l = fmt_tick(tick)
        );
    }
    for (x, label) in x_ticks {
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y2}" stroke="#333"/><text x="{x:.1}" y="{ty}" text-anchor="middle" font-size="11">{l}</text>"##,
            y2 = y0 + 4.0,
            ty = y0 + 16.0,
            l = escape(label)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{cx}" y="{by}" text-anchor="middle" font-size="12">{xl}</text><text transform="translate(14 {cy}) rotate(-90)" text-anchor="middle" font-size="12">{yl}</text>"#,
        cx = (x0 + x1) / 2.0,
        by = CANVAS.height - 8.0,
        cy = (y0 + y1) / 2.0,
        xl = escape(axes.x_label),
        yl = escape(axes.y_label)
    );
}

fn legend(svg: &mut String, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let y = CANVAS.top + 10.0 + i as f64 * 18.0;
        let x = CANVAS.plot_x().1 + 12.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{ry}" width="12" height="12" fill="{c}"/><text class="legend" x="{tx}" y="{ty}" font-size="11">{n}</text>"#,
            ry = y - 10.0,
            c = PALETTE[i % PALETTE.len()],
            tx = x + 17.0,
            ty = y,
            n = escape(name)
        );
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// One line per series (with markers and optional error bars).
pub fn line_chart(axes: &Axes, series: &[Series]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let x = range(points().map(|p| p.0));
    let y = axes.y_range.unwrap_or_else(|| {
        let errs = series
            .iter()
            .flat_map(|s| s.errors.iter().flatten().flat_map(|e| [e.0, e.1]));
        let (lo, hi) = range(points().map(|p| p.1).chain(errs));
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    });
    let frame = Frame { x, y };
    let mut svg = String::new();
    open(&mut svg, axes, "line-chart");
    let ticks: Vec<(f64, String)> = nice_ticks(x.0, x.1, axes.integer_x)
        .into_iter()
        .map(|t| (frame.px(t), fmt_tick(t)))
        .collect();
    axes_lines(&mut svg, &frame, axes, &ticks);
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", frame.px(*px), frame.py(*py)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" data-name="{n}" fill="none" stroke="{color}" stroke-width="2" points="{p}"/>"#,
            n = escape(&s.name),
            p = path.join(" ")
        );
        if s.points.len() <= 40 {
            for (j, (px, py)) in s.points.iter().enumerate() {
                let (cx, cy) = (frame.px(*px), frame.py(*py));
                if let Some(Some((lo, hi))) = s.errors.get(j) {
                    let _ = write!(
                        svg,
                        r#"<line x1="{cx:.1}" y1="{a:.1}" x2="{cx:.1}" y2="{b:.1}" stroke="{color}" stroke-width="1.5"/>"#,
                        a = frame.py(*lo),
                        b = frame.py(*hi)
                    );
                }
                let _ = write!(
                    svg,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3.5" fill="{color}"><title>{n}: {py:.3}</title></circle>"#,
                    n = escape(&s.name)
                );
            }
        }
    }
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

/// Grouped bars: one group per category, one bar per series in each.
pub fn bar_chart(axes: &Axes, categories: &[String], series: &[(String, Vec<f64>)]) -> String {
    let hi = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let y = axes
        .y_range
        .unwrap_or((0.0, if hi > 0.0 { hi * 1.1 } else { 1.0 }));
    let frame = Frame {
        x: (0.0, categories.len().max(1) as f64),
        y,
    };
    let mut svg = String::new();
    open(&mut svg, axes, "bar-chart");
    let ticks: Vec<(f64, String)> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (frame.px(i as f64 + 0.5), c.clone()))
        .collect();
    axes_lines(&mut svg, &frame, axes, &ticks);
    let group = frame.px(1.0) - frame.px(0.0);
    let bar = group * 0.8 / series.len().max(1) as f64;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        for (i, v) in values.iter().enumerate() {
            let x = frame.px(i as f64) + group * 0.1 + s as f64 * bar;
            let top = frame.py(*v);
            let _ = write!(
                svg,
                r#"<rect class="bar" x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"><title>{n} {c}: {v:.1}</title></rect>"#,
                w = bar.max(1.0),
                h = (frame.py(y.0) - top).max(0.0),
                n = escape(name),
                c = escape(categories.get(i).map_or("", |c| c.as_str()))
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 1.0, false),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(nice_ticks(1.0, 4.0, true), vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn line_chart_places_points_inside_the_frame() {
        let svg = line_chart(
            &Axes {
                title: "t <1>",
                x_label: "x",
                y_label: "y",
                y_range: Some((0.0, 1.0)),
                integer_x: true,
            },
            &[Series {
                name: "IT".into(),
                points: vec![(1.0, 0.0), (4.0, 1.0)],
                errors: vec![None, Some((0.5, 1.0))],
            }],
        );
        assert!(svg.contains("t &lt;1&gt;"));
        // x=1 → left edge, y=0 → bottom; x=4 → right edge, y=1 → top
        assert!(svg.contains(r#"points="60.0,275.0 490.0,30.0""#), "{svg}");
    }
}
