//! Training curves: loss against step (top panel) and learning rate against step
//! (bottom panel) for one or more `smelt train --log` files, drawn as SVG with
//! `plotters`. The SVG backend writes text as `<text>` elements, so no fonts are read.

use plotters::prelude::*;
use std::path::Path;

/// One logged step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogPoint {
    /// The step number.
    pub step: f64,
    /// The loss at that step.
    pub loss: f64,
    /// The learning rate used, when logged.
    pub lr: Option<f64>,
}

/// One run's curve and its legend entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry (the log file's name).
    pub label: String,
    /// The steps, in log order.
    pub points: Vec<LogPoint>,
}

/// Why a plot cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The log cannot be read.
    #[error("{path}: cannot read: {message}")]
    Read {
        /// The log file.
        path: String,
        /// The system's reason.
        message: String,
    },
    /// A line is not a log record.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The log file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The log has no steps.
    #[error("{path}: the log has no steps")]
    Empty {
        /// The log file.
        path: String,
    },
    /// Drawing failed.
    #[error("cannot draw the plot: {0}")]
    Draw(String),
}

/// Reads a JSONL training log: one object per line with numeric `step` and `loss`, and
/// optionally `lr`; blank lines are skipped.
pub fn read_log(path: &Path) -> Result<Vec<LogPoint>, PlotError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PlotError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    parse_log(&text, &shown)
}

/// Parses the text of a JSONL training log; `path` names it in errors.
pub fn parse_log(text: &str, path: &str) -> Result<Vec<LogPoint>, PlotError> {
    let mut points = Vec::new();
    for (k, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fail = |message: String| PlotError::Parse {
            path: path.to_string(),
            line: k + 1,
            message,
        };
        let record: serde_json::Value =
            serde_json::from_str(line).map_err(|e| fail(format!("not JSON: {e}")))?;
        let number = |key: &str| record.get(key).and_then(serde_json::Value::as_f64);
        let step =
            number("step").ok_or_else(|| fail("expected a number field \"step\"".to_string()))?;
        let loss =
            number("loss").ok_or_else(|| fail("expected a number field \"loss\"".to_string()))?;
        points.push(LogPoint {
            step,
            loss,
            lr: number("lr"),
        });
    }
    if points.is_empty() {
        return Err(PlotError::Empty {
            path: path.to_string(),
        });
    }
    Ok(points)
}

/// Series colours: distinguishable, and readable on white.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

const WIDTH: u32 = 960;
const LOSS_PANEL_HEIGHT: u32 = 460;
const LR_PANEL_HEIGHT: u32 = 240;

/// The SVG text of the loss and learning-rate curves of `series`, with a legend.
pub fn training_curves(series: &[Series]) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw(series, &mut svg).map_err(|e| PlotError::Draw(e.to_string()))?;
    Ok(svg)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(series: &[Series], svg: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(svg, (WIDTH, LOSS_PANEL_HEIGHT + LR_PANEL_HEIGHT))
        .into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(LOSS_PANEL_HEIGHT);
    let points = || series.iter().flat_map(|s| s.points.iter());
    let steps = padded_range(points().map(|p| p.step), 0.0);
    let losses = padded_range(points().map(|p| p.loss), 0.05);

    let mut loss_chart = ChartBuilder::on(&top)
        .caption("training loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(steps.clone(), losses)?;
    loss_chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (k, s) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let line = s
            .points
            .iter()
            .filter(|p| p.loss.is_finite())
            .map(|p| (p.step, p.loss));
        loss_chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
            .label(s.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
            });
    }
    loss_chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(120, 120, 120))
        .label_font(("sans-serif", 14))
        .draw()?;

    let has_lr = points().any(|p| p.lr.is_some());
    let lrs = padded_range(points().filter_map(|p| p.lr), 0.05);
    let mut lr_chart = ChartBuilder::on(&bottom)
        .caption(
            if has_lr {
                "learning rate"
            } else {
                "learning rate (not logged)"
            },
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(steps, lrs)?;
    lr_chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("lr")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (k, s) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let line = s.points.iter().filter_map(|p| p.lr.map(|lr| (p.step, lr)));
        lr_chart.draw_series(LineSeries::new(line, colour.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}

/// The range of `values`, widened by `pad` of its span on each side, and never empty
/// (a single step or a constant learning rate still gets an axis).
fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> std::ops::Range<f64> {
    let (low, high) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !low.is_finite() {
        return 0.0..1.0;
    }
    // Halves first, so that spans near f64::MAX stay finite.
    let (mid, half_span) = (low / 2.0 + high / 2.0, high / 2.0 - low / 2.0);
    if half_span <= f64::EPSILON * mid.abs().max(1e-300) {
        let half = if low == 0.0 { 1.0 } else { low.abs() * 0.5 };
        return low - half..high + half;
    }
    // The chart computes `end - start`: keep it finite (an axis of infinite width has
    // no ticks, and the tick search does not end), clipping the padding if need be.
    let half = (half_span * (1.0 + 2.0 * pad)).min(f64::MAX / 2.0);
    mid - half..mid + half
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_parse_and_bad_lines_say_where() {
        let points = parse_log(
            "{\"step\":1,\"loss\":2.5,\"lr\":0.001}\n\n{\"step\":2,\"loss\":2.0}\n",
            "a.jsonl",
        )
        .unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].lr, Some(0.001));
        assert_eq!(points[1].lr, None);
        let err = parse_log("{\"step\":1,\"loss\":2.5}\n{\"step\":2}\n", "a.jsonl").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.jsonl:2: expected a number field \"loss\""
        );
        assert!(matches!(
            parse_log("\n", "e.jsonl"),
            Err(PlotError::Empty { .. })
        ));
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(padded_range([3.0].into_iter(), 0.1), 1.5..4.5);
        assert_eq!(padded_range([0.0, 10.0].into_iter(), 0.1), -1.0..11.0);
        assert_eq!(padded_range(std::iter::empty(), 0.1), 0.0..1.0);
        let huge = padded_range([1e308, -1e308].into_iter(), 0.05);
        assert!((huge.end - huge.start).is_finite(), "{huge:?}");
    }

    #[test]
    fn curves_are_svg_with_a_legend_entry_per_series() {
        let run = |label: &str, scale: f64| Series {
            label: label.into(),
            points: (1..=20)
                .map(|s| LogPoint {
                    step: s as f64,
                    loss: scale / s as f64,
                    lr: Some(1e-3),
                })
                .collect(),
        };
        let svg = training_curves(&[run("first", 3.0), run("second", 2.0)]).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        assert!(
            texts.contains(&"first") && texts.contains(&"second"),
            "{texts:?}"
        );
        assert!(texts.contains(&"training loss"));
    }
}
