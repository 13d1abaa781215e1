//! The API's client commands: `drover submit`, `drover status`.

use anyhow::{bail, Context, Result};
use clap::Args;
use drover_engine::api::client::{ApiClient, ClientOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct ClientArgs {
    /// http://HOST:PORT or https://HOST:PORT of the API.
    #[arg(long)]
    pub(crate) api: String,
    #[arg(long, env = "DROVER_API_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// PEM CA certificate(s) to trust for https:// besides the public roots (a private CA).
    #[arg(long, env = "DROVER_CA_CERT")]
    pub(crate) ca_cert: Option<PathBuf>,
}

impl ClientArgs {
    fn client(&self) -> Result<ApiClient> {
        let options = ClientOptions {
            ca_cert: self.ca_cert.clone(),
        };
        Ok(ApiClient::with_options(
            &self.api,
            self.token.clone(),
            &options,
        )?)
    }
}

#[derive(Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    pub(crate) kind: String,
    /// JSON payload, e.g. '{"seconds": 2}'.
    #[arg(long)]
    pub(crate) payload: Option<String>,
    #[arg(long)]
    pub(crate) priority: Option<u8>,
    #[arg(long, default_value_t = 0)]
    pub(crate) gpus: u32,
    #[arg(long, default_value_t = 0)]
    pub(crate) gpu_mem_gb: u32,
    /// Allowed GPU model (repeat for several).
    #[arg(long)]
    pub(crate) gpu_model: Vec<String>,
    /// Catalog model the job loads (repeat for several).
    #[arg(long)]
    pub(crate) model: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub(crate) disk_gb: u32,
    #[arg(long)]
    pub(crate) max_attempts: Option<u32>,
    /// "10m", "30s", ...
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
    /// Wait for the job to finish; exit 0 only if it succeeded.
    #[arg(long)]
    pub(crate) wait: bool,
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    pub(crate) job_id: Option<String>,
}

pub(crate) async fn submit(args: SubmitArgs) -> Result<()> {
    let client = args.client.client()?;
    let payload: Option<Value> = match &args.payload {
        None => None,
        Some(text) => Some(serde_json::from_str(text).context("--payload is not JSON")?),
    };
    let body = json!({
        "kind": args.kind,
        "payload": payload,
        "priority": args.priority,
        "requirements": {
            "gpus": args.gpus,
            "gpu_mem_gb": args.gpu_mem_gb,
            "gpu_models": args.gpu_model,
            "models": args.model,
            "disk_gb": args.disk_gb,
        },
        "max_attempts": args.max_attempts,
        "timeout": args.timeout,
        "idempotency_key": args.idempotency_key,
    });
    let (status, reply) = client.post("/v1/jobs", &body).await?;
    if !status.is_success() {
        bail!("submit refused ({status}): {reply}");
    }
    println!("{reply}");
    let Some(id) = reply.get("id").and_then(Value::as_str) else {
        bail!("the API answered without an id: {reply}");
    };
    if args.wait {
        return wait_for(&client, id).await;
    }
    Ok(())
}

async fn wait_for(client: &ApiClient, id: &str) -> Result<()> {
    loop {
        let (status, job) = client.get(&format!("/v1/jobs/{id}")).await?;
        if !status.is_success() {
            bail!("reading {id} ({status}): {job}");
        }
        let state = job.get("state").and_then(Value::as_str).unwrap_or("");
        let terminal = ["succeeded", "dead", "cancelled", "timed_out", "unworkable"];
        if terminal.contains(&state) {
            println!("{job}");
            if state == "succeeded" {
                return Ok(());
            }
            match error_text(&job) {
                reason if reason.is_empty() => bail!("job {id} ended {state}"),
                reason => bail!("job {id} ended {state}: {reason}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn status(args: StatusArgs) -> Result<()> {
    let client = args.client.client()?;
    let path = match &args.job_id {
        Some(id) => format!("/v1/jobs/{id}"),
        None => "/v1/stats".to_string(),
    };
    let (status, reply) = client.get(&path).await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    if !status.is_success() {
        bail!("{path}: {status}");
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct CancelArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    pub(crate) job_id: String,
    /// Print the API's reply as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Only jobs in this state (queued, delayed, leased, succeeded, dead, cancelled,
    /// timed_out, unworkable).
    #[arg(long)]
    pub(crate) state: Option<String>,
    /// Jobs per page.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
    /// The page after this job id (the `next` a page printed).
    #[arg(long)]
    pub(crate) after: Option<String>,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    pub(crate) job_id: String,
    /// Print each event as a JSON line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// GET `path`; a refusal is one line with the API's own message.
async fn get_ok(client: &ApiClient, path: &str) -> Result<Value> {
    let (status, reply) = client.get(path).await?;
    if !status.is_success() {
        bail!("{path}: {status}: {}", api_message(&reply));
    }
    Ok(reply)
}

fn api_message(reply: &Value) -> String {
    reply["error"]["message"]
        .as_str()
        .map_or_else(|| reply.to_string(), str::to_string)
}

/// µs since the epoch as UTC, for people (`--json` keeps the µs).
fn when(us: &Value) -> String {
    us.as_u64().map_or_else(
        || "-".into(),
        |us| drover_engine::redis::inspect::utc(drover_engine::core::Time(us)),
    )
}

/// A job's error as one short phrase.
fn error_text(job: &Value) -> String {
    match job["error"].as_object() {
        Some(e) => format!(
            "{}: {}",
            e["class"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        ),
        None => String::new(),
    }
}

pub(crate) async fn cancel(args: CancelArgs) -> Result<()> {
    let client = args.client.client()?;
    let path = format!("/v1/jobs/{}/cancel", args.job_id);
    let (status, reply) = client.post(&path, &json!({})).await?;
    if !status.is_success() {
        bail!("cancel {}: {status}: {}", args.job_id, api_message(&reply));
    }
    if args.json {
        println!("{reply}");
    } else {
        println!("{} cancelled", args.job_id);
    }
    Ok(())
}

pub(crate) async fn jobs(args: JobsArgs) -> Result<()> {
    let client = args.client.client()?;
    let mut path = format!("/v1/jobs?limit={}", args.limit);
    if let Some(state) = &args.state {
        path.push_str(&format!("&state={state}"));
    }
    if let Some(after) = &args.after {
        path.push_str(&format!("&after={after}"));
    }
    let page = get_ok(&client, &path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<11} {:<12} {:>7}  {:<24} ERROR",
        "ID", "STATE", "KIND", "ATTEMPT", "SUBMITTED"
    );
    for job in page["jobs"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<11} {:<12} {:>7}  {:<24} {}",
            job["id"].as_str().unwrap_or("?"),
            job["state"].as_str().unwrap_or("?"),
            job["kind"].as_str().unwrap_or("?"),
            job["attempt"],
            when(&job["submitted_at"]),
            error_text(job)
        );
    }
    if let Some(next) = page["next"].as_str() {
        println!("more: --after {next}");
    }
    Ok(())
}

pub(crate) async fn machines(args: ListArgs) -> Result<()> {
    let client = args.client.client()?;
    let reply = get_ok(&client, "/v1/machines").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let list = reply["machines"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<22} {:<6} {:<12} {:>4} {:>6}  {:<16} LAST SEEN",
        "ID", "STATE", "POOL", "GPUS", "LEASES", "NAME"
    );
    for m in &list {
        println!(
            "{:<22} {:<6} {:<12} {:>4} {:>6}  {:<16} {}",
            m["id"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            m["pool"].as_str().unwrap_or("?"),
            m["gpus"],
            m["leases"],
            m["name"].as_str().unwrap_or("?"),
            when(&m["last_seen"])
        );
    }
    Ok(())
}

pub(crate) async fn stats(args: ListArgs) -> Result<()> {
    let client = args.client.client()?;
    let s = get_ok(&client, "/v1/stats").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let figures = |v: &Value| -> String {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!("jobs now:      {}", figures(&s["jobs"]));
    println!("jobs ever:     {}", figures(&s["totals"]));
    println!("machines:      {}", figures(&s["machines"]));
    println!(
        "spend:         ${:.2}; cost per succeeded job ${:.4}",
        s["spend"].as_f64().unwrap_or(0.0),
        s["cost_per_job"].as_f64().unwrap_or(0.0)
    );
    for class in s["queue"].as_array().into_iter().flatten() {
        println!(
            "queue class {}: {} queued ({})",
            class["class"], class["queued"], class["requirements"]
        );
    }
    Ok(())
}

/// `drover watch`: follows the job's event stream until it ends; exit 0 only if it
/// succeeded.
pub(crate) async fn watch(args: WatchArgs) -> Result<()> {
    use http_body_util::BodyExt;
    let client = args.client.client()?;
    let path = format!("/v1/jobs/{}/events", args.job_id);
    let response = client
        .send(axum::http::Method::GET, &path, None, &[])
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let reply: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        bail!("watch {}: {status}: {}", args.job_id, api_message(&reply));
    }
    let mut body = response.into_body();
    let mut pending = String::new();
    let mut last_state = String::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            if let Some((event, data)) = sse_fields(&block) {
                if event == "state" {
                    last_state = data["state"].as_str().unwrap_or("").to_string();
                }
                print_event(&event, &data, args.json);
            }
        }
    }
    match last_state.as_str() {
        "succeeded" => Ok(()),
        "" => bail!("the event stream of {} ended without a state", args.job_id),
        other => bail!("job {} ended {other}", args.job_id),
    }
}

/// An SSE block's event type and JSON data.
fn sse_fields(block: &str) -> Option<(String, Value)> {
    let field = |name: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let event = field("event:")?;
    let data = serde_json::from_str(&field("data:")?).unwrap_or_default();
    Some((event, data))
}

fn print_event(event: &str, data: &Value, json: bool) {
    if json {
        println!("{}", json!({"event": event, "data": data}));
        return;
    }
    let at = if event == "state" {
        String::new()
    } else {
        when(&data["at"])
    };
    let detail = match event {
        "state" => {
            let mut s = format!("state {}", data["state"].as_str().unwrap_or("?"));
            let error = error_text(data);
            if !error.is_empty() {
                s.push_str(&format!(" ({error})"));
            }
            if !data["result"].is_null() {
                s.push_str(&format!(" result {}", data["result"]));
            }
            s
        }
        "leased" => format!(
            "leased by machine {} (attempt {})",
            data["machine"], data["attempt"]
        ),
        "progress" => format!(
            "progress {}% {}",
            data["percent"],
            data["message"].as_str().unwrap_or("")
        ),
        "failed" => format!("failed ({})", data["class"].as_str().unwrap_or("?")),
        "revoked" => format!("revoked ({})", data["reason"].as_str().unwrap_or("?")),
        "result" => format!("result {}", data["result"].as_str().unwrap_or("")),
        other => other.to_string(),
    };
    println!("{at:<24} {detail}");
}
