//! The protobuf codec of the inference service: prost's, except that a message is decoded
//! from one contiguous buffer.
//!
//! tonic hands a decoder the message as a `DecodeBuf`, a length-limited view over the
//! connection's `BytesMut`, and `tonic_prost::ProstCodec` decodes through it: every varint
//! and every field goes through the view's `Buf` methods. A `ModelInferRequest` has a few
//! hundred of them (22 tensors, each with a name, a datatype, a shape and its raw bytes), and
//! a profile of `ModelInfer` at 64 connections put prost's decoding at 15 % of the server's
//! time, most of it in `decode_varint` on that view (docs/performance.md). Taking the message
//! out as `Bytes` first costs no copy (`BytesMut::split_to`), and prost then reads a plain
//! slice; the raw tensors' bytes stay slices of the same buffer.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder},
    Status,
};
use tonic_prost::ProstEncoder;

/// `tonic_prost::ProstCodec` with a decoder that reads one contiguous buffer.
#[derive(Debug, Clone)]
pub struct ContiguousProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ContiguousProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ContiguousProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ContiguousDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ContiguousDecoder(PhantomData)
    }
}

/// Decodes `U` from the message's bytes taken out of tonic's buffer as one `Bytes`.
#[derive(Debug, Clone)]
pub struct ContiguousDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ContiguousDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        // As tonic_prost: a message that does not parse is INTERNAL (gRPC's status code guide).
        U::decode(message)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};
    use tonic::codec::{Codec, Streaming};

    use super::ContiguousProstCodec;
    use crate::grpc::proto::{model_infer_request::InferInputTensor, ModelInferRequest};

    fn request() -> ModelInferRequest {
        ModelInferRequest {
            model_name: "santander".into(),
            inputs: vec![InferInputTensor {
                name: "age".into(),
                datatype: "INT64".into(),
                shape: vec![1, 1],
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::copy_from_slice(&35_i64.to_le_bytes())],
            ..Default::default()
        }
    }

    /// A gRPC message frame: not compressed, the length, the message.
    fn frame(message: &[u8]) -> Bytes {
        let mut frame = BytesMut::new();
        frame.put_u8(0);
        frame.put_u32(u32::try_from(message.len()).unwrap());
        frame.put_slice(message);
        frame.freeze()
    }

    async fn decode(frames: Bytes) -> Result<Vec<ModelInferRequest>, tonic::Status> {
        let body = axum::body::Body::from(frames);
        let decoder =
            ContiguousProstCodec::<ModelInferRequest, ModelInferRequest>::default().decoder();
        let mut stream = Streaming::new_request(decoder, body, None, None);
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(message);
        }
        Ok(messages)
    }

    #[tokio::test]
    async fn decodes_each_message_of_the_stream_as_prost_does() {
        use prost::Message;
        let first = request();
        let second = ModelInferRequest {
            model_version: "2".into(),
            ..request()
        };
        let mut frames = BytesMut::new();
        frames.put(frame(&first.encode_to_vec()));
        frames.put(frame(&second.encode_to_vec()));
        assert_eq!(decode(frames.freeze()).await.unwrap(), vec![first, second]);
    }

    #[tokio::test]
    async fn a_message_that_does_not_parse_is_internal() {
        // Field 1 (model_name) as a string of 10 bytes, with 1 byte present.
        let status = decode(frame(&[0x0a, 10, b'x'])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    }
}
