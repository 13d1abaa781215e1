//! `--report DIR`: the pages of run, sweep and forecast are self-contained (inline SVG, no
//! scripts, nothing fetched), and headless Chromium renders every chart with no console
//! message. Chromium (Debian's `chromium`) is required in CI (.ci/run installs it); a
//! developer without it gets the static checks and a printed reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drover-sim"))
}

fn scenario(name: &str) -> String {
    format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs drover-sim with `args` and `--report DIR`; returns the one page it wrote.
fn report(name: &str, args: &[&str]) -> (PathBuf, String) {
    let dir = fresh_dir(name);
    let out = sim().args(args).arg("--report").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(pages.len(), 1, "one page: {pages:?}");
    let html = std::fs::read_to_string(&pages[0]).unwrap();
    (pages[0].clone(), html)
}

/// Nothing in the page can fetch: no scripts, links, sources or URLs but SVG's namespace.
fn assert_self_contained(html: &str, charts: usize) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), charts, "charts");
    for forbidden in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import",
    ] {
        assert!(!html.contains(forbidden), "the page holds {forbidden}");
    }
    let namespace = "http://www.w3.org/2000/svg";
    let urls = html.matches("http").count() - html.matches("http-equiv").count();
    assert_eq!(
        urls,
        html.matches(namespace).count(),
        "a URL besides SVG's namespace"
    );
    assert!(html.contains("Content-Security-Policy") && html.contains("default-src 'none'"));
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Loads `page` in headless Chromium: returns the DOM after scripts ran, and its console lines.
fn load(browser: &Path, page: &Path) -> (String, Vec<String>) {
    static LOADS: AtomicUsize = AtomicUsize::new(0);
    let profile = fresh_dir(&format!(
        "chromium-{}",
        LOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let out = Command::new("timeout")
        .arg("120")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
        ])
        .args(["--v=0", "--no-first-run", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// A copy of the page that measures each chart as laid out (width, height, drawn shapes)
/// and writes that into the DOM.
fn probe_copy(page: &Path, html: &str) -> PathBuf {
    let script = r#"<script>
const charts = [...document.querySelectorAll('figure > svg')].map(svg => {
  const box = svg.getBoundingClientRect();
  return [Math.round(box.width), Math.round(box.height),
          svg.querySelectorAll('polyline, rect, circle, path, line').length,
          svg.querySelectorAll('text').length];
});
const out = document.createElement('pre');
out.id = 'probe';
out.textContent = JSON.stringify(charts);
document.body.appendChild(out);
</script>
</body>"#;
    let probed = html
        .replace(
            "default-src 'none'; style-src 'unsafe-inline'",
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        )
        .replace("</body>", script);
    let path = page.with_extension("probe.html");
    std::fs::write(&path, probed).unwrap();
    path
}

fn assert_renders(page: &Path, html: &str, charts: usize) {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (.ci/run installs Debian's chromium)"
        );
        eprintln!("skipped the Chromium check: no chromium on PATH (apt-get install chromium)");
        return;
    };
    // The page as written: its strict policy refuses anything it would fetch, and a refusal
    // is a console message.
    let (dom, console) = load(&browser, page);
    assert!(console.is_empty(), "console: {console:#?}");
    assert_eq!(dom.matches("<svg").count(), charts);
    // The probe: every chart laid out at its size, with its lines, shapes and labels.
    let (dom, console) = load(&browser, &probe_copy(page, html));
    assert!(console.is_empty(), "console: {console:#?}");
    let json = dom
        .split("<pre id=\"probe\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .expect("the probe ran");
    let measured: Vec<[u64; 4]> = serde_json::from_str(json).unwrap();
    assert_eq!(measured.len(), charts);
    for [width, height, shapes, labels] in measured {
        assert!(width >= 300 && height >= 150, "{width}x{height}");
        assert!(
            shapes >= 5 && labels >= 5,
            "{shapes} shapes, {labels} labels"
        );
    }
}

#[test]
fn run_page_renders_its_five_charts() {
    let (page, html) = report("run", &["run", &scenario("partition.toml")]);
    assert_self_contained(&html, 5);
    for part in [
        "Queue wait per workload",
        "Over time",
        "Jobs by terminal state",
        "partition",
    ] {
        assert!(html.contains(part), "missing {part}");
    }
    assert_renders(&page, &html, 5);
}

#[test]
fn forecast_page_renders_its_charts_and_every_point() {
    let (page, html) = report(
        "forecast",
        &[
            "forecast",
            &scenario("mmc-check.toml"),
            "--vary",
            "pool.gpu.machines=9..12",
            "--vary",
            "duration=1500s",
            "--slo",
            "wait_p99<=1.5s",
        ],
    );
    // Cost per job and p99 wait, then the recommended point's run.
    assert_self_contained(&html, 7);
    assert_eq!(
        html.matches("<tr class=").count(),
        4 + 1,
        "4 points, the run's headline"
    );
    assert!(html.contains("SLO wait_p99&lt;=1.5s") && html.contains("recommended"));
    assert_renders(&page, &html, 7);
}

#[test]
fn sweep_page_renders_its_charts() {
    let (page, html) = report(
        "sweep",
        &["sweep", &scenario("partition.toml"), "--seeds", "0..2"],
    );
    assert_self_contained(&html, 7);
    assert_renders(&page, &html, 7);
}
