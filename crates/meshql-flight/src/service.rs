//! The Flight SQL service.
//!
//! Two layers: [`MeshFlightService`] is the gRPC `FlightService` clients talk to; it
//! authenticates every call, opens a tracing span for it and hands the call, with the
//! authenticated [`Caller`] attached, to [`Handlers`], which implements arrow-flight's
//! `FlightSqlService` (the Flight SQL command dispatch). No handler runs without a caller.
//!
//! The code is split by concern: `auth_layer` (the authenticating [`MeshFlightService`] and the
//! caller it attaches), `dispatch` (the Flight SQL commands), `statements` (statement handles,
//! tickets and the endpoints a statement fans out to), `run` (query slots, the query's own task,
//! cancellation and the result stream), `keys` (key metadata rows), `status` (errors as gRPC
//! statuses). This module holds the handlers' shared state and the wire helpers they share.

mod auth_layer;
mod dispatch;
mod keys;
mod run;
mod statements;
pub(crate) mod status;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError as ArrowFlightError;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::{FlightData, IpcMessage, SchemaAsIpc};
use futures::{Stream, TryStreamExt};
use meshql::{Mesh, Principal, Session};
use tokio::sync::Semaphore;
use tonic::{Response, Status};

use self::run::Running;
use self::status::arrow_status;
use crate::auth::{Authenticator, LoginGate};
use crate::config::ServerConfig;
use crate::priority::QueryThreads;
use crate::signing::Signer;

pub use self::auth_layer::{Caller, MeshFlightService};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
type DoGetStream = BoxStream<FlightData>;

/// What a DoGet answers with.
pub(crate) enum DoGetResults {
    /// A query's result batches, shaped for the wire, after the schema they all have.
    Batches {
        schema: SchemaRef,
        batches: BoxStream<RecordBatch>,
    },
    /// Ready Flight messages (metadata results).
    Messages(DoGetStream),
}

impl DoGetResults {
    /// As Flight messages, batches cut to at most about `max_message_bytes` each.
    pub(crate) fn into_messages(self, max_message_bytes: usize) -> DoGetStream {
        match self {
            DoGetResults::Batches { schema, batches } => Box::pin(
                FlightDataEncoderBuilder::new()
                    .with_schema(schema)
                    .with_max_flight_data_size(max_message_bytes)
                    .build(batches.map_err(|s| ArrowFlightError::Tonic(Box::new(s))))
                    .map_err(Status::from),
            ),
            DoGetResults::Messages(m) => m,
        }
    }
}

const SESSION_COOKIE: &str = "meshql_session";

/// The Flight SQL command handlers, with everything they share.
pub struct Handlers {
    mesh: Mesh,
    auth: Authenticator,
    config: ServerConfig,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
    /// The sessions of the principals seen most recently.
    sessions: moka::sync::Cache<Principal, Session>,
    running: Running,
    /// Query ids cancelled before (or while) running, with when the entry can be forgotten.
    cancelled: Mutex<HashMap<String, i64>>,
    slots: Arc<Semaphore>,
    /// Where queries are planned and run, large ones at low priority.
    threads: QueryThreads,
    /// Bounds the cost of password logins.
    logins: LoginGate,
    /// Values bound to prepared statements' original handles (for clients that keep them).
    bindings: crate::bindings::Bindings,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn schema_ipc(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(arrow_status)?;
    Ok(bytes)
}

/// A DoGet stream of ready batches (metadata results).
fn batch_stream(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

impl Handlers {
    /// The principal's session, reused across calls so its policy decisions stay cached.
    fn session(&self, principal: &Principal) -> Session {
        self.sessions
            .get_with_by_ref(principal, || self.mesh.session(principal.clone()).with_client("flight"))
    }

    fn signer(&self) -> &Signer {
        self.auth.signer()
    }
}
