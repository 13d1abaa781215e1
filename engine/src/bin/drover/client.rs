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
            bail!("job {id} ended {state}");
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
