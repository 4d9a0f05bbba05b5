//! [`SnsNotifier`]: the [`Notifier`] port on Amazon SNS mobile push (APNs and FCM through
//! platform applications).
//!
//! # Requests per push
//!
//! - A push whose target already has an endpoint ARN (`push.endpoint`): 1 Publish.
//! - Otherwise 1 CreatePlatformEndpoint (idempotent at SNS for the same token and
//!   attributes: it returns the existing ARN) and 1 Publish. The engine stores the ARN in
//!   `PushTarget.endpoint` later; [`SnsNotifier::ensure_endpoint`] is public for that.
//!
//! # Payload
//!
//! Publish uses `MessageStructure=json`: the message is a JSON object with a `default` text
//! and one key for the endpoint's platform (`APNS`, `APNS_SANDBOX` when the APNs platform
//! application is a sandbox one, or `GCM` for FCM) whose value is the platform payload as a
//! JSON string (see [`build_message`]). Only the endpoint's own platform key is sent: the
//! other would never be delivered and would only eat into the size budget. The whole
//! message is kept within [`MAX_PAYLOAD_BYTES`] (the APNs and FCM limit) by truncating the
//! body, then the title, on a char boundary; the ids are never cut.
//!
//! # Errors and retries
//!
//! CreatePlatformEndpoint (idempotent) is retried by [`RetryPolicy`] (3 attempts,
//! exponential backoff with full jitter, tens of milliseconds) when it failed for a
//! transient reason: throttling (`Throttled`, `Throttling`, `KMSThrottling`), SNS internal
//! errors, HTTP 429 or 5xx, timeouts and dispatch (network) failures. Publish is retried
//! only when SNS refused it (throttling, HTTP 429, see [`is_refusal`]): after a timeout or a
//! 5xx SNS may have accepted the message, and publishing again could push twice. A failed
//! CreatePlatformEndpoint and a refused Publish end as [`NotifyError::Retryable`] (nothing
//! was delivered; the engine releases the cap reservation); any other failed Publish ends
//! as [`NotifyError::Unconfirmed`] (it may have been delivered: the cap stays spent and the
//! push is never sent again).
//! `EndpointDisabled` (and `NotFound` on Publish: the endpoint was deleted) end as
//! [`NotifyError::EndpointDisabled`]; everything else (invalid parameters, authorisation,
//! KMS configuration, a missing platform application) as [`NotifyError::Permanent`].
//! Clients built here ([`SnsNotifier::client`], [`SnsNotifier::from_sdk_config`]) turn the
//! SDK's own retries off so that the policy above is the only one.
//!
//! SNS cannot deduplicate publishes to platform endpoints, which is why an ambiguous
//! Publish failure is never retried here; the payload carries the `delivery_id` so that an
//! app can also drop a repeat.
//!
//! # Privacy
//!
//! Logs (tracing) carry the delivery id, the attempt and the error kind only: never the
//! token, the endpoint ARN or the message. Error strings carry the operation, the SNS error
//! code and the HTTP status, not SNS's message text (which may echo parameters).

use aws_config::SdkConfig;
use aws_sdk_sns::Client;
use aws_sdk_sns::config::retry::RetryConfig;
use aws_sdk_sns::config::timeout::TimeoutConfig;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use nearcast_core::decision::Push;
use nearcast_core::event::Platform;
use nearcast_core::ports::{BoxFuture, Notifier, NotifyError};
use std::future::Future;
use std::time::Duration;

/// The SDK, re-exported so that callers (and tests) use the same version.
pub use aws_sdk_sns;

/// The payload builder and its limit live in the core, so the admin API previews the
/// exact message on both hosts.
pub use nearcast_core::payload::{MAX_PAYLOAD_BYTES, build_message};

/// The message attribute SNS turns into APNs' `apns-priority` header.
pub const APNS_PRIORITY: &str = "AWS.SNS.MOBILE.APNS.PRIORITY";

/// How failed requests are retried: at most `attempts` attempts; before attempt `n + 1`
/// (`n` ≥ 1) a delay drawn uniformly from `[0, min(max_delay, base_delay × 2^(n-1))]`
/// (exponential backoff with full jitter). Only [`NotifyError::Retryable`] is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    /// Backoff ceiling before the second attempt.
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// A jittered delay after failed attempt `attempt` (1-based): uniform in
    /// `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_micros() as u64;
        Duration::from_micros(rand::random_range(0..=ceiling))
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts are spent (then the last
    /// [`NotifyError::Retryable`] is returned). `delivery_id` and `what` only label logs.
    pub async fn run<T, F, Fut>(
        &self,
        delivery_id: &str,
        what: &str,
        mut op: F,
    ) -> Result<T, NotifyError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, NotifyError>>,
    {
        self.run_if(delivery_id, what, |_| true, &mut op).await
    }

    /// As [`RetryPolicy::run`], but a [`NotifyError::Retryable`] failure is retried only
    /// when `again` says so. Publish uses it to retry only failures where SNS refused the
    /// request (throttling), never ambiguous ones (a timeout, a 5xx) after which SNS may
    /// have accepted the message: re-publishing then could push twice.
    pub async fn run_if<T, F, Fut>(
        &self,
        delivery_id: &str,
        what: &str,
        again: impl Fn(&NotifyError) -> bool,
        mut op: F,
    ) -> Result<T, NotifyError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, NotifyError>>,
    {
        let attempts = self.attempts.max(1);
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e @ NotifyError::Retryable(_)) if attempt < attempts && again(&e) => {
                    tracing::debug!(
                        delivery_id,
                        op = what,
                        attempt,
                        kind = error_kind(&e),
                        "SNS request failed, retrying"
                    );
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        delivery_id,
                        op = what,
                        attempt,
                        kind = error_kind(&e),
                        "SNS request failed"
                    );
                    return Err(e);
                }
            }
        }
    }
}

/// Whether a retryable failure means SNS refused the request (throttling, HTTP 429) or
/// never got it (the connection was refused), so sending it again cannot deliver the
/// message twice.
pub fn is_refusal(e: &NotifyError) -> bool {
    match e {
        NotifyError::Retryable(what) => {
            what.contains("Throttl")
                || what.contains("connection refused")
                || what.contains("TooManyRequests")
                || what.contains("RequestLimitExceeded")
                || what.contains("HTTP 429")
        }
        _ => false,
    }
}

/// A short label of an error, for logs.
fn error_kind(e: &NotifyError) -> &'static str {
    match e {
        NotifyError::Retryable(_) => "retryable",
        NotifyError::Unconfirmed(_) => "unconfirmed",
        NotifyError::EndpointDisabled => "endpoint_disabled",
        NotifyError::Permanent(_) => "permanent",
    }
}

/// SNS error codes worth retrying.
const TRANSIENT_CODES: &[&str] = &[
    "Throttled",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "KMSThrottling",
    "KMSThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
];

/// Classifies an SNS error response by its error code and HTTP status.
pub fn classify(op: &str, code: Option<&str>, status: Option<u16>) -> NotifyError {
    let what = match (code, status) {
        (Some(c), Some(s)) => format!("SNS {op}: {c} (HTTP {s})"),
        (Some(c), None) => format!("SNS {op}: {c}"),
        (None, Some(s)) => format!("SNS {op}: HTTP {s}"),
        (None, None) => format!("SNS {op}: unknown error"),
    };
    match code {
        Some("EndpointDisabled" | "EndpointDisabledException") => NotifyError::EndpointDisabled,
        Some(c) if TRANSIENT_CODES.contains(&c) => NotifyError::Retryable(what),
        _ if status.is_some_and(|s| s == 429 || s >= 500) => NotifyError::Retryable(what),
        _ => NotifyError::Permanent(what),
    }
}

/// Whether the connection was refused: then no byte of the request reached SNS.
fn connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Maps an SDK error: transport problems are transient, service errors by [`classify`].
fn from_sdk<E>(op: &str, e: &SdkError<E>) -> NotifyError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    match e {
        SdkError::ServiceError(_) => classify(op, e.code(), status),
        SdkError::ConstructionFailure(_) => {
            NotifyError::Permanent(format!("SNS {op}: request could not be built"))
        }
        SdkError::TimeoutError(_) => NotifyError::Retryable(format!("SNS {op}: timed out")),
        SdkError::DispatchFailure(_) if connection_refused(e) => {
            NotifyError::Retryable(format!("SNS {op}: connection refused"))
        }
        SdkError::DispatchFailure(_) => NotifyError::Retryable(format!(
            "SNS {op}: dispatch failure: {}",
            DisplayErrorContext(e)
        )),
        SdkError::ResponseError(_) => NotifyError::Retryable(match status {
            Some(s) => format!("SNS {op}: unreadable response (HTTP {s})"),
            None => format!("SNS {op}: unreadable response"),
        }),
        _ => NotifyError::Retryable(format!("SNS {op}: request failed")),
    }
}

/// The SNS message key for an APNs platform application ARN (`APNS_SANDBOX` for sandbox
/// applications, `APNS` otherwise).
fn apns_key(arn: Option<&str>) -> &'static str {
    match arn {
        Some(a) if a.contains(":app/APNS_SANDBOX/") => "APNS_SANDBOX",
        _ => "APNS",
    }
}

/// The [`Notifier`] on SNS mobile push.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
    apns_arn: Option<String>,
    fcm_arn: Option<String>,
    retry: RetryPolicy,
}

impl SnsNotifier {
    /// A notifier through `client`, with the platform application ARNs for APNs and FCM
    /// (a push for a platform without one fails with [`NotifyError::Permanent`]).
    ///
    /// The client's own retries multiply with [`RetryPolicy`]'s; build it with
    /// [`SnsNotifier::client`] or use [`SnsNotifier::from_sdk_config`] to avoid that.
    pub fn new(client: Client, apns_arn: Option<String>, fcm_arn: Option<String>) -> Self {
        Self {
            client,
            apns_arn,
            fcm_arn,
            retry: RetryPolicy::default(),
        }
    }

    /// A notifier with a client built from `config`, the SDK's retries turned off (the
    /// [`RetryPolicy`] retries) and a 5 s limit per attempt unless `config` sets one.
    pub fn from_sdk_config(
        config: &SdkConfig,
        apns_arn: Option<String>,
        fcm_arn: Option<String>,
    ) -> Self {
        let mut builder =
            aws_sdk_sns::config::Builder::from(config).retry_config(RetryConfig::disabled());
        let has_timeout = config
            .timeout_config()
            .is_some_and(|t| t.operation_attempt_timeout().is_some());
        if !has_timeout {
            builder = builder.timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .build(),
            );
        }
        Self::new(Client::from_conf(builder.build()), apns_arn, fcm_arn)
    }

    /// A client from the standard AWS configuration (environment, profile, instance role;
    /// `AWS_ENDPOINT_URL` is honoured), with `endpoint` overriding the endpoint if given, and
    /// the SDK's retries turned off.
    pub async fn client(endpoint: Option<&str>) -> Client {
        Self::from_sdk_config(&crate::sdk_config(endpoint).await, None, None).client
    }

    /// The same notifier with another retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The SNS client.
    pub fn sns(&self) -> &Client {
        &self.client
    }

    /// The SNS message key of `platform`.
    pub fn platform_key(&self, platform: Platform) -> &'static str {
        match platform {
            Platform::Apns => apns_key(self.apns_arn.as_deref()),
            Platform::Fcm => "GCM",
        }
    }

    fn application(&self, platform: Platform) -> Result<&str, NotifyError> {
        let (arn, name) = match platform {
            Platform::Apns => (&self.apns_arn, "APNs"),
            Platform::Fcm => (&self.fcm_arn, "FCM"),
        };
        arn.as_deref().ok_or_else(|| {
            NotifyError::Permanent(format!(
                "SNS: no platform application configured for {name}"
            ))
        })
    }

    /// The endpoint ARN of `token` on `platform`: CreatePlatformEndpoint, which returns the
    /// existing endpoint for a token SNS already knows.
    ///
    /// # Errors
    /// [`NotifyError::Permanent`] for an empty token, an unconfigured platform or a refused
    /// request; [`NotifyError::Retryable`] when SNS stayed unavailable.
    pub async fn ensure_endpoint(
        &self,
        platform: Platform,
        token: &str,
    ) -> Result<String, NotifyError> {
        self.endpoint_for("-", platform, token).await
    }

    async fn endpoint_for(
        &self,
        delivery_id: &str,
        platform: Platform,
        token: &str,
    ) -> Result<String, NotifyError> {
        let application = self.application(platform)?;
        if token.is_empty() {
            return Err(NotifyError::Permanent("SNS: empty push token".into()));
        }
        self.retry
            .run(delivery_id, "CreatePlatformEndpoint", || async {
                let out = self
                    .client
                    .create_platform_endpoint()
                    .platform_application_arn(application)
                    .token(token)
                    .send()
                    .await
                    .map_err(|e| from_sdk("CreatePlatformEndpoint", &e))?;
                out.endpoint_arn().map(str::to_string).ok_or_else(|| {
                    NotifyError::Permanent("SNS CreatePlatformEndpoint: no endpoint ARN".into())
                })
            })
            .await
    }

    /// Sends `push` and returns SNS's MessageId (what [`Notifier::send`] does, with the id).
    ///
    /// # Errors
    /// As described in the [module documentation](self).
    pub async fn publish(&self, push: &Push) -> Result<String, NotifyError> {
        let id = push.delivery_id.as_str();
        let message = build_message(push, self.platform_key(push.platform))?;
        let endpoint = match &push.endpoint {
            Some(arn) => arn.clone(),
            None => self.endpoint_for(id, push.platform, &push.token).await?,
        };
        let message_id = self
            .retry
            .run_if(id, "Publish", is_refusal, || async {
                let mut publish = self
                    .client
                    .publish()
                    .target_arn(&endpoint)
                    .message_structure("json")
                    .message(&message);
                // APNs reads its priority from a header, which SNS sets from this
                // attribute; FCM's is in the payload.
                if push.platform == Platform::Apns {
                    publish = publish.message_attributes(
                        APNS_PRIORITY,
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(push.priority.apns())
                            .build()
                            .map_err(|e| NotifyError::Permanent(e.to_string()))?,
                    );
                }
                let out = publish
                    .send()
                    .await
                    .map_err(|e| match from_sdk("Publish", &e) {
                        // A deleted endpoint: as gone as a disabled one.
                        NotifyError::Permanent(_) if e.code() == Some("NotFound") => {
                            NotifyError::EndpointDisabled
                        }
                        other => other,
                    })?;
                Ok(out.message_id().unwrap_or_default().to_string())
            })
            .await
            .map_err(|e| match e {
                // Not a refusal: the request may have reached SNS (a timeout, a 5xx, a reset
                // after sending), so the push may be out. Never sent again, cap kept.
                e @ NotifyError::Retryable(_) if !is_refusal(&e) => match e {
                    NotifyError::Retryable(what) => NotifyError::Unconfirmed(what),
                    other => other,
                },
                other => other,
            })?;
        tracing::debug!(delivery_id = id, "push published to SNS");
        Ok(message_id)
    }
}

impl Notifier for SnsNotifier {
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move { self.publish(push).await.map(|_| ()) })
    }

    fn register<'a>(
        &'a self,
        platform: Platform,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, NotifyError>> {
        Box::pin(async move { self.ensure_endpoint(platform, token).await.map(Some) })
    }

    fn forget<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            self.retry
                .run("-", "DeleteEndpoint", || async {
                    // DeleteEndpoint succeeds for an endpoint that no longer exists.
                    self.client
                        .delete_endpoint()
                        .endpoint_arn(endpoint)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| from_sdk("DeleteEndpoint", &e))
                })
                .await
        })
    }
}
