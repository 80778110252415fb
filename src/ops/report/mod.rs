//! The HTML report of a load run (`client --report`, `client merge --report`): one
//! self-contained page, charts as inline SVG drawn by [`svg`], no script, no style sheet or
//! font fetched, readable on a phone.
//!
//! Pure: a [`ClientSummary`] in (its histograms and per-second rows carry everything drawn),
//! the page's text out. Writing the file is the binary's. What a chart means is said under it,
//! in words, so that the page stands alone.

pub mod svg;

use std::fmt::Write;

use crate::ops::stats::client::series::{Column, Row};
use crate::ops::stats::client::ClientSummary;
use crate::ops::stats::{hdr, ms, Latencies, Percentiles};
use svg::{escape, Bar, Chart, Line, Mark, COLOURS};

/// The server's default timing as ratios of its interval (count 3, idle 3 × interval): a
/// silent peer is closed at most idle + count × interval after its last byte.
const DEFAULT_DEADLINE_INTERVALS: u64 = 6;

/// Bins of the detection-time histogram.
const DETECTION_BINS: u64 = 40;

/// The whole page.
pub fn html(s: &ClientSummary) -> String {
    let mut page = String::new();
    let title = format!(
        "heartbeat load report: {} connections, {}",
        s.opened,
        utc(s.series.start_unix_secs)
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape(&title)
    );
    let _ = write!(page, "<h1>{}</h1>", escape(&title));
    page.push_str(&warnings(s));
    page.push_str(&facts(s));
    let sections = [
        ("Connections over time", connections(s)),
        ("Latency percentiles", percentiles(s)),
        ("Round trip over time", round_trip(s)),
        ("How fast the server found faulty peers", detection(s)),
        ("False deaths and the client's own lag", health(s)),
        ("Settings", settings(s)),
    ];
    for (heading, body) in sections {
        let _ = write!(page, "<section><h2>{heading}</h2>{body}</section>");
    }
    let _ = writeln!(
        page,
        "<footer>heartbeat-client {} · {} run{} merged · histograms are HdrHistogram V2 \
         (base64) in the JSON summary</footer></body></html>",
        escape(&s.version),
        s.runs,
        if s.runs == 1 { "" } else { "s" }
    );
    page
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;\
padding:0.75rem;color:#222;line-height:1.4}h1{font-size:1.3rem}h2{font-size:1.1rem;\
border-bottom:1px solid #ddd}svg.chart{width:100%;height:auto;display:block}\
svg text{font-size:13px;fill:#333}svg text.title{font-size:15px;font-weight:600}\
svg text.mark{font-size:13px;fill:#c00}table{border-collapse:collapse;width:100%}\
td,th{padding:0.2rem 0.4rem;border-bottom:1px solid #eee;text-align:left;\
vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.warn{background:#fff3f0;border-left:4px solid #c00;padding:0.5rem}\
p.note{color:#555;font-size:0.9rem}footer{color:#777;font-size:0.8rem;margin-top:2rem}\
.scroll{overflow-x:auto}";

fn warnings(s: &ClientSummary) -> String {
    let mut out = String::new();
    if s.false_deaths > 0 {
        let _ = write!(
            out,
            "<p class=\"warn\">The server closed {} healthy connections (false deaths).</p>",
            s.false_deaths
        );
    }
    if s.client_bottleneck {
        let _ = write!(
            out,
            "<p class=\"warn\">The client was the bottleneck: its lag p99 {} exceeded a \
             tenth of the server's interval ({} ms); these figures are partly the client's.</p>",
            ms(s.lag.p99_us, 3),
            s.server_interval_ms
        );
    }
    out
}

fn facts(s: &ClientSummary) -> String {
    let rows: [(&str, String); 11] = [
        (
            "connections opened",
            format!("{} of {} in {:.1} s", s.opened, s.target, s.elapsed_secs),
        ),
        ("connect failures", s.failed.to_string()),
        ("closed by the server", s.closed_by_server.to_string()),
        ("false deaths", s.false_deaths.to_string()),
        ("ended in error", s.errors.to_string()),
        (
            "lines sent / echoed",
            format!("{} / {}", s.lines_sent, s.echoes_received),
        ),
        ("heartbeats answered", s.heartbeats_answered.to_string()),
        ("round trip", brief(&s.rtt)),
        ("connect time", brief(&s.connect_time)),
        ("client lag", brief(&s.lag)),
        (
            "client memory",
            format!("{} B per open connection", s.memory.per_connection_bytes),
        ),
    ];
    // `--tls` runs only: a plain run has no handshake to show.
    let tls = (s.handshake_time.count > 0).then(|| ("TLS handshake", brief(&s.handshake_time)));
    table(
        rows.iter()
            .chain(&tls)
            .map(|(k, v)| (k.to_string(), v.clone())),
    )
}

fn brief(p: &Percentiles) -> String {
    format!(
        "p50 {} · p99 {} · max {} ({} samples)",
        ms(p.p50_us, 2),
        ms(p.p99_us, 2),
        ms(p.max_us, 2),
        p.count
    )
}

fn table(rows: impl Iterator<Item = (String, String)>) -> String {
    let mut out = String::from("<div class=\"scroll\"><table>");
    for (key, value) in rows {
        let _ = write!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&key),
            escape(&value)
        );
    }
    out.push_str("</table></div>");
    out
}

/// `(seconds since the first row, value)` for each row.
fn over_time(s: &ClientSummary, value: impl Fn(&Row) -> Option<f64>) -> Vec<(f64, f64)> {
    let rows = s.series.rows.iter().enumerate();
    rows.filter_map(|(i, row)| value(row).map(|v| (i as f64, v)))
        .collect()
}

fn line(name: &str, colour: usize, points: Vec<(f64, f64)>) -> Line {
    Line {
        name: name.to_string(),
        colour: COLOURS[colour % COLOURS.len()],
        points,
    }
}

fn connections(s: &ClientSummary) -> String {
    let per = |c: Column| move |r: &Row| Some(r.get(c) as f64);
    let chart = Chart {
        title: "Open connections; opened, failed, closed each second".into(),
        x_label: format!("seconds from {}", utc(s.series.start_unix_secs)),
        y_label: "connections".into(),
        lines: vec![
            line("open", 0, over_time(s, per(Column::Open))),
            line("opened/s", 2, over_time(s, per(Column::Opened))),
            line("failed/s", 1, over_time(s, per(Column::Failed))),
            line(
                "closed by server/s",
                3,
                over_time(s, per(Column::ClosedByServer)),
            ),
        ],
        ..Chart::default()
    };
    chart.to_svg()
}

fn decoded(text: &str) -> Latencies {
    hdr::decode(text).unwrap_or_default()
}

fn percentiles(s: &ClientSummary) -> String {
    let h = &s.histograms;
    // Detection times (seconds, not milliseconds) have their own chart below.
    let curves = [
        ("round trip", decoded(&h.rtt)),
        ("connect time", decoded(&h.connect_time)),
        ("client lag", decoded(&h.lag)),
        ("TLS handshake", decoded(&h.handshake_time)),
    ];
    // x = log10(1 / (1 − q)): 90 % at 1, 99 % at 2, 99.9 % at 3; 100 % drawn one step on.
    let mut deepest: f64 = 3.0;
    let lines: Vec<Line> = curves
        .iter()
        .enumerate()
        .filter(|(_, (_, l))| l.percentiles().count > 0)
        .map(|(i, (name, latencies))| {
            let points = latencies.percentile_curve();
            let last = points
                .iter()
                .map(|p| p.0)
                .filter(|q| *q < 1.0)
                .fold(0.0, f64::max);
            let top = nines(last) + 1.0;
            deepest = deepest.max(top);
            let points = points
                .iter()
                .map(|(q, us)| {
                    let x = if *q >= 1.0 { top } else { nines(*q).min(top) };
                    (x, *us as f64 / 1000.0)
                })
                .collect();
            line(name, i, points)
        })
        .collect();
    let deepest = deepest.ceil().min(7.0);
    let labels = [
        "0%",
        "90%",
        "99%",
        "99.9%",
        "99.99%",
        "99.999%",
        "99.9999%",
        "99.99999%",
    ];
    let x_ticks = (0..=deepest as usize)
        .map(|i| (i as f64, labels[i].to_string()))
        .collect();
    let empty = lines.is_empty();
    let chart = Chart {
        title: "Percentile distribution (HdrHistogram plot)".into(),
        x_label: "percentile".into(),
        y_label: "milliseconds".into(),
        lines,
        x_ticks,
        ..Chart::default()
    };
    let mut out = chart.to_svg();
    let note = if empty {
        "Nothing was measured."
    } else {
        "Each curve is a whole histogram: the latency at or under which that share of the \
         samples fell. The tail is to the right; a curve's end is its maximum."
    };
    let _ = write!(out, "<p class=\"note\">{note}</p>");
    out
}

/// How many nines `q` is: 0.9 → 1, 0.99 → 2.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

fn round_trip(s: &ClientSummary) -> String {
    let mean = over_time(s, |r| {
        let n = r.get(Column::Echoes);
        (n > 0).then(|| r.get(Column::RttSumUs) as f64 / n as f64 / 1000.0)
    });
    let max = over_time(s, |r| {
        (r.get(Column::Echoes) > 0).then(|| r.get(Column::RttMaxUs) as f64 / 1000.0)
    });
    if mean.is_empty() {
        return "<p class=\"note\">No data lines were echoed (--interval 0 sends none).</p>".into();
    }
    Chart {
        title: "Round trip per second: mean and longest".into(),
        x_label: format!("seconds from {}", utc(s.series.start_unix_secs)),
        y_label: "milliseconds".into(),
        lines: vec![line("mean", 0, mean), line("max", 1, max)],
        ..Chart::default()
    }
    .to_svg()
}

fn detection(s: &ClientSummary) -> String {
    if s.histograms.detection.is_empty() {
        return "<p class=\"note\">No faults were injected (--faults).</p>".into();
    }
    let deadline_ms = s.server_interval_ms * DEFAULT_DEADLINE_INTERVALS;
    let mut out = String::new();
    for (i, (kind, text)) in s.histograms.detection.iter().enumerate() {
        let latencies = decoded(text);
        let max_ms = latencies.percentiles().max_us as f64 / 1000.0;
        let top = max_ms.max(deadline_ms as f64) * 1.05;
        let width = (top / DETECTION_BINS as f64).max(0.001);
        let mut counts = vec![0u64; DETECTION_BINS as usize];
        for &(us, n) in &latencies.recorded().0 {
            let bin = ((us as f64 / 1000.0) / width) as usize;
            counts[bin.min(DETECTION_BINS as usize - 1)] += n;
        }
        let bars = counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(b, n)| Bar {
                x0: b as f64 * width,
                x1: (b + 1) as f64 * width,
                y: *n as f64,
            })
            .collect();
        let chart = Chart {
            title: format!("{kind}: time from the fault to the server's close"),
            x_label: "milliseconds".into(),
            y_label: "connections".into(),
            bars,
            bar_colour: COLOURS[(i + 1) % COLOURS.len()],
            x_marks: vec![Mark {
                at: deadline_ms as f64,
                label: format!("deadline {deadline_ms} ms"),
            }],
            ..Chart::default()
        };
        out.push_str(&chart.to_svg());
        if let Some(f) = s.faults.get(kind) {
            let _ = write!(
                out,
                "<p class=\"note\">{}: {} injected, {} closed by the server, {} not by the end. \
                 {}</p>",
                escape(kind),
                f.injected,
                f.detected,
                f.undetected,
                escape(&brief(&f.detection))
            );
        }
    }
    let _ = write!(
        out,
        "<p class=\"note\">The deadline drawn is the longest a silent peer can last with the \
         server's default timing for a {} ms interval (idle 3 × interval, then 3 heartbeats \
         an interval apart): {} × interval after its last byte. A fault strikes after that \
         last byte, so every bar should lie left of it.</p>",
        s.server_interval_ms, DEFAULT_DEADLINE_INTERVALS
    );
    out
}

fn health(s: &ClientSummary) -> String {
    let deaths = s
        .series
        .rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.get(Column::FalseDeaths) > 0)
        .map(|(i, r)| Bar {
            x0: i as f64,
            x1: i as f64 + 1.0,
            y: r.get(Column::FalseDeaths) as f64,
        })
        .collect();
    let seconds = s.series.rows.len() as f64;
    let from = format!("seconds from {}", utc(s.series.start_unix_secs));
    let mut out = Chart {
        title: format!(
            "False deaths per second ({} in all; must be 0)",
            s.false_deaths
        ),
        x_label: from.clone(),
        y_label: "healthy connections closed".into(),
        bars: deaths,
        bar_colour: "#c00",
        lines: vec![line("", 0, vec![(0.0, 0.0), (seconds, 0.0)])],
        ..Chart::default()
    }
    .to_svg();
    let threshold_ms = s.server_interval_ms as f64 / 10.0;
    let lag = over_time(s, |r| Some(r.get(Column::LagMaxUs) as f64 / 1000.0));
    out.push_str(
        &Chart {
            title: "The client's own lag, longest per second".into(),
            x_label: from,
            y_label: "milliseconds".into(),
            lines: vec![line("lag max", 4, lag)],
            y_marks: vec![Mark {
                at: threshold_ms,
                label: format!("a tenth of the server's interval: {threshold_ms} ms"),
            }],
            ..Chart::default()
        }
        .to_svg(),
    );
    let _ = write!(
        out,
        "<p class=\"note\">Above the dashed line the client, not the server, was the \
         bottleneck: it answered heartbeats late enough to eat into the server's interval. \
         Lag p99 over the run: {}.</p>",
        ms(s.lag.p99_us, 3)
    );
    out
}

fn settings(s: &ClientSummary) -> String {
    let t = &s.settings;
    let opt =
        |v: Option<u64>| v.map_or("until the server closes".to_string(), |v| format!("{v} ms"));
    let rows = [
        ("server", t.server.clone()),
        ("connections", t.connections.to_string()),
        ("connect rate", format!("{} /s", t.connect_rate)),
        ("line interval", format!("{} ms", t.interval_ms)),
        ("message", format!("{} bytes", t.message_bytes)),
        ("heartbeat block", format!("{} ms", t.heartbeat_block_ms)),
        ("duration", opt(t.duration_ms)),
        (
            "faults",
            if t.faults.is_empty() {
                "none".to_string()
            } else {
                t.faults.clone()
            },
        ),
        ("fault window", format!("{} ms", t.fault_window_ms)),
        ("seed", t.seed.to_string()),
        ("reconnect", t.reconnect.to_string()),
        ("server interval", format!("{} ms", t.server_interval_ms)),
        ("client processes merged", s.runs.to_string()),
        ("version", s.version.clone()),
    ];
    table(rows.iter().map(|(k, v)| (k.to_string(), v.clone())))
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC` (the civil calendar from days since 1970).
pub fn utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cores::vocab::FaultKind;
    use crate::ops::stats::client::RunFacts;
    use crate::ops::stats::ClientStats;
    use std::time::{Duration, Instant, SystemTime};

    fn summary(faults: bool) -> ClientSummary {
        let mut c = ClientStats::new(4);
        let t0 = Instant::now();
        c.start_series(t0, SystemTime::now());
        for i in 0..4 {
            c.at(t0 + Duration::from_secs(i));
            c.on_connected(Duration::from_millis(2));
            c.on_line_sent(Duration::from_micros(30));
            c.on_echo(Duration::from_millis(1 + i));
            c.on_heartbeat_answered(Duration::from_micros(80));
        }
        if faults {
            c.on_fault_injected(FaultKind::Silent);
            c.on_fault_detected(FaultKind::Silent, Duration::from_millis(900));
            c.on_closed_by_server();
            c.on_server_end(crate::ops::stats::client::ServerEnd::FalseDeath);
        }
        let facts = RunFacts {
            elapsed: Duration::from_secs(4),
            server_interval: Duration::from_millis(200),
            runs: 1,
            ..RunFacts::default()
        };
        let mut s = c.summary(&facts);
        s.settings.server = "127.0.0.1:8000 <&>".into();
        s.settings.server_interval_ms = 200;
        s.server_interval_ms = 200;
        s
    }

    #[test]
    fn the_page_stands_alone_with_every_chart_and_the_settings() {
        let page = html(&summary(true));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains(r#"name="viewport" content="width=device-width"#));
        // Connections, percentiles, round trip, one detection chart, false deaths, lag.
        assert_eq!(page.matches("<svg").count(), 6, "{page}");
        assert!(page.contains("deadline 1200 ms"), "6 × the 200 ms interval");
        assert!(
            page.contains("127.0.0.1:8000 &lt;&amp;&gt;"),
            "settings escaped"
        );
        assert!(page.contains("The server closed 1 healthy connections"));
        // No fetch of anything: only the SVG namespace names a URL, and it is not loaded.
        let without_ns = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for external in ["http:", "https:", "src=", "<script", "@import", "url("] {
            assert!(!without_ns.contains(external), "{external} in the page");
        }
        assert!(!page.contains("NaN") && !page.contains("inf\""), "{page}");
    }

    #[test]
    fn a_run_without_faults_or_lines_says_so_instead_of_drawing_nothing() {
        let mut s = summary(false);
        s.series
            .rows
            .iter_mut()
            .for_each(|r| r.0[Column::Echoes as usize] = 0);
        let page = html(&s);
        assert!(page.contains("No faults were injected"));
        assert!(page.contains("No data lines were echoed"));
        assert_eq!(page.matches("<svg").count(), 4, "{page}");
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_551_565), "2026-12-06 10:06:05 UTC");
    }
}
