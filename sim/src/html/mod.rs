//! `--report DIR`: one self-contained HTML page per command, its charts inline SVG (drawn in
//! `charts`), no scripts, and a Content-Security-Policy that forbids fetching anything, so
//! the page shows the same offline, from a mail attachment or from CI's artifacts.
//!
//! - `run`: one run's wait CDFs, timeline with faults marked, and jobs by terminal state;
//! - `sweep`: the seeds' figures, then the first seed's run;
//! - `forecast`: cost per job and p99 wait against the varied field, with the SLO and the
//!   recommended point, a table of every point, then the recommended point's run.

pub mod charts;
mod forecast;
mod run;
mod sweep;

pub use forecast::forecast_page;
pub use run::run_page;
pub use sweep::sweep_page;

use std::path::{Path, PathBuf};

/// A whole page around `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 2em; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} td.text {{ text-align: left; }}
tr.meets td {{ background: #eef8ee; }} tr.recommended td {{ background: #c9ecc9; font-weight: bold; }}
figure {{ margin: 1em 0; }} svg {{ max-width: 100%; height: auto; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }}
.note {{ color: #555; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"#,
        title = escape(title)
    )
}

/// Text made safe inside HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart in a figure, or the reason it could not be drawn.
fn figure(chart: Result<String, charts::ChartError>) -> String {
    match chart {
        Ok(svg) => format!("<figure>{svg}</figure>\n"),
        Err(e) => format!("<p class=\"note\">{}</p>\n", escape(&e.to_string())),
    }
}

/// A table: header cells, then rows of (class, cells); cells are already HTML.
fn table(header: &[String], rows: &[(String, Vec<String>)]) -> String {
    let mut out = String::from("<table>\n<tr>");
    for cell in header {
        out += &format!("<th>{}</th>", escape(cell));
    }
    out += "</tr>\n";
    for (class, cells) in rows {
        out += &format!("<tr class=\"{class}\">");
        for cell in cells {
            out += &format!("<td>{cell}</td>");
        }
        out += "</tr>\n";
    }
    out + "</table>\n"
}

/// Writes `html` to `dir/name` (creating `dir`) and returns the path.
pub fn write(dir: &Path, name: &str, html: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, html)?;
    Ok(path)
}

/// A name safe as a file name: letters, digits, `-`, `_` and `.`; anything else `_`.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
