//! The S3 client coffer builds: where credentials, region and endpoint
//! come from ([`S3Access`]), and its settings (no SDK retries, timeouts,
//! checksums only where required, path-style addressing for an endpoint).

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::Client;
use std::time::Duration;

/// How long a request may wait for the response before it counts as a
/// timeout and is retried (override with `COFFER_S3_READ_TIMEOUT_SECONDS`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `var` as whole seconds, or `default` when unset or not a number.
pub(super) fn seconds_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(default, Duration::from_secs)
}

/// Where a client takes its credentials, region and endpoint from: the
/// standard AWS chain, with what is set here taking precedence.
#[derive(Debug, Clone, Default)]
pub struct S3Access {
    /// An AWS profile (credentials, region, endpoint); `None` follows the
    /// standard chain (`AWS_PROFILE` too).
    pub profile: Option<String>,
    /// Keys given outright (`COFFER_SOURCE_ACCESS_KEY_ID`...): they win
    /// over the profile's and the chain's.
    pub keys: Option<AccessKeys>,
    /// An S3-compatible endpoint (path-style addressing).
    pub endpoint: Option<String>,
    /// The region; with none anywhere, `us-east-1`.
    pub region: Option<String>,
}

/// An access key, its secret and an optional session token.
#[derive(Clone)]
pub struct AccessKeys {
    /// The access key id (not secret: it names the key).
    pub id: String,
    /// The secret access key.
    pub secret: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeys")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// An S3 client for `access`, with coffer's settings: no SDK retries
/// (callers retry, see `retry.rs`), a connect and a read timeout, checksums
/// only where required, path-style addressing for any endpoint set.
/// Sends no request.
pub(super) async fn client(access: &S3Access) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http.clone());
    if let Some(profile) = &access.profile {
        // The profile's credentials, not the chain's: environment
        // credentials would otherwise win, and a copy between two
        // accounts would use one account for both ends.
        let provider = aws_config::provider_config::ProviderConfig::without_region()
            .with_http_client(http.clone());
        let creds = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .configure(&provider)
            .profile_name(profile)
            .build();
        loader = loader.profile_name(profile).credentials_provider(creds);
    }
    if let Some(keys) = &access.keys {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            &keys.id,
            &keys.secret,
            keys.session_token.clone(),
            None,
            "coffer",
        ));
    }
    let shared = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&shared)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(seconds_from_env(
                    "COFFER_S3_READ_TIMEOUT_SECONDS",
                    READ_TIMEOUT,
                ))
                .build(),
        )
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(region) = &access.region {
        conf = conf.region(Region::new(region.clone()));
    } else if shared.region().is_none() {
        // S3-compatible servers accept any region; AWS redirects.
        conf = conf.region(Region::from_static("us-east-1"));
    }
    // An endpoint from the environment or the profile: an
    // S3-compatible server, which expects path-style addressing.
    let endpoint_var = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if let Some(endpoint) = &access.endpoint {
        conf = conf.endpoint_url(endpoint).force_path_style(true);
    } else if endpoint_var || shared.endpoint_url().is_some() {
        conf = conf.force_path_style(true);
    }
    Client::from_conf(conf.build())
}
