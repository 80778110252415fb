//! Charts as inline SVG text: lines, bars, reference lines, axes with round ticks, a legend.
//! Pure (numbers in, a string out); it knows nothing of heartbeats. The page is `report`'s.
//!
//! Written by hand because what is needed is small (a few hundred lines) and a chart crate
//! would bring a renderer and fonts to a binary that only needs text; the SVG has a
//! `viewBox` and no fixed size, so it scales to any screen.

use std::fmt::Write;

/// The drawing's own coordinates; the browser scales them to the page's width.
const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 42.0;
const LEGEND_ROW: f64 = 18.0;

/// Colours that stay apart for the common colour-vision deficiencies (Okabe–Ito).
pub const COLOURS: [&str; 6] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
];

/// A series of points joined by a line.
#[derive(Debug, Clone, Default)]
pub struct Line {
    pub name: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A bar from `x0` to `x1`, `y` high.
#[derive(Debug, Clone, Copy)]
pub struct Bar {
    pub x0: f64,
    pub x1: f64,
    pub y: f64,
}

/// A labelled straight line across the plot: a deadline, a threshold.
#[derive(Debug, Clone)]
pub struct Mark {
    pub at: f64,
    pub label: String,
}

/// One chart. Axes start at 0 unless the data go below; ticks are round numbers unless
/// `x_ticks` gives them (a percentile axis).
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub bars: Vec<Bar>,
    pub bar_colour: &'static str,
    /// Vertical marks at these x.
    pub x_marks: Vec<Mark>,
    /// Horizontal marks at these y.
    pub y_marks: Vec<Mark>,
    /// Ticks and labels for the x axis; empty: round numbers.
    pub x_ticks: Vec<(f64, String)>,
}

impl Chart {
    /// The chart as an `<svg>` element.
    pub fn to_svg(&self) -> String {
        let xs = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let xs = xs
            .chain(self.bars.iter().flat_map(|b| [b.x0, b.x1]))
            .chain(self.x_marks.iter().map(|m| m.at))
            .chain(self.x_ticks.iter().map(|t| t.0));
        let ys = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
        let ys = ys
            .chain(self.bars.iter().map(|b| b.y))
            .chain(self.y_marks.iter().map(|m| m.at));
        let (x_min, x_max) = range(xs);
        let (_, y_top) = range(ys);
        let y_ticks = round_ticks(0.0, y_top.max(1e-9));
        let y_max = y_ticks.last().map_or(1.0, |t| t.0).max(y_top);
        let x_ticks = if self.x_ticks.is_empty() {
            round_ticks(x_min, x_max)
        } else {
            self.x_ticks.clone()
        };
        let plot = Plot {
            x_min,
            x_span: (x_max - x_min).max(1e-9),
            y_span: y_max.max(1e-9),
        };
        // The legend goes under the axes, in as many rows as the names need on a phone.
        let mut legend = String::new();
        let (mut x, mut y) = (LEFT, HEIGHT + 6.0);
        for line in self.lines.iter().filter(|l| !l.name.is_empty()) {
            let wide = 24.0 + 7.5 * line.name.chars().count() as f64;
            if x > LEFT && x + wide > WIDTH - RIGHT {
                (x, y) = (LEFT, y + LEGEND_ROW);
            }
            let _ = write!(
                legend,
                r#"<rect x="{x:.1}" y="{:.1}" width="14" height="5" fill="{}"/><text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
                y - 5.0,
                line.colour,
                x + 18.0,
                y,
                escape(&line.name)
            );
            x += wide;
        }
        let height = if legend.is_empty() { HEIGHT } else { y + 8.0 };
        let mut svg = String::new();
        let title = escape(&self.title);
        let _ = write!(
            svg,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" preserveAspectRatio="xMidYMid meet" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg"><title>{title}</title>"#
        );
        let _ = write!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
            WIDTH - LEFT - RIGHT,
            HEIGHT - TOP - BOTTOM
        );
        for (y, label) in &y_ticks {
            let py = plot.y(*y);
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 4.0,
                py + 4.0,
                escape(label)
            );
        }
        for (x, label) in &x_ticks {
            let px = plot.x(*x);
            // The last label ends at the plot's edge rather than past the drawing's.
            let anchor = if px > WIDTH - RIGHT - 24.0 {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                svg,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{}" stroke="#e4e4e4"/><text x="{px:.1}" y="{}" text-anchor="{anchor}" class="tick">{}</text>"##,
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 14.0,
                escape(label)
            );
        }
        let base = plot.y(0.0);
        for bar in &self.bars {
            let (x0, x1, top) = (plot.x(bar.x0), plot.x(bar.x1), plot.y(bar.y));
            let _ = write!(
                svg,
                r#"<rect class="bar" x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                (x1 - x0 - 0.5).max(0.5),
                (base - top).max(0.0),
                if self.bar_colour.is_empty() {
                    COLOURS[0]
                } else {
                    self.bar_colour
                }
            );
        }
        for line in &self.lines {
            let mut points = String::new();
            for (x, y) in line
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
            {
                let _ = write!(points, "{:.1},{:.1} ", plot.x(*x), plot.y(*y));
            }
            let _ = write!(
                svg,
                r#"<polyline class="line" fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                line.colour,
                points.trim_end()
            );
            if line.points.len() == 1 {
                let (x, y) = line.points[0];
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    plot.x(x),
                    plot.y(y),
                    line.colour
                );
            }
        }
        for mark in &self.x_marks {
            let px = plot.x(mark.at);
            let _ = write!(
                svg,
                r##"<line class="mark" x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{}" stroke="#c00" stroke-dasharray="6 4"/><text x="{:.1}" y="{}" text-anchor="end" class="mark" fill="#c00">{}</text>"##,
                HEIGHT - BOTTOM,
                px - 4.0,
                TOP + 12.0,
                escape(&mark.label)
            );
        }
        for mark in &self.y_marks {
            let py = plot.y(mark.at);
            let _ = write!(
                svg,
                r##"<line class="mark" x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#c00" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" text-anchor="end" fill="#c00" class="mark">{}</text>"##,
                WIDTH - RIGHT,
                WIDTH - RIGHT - 4.0,
                py - 4.0,
                escape(&mark.label)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="14" class="title">{title}</text><text x="{}" y="{}" text-anchor="middle" class="axis">{}</text><text transform="translate(12 {}) rotate(-90)" text-anchor="middle" class="axis">{}</text>"#,
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            HEIGHT - 6.0,
            escape(&self.x_label),
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            escape(&self.y_label)
        );
        svg.push_str(&legend);
        svg.push_str("</svg>");
        svg
    }
}

/// From data coordinates to the drawing's.
struct Plot {
    x_min: f64,
    x_span: f64,
    y_span: f64,
}

impl Plot {
    fn x(&self, x: f64) -> f64 {
        LEFT + (x - self.x_min) / self.x_span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - y / self.y_span * (HEIGHT - TOP - BOTTOM)
    }
}

/// The smallest and largest finite values, 0 to 1 when there are none.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if min > max {
        (0.0, 1.0)
    } else if min == max {
        (min.min(0.0), max.max(min + 1.0))
    } else {
        (min.min(0.0), max)
    }
}

/// Ticks at 1, 2 or 5 × 10ⁿ steps covering `lo..=hi`, four to eight of them.
pub fn round_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(magnitude * 10.0);
    let first = (lo / step).floor() * step;
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let mut ticks = Vec::new();
    let mut at = first;
    while at <= hi + step * 0.999 && ticks.len() < 12 {
        ticks.push((at, format!("{at:.decimals$}")));
        at += step;
    }
    ticks
}

/// Text safe inside an element or a double-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = round_ticks(0.0, 9.3);
        assert_eq!(
            t.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
            ["0", "2", "4", "6", "8", "10"]
        );
        let t = round_ticks(0.0, 0.034);
        assert_eq!(t[1].1, "0.01");
        assert!(t.last().expect("ticks").0 >= 0.034);
        assert!(round_ticks(0.0, 1e12).len() <= 12);
    }

    #[test]
    fn a_chart_is_one_svg_with_its_lines_bars_marks_and_escaped_text() {
        let chart = Chart {
            title: "<round & trip>".to_string(),
            x_label: "s".to_string(),
            y_label: "ms".to_string(),
            lines: vec![Line {
                name: "p50".to_string(),
                colour: COLOURS[1],
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN)],
            }],
            bars: vec![Bar {
                x0: 0.0,
                x1: 1.0,
                y: 2.0,
            }],
            x_marks: vec![Mark {
                at: 1.5,
                label: "deadline".to_string(),
            }],
            ..Chart::default()
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.contains("&lt;round &amp; trip&gt;") && !svg.contains("<round"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches(r#"class="bar""#).count(), 1);
        assert!(svg.contains("deadline"));
        assert!(
            svg.contains(r#"viewBox="0 0 560 314""#),
            "scales to the page"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn a_long_legend_wraps_into_rows_under_the_axes() {
        let lines = (0..8)
            .map(|i| Line {
                name: format!("a rather long series name {i}"),
                colour: COLOURS[0],
                points: vec![(0.0, 1.0)],
            })
            .collect();
        let svg = Chart {
            lines,
            ..Chart::default()
        }
        .to_svg();
        assert!(
            svg.contains(r#"viewBox="0 0 560 368""#),
            "four rows of two: {svg}"
        );
    }

    #[test]
    fn an_empty_chart_still_draws_axes() {
        let svg = Chart::default().to_svg();
        assert!(svg.contains("<rect") && !svg.contains("NaN"), "{svg}");
    }
}
