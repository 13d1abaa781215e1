//! The API's client, used by `drover submit/status` and the tests: `http://` or `https://`
//! (rustls with the webpki roots, plus a private CA when one is named).

use axum::http::{Method, Response, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection may take to open (a reply itself may stream for as long as it lasts).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("API address {0:?}: use http://HOST:PORT or https://HOST:PORT")]
    BadAddress(String),
    #[error("CA certificate {path}: {source}")]
    ReadCaCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA certificate {path}: {reason}")]
    BadCaCert { path: PathBuf, reason: String },
    /// Not marked as the source: the message already holds the causes, which a reporter
    /// walking the sources (anyhow's `{:#}`) would print twice.
    #[error("cannot reach the API: {}", chain(.0))]
    Http(reqwest::Error),
}

impl From<reqwest::Error> for ClientError {
    fn from(error: reqwest::Error) -> Self {
        ClientError::Http(error)
    }
}

/// reqwest's own message is terse ("error sending request"); the causes say what went wrong
/// (refused, a certificate the CA did not sign, a reply that is not HTTP).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Options beyond the address and token.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// A PEM file of CA certificates to trust besides the webpki roots (a private CA).
    pub ca_cert: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `base`, e.g. "http://127.0.0.1:8080" or "https://api.example:8443".
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient, ClientError> {
        ApiClient::with_options(base, token, &ClientOptions::default())
    }

    pub fn with_options(
        base: &str,
        token: Option<String>,
        options: &ClientOptions,
    ) -> Result<ApiClient, ClientError> {
        let base = checked_base(base)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .use_rustls_tls();
        if let Some(path) = &options.ca_cert {
            for cert in read_ca_certs(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(ApiClient {
            base,
            token,
            http: builder.build()?,
        })
    }

    pub async fn get(&self, path: &str) -> Result<(StatusCode, Value), ClientError> {
        self.json(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(StatusCode, Value), ClientError> {
        let bytes = body.to_string().into_bytes();
        self.json(Method::POST, path, Some(bytes), &[]).await
    }

    /// Sends a request and reads the whole reply as JSON (a non-JSON reply becomes a string).
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Value), ClientError> {
        let response = self.request(method, path, body, headers).send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    /// Sends a request; the body is left to read (event streams).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Response<reqwest::Body>, ClientError> {
        let response = self.request(method, path, body, headers).send().await?;
        Ok(response.into())
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    }
}

/// `base` without a trailing slash, refused unless it is an http(s) URL with a host and
/// nothing after it (paths are the methods' business).
fn checked_base(base: &str) -> Result<String, ClientError> {
    let bad = || ClientError::BadAddress(base.to_string());
    let url = reqwest::Url::parse(base).map_err(|_| bad())?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !bare {
        return Err(bad());
    }
    Ok(base.trim_end_matches('/').to_string())
}

fn read_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::ReadCaCert {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| ClientError::BadCaCert {
        path: path.to_path_buf(),
        reason,
    };
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(chain(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_http_or_https_urls_without_a_path() {
        for good in ["http://127.0.0.1:8080", "https://api.example:8443/"] {
            assert!(checked_base(good).is_ok(), "{good}");
        }
        assert_eq!(checked_base("http://a:1/").unwrap(), "http://a:1");
        for bad in [
            "127.0.0.1:8080",
            "ftp://a:1",
            "http://a:1/v1",
            "http://a:1?x=1",
            "",
        ] {
            assert!(
                matches!(checked_base(bad), Err(ClientError::BadAddress(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_missing_or_bad_ca_file_is_named() {
        let options = |path: &str| ClientOptions {
            ca_cert: Some(PathBuf::from(path)),
        };
        let missing = ApiClient::with_options("https://a:1", None, &options("/no/such/ca.pem"));
        let message = missing.unwrap_err().to_string();
        assert!(message.contains("/no/such/ca.pem"), "{message}");

        let file = std::env::temp_dir().join(format!("drover-not-pem-{}", std::process::id()));
        std::fs::write(&file, "not a certificate").unwrap();
        let result = ApiClient::with_options("https://a:1", None, &options(file.to_str().unwrap()));
        std::fs::remove_file(&file).unwrap();
        assert!(
            matches!(result, Err(ClientError::BadCaCert { .. })),
            "{result:?}"
        );
    }
}
