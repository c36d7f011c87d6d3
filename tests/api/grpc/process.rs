//! gRPC through the real `ml-api` binary: a call's trace exported over OTLP under the caller's
//! `traceparent`, and the drain on SIGTERM (health turns NOT_SERVING, calls in flight finish).

use std::time::Duration;

use futures::StreamExt;
use ml_api::grpc::proto::{ModelInferRequest, ModelInferResponse};
use tokio::{net::TcpStream, sync::oneshot};
use tonic::{codegen::http::uri::PathAndQuery, transport::Channel, Request};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use super::{connect, golden_records, infer_request, probabilities, santander_metadata, tensors};
use crate::{
    child::ServerProcess,
    process::{assert_stages_in_order_within, named, Capture},
};

const SERVICE: &str = "inference.GRPCInferenceService";

#[tokio::test]
async fn grpc_call_spans_are_exported_over_otlp_under_the_callers_trace() {
    let (collector, addr) = Capture::start().await;
    let mut server = ServerProcess::start(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
    )
    .await;
    let mut grpc = connect(&server.grpc_addr().await).await;
    let metadata = santander_metadata(&mut grpc).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let parent_id = "b7ad6b7169203331";
    let mut request = Request::new(infer_request(
        "santander",
        "",
        tensors(&metadata, &golden_records()[..1], true),
    ));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    grpc.model_infer(request).await.expect("ModelInfer");
    // Spans are batched; shutting down flushes them.
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).await.success());

    let call_name = format!("{SERVICE}/ModelInfer");
    const STAGES: [&str; 3] = ["decode", "queue_wait", "inference"];
    let mut names = vec![call_name.as_str()];
    names.extend(STAGES);
    let spans = collector
        .trace(&hex::decode(trace_id).unwrap(), &names)
        .await;
    let call = named(&spans, &call_name);
    assert_eq!(
        call.parent_span_id,
        hex::decode(parent_id).unwrap(),
        "the call's span is a child of the caller's"
    );
    assert_stages_in_order_within(&spans, call, &STAGES);
}

/// A ModelInfer call the server has received but cannot answer yet: its request body stays
/// open (tonic reads a unary request to its end) until the returned sender fires. Resolves
/// once the request message has been handed to the connection.
async fn held_infer(
    channel: Channel,
    request: ModelInferRequest,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<ModelInferResponse, tonic::Status>>,
) {
    let (sent_tx, sent) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    let body = futures::stream::once(async move {
        let _ = sent_tx.send(());
        request
    })
    .chain(futures::stream::once(released).filter_map(|_| async { None }));
    let call = tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        grpc.client_streaming(
            Request::new(body),
            PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
    });
    sent.await.expect("the request message is sent");
    (release, call)
}

async fn health_status(health: &mut HealthClient<Channel>, service: &str) -> i32 {
    health
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers while the listener is open")
        .into_inner()
        .status
}

/// SIGTERM: gRPC health answers NOT_SERVING at once (for the server and the inference service)
/// while calls are still served for `--shutdown-delay`; then the listener closes, and a call
/// that was in flight all along still gets its answer before the process exits 0.
#[tokio::test]
async fn sigterm_turns_grpc_health_not_serving_and_drains_in_flight_calls() {
    let mut server = ServerProcess::start(
        &[
            "--shutdown-delay",
            "8s",
            "--shutdown-grace",
            "30s",
            "--request-timeout",
            "60s",
        ],
        &[],
    )
    .await;
    let grpc_addr = server.grpc_addr().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    let mut grpc = connect(&grpc_addr).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", SERVICE] {
        assert_eq!(
            health_status(&mut health, service).await,
            ServingStatus::Serving as i32
        );
    }
    let metadata = santander_metadata(&mut grpc).await;
    let request = || infer_request("santander", "", tensors(&metadata, &golden_records(), true));
    let expected = probabilities(&grpc.model_infer(request()).await.unwrap().into_inner());
    let (release, in_flight) = held_infer(channel.clone(), request()).await;

    server.terminate();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while health_status(&mut health, "").await != ServingStatus::NotServing as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gRPC health turns NOT_SERVING after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        health_status(&mut health, SERVICE).await,
        ServingStatus::NotServing as i32,
        "the inference service is NOT_SERVING too"
    );
    // Draining, not stopped: calls are still answered until the listener closes (this one
    // also follows the held call on the same connection, so the server has that call).
    let during = grpc
        .model_infer(request())
        .await
        .expect("served while draining");
    assert_eq!(probabilities(&during.into_inner()), expected);

    while TcpStream::connect(&grpc_addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gRPC listener closes after --shutdown-delay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!in_flight.is_finished(), "the held call is still open");
    release.send(()).expect("the held call is waiting");
    let answer = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("the in-flight call completes")
        .unwrap();
    match answer {
        Ok(answer) => assert_eq!(probabilities(&answer), expected),
        Err(status) => panic!("the in-flight call failed: {status:?}"),
    }
    let status = server.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
}
