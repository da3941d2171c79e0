//! DoGet, the call that carries results, served outside tonic's codec.
//!
//! tonic encodes every response message with prost into one contiguous buffer, a copy of the
//! whole result; [`crate::encode`] frames result batches as chunks that share the batches'
//! memory instead. This route answers `/arrow.flight.protocol.FlightService/DoGet` with a body
//! of those chunks and hands every other method to arrow-flight's generated server. The wire
//! format is plain gRPC: one length-prefixed `FlightData` per message, `grpc-status` in the
//! trailers, errors before the first message as a trailers-only response.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::Ticket;
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::{Body as _, Frame};
use prost::Message;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

use crate::encode::{self, Encoder};
use crate::service::{DoGetResults, MeshFlightService};

const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";
/// A ticket is a few hundred bytes; tonic's default limit for any request message.
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// The Flight service with DoGet answered by [`answer`].
#[derive(Clone)]
pub struct Routes {
    service: MeshFlightService,
    others: FlightServiceServer<MeshFlightService>,
}

impl Routes {
    pub fn new(service: MeshFlightService) -> Routes {
        Routes {
            others: FlightServiceServer::new(service.clone()),
            service,
        }
    }
}

impl NamedService for Routes {
    const NAME: &'static str = <FlightServiceServer<MeshFlightService> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for Routes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == DO_GET {
            let service = self.service.clone();
            Box::pin(async move { Ok(answer(service, req).await) })
        } else {
            self.others.call(req)
        }
    }
}

/// The response to one DoGet request.
async fn answer(service: MeshFlightService, req: http::Request<Body>) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let ticket = match read_ticket(&parts.headers, body).await {
        Ok(t) => t,
        Err(status) => return status.into_http(),
    };
    let max_message_bytes = service.max_message_bytes();
    match service
        .results(tonic::Request::from_http(http::Request::from_parts(parts, ticket)))
        .await
    {
        Ok(results) => {
            let body = ResultBody::new(results, max_message_bytes);
            let mut response = http::Response::new(Body::new(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            response
        }
        Err(status) => status.into_http(),
    }
}

/// The request's one message: a length-prefixed, uncompressed `Ticket`.
async fn read_ticket(headers: &http::HeaderMap, mut body: Body) -> Result<Ticket, Status> {
    if headers
        .get("grpc-encoding")
        .is_some_and(|e| e.as_bytes() != b"identity")
    {
        return Err(crate::service::status::unsupported(
            "compressed requests are not supported",
        ));
    }
    let mut bytes = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| crate::service::status::internal(format!("reading the request: {e}")))?;
        if let Ok(mut data) = frame.into_data() {
            if bytes.len() + data.remaining() > MAX_REQUEST_BYTES + 5 {
                return Err(crate::service::status::busy("the request message is too large"));
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                bytes.extend_from_slice(chunk);
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    let malformed =
        || crate::service::status::bad_request("malformed DoGet request: expected one gRPC message holding a Ticket");
    if bytes.len() < 5 {
        return Err(malformed());
    }
    if bytes[0] != 0 {
        return Err(crate::service::status::unsupported(
            "compressed requests are not supported",
        ));
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if bytes.len() != 5 + len {
        return Err(malformed());
    }
    Ticket::decode(&bytes[5..]).map_err(|e| crate::service::status::bad_request(format!("malformed Ticket: {e}")))
}

/// A DoGet response body: the schema, the result's messages as they are produced, then the
/// trailers with the call's status (an error mid-stream ends it with that error).
struct ResultBody {
    pending: VecDeque<Bytes>,
    source: Source,
    done: bool,
}

enum Source {
    Batches {
        batches: Pin<Box<dyn Stream<Item = Result<arrow::array::RecordBatch, Status>> + Send>>,
        encoder: Encoder,
    },
    Messages(Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>),
}

impl ResultBody {
    fn new(results: DoGetResults, max_message_bytes: usize) -> ResultBody {
        let mut pending = VecDeque::new();
        let source = match results {
            DoGetResults::Batches { schema, batches } if encode::supports(&schema) => {
                let encoder = Encoder::new(max_message_bytes);
                encoder.schema(&schema, &mut pending);
                Source::Batches { batches, encoder }
            }
            other => Source::Messages(other.into_messages(max_message_bytes)),
        };
        ResultBody {
            pending,
            source,
            done: false,
        }
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.clear();
        let _ = crate::service::status::internal("the error could not be encoded").add_header(&mut map);
    }
    map
}

impl http_body::Body for ResultBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let next = match &mut this.source {
                Source::Batches { batches, encoder } => match batches.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => None,
                    Poll::Ready(Some(Ok(batch))) => Some(
                        encoder
                            .batch(&batch, &mut this.pending)
                            .map_err(|e| crate::service::status::internal(format!("encoding the result: {e}"))),
                    ),
                    Poll::Ready(Some(Err(status))) => Some(Err(status)),
                },
                Source::Messages(messages) => match messages.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => None,
                    Poll::Ready(Some(Ok(data))) => {
                        this.pending.push_back(encode::frame_prost(&data));
                        Some(Ok(()))
                    }
                    Poll::Ready(Some(Err(status))) => Some(Err(status)),
                },
            };
            match next {
                Some(Ok(())) => {}
                Some(Err(status)) => {
                    // Whatever was already encoded of a failed batch is not sent.
                    this.pending.clear();
                    this.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    /// A request body of one data frame.
    struct OneFrame(Option<Bytes>);

    impl http_body::Body for OneFrame {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }
    }

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(message.len() as u32).to_be_bytes());
        v.extend_from_slice(message);
        v
    }

    async fn read(headers: &[(&'static str, &'static str)], bytes: Vec<u8>) -> Result<Ticket, Status> {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, http::HeaderValue::from_static(v));
        }
        read_ticket(&map, Body::new(OneFrame(Some(bytes.into())))).await
    }

    #[tokio::test]
    async fn a_doget_request_is_one_uncompressed_ticket() {
        let ticket = Ticket::new("a ticket").encode_to_vec();
        assert_eq!(read(&[], framed(0, &ticket)).await.unwrap(), Ticket::new("a ticket"));

        let code = |r: Result<Ticket, Status>| r.unwrap_err().code();
        assert_eq!(code(read(&[], framed(1, &ticket)).await), Code::Unimplemented);
        assert_eq!(
            code(read(&[("grpc-encoding", "gzip")], framed(0, &ticket)).await),
            Code::Unimplemented
        );
        let mut truncated = framed(0, &ticket);
        truncated.pop();
        assert_eq!(code(read(&[], truncated).await), Code::InvalidArgument);
        let mut two = framed(0, &ticket);
        two.extend(framed(0, &ticket));
        assert_eq!(code(read(&[], two).await), Code::InvalidArgument);
        assert_eq!(code(read(&[], vec![0, 0]).await), Code::InvalidArgument);
        assert_eq!(code(read(&[], framed(0, b"\xff\xff\xff")).await), Code::InvalidArgument);
        assert_eq!(
            code(read(&[], framed(0, &vec![b'x'; MAX_REQUEST_BYTES + 1])).await),
            Code::ResourceExhausted
        );
    }
}
