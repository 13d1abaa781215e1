//! `command`: a job kind mapped to a program and argument template in the agent's own config:
//!
//! ```toml
//! [kinds.resize]
//! program = "/usr/bin/convert"
//! args = ["{input}", "-resize", "{size}", "{output}"]
//! ```
//!
//! The payload (a JSON object) fills the `{placeholders}`; each argument stays one argv entry
//! and no shell runs, so a payload can never name the program or add arguments. A placeholder
//! the payload lacks fails the job for good; a non-zero exit fails the attempt (retryable)
//! with the tail of stderr. Lines `DROVER_PROGRESS <percent> <message>` on stdout are
//! reported as progress. The process is killed when the attempt is stopped. Its environment
//! holds `DROVER_JOB_ID`, `DROVER_ATTEMPT`, `DROVER_SCRATCH` (when the job asks for `disk_gb`)
//! and `DROVER_MODEL_<NAME>` per model (`JobContext::workspace_env`).

use super::{fatal, retryable, Attempt, Executor, JobContext, ProgressSink};
use crate::core::Outcome;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Bytes of stderr kept for the failure message.
const STDERR_TAIL_BYTES: usize = 2048;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTemplate {
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for the process (not templated).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

pub struct CommandExecutor {
    template: CommandTemplate,
}

impl CommandExecutor {
    pub fn new(template: CommandTemplate) -> CommandExecutor {
        CommandExecutor { template }
    }
}

impl Executor for CommandExecutor {
    fn run(&self, ctx: JobContext) -> Attempt {
        let template = self.template.clone();
        Box::pin(async move {
            match fill_args(&template.args, &ctx.spec.payload) {
                Ok(args) => run(&template, args, &ctx).await,
                Err(e) => fatal(super::payload::template_error(e).to_string()),
            }
        })
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("payload must be a JSON object: {0}")]
    Payload(String),
    #[error("placeholder {{{0}}} is not in the payload")]
    Missing(String),
    #[error("payload field {0:?} must be a string, number or boolean")]
    NotScalar(String),
    #[error("argument {0:?} has an unclosed or empty placeholder")]
    Malformed(String),
}

/// Fills every argument's placeholders from the payload. `{{` and `}}` are literal braces.
pub fn fill_args(args: &[String], payload: &str) -> Result<Vec<String>, TemplateError> {
    let fields = match payload.trim() {
        "" => Map::new(),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(TemplateError::Payload("not an object".into())),
            Err(e) => return Err(TemplateError::Payload(e.to_string())),
        },
    };
    args.iter().map(|arg| fill(arg, &fields)).collect()
}

fn fill(arg: &str, fields: &Map<String, Value>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let end = tail
            .find('}')
            .filter(|&end| tail.starts_with('{') && end > 1)
            .ok_or_else(|| TemplateError::Malformed(arg.to_string()))?;
        let name = &tail[1..end];
        out.push_str(&scalar(name, fields)?);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn scalar(name: &str, fields: &Map<String, Value>) -> Result<String, TemplateError> {
    match fields.get(name) {
        None => Err(TemplateError::Missing(name.to_string())),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(TemplateError::NotScalar(name.to_string())),
    }
}

async fn run(template: &CommandTemplate, args: Vec<String>, ctx: &JobContext) -> Outcome {
    let result_file = ResultFile::for_attempt(ctx);
    let mut command = tokio::process::Command::new(&template.program);
    command
        .args(&args)
        .envs(&template.env)
        .env("DROVER_JOB_ID", ctx.job.to_string())
        .env("DROVER_ATTEMPT", ctx.attempt.to_string())
        .env("DROVER_RESULT", &result_file.path)
        .envs(ctx.workspace_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Stopping the attempt drops this future; the process must not outlive it.
        .kill_on_drop(true);
    if let Some(dir) = &template.workdir {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        // Another machine may have the program: let the attempt be retried.
        Err(e) => return retryable(format!("cannot start {:?}: {e}", template.program)),
        Ok(child) => child,
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (status, (), tail) = tokio::join!(
        child.wait(),
        watch_progress(stdout, &ctx.progress),
        stderr_tail(stderr)
    );
    match status {
        Ok(status) if status.success() => match result_file.read() {
            Ok(Some(json)) => {
                ctx.result.set(json);
                Outcome::Succeeded
            }
            Ok(None) => Outcome::Succeeded,
            Err(message) => fatal(message),
        },
        Ok(status) => retryable(format!("{status}: {}", tail.trim_end())),
        Err(e) => retryable(format!("waiting for {:?}: {e}", template.program)),
    }
}

/// Where a command may write its result (`$DROVER_RESULT`): a file of this attempt's own,
/// removed when the attempt ends, however it ends.
struct ResultFile {
    path: std::path::PathBuf,
}

impl ResultFile {
    fn for_attempt(ctx: &JobContext) -> ResultFile {
        let name = format!(
            "drover-result-{}-{}-{}.json",
            std::process::id(),
            ctx.job.0,
            ctx.attempt
        );
        ResultFile {
            path: std::env::temp_dir().join(name),
        }
    }

    /// The result the command wrote, if it wrote one. Reads at most `MAX_RESULT_BYTES` + 1
    /// bytes: the driver judges the namespace's own limit.
    fn read(&self) -> Result<Option<String>, String> {
        use std::io::Read;
        let file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading $DROVER_RESULT: {e}")),
        };
        let mut text = String::new();
        let cap = u64::from(crate::core::config::MAX_RESULT_BYTES) + 1;
        file.take(cap)
            .read_to_string(&mut text)
            .map_err(|e| format!("reading $DROVER_RESULT: {e}"))?;
        Ok(Some(text))
    }
}

impl Drop for ResultFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "result file not removed");
            }
        }
    }
}

async fn watch_progress(stdout: Option<impl AsyncRead + Unpin>, progress: &ProgressSink) {
    let Some(stdout) = stdout else { return };
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some((percent, message)) = parse_progress(&line) {
            progress.report(percent, message);
        }
    }
}

/// `DROVER_PROGRESS 40 resizing` → (40, "resizing").
fn parse_progress(line: &str) -> Option<(u8, &str)> {
    let rest = line.strip_prefix("DROVER_PROGRESS ")?;
    let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((percent.trim().parse().ok()?, message.trim()))
}

/// Reads stderr to its end, keeping only the last `STDERR_TAIL_BYTES` (for the attempt's
/// error; the model cache's fetch commands use it too).
pub(crate) async fn stderr_tail(stderr: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        tail.drain(..excess);
    }
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fills_placeholders_as_whole_arguments() {
        let filled = fill_args(
            &args(&["{input}", "-resize", "{size}x{size}", "{{literal}}"]),
            r#"{"input": "a b.png; rm -rf /", "size": 64}"#,
        )
        .unwrap();
        assert_eq!(
            filled,
            args(&["a b.png; rm -rf /", "-resize", "64x64", "{literal}"])
        );
    }

    #[test]
    fn refuses_missing_placeholders_and_bad_payloads() {
        let missing = fill_args(&args(&["{output}"]), r#"{"input": "x"}"#);
        assert_eq!(missing, Err(TemplateError::Missing("output".into())));
        let nested = fill_args(&args(&["{input}"]), r#"{"input": [1]}"#);
        assert_eq!(nested, Err(TemplateError::NotScalar("input".into())));
        assert!(matches!(
            fill_args(&args(&["x"]), "[1]"),
            Err(TemplateError::Payload(_))
        ));
        assert!(matches!(
            fill_args(&args(&["{open"]), "{}"),
            Err(TemplateError::Malformed(_))
        ));
        assert!(matches!(
            fill_args(&args(&["{}"]), "{}"),
            Err(TemplateError::Malformed(_))
        ));
    }

    #[test]
    fn reads_progress_lines() {
        assert_eq!(
            parse_progress("DROVER_PROGRESS 40 resizing"),
            Some((40, "resizing"))
        );
        assert_eq!(parse_progress("DROVER_PROGRESS 100"), Some((100, "")));
        assert_eq!(parse_progress("hello"), None);
    }
}
