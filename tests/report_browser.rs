//! The HTML reports opened by a real browser: headless Chromium (the Debian package,
//! installed by `.ci/run`) renders a run's report and a merged one with their charts in the
//! DOM, logs no console message, fetches nothing, and writes a screenshot.
//!
//! Outside CI the test says it skipped when no Chromium is installed; in CI (`CI` set, as
//! `CI=true` by CI systems) a missing browser fails it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ServerProcess;

const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");
/// Chromium starts slowly on a loaded machine; this only guards against a hang.
const BROWSER_LIMIT: Duration = Duration::from_secs(120);

/// The first of the Debian package's browser names on `PATH`.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-headless-shell", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs the browser headless on `page` with `extra` flags; returns (stdout, stderr).
fn browse(browser: &Path, profile: &Path, page: &Path, extra: &[String]) -> (String, String) {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > BROWSER_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in {BROWSER_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// Reads `stream` to its end on a thread (so that neither pipe fills while the other is read).
fn read_all<R: std::io::Read + Send + 'static>(
    stream: Option<R>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stream {
            let _ = s.read_to_string(&mut text);
        }
        text
    })
}

/// A run with faults writes its report and its JSON; merging it with itself writes another.
fn reports(dir: &Path) -> [PathBuf; 2] {
    let server = ServerProcess::start(&["--interval", "200ms", "--count", "2", "--idle", "400ms"]);
    let port = server.port.to_string();
    let run = dir.join("run.html");
    let out = Command::new(CLIENT)
        .args(["--no-prompt", "--port", &port, "--connections", "30"])
        .args([
            "--interval",
            "100ms",
            "--duration",
            "2s",
            "--server-interval",
            "200ms",
        ])
        .args([
            "--faults",
            "silent=20%,halfclose=10%",
            "--fault-window",
            "500ms",
        ])
        .args(["--json", "--report"])
        .arg(&run)
        .output()
        .expect("client runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = dir.join("run.json");
    std::fs::write(&json, &out.stdout).expect("writes");
    let merged = dir.join("merged.html");
    let out = Command::new(CLIENT)
        .arg("merge")
        .args([&json, &json])
        .arg("--report")
        .arg(&merged)
        .output()
        .expect("merge runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    [run, merged]
}

/// Each report, rendered by Chromium, has its charts (SVG elements with lines or bars) in the
/// DOM, logs nothing to the console, fetches nothing, and can be screenshotted at phone size.
#[test]
fn chromium_renders_the_reports_charts_without_console_errors() {
    let Some(browser) = chromium() else {
        // As tests/haproxy.rs: in CI (`CI` set, e.g. CI=true) a missing browser fails.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: no chromium on PATH (apt-get install chromium); not in CI");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp dir");
    for page in reports(dir.path()) {
        let html = std::fs::read_to_string(&page).expect("report written");
        let own = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for external in ["http://", "https://", "src=", "<script", "@import", "url("] {
            assert!(!own.contains(external), "{external} in {page:?}");
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let (dom, log) = browse(&browser, profile.path(), &page, &["--dump-dom".into()]);
        assert!(
            dom.matches("<svg").count() >= 6,
            "charts in the rendered DOM of {page:?}:\n{dom}"
        );
        assert!(dom.contains("<polyline") && dom.contains("class=\"bar\""));
        assert!(dom.contains("Percentile distribution"));
        let console: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("net::ERR"))
            .collect();
        assert!(
            console.is_empty(),
            "console output for {page:?}: {console:?}"
        );
        let shot = dir.path().join(format!(
            "{}.png",
            page.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("report")
        ));
        let profile = tempfile::tempdir().expect("profile dir");
        let flags = [
            format!("--screenshot={}", shot.display()),
            "--window-size=412,1800".to_string(),
            "--hide-scrollbars".to_string(),
        ];
        browse(&browser, profile.path(), &page, &flags);
        let png = std::fs::read(&shot).expect("screenshot written");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{shot:?}"
        );
    }
}
