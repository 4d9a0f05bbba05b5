//! Presence webhooks on the hosts: the HTTP client that posts them and the relay loop of
//! `nearcast serve` ([`nearcast_core::webhook`] holds the outbox, signing and retries).

use nearcast_core::ports::BoxFuture;
use nearcast_core::webhook::{WebhookRelay, WebhookRequest, WebhookSender};
use std::sync::Arc;
use std::time::Duration;

/// How long one attempt waits for the receiver's answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How often `serve` looks for due messages.
pub const RELAY_EVERY: Duration = Duration::from_secs(1);

/// Messages one pass takes at most.
pub const RELAY_BATCH: usize = 256;

/// Checks a receiver URL: `https://`, or `http://` on a loopback host (a receiver on the
/// same machine, tests).
///
/// # Errors
/// Any other URL, with the reason.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("webhook URL {url:?}: {e}"))?;
    let loopback = u.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    });
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback => Ok(u),
        _ => Err(format!(
            "webhook URL {url:?}: use https:// (http:// only to a loopback host)"
        )),
    }
}

/// Posts webhook requests with reqwest (rustls): no redirects followed (a redirect is a
/// failed attempt, as Standard Webhooks asks), [`TIMEOUT`] per attempt.
pub struct HttpWebhookSender {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl HttpWebhookSender {
    /// A sender to `url` ([`check_url`]).
    ///
    /// # Errors
    /// A URL [`check_url`] refuses, or a client that cannot be built.
    pub fn new(url: &str) -> Result<Self, String> {
        let url = check_url(url)?;
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nearcast-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Self { client, url })
    }
}

impl WebhookSender for HttpWebhookSender {
    fn post<'a>(&'a self, r: &'a WebhookRequest) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let res = self
                .client
                .post(self.url.clone())
                .header("content-type", "application/json")
                .header("webhook-id", &r.id)
                .header("webhook-timestamp", r.timestamp.to_string())
                .header("webhook-signature", &r.signature)
                .body(r.body.clone())
                .send()
                .await
                // Without the URL: it may carry a token in its query.
                .map_err(|e| format!("request failed: {}", e.without_url()))?;
            let status = res.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        })
    }
}

/// Runs `relay` every [`RELAY_EVERY`] for as long as the process lives.
pub fn spawn_relay(relay: Arc<WebhookRelay>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELAY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match relay.run_once(RELAY_BATCH).await {
                Ok(r) if r.delivered + r.retried + r.dead > 0 => {
                    tracing::info!(
                        delivered = r.delivered,
                        retried = r.retried,
                        dead = r.dead,
                        "webhook relay"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "webhook relay failed; retried on its next tick")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_urls_are_https_or_loopback() {
        assert!(check_url("https://hooks.example.com/nearcast").is_ok());
        assert!(check_url("http://127.0.0.1:9000/h").is_ok());
        assert!(check_url("http://[::1]:9000/h").is_ok());
        assert!(check_url("http://localhost/h").is_ok());
        assert!(check_url("http://hooks.example.com/h").is_err());
        assert!(check_url("ftp://127.0.0.1/h").is_err());
        assert!(check_url("not a url").is_err());
    }
}
