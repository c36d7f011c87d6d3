//! Server reflection (grpc.reflection.v1), as grpcurl and Postman use it: the services listed,
//! and the descriptor of the inference service, fetched over one reflection stream.

use prost::Message;
use prost_types::FileDescriptorProto;
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest, ServerReflectionResponse,
};

use crate::helpers::spawn_app;

/// The answer to the next request on the stream.
async fn next(answers: &mut tonic::Streaming<ServerReflectionResponse>) -> MessageResponse {
    answers
        .message()
        .await
        .expect("a reflection answer")
        .expect("one answer per request")
        .message_response
        .expect("an answer")
}

#[tokio::test]
async fn grpc_reflection_lists_the_services_and_describes_the_inference_service() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.expect("gRPC is on");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    let mut reflection = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("inference.GRPCInferenceService".to_owned()),
        MessageRequest::FileContainingSymbol(
            "inference.GRPCInferenceService.ModelInfer".to_owned(),
        ),
        MessageRequest::FileContainingSymbol("grpc.health.v1.Health".to_owned()),
    ]
    .map(|request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("reflection answers")
        .into_inner();
    let MessageResponse::ListServicesResponse(listed) = next(&mut answers).await else {
        panic!("ListServices answers with the services");
    };
    let names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    for service in [
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&service), "{service} is listed: {names:?}");
    }

    for (symbol, package, service, method) in [
        (
            "inference.GRPCInferenceService",
            "inference",
            "GRPCInferenceService",
            "ModelInfer",
        ),
        (
            "inference.GRPCInferenceService.ModelInfer",
            "inference",
            "GRPCInferenceService",
            "RepositoryIndex",
        ),
        ("grpc.health.v1.Health", "grpc.health.v1", "Health", "Check"),
    ] {
        let answer = next(&mut answers).await;
        let MessageResponse::FileDescriptorResponse(files) = answer else {
            panic!("{symbol}: a file descriptor, not {answer:?}");
        };
        let files: Vec<FileDescriptorProto> = files
            .file_descriptor_proto
            .iter()
            .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("a descriptor"))
            .collect();
        let file = files
            .iter()
            .find(|file| file.package() == package)
            .unwrap_or_else(|| panic!("{symbol}: the file of package {package}"));
        let described = file
            .service
            .iter()
            .find(|s| s.name() == service)
            .unwrap_or_else(|| panic!("{symbol}: {package}.{service} is described"));
        let methods: Vec<&str> = described.method.iter().map(|m| m.name()).collect();
        assert!(methods.contains(&method), "{symbol}: {methods:?}");
        if package == "inference" {
            let messages: Vec<&str> = file.message_type.iter().map(|m| m.name()).collect();
            for message in ["ModelInferRequest", "ModelInferResponse"] {
                assert!(
                    messages.contains(&message),
                    "{symbol}: enough to build a call: {messages:?}"
                );
            }
        }
    }
    app.stop().await;
}
