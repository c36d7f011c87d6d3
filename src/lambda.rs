//! `ml-api lambda`: the predictor's router served as an AWS Lambda function (a function URL,
//! an API Gateway REST API or an HTTP API), from the same binary as `ml-api serve`.
//!
//! The function loads its models once, at cold start, exactly as a replica does (the bundled
//! models from `--model-dir`, and with `--registry redis` the registry's), then answers one
//! invocation at a time through `lambda_http`, which turns each event into an HTTP request for
//! the router and its response back into the event's answer. There is no TCP listener. The
//! background tasks a replica runs (alias reconciliation, shadow statistics, the rate limiter's
//! clean-up, the embedded registry's training worker) only wake on timers: Lambda freezes the
//! process between invocations, so they cost nothing then and catch up after a thaw.

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use anyhow::Context;
use axum::extract::ConnectInfo;
use lambda_http::{request::RequestContext, RequestExt};

use crate::{config::ServeConfig, startup::Predictor};

/// The environment variable the Lambda runtime sets for its function processes.
pub const RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

/// What the Lambda runtime library requires besides [`RUNTIME_API_ENV`] (it panics without
/// them); checked first so that a missing one is an error message instead.
const REQUIRED_ENV: [&str; 4] = [
    RUNTIME_API_ENV,
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
];

/// The command line to parse: Lambda starts a custom runtime's `bootstrap` with no arguments,
/// so a bare `ml-api` with [`RUNTIME_API_ENV`] set means `ml-api lambda` (configured from the
/// same `ML_API_*` variables as `ml-api serve`). Any other command line is left as it is.
pub fn command_line(
    args: impl IntoIterator<Item = OsString>,
    runtime_api: Option<OsString>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.len() <= 1 && runtime_api.is_some_and(|api| !api.is_empty()) {
        if args.is_empty() {
            args.push("ml-api".into());
        }
        args.push("lambda".into());
    }
    args
}

/// Builds the predictor and serves invocations until the runtime API goes away.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let missing: Vec<&str> = REQUIRED_ENV
        .into_iter()
        .filter(|name| std::env::var_os(name).is_none_or(|value| value.is_empty()))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "`ml-api lambda` runs under a Lambda runtime API, which sets {}; missing: {}",
        REQUIRED_ENV.join(", "),
        missing.join(", ")
    );
    let api = std::env::var(RUNTIME_API_ENV).unwrap_or_default();
    anyhow::ensure!(
        api.parse::<http::Uri>().is_ok(),
        "{RUNTIME_API_ENV}=`{api}` is not an address (`host:port`, or a URL)"
    );
    let Predictor {
        router,
        state,
        stopped,
    } = Predictor::build(&config).await?;
    let _stop_background_tasks = stopped.drop_guard();
    state.lifecycle.mark_ready();
    tracing::info!(
        function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
        "serving Lambda invocations"
    );
    let service = tower::ServiceBuilder::new()
        .map_request(with_client_address)
        .service(router);
    lambda_http::run(service)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("the Lambda runtime stopped")
}

/// Gives the request the client address API Gateway (or the function URL) saw, as the
/// connection's peer: the rate limiter keys anonymous clients by it, as behind an ingress.
/// An event without one (hand-written) counts as one unknown client, 0.0.0.0.
fn with_client_address(mut request: lambda_http::Request) -> lambda_http::Request {
    let ip = source_ip(request.request_context_ref()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 0)));
    request
}

fn source_ip(context: Option<&RequestContext>) -> Option<IpAddr> {
    let text = match context? {
        RequestContext::ApiGatewayV1(context) => context.identity.source_ip.as_deref(),
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref(),
        _ => None, // the enum is non-exhaustive; no other event kind is enabled
    };
    text?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_bare_command_line_under_the_runtime_api_means_lambda() {
        let api = Some(OsString::from("127.0.0.1:9001"));
        assert_eq!(
            command_line(strings(&["/var/task/bootstrap"]), api.clone()),
            strings(&["/var/task/bootstrap", "lambda"])
        );
        assert_eq!(
            command_line(strings(&["ml-api", "serve"]), api),
            strings(&["ml-api", "serve"])
        );
        assert_eq!(
            command_line(strings(&["ml-api"]), None),
            strings(&["ml-api"])
        );
        assert_eq!(
            command_line(strings(&["ml-api"]), Some(OsString::new())),
            strings(&["ml-api"])
        );
    }
}
