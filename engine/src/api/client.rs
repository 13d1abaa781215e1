//! A small HTTP/1 client for the API, used by `drover submit/status` and the tests. Plain
//! HTTP only: reach the API inside the cluster or through a TLS-terminating proxy.

use axum::http::{header, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("API address {0:?}: use http://HOST:PORT")]
    BadAddress(String),
    #[error("cannot reach the API: {0}")]
    Connect(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] axum::http::Error),
}

#[derive(Clone, Debug)]
pub struct ApiClient {
    authority: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client for `base`, e.g. "http://127.0.0.1:8080".
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient, ClientError> {
        let bad = || ClientError::BadAddress(base.to_string());
        let uri: Uri = base.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?.to_string();
        Ok(ApiClient { authority, token })
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
        let response = self.send(method, path, body, headers).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    /// Sends a request on a new connection; the body is left to read (event streams).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = tokio::net::TcpStream::connect(&self.authority).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        Ok(sender.send_request(request).await?)
    }
}
