//! The Flight SQL service.
//!
//! Two layers: [`MeshFlightService`] is the gRPC `FlightService` clients talk to; it
//! authenticates every call, opens a tracing span for it and hands the call, with the
//! authenticated [`Caller`] attached, to [`Handlers`], which implements arrow-flight's
//! `FlightSqlService` (the Flight SQL command dispatch). No handler runs without a caller.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError as ArrowFlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    ActionCreatePreparedSubstraitPlanRequest, ActionEndSavepointRequest, ActionEndTransactionRequest, Any, Command,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria, Empty, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, PollInfo, PutResult,
    SchemaAsIpc, SchemaResult, Ticket,
};
use base64::Engine;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use meshql::MESH_CATALOG;
use meshql::{Mesh, Principal, QueryResult, Session, SqlOptions};
use prost::Message;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use tracing::{field, Instrument, Span};

use crate::auth::{is_basic, unix_now, Authenticator};
use crate::auth::{GateRefusal, LoginGate};
use crate::config::ServerConfig;
use crate::metadata::{self, filter_like};
use crate::priority::{self, QueryThreads};
use crate::proto::{self, SessionCookie};
use crate::results::{decode_parameters, encode_parameters};
use crate::session_options::{
    session_option_value, CloseSessionResult, GetSessionOptionsResult, SetSessionOptionsRequest,
    SetSessionOptionsResult,
};
use crate::signing::{Kind, Signer};
use crate::FlightError;
use meshql::results::Shaper;

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

/// Query threads per core (see `MeshFlightService::new`).
const QUERY_THREADS_PER_CORE: usize = 4;
/// gRPC carries the status message in a header; keep it well under common header limits.
const MAX_STATUS_MESSAGE: usize = 4000;
/// Principals whose sessions (and their policy decisions) are kept warm.
const SESSION_CACHE: usize = 1024;

/// The authenticated caller of an RPC, attached to the request by [`MeshFlightService`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The current domain chosen with SetSessionOptions (`schema`), from the session cookie or
    /// from the session part of the bearer token.
    pub schema: Option<String>,
    /// The bearer token the call came with, without its session part: SetSessionOptions
    /// answers with it plus the new session part.
    pub bearer: Option<String>,
}

/// Separates a bearer token from the sealed session options a server appended to it
/// (`<token>~<sealed>`). Clients that keep no cookies (the ADBC driver by default) still keep the
/// `authorization` header a server sends back, so that is where the session's options travel
/// for them. No token meshql accepts contains `~` (base64url, JWT and service tokens alike).
const SESSION_SEPARATOR: char = '~';

/// A `Bearer` header split into the token and its session part, if any.
fn split_bearer(header: &str) -> (String, Option<&str>) {
    match header.strip_prefix("Bearer ") {
        Some(token) => match token.split_once(SESSION_SEPARATOR) {
            Some((token, session)) => (format!("Bearer {token}"), Some(session)),
            None => (header.to_string(), None),
        },
        None => (header.to_string(), None),
    }
}

/// The Flight SQL server for one mesh.
#[derive(Clone)]
pub struct MeshFlightService {
    h: Arc<Handlers>,
}

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

impl MeshFlightService {
    pub fn new(mesh: Mesh, auth: Authenticator, config: ServerConfig) -> Result<MeshFlightService, FlightError> {
        let sql_info = metadata::sql_info(config.limits.query_timeout)?;
        let xdbc = metadata::xdbc_type_info()?;
        let slots = Arc::new(Semaphore::new(config.limits.max_concurrent_queries.max(1)));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // More query threads than cores: a computation that does not yield (a nested-loop join
        // over a huge input) holds one thread per partition of its query (as many as cores)
        // past its deadline. With four times as many, three such queries still leave threads
        // for everyone else; the kernel shares the cores between them all.
        let threads = QueryThreads::new(cores * QUERY_THREADS_PER_CORE, config.limits.large_query_rows > 0)
            .map_err(|e| FlightError::Config(format!("cannot start the query threads: {e}")))?;
        Ok(MeshFlightService {
            h: Arc::new(Handlers {
                logins: LoginGate::new(
                    config.limits.max_concurrent_logins,
                    std::time::Duration::from_secs(10),
                    config.limits.max_failed_logins_per_minute,
                    std::time::Duration::from_secs(60),
                ),
                mesh,
                auth,
                config,
                sql_info,
                xdbc,
                sessions: moka::sync::Cache::new(SESSION_CACHE as u64),
                running: Arc::new(Mutex::new(HashMap::new())),
                cancelled: Mutex::new(HashMap::new()),
                slots,
                threads,
                bindings: Default::default(),
            }),
        })
    }

    /// A DoGet call's answer, authenticated like every call.
    pub(crate) async fn results(&self, req: Request<Ticket>) -> Result<DoGetResults, Status> {
        let (req, span) = self.authed(req, "DoGet")?;
        self.h.results(req).instrument(span).await
    }

    /// The configured upper bound of one result message.
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.h.config.results.max_message_bytes
    }

    /// Authenticates the call and attaches the caller; refuses with a bare UNAUTHENTICATED.
    fn authed<T>(&self, mut req: Request<T>, rpc: &'static str) -> Result<(Request<T>, Span), Status> {
        let header = authorization(req.metadata()).map_err(|()| {
            tracing::warn!(rpc, "authentication failed: conflicting authorization headers");
            unauthenticated()
        })?;
        let (header, session) = match header.as_deref().map(split_bearer) {
            Some((h, s)) => (Some(h), s.map(str::to_string)),
            None => (None, None),
        };
        let principal = self.h.auth.authenticate(header.as_deref()).map_err(|why| {
            tracing::warn!(rpc, reason = %why, "authentication failed");
            unauthenticated()
        })?;
        let schema = self.h.cookie_schema(req.metadata(), &principal).or_else(|| {
            session
                .as_deref()
                .and_then(|sealed| self.h.session_schema(sealed, &principal))
        });
        let span = tracing::info_span!("rpc", rpc, principal = %principal.id(), query_id = field::Empty);
        let bearer = header.filter(|h| h.starts_with("Bearer "));
        req.extensions_mut().insert(Caller {
            principal: Arc::new(principal),
            schema,
            bearer,
        });
        Ok((req, span))
    }
}

/// The call's credentials: the `authorization` header, if any. Several different values are
/// refused rather than guessed between.
fn authorization(md: &MetadataMap) -> Result<Option<String>, ()> {
    let mut values: Vec<String> = md
        .get_all("authorization")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    values.dedup();
    match values.len() {
        0 => Ok(None),
        1 => Ok(values.pop()),
        _ => Err(()),
    }
}

fn unauthenticated() -> Status {
    Status::unauthenticated("authentication failed")
}

#[tonic::async_trait]
impl FlightService for MeshFlightService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = DoGetStream;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    /// Password login (`authorization: Basic …`) returns a session token, in the
    /// `authorization` response header and as the handshake payload. A bearer credential is
    /// checked and echoed, so clients that always handshake work with tokens too.
    async fn handshake(
        &self,
        req: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // A client may send a (stale) bearer header along with the Basic one: the login wins.
        let all: Vec<String> = req
            .metadata()
            .get_all("authorization")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let header = match all.iter().find(|v| is_basic(v)) {
            Some(basic) => Some(basic.clone()),
            None => authorization(req.metadata()).map_err(|()| unauthenticated())?,
        };
        let h = self.h.clone();
        let source = req.remote_addr().map(|a| a.ip());
        let outcome = match header.as_deref() {
            Some(basic) if is_basic(basic) => {
                let permit = self.h.logins.enter(source).await.map_err(|why| {
                    tracing::warn!(rpc = "Handshake", source = ?source, reason = %why, "login refused");
                    match why {
                        GateRefusal::TooManyFailures => unauthenticated(),
                        GateRefusal::Busy => Status::unavailable(why.to_string()),
                    }
                })?;
                // argon2 is deliberately slow: keep it off the async workers.
                let basic = basic.to_string();
                let outcome = tokio::task::spawn_blocking(move || {
                    let _turn = permit;
                    h.auth.login_basic(&basic)
                })
                .await
                .map_err(|_| Status::internal("login failed"))?
                .map(|(p, token)| (p, Some(token)));
                self.h.logins.record(source, outcome.is_ok());
                outcome
            }
            Some(bearer) => self.h.auth.authenticate(Some(bearer)).map(|p| {
                let token = bearer.split_once(' ').map(|(_, t)| t.trim().to_string());
                (p, token)
            }),
            None => self.h.auth.authenticate(None).map(|p| (p, None)),
        };
        let (principal, token) = outcome.map_err(|why| {
            tracing::warn!(rpc = "Handshake", reason = %why, "authentication failed");
            unauthenticated()
        })?;
        tracing::info!(rpc = "Handshake", principal = %principal.id(), "authenticated");
        let payload = token.clone().unwrap_or_default();
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: payload.into_bytes().into(),
        };
        let mut response = Response::new(Box::pin(futures::stream::iter([Ok(reply)])) as Self::HandshakeStream);
        if let Some(token) = token {
            let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| Status::internal("token"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn list_flights(&self, req: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        let _ = self.authed(req, "ListFlights")?;
        Err(Status::unimplemented(
            "ListFlights is not supported: list products with Flight SQL GetTables, or query information_schema",
        ))
    }

    async fn get_flight_info(&self, req: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let (req, span) = self.authed(req, "GetFlightInfo")?;
        FlightService::get_flight_info(&*self.h, req).instrument(span).await
    }

    async fn poll_flight_info(&self, req: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        let _ = self.authed(req, "PollFlightInfo")?;
        Err(Status::unimplemented(
            "PollFlightInfo is not supported: use GetFlightInfo",
        ))
    }

    async fn get_schema(&self, req: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let (req, span) = self.authed(req, "GetSchema")?;
        self.h.get_schema(req).instrument(span).await
    }

    /// Served by [`crate::doget`] when the server runs; this is the same answer through tonic's
    /// codec, for callers that use the service directly.
    async fn do_get(&self, req: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let results = self.results(req).await?;
        Ok(Response::new(results.into_messages(self.max_message_bytes())))
    }

    async fn do_put(&self, req: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        let (req, span) = self.authed(req, "DoPut")?;
        FlightService::do_put(&*self.h, req).instrument(span).await
    }

    async fn do_action(&self, req: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let (req, span) = self.authed(req, "DoAction")?;
        FlightService::do_action(&*self.h, req).instrument(span).await
    }

    async fn list_actions(&self, req: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        let (req, span) = self.authed(req, "ListActions")?;
        FlightService::list_actions(&*self.h, req).instrument(span).await
    }

    async fn do_exchange(
        &self,
        req: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let _ = self.authed(req, "DoExchange")?;
        Err(Status::unimplemented("DoExchange is not supported"))
    }
}

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    // Set by `MeshFlightService::authed`; absent only if a handler were reached another way.
    req.extensions().get::<Caller>().cloned().ok_or_else(unauthenticated)
}

fn read_only() -> Status {
    Status::unimplemented("meshql serves the mesh read-only: updates, ingestion and transactions are not supported")
}

/// The gRPC status for an embedded-API error: the code from the error's class (its type, never
/// its text), the message the embedded API gives (already redacted for the principal).
pub(crate) fn status_of(e: meshql::Error) -> Status {
    use meshql::ErrorClass;
    let message = e.to_string();
    let status = match e.class() {
        ErrorClass::AccessDenied => Status::permission_denied(message),
        ErrorClass::NotAllowed | ErrorClass::InvalidQuery => Status::invalid_argument(message),
        ErrorClass::PolicyEvaluation => Status::failed_precondition(message),
        ErrorClass::Unavailable => Status::unavailable(message),
        ErrorClass::ResourcesExhausted => Status::resource_exhausted(message),
        ErrorClass::Internal => Status::internal(message),
    };
    truncate(status)
}

/// [`status_of`] for an error from a session's result stream (a session error inside it).
fn status_of_df(e: DataFusionError) -> Status {
    status_of(meshql::Error::from(e))
}

/// Bounds a status message and blots out any registered secret (a credential a remote store
/// echoed back in an error never reaches a client).
fn truncate(status: Status) -> Status {
    let redacted = meshql::redact_secrets(status.message());
    let status = if redacted != status.message() {
        Status::new(status.code(), redacted)
    } else {
        status
    };
    if status.message().len() <= MAX_STATUS_MESSAGE {
        return status;
    }
    let mut end = MAX_STATUS_MESSAGE;
    while !status.message().is_char_boundary(end) {
        end -= 1;
    }
    Status::new(status.code(), format!("{} …", &status.message()[..end]))
}

fn arrow_status(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
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

    /// The current domain from the `meshql_session` cookie, if it is valid for `principal`.
    fn cookie_schema(&self, md: &MetadataMap, principal: &Principal) -> Option<String> {
        let sealed = md
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == SESSION_COOKIE)
            .map(|(_, v)| v.to_string())?;
        self.session_schema(&sealed, principal)
    }

    /// The current domain of sealed session options, if they are valid for `principal`.
    fn session_schema(&self, sealed: &str, principal: &Principal) -> Option<String> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let cookie: SessionCookie = self.signer().open(Kind::SessionCookie, &bytes).ok()?;
        (cookie.principal == principal.id() && cookie.expires_at > unix_now() && !cookie.schema.is_empty())
            .then_some(cookie.schema)
    }

    fn new_statement(&self, caller: &Caller, sql: String) -> proto::Statement {
        self.fresh_run(proto::Statement {
            principal: caller.principal.id().to_string(),
            sql,
            default_schema: caller.schema.clone().unwrap_or_default(),
            ..Default::default()
        })
    }

    /// `stmt` as a new execution: its own query id (logs, cancellation) and a fresh expiry.
    fn fresh_run(&self, stmt: proto::Statement) -> proto::Statement {
        proto::Statement {
            query_id: hex::encode(rand::random::<[u8; 8]>()),
            expires_at: unix_now().saturating_add(self.config.auth.handle_ttl.as_secs() as i64),
            ..stmt
        }
    }

    /// Opens a handle or ticket: sealed by this server, not expired, and the caller's own.
    fn open_statement(&self, kind: Kind, bytes: &[u8], caller: &Caller) -> Result<proto::Statement, Status> {
        let what = if kind == Kind::Ticket {
            "ticket"
        } else {
            "prepared statement handle"
        };
        let stmt: proto::Statement = self.signer().open(kind, bytes).map_err(|_| {
            Status::invalid_argument(format!("this {what} was not issued by this server, or was altered"))
        })?;
        if stmt.expires_at <= unix_now() {
            return Err(Status::invalid_argument(format!(
                "this {what} has expired: run or prepare the statement again"
            )));
        }
        if stmt.principal != caller.principal.id() {
            tracing::warn!(owner = %stmt.principal, "a {what} was presented by another principal");
            return Err(Status::permission_denied(format!(
                "this {what} belongs to another principal"
            )));
        }
        let mut stmt = stmt;
        if kind == Kind::PreparedStatement && stmt.parameters.is_empty() {
            // A client that executes the handle it created, not the one binding returned.
            if let Some(values) = self.bindings.bound(bytes, unix_now()) {
                stmt.parameters = values;
            }
        }
        Ok(stmt)
    }

    /// Plans `stmt` for the caller, with its bound parameters. Policies apply as of now.
    /// Plans `stmt` for the caller, on the query threads (a statement's planning is CPU work
    /// that must not hold up the threads answering calls), within the query time limit.
    async fn plan(&self, caller: &Caller, stmt: &proto::Statement) -> Result<QueryResult, Status> {
        let session = self.session(&caller.principal);
        let stmt = stmt.clone();
        let deadline = tokio::time::Instant::now() + self.config.limits.query_timeout;
        let work = async move { plan_statement(&session, &stmt).await }.instrument(Span::current());
        self.threads
            .run(work, deadline, || self.planning_too_long(), planning_lost)
            .await
    }

    fn planning_too_long(&self) -> Status {
        Status::deadline_exceeded(format!(
            "planning the query took longer than the time limit of {} s",
            self.config.limits.query_timeout.as_secs()
        ))
    }

    fn shaper(&self, schema: &Schema) -> Shaper {
        crate::results::shaper(schema, self.config.results.plain_types)
    }

    /// The FlightInfo for `stmt`, planned as `planned`: one endpoint running the whole query,
    /// or, when `results.maxEndpoints` allows and the plan's partitions are independent (a
    /// scan), one endpoint per group of partitions, in no particular order. Each endpoint's
    /// ticket is `stmt` sealed with its share of the plan and the plan's fingerprint.
    async fn statement_info(
        &self,
        stmt: &proto::Statement,
        planned: QueryResult,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let schema = self.shaper(&planned.schema()).schema();
        let max = self.config.results.max_endpoints;
        let mut tickets = vec![stmt.clone()];
        if max > 1 {
            let runnable = planned.into_runnable(None).await.map_err(status_of)?;
            let partitions = runnable.independent_partitions();
            if partitions > 1 {
                let endpoints = partitions.min(max);
                let fingerprint = runnable.fingerprint().to_vec();
                tickets = (0..endpoints)
                    .map(|endpoint| proto::Statement {
                        endpoint: endpoint as u32,
                        endpoints: endpoints as u32,
                        plan_partitions: partitions as u32,
                        fingerprint: fingerprint.clone(),
                        ..stmt.clone()
                    })
                    .collect();
            }
        }
        let ordered = tickets.len() == 1;
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(arrow_status)?
            .with_descriptor(descriptor)
            .with_ordered(ordered);
        for t in &tickets {
            let sealed = self.signer().seal(Kind::Ticket, t);
            let ticket = TicketStatementQuery {
                statement_handle: sealed.into(),
            }
            .as_any()
            .encode_to_vec();
            info = info.with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)));
        }
        Ok(info)
    }

    /// A FlightInfo for a metadata command: its ticket is the command itself (it carries no
    /// rights; DoGet re-reads the catalog as the caller).
    fn metadata_info(
        &self,
        cmd: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = Ticket::new(cmd.as_any().encode_to_vec());
        Ok(Response::new(
            FlightInfo::new()
                .try_with_schema(schema)
                .map_err(arrow_status)?
                .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                .with_descriptor(descriptor),
        ))
    }

    fn is_cancelled(&self, query_id: &str) -> bool {
        let mut cancelled = lock(&self.cancelled);
        let now = unix_now();
        cancelled.retain(|_, until| *until > now);
        cancelled.contains_key(query_id)
    }

    /// Cancels query `query_id`: stops it if it runs here, refuses it if it starts later.
    fn cancel(&self, query_id: &str, until: i64) {
        lock(&self.cancelled).insert(query_id.to_string(), until);
        if let Some((tx, _)) = lock(&self.running).get(query_id) {
            let _ = tx.send(true);
        }
        tracing::info!(query_id, "query cancelled");
    }

    /// Runs `stmt` and streams its result.
    async fn execute(&self, caller: Caller, stmt: proto::Statement) -> Result<DoGetResults, Status> {
        Span::current().record("query_id", stmt.query_id.as_str());
        if self.is_cancelled(&stmt.query_id) {
            return Err(Status::cancelled(format!("query {} was cancelled", stmt.query_id)));
        }
        let limits = &self.config.limits;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + limits.query_timeout;
        let permit = match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Status::unavailable("the server is shutting down")),
            Err(_) => {
                return Err(Status::resource_exhausted(format!(
                    "all {} query slots stayed busy for the query time limit; try again later",
                    limits.max_concurrent_queries
                )))
            }
        };
        // Planned and run on the query threads by a task that holds the slot until the query
        // stops, whatever the client does: one that stops reading cannot keep the slot, nor
        // the query's memory, past the time limit.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let completed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let session = self.session(&caller.principal);
        let query = Query {
            session: session.clone(),
            stmt: stmt.clone(),
            memory: limits.memory_per_query,
            large_query_rows: limits.large_query_rows,
            low: self.threads.low(),
            planning: self.threads.planning(),
            normal: self.threads.normal(),
            timeout_secs: limits.query_timeout.as_secs(),
            deadline,
            slot: permit,
            completed: completed.clone(),
        };
        // The query's own task runs where statements are planned: threads that queries' work
        // never holds, so a new query is planned and started whatever others compute.
        self.threads
            .planning()
            .spawn(query.run(ready_tx, tx).instrument(Span::current()));
        let schema = match tokio::time::timeout_at(deadline, ready_rx).await {
            Ok(Ok(ready)) => ready?,
            Ok(Err(_)) => return Err(planning_lost("it stopped before the query started".into())),
            Err(_) => {
                let status = self.planning_too_long();
                // Its planning may go on: the record is written now, not when that ends.
                session.audit_settled(&stmt.sql, &stmt.query_id, status.message());
                return Err(status);
            }
        };
        let shaper = self.shaper(&schema);
        let batches = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let stream: SendableRecordBatchStream = Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, batches),
        );
        let rx = register(&self.running, &stmt.query_id);
        let registration = Registration {
            running: self.running.clone(),
            query_id: stmt.query_id.clone(),
        };
        // A cancel that arrived while this query was being planned found nothing to stop; it
        // left the id in the cancelled set, which is checked again now that the query listens.
        if self.is_cancelled(&stmt.query_id) {
            return Err(Status::cancelled(format!("query {} was cancelled", stmt.query_id)));
        }
        let run = Run {
            inner: stream,
            shaper: shaper.clone(),
            deadline,
            timeout_secs: limits.query_timeout.as_secs(),
            cancel: rx,
            completed,
            registration,
            principal: caller.principal.id().to_string(),
            session,
            sql: stmt.sql.clone(),
            started,
            rows: 0,
            done: false,
        };
        if stmt.endpoints > 1 {
            tracing::info!(sql = %stmt.sql, endpoint = stmt.endpoint, endpoints = stmt.endpoints, "query started");
        } else {
            tracing::info!(sql = %stmt.sql, "query started");
        }
        Ok(DoGetResults::Batches {
            schema: shaper.schema(),
            batches: Box::pin(futures::stream::unfold(run, Run::next)),
        })
    }

    /// What a DoGet answers: a statement's or prepared statement's batches, or the messages of
    /// any other ticket (metadata results) as the Flight SQL dispatch gives them.
    async fn results(&self, req: Request<Ticket>) -> Result<DoGetResults, Status> {
        let caller = caller(&req)?;
        let command = Any::decode(&*req.get_ref().ticket)
            .ok()
            .and_then(|any| Command::try_from(any).ok());
        match command {
            Some(Command::TicketStatementQuery(t)) => self.run_handle(caller, Kind::Ticket, &t.statement_handle).await,
            Some(Command::CommandPreparedStatementQuery(q)) => {
                self.run_handle(caller, Kind::PreparedStatement, &q.prepared_statement_handle)
                    .await
            }
            _ => Ok(DoGetResults::Messages(
                FlightService::do_get(self, req).await?.into_inner(),
            )),
        }
    }

    /// Runs the statement a ticket or a prepared statement's handle names (each execution of a
    /// prepared statement is a new run, with its own query id).
    async fn run_handle(&self, caller: Caller, kind: Kind, handle: &[u8]) -> Result<DoGetResults, Status> {
        let stmt = self.open_statement(kind, handle, &caller)?;
        let stmt = if kind == Kind::PreparedStatement {
            self.fresh_run(stmt)
        } else {
            stmt
        };
        self.execute(caller, stmt).await
    }

    async fn get_schema(&self, req: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let caller = caller(&req)?;
        let any = Any::decode(&*req.get_ref().cmd).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stmt = match Command::try_from(any).map_err(|e| Status::invalid_argument(e.to_string()))? {
            Command::CommandStatementQuery(q) => self.new_statement(&caller, q.query),
            Command::CommandPreparedStatementQuery(q) => {
                self.open_statement(Kind::PreparedStatement, &q.prepared_statement_handle, &caller)?
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "GetSchema answers statements and prepared statements, not {}",
                    other.type_url()
                )))
            }
        };
        let query = self.plan(&caller, &stmt).await?;
        let schema = self.shaper(&query.schema()).schema();
        Ok(Response::new(SchemaResult {
            schema: schema_ipc(&schema)?,
        }))
    }

    /// A product's schema for GetTables: as the principal reads it, plain types if configured,
    /// with Flight SQL column metadata and the contract's column descriptions as REMARKS.
    async fn table_schema(&self, session: &Session, domain: &str, table: &str) -> SchemaRef {
        let Some(schema) = session.product_schema(domain, table).await else {
            return Arc::new(Schema::empty());
        };
        let described = self.shaper(&schema).schema();
        let definition = session.definition();
        let entry = definition.table(domain, table);
        let descriptions: HashMap<&str, &str> = entry
            .and_then(|e| e.binding.as_ref().ok())
            .map(|b| {
                b.schema
                    .properties
                    .iter()
                    .filter_map(|p| p.description.as_deref().map(|d| (p.name.as_str(), d)))
                    .collect()
            })
            .unwrap_or_default();
        let fields: Vec<Field> = described
            .fields()
            .iter()
            .map(|f| {
                let mut md = f.metadata().clone();
                md.insert("ARROW:FLIGHT:SQL:CATALOG_NAME".into(), MESH_CATALOG.into());
                md.insert("ARROW:FLIGHT:SQL:DB_SCHEMA_NAME".into(), domain.into());
                md.insert("ARROW:FLIGHT:SQL:TABLE_NAME".into(), table.into());
                if let Some(d) = descriptions.get(f.name().as_str()) {
                    md.insert("ARROW:FLIGHT:SQL:REMARKS".into(), d.to_string());
                }
                f.as_ref().clone().with_metadata(md)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The catalog filter of a metadata command: whether it selects the mesh catalog.
    fn selects_mesh(catalog: Option<&str>) -> bool {
        catalog.is_none_or(|c| c == MESH_CATALOG)
    }

    fn set_session_options(
        &self,
        caller: &Caller,
        body: &[u8],
    ) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
        let request = SetSessionOptionsRequest::decode(body)
            .map_err(|e| Status::invalid_argument(format!("SetSessionOptionsRequest: {e}")))?;
        let session = self.session(&caller.principal);
        let mut schema = caller.schema.clone();
        let mut errors = HashMap::new();
        for (name, value) in &request.session_options {
            let text = session_option_value(value);
            let ok = match name.as_str() {
                "schema" => match text {
                    Some(d) if session.domains().iter().any(|x| x == d) => {
                        schema = Some(d.to_string());
                        true
                    }
                    _ => false,
                },
                "catalog" => text == Some(MESH_CATALOG),
                _ => {
                    errors.insert(
                        name.clone(),
                        crate::session_options::error(crate::session_options::ErrorValue::InvalidName),
                    );
                    continue;
                }
            };
            if !ok {
                errors.insert(
                    name.clone(),
                    crate::session_options::error(crate::session_options::ErrorValue::InvalidValue),
                );
            }
        }
        let result = SetSessionOptionsResult { errors };
        let mut response = one_result(result.encode_to_vec());
        if let Some(schema) = schema {
            let cookie = SessionCookie {
                principal: caller.principal.id().to_string(),
                schema,
                expires_at: unix_now().saturating_add(self.config.auth.token_ttl.as_secs() as i64),
            };
            let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(self.signer().seal(Kind::SessionCookie, &cookie));
            let value = MetadataValue::try_from(format!("{SESSION_COOKIE}={sealed}; Path=/; HttpOnly"))
                .map_err(|_| Status::internal("cookie"))?;
            response.metadata_mut().insert("set-cookie", value);
            if let Some(bearer) = &caller.bearer {
                let value = MetadataValue::try_from(format!("{bearer}{SESSION_SEPARATOR}{sealed}"))
                    .map_err(|_| Status::internal("authorization"))?;
                response.metadata_mut().insert("authorization", value);
            }
        }
        Ok(response)
    }
}

fn one_result(body: Vec<u8>) -> Response<BoxStream<arrow_flight::Result>> {
    Response::new(Box::pin(futures::stream::iter([Ok(arrow_flight::Result {
        body: body.into(),
    })])))
}

/// Running executions by query id: the cancel signal and how many executions listen to it (a
/// ticket may be fetched more than once).
type Running = Arc<Mutex<HashMap<String, (watch::Sender<bool>, usize)>>>;

/// Registers one execution of `query_id` and returns its cancel signal.
fn register(running: &Running, query_id: &str) -> watch::Receiver<bool> {
    let mut map = lock(running);
    let entry = map
        .entry(query_id.to_string())
        .or_insert_with(|| (watch::channel(false).0, 0));
    entry.1 += 1;
    entry.0.subscribe()
}

/// Plans `stmt` in `session`, with its bound parameters.
async fn plan_statement(session: &Session, stmt: &proto::Statement) -> Result<QueryResult, Status> {
    let schema = (!stmt.default_schema.is_empty()).then_some(stmt.default_schema.as_str());
    let options = SqlOptions {
        default_schema: schema.map(str::to_string),
        query_id: (!stmt.query_id.is_empty()).then(|| stmt.query_id.clone()),
    };
    let query = session.sql_with(&stmt.sql, &options).await.map_err(status_of)?;
    let values =
        decode_parameters(&stmt.parameters).map_err(|e| Status::invalid_argument(format!("bound parameters: {e}")))?;
    if values.is_empty() {
        Ok(query)
    } else {
        query.with_params(values).map_err(status_of)
    }
}

fn planning_lost(why: String) -> Status {
    Status::internal(format!("the query's planning task ended abnormally: {why}"))
}

/// Unregisters an execution when its stream ends or is dropped.
struct Registration {
    running: Running,
    query_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = lock(&self.running);
        if let Some(entry) = map.get_mut(&self.query_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.query_id);
            }
        }
    }
}

/// One running query's result stream: stops on cancellation and at the deadline; dropping it
/// (the client went away) drops the DataFusion stream, which stops the query and frees its
/// memory, and gives back the query slot.
struct Run {
    inner: SendableRecordBatchStream,
    shaper: Shaper,
    deadline: tokio::time::Instant,
    timeout_secs: u64,
    cancel: watch::Receiver<bool>,
    /// Set when the query's own stream ended (not cut at its deadline).
    completed: Arc<std::sync::atomic::AtomicBool>,
    registration: Registration,
    principal: String,
    /// For the audit record of a query cut at its deadline.
    session: Session,
    sql: String,
    started: Instant,
    rows: u64,
    done: bool,
}

/// A query to plan and run on the query threads, by a task of its own that holds the query's
/// slot and stops at `deadline` whatever the client does.
struct Query {
    session: Session,
    stmt: proto::Statement,
    memory: usize,
    large_query_rows: usize,
    /// The low-priority runtime, if large queries go there.
    low: Option<tokio::runtime::Handle>,
    /// The runtime statements are planned on (and this task runs on).
    planning: tokio::runtime::Handle,
    /// The runtime queries of normal priority are run on.
    normal: tokio::runtime::Handle,
    /// The time limit, for the audit record of a query cut at its deadline.
    timeout_secs: u64,
    deadline: tokio::time::Instant,
    slot: OwnedSemaphorePermit,
    /// Set when the query's own stream ended (not cut at its deadline), so that a reader can
    /// tell the end of the result from a cut.
    completed: Arc<std::sync::atomic::AtomicBool>,
}

type Batches = tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>;

impl Query {
    /// Plans the query, says whether it could start (with its schema), then passes its
    /// batches through `tx` until it ends, the reader goes away or the deadline passes.
    async fn run(self, ready: tokio::sync::oneshot::Sender<Result<SchemaRef, Status>>, tx: Batches) {
        let deadline = self.deadline;
        let (session, stmt, memory) = (self.session.clone(), self.stmt.clone(), self.memory);
        let planned = tokio::time::timeout_at(
            deadline,
            spawned(
                &self.planning,
                priority::on_own_thread(async move { plan_runnable(&session, &stmt, memory).await }),
            ),
        )
        .await;
        let (runnable, mine, schema) = match planned {
            Ok(Ok(p)) => p,
            Ok(Err(status)) => {
                let _ = ready.send(Err(status));
                return;
            }
            // Past the deadline (the caller may not have noticed yet). Its planning may go on:
            // the record is written now, not when that ends.
            Err(_) => {
                let status = Status::deadline_exceeded(format!(
                    "planning the query took longer than the time limit of {} s",
                    self.timeout_secs
                ));
                self.session
                    .audit_settled(&self.stmt.sql, &self.stmt.query_id, status.message());
                let _ = ready.send(Err(status));
                return;
            }
        };
        let rows = priority::rows_read(runnable.plan());
        let make = move || match mine {
            Some(mine) => runnable.stream_partitions(&mine),
            None => runnable.stream(),
        };
        let pump = Pump {
            slot: self.slot,
            deadline,
            completed: self.completed,
            settle: Settle {
                message: format!(
                    "query {} exceeded the time limit of {} s",
                    self.stmt.query_id, self.timeout_secs
                ),
                session: self.session,
                sql: self.stmt.sql,
                query_id: self.stmt.query_id,
            },
        };
        match self.low {
            Some(low) if self.large_query_rows > 0 && rows > self.large_query_rows => {
                tracing::debug!(rows, "large query: running at low priority");
                // DataFusion spawns an operator's tasks on the runtime that executes or first
                // polls it: the stream is made and driven there.
                low.spawn(pump.run(make, schema, ready, tx).instrument(Span::current()));
            }
            _ => {
                self.normal
                    .spawn(pump.run(make, schema, ready, tx).instrument(Span::current()));
            }
        }
    }
}

/// `work` run as a task of `runtime`; a panic in it goes on unwinding in the caller.
async fn spawned<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    match runtime.spawn(work).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down: the server is too.
        Err(_) => std::future::pending().await,
    }
}

/// Plans `stmt` down to what runs, with at most `memory` bytes for its operators: the plan,
/// the partitions this endpoint runs (all if `None`) and the result's schema.
async fn plan_runnable(
    session: &Session,
    stmt: &proto::Statement,
    memory: usize,
) -> Result<(meshql::Runnable, Option<Vec<usize>>, SchemaRef), Status> {
    let query = plan_statement(session, stmt).await?;
    let schema = query.schema();
    let runnable = query.into_runnable(Some(memory)).await.map_err(status_of)?;
    let mine = if stmt.endpoints > 1 {
        // One endpoint of several: the plan must still have the partitions, files and
        // byte ranges the ticket was issued for.
        let partitions = runnable.independent_partitions();
        if partitions != stmt.plan_partitions as usize || runnable.fingerprint()[..] != stmt.fingerprint[..] {
            return Err(Status::failed_precondition(
                "the data of this query changed since its endpoints were issued (a new commit, a \
                 changed policy or configuration): run the query again",
            ));
        }
        Some(
            (stmt.endpoint as usize..partitions)
                .step_by(stmt.endpoints as usize)
                .collect(),
        )
    } else {
        None
    };
    Ok((runnable, mine, schema))
}

/// Drives a query's stream into the channel its reader takes batches from.
struct Pump {
    slot: OwnedSemaphorePermit,
    deadline: tokio::time::Instant,
    completed: Arc<std::sync::atomic::AtomicBool>,
    settle: Settle,
}

/// The audit record of a query cut at its deadline: written before its stream is dropped, so
/// the stream's own record (`cancelled`) is not written and the trail says why it ended.
struct Settle {
    session: Session,
    sql: String,
    query_id: String,
    message: String,
}

impl Settle {
    fn record(&self) {
        self.session.audit_settled(&self.sql, &self.query_id, &self.message);
    }
}

impl Pump {
    async fn run(
        self,
        make: impl FnOnce() -> Result<SendableRecordBatchStream, meshql::Error>,
        schema: SchemaRef,
        ready: tokio::sync::oneshot::Sender<Result<SchemaRef, Status>>,
        tx: Batches,
    ) {
        let _slot = self.slot;
        let deadline = self.deadline;
        let mut stream = match make() {
            Ok(s) => meshql::results::coalesced(s, meshql::results::RESULT_BATCH_ROWS),
            Err(e) => {
                let _ = ready.send(Err(status_of(e)));
                return;
            }
        };
        if ready.send(Ok(schema)).is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return self.settle.record(),
                _ = tx.closed() => return,
                next = stream.next() => next,
            };
            // A computation that did not yield may end after the deadline: its client was
            // answered "time limit exceeded" then, so its result is not delivered (and its audit
            // record says so, not ok).
            if tokio::time::Instant::now() >= deadline {
                return self.settle.record();
            }
            let Some(item) = next else {
                self.completed.store(true, std::sync::atomic::Ordering::Release);
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return self.settle.record(),
                sent = tx.send(item) => if sent.is_err() { return },
            }
        }
    }
}

/// Completes when the query is cancelled (never, if the signal goes away).
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Run {
    async fn next(mut self) -> Option<(Result<RecordBatch, Status>, Run)> {
        if self.done {
            return None;
        }
        let query_id = self.registration.query_id.clone();
        let item = tokio::select! {
            biased;
            _ = cancelled(&mut self.cancel) => Err(Status::cancelled(format!("query {query_id} was cancelled"))),
            _ = tokio::time::sleep_until(self.deadline) => Err(Status::deadline_exceeded(format!(
                "query {query_id} exceeded the time limit of {} s", self.timeout_secs
            ))),
            next = self.inner.next() => match next {
                None if !self.completed.load(std::sync::atomic::Ordering::Acquire) => {
                    Err(Status::deadline_exceeded(format!(
                        "query {query_id} exceeded the time limit of {} s", self.timeout_secs
                    )))
                }
                None => {
                    tracing::info!(query_id, principal = %self.principal, rows = self.rows,
                        ms = self.started.elapsed().as_millis() as u64, "query finished");
                    return None;
                }
                Some(Ok(batch)) => {
                    self.rows += batch.num_rows() as u64;
                    self.shaper.shape(batch).map_err(arrow_status)
                }
                Some(Err(e)) => Err(status_of_df(e)),
            },
        };
        if let Err(status) = &item {
            tracing::warn!(query_id, principal = %self.principal, code = ?status.code(), error = %status.message(), "query failed");
            if status.code() == tonic::Code::DeadlineExceeded {
                // Its work may go on (a computation that does not yield): the record is written
                // now, not when that ends.
                self.session.audit_settled(&self.sql, &query_id, status.message());
            }
            self.done = true;
        }
        Some((item, self))
    }
}

#[tonic::async_trait]
impl FlightSqlService for Handlers {
    type FlightService = Handlers;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&req)?;
        if query.transaction_id.is_some() {
            return Err(read_only());
        }
        let stmt = self.new_statement(&caller, query.query);
        Span::current().record("query_id", stmt.query_id.as_str());
        // Planned now so that errors (syntax, access) reach the client before any DoGet.
        let planned = self.plan(&caller, &stmt).await?;
        Ok(Response::new(
            self.statement_info(&stmt, planned, req.into_inner()).await?,
        ))
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("Substrait plans are not supported: send SQL"))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&req)?;
        let handle = self.open_statement(Kind::PreparedStatement, &cmd.prepared_statement_handle, &caller)?;
        let stmt = self.fresh_run(handle);
        Span::current().record("query_id", stmt.query_id.as_str());
        let planned = self.plan(&caller, &stmt).await?;
        Ok(Response::new(
            self.statement_info(&stmt, planned, req.into_inner()).await?,
        ))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, req.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, req.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, req.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, req.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.sql_info.schema();
        self.metadata_info(query, &schema, req.into_inner())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &metadata::primary_keys_schema(), req.into_inner())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &metadata::foreign_keys_schema(), req.into_inner())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &metadata::foreign_keys_schema(), req.into_inner())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &metadata::foreign_keys_schema(), req.into_inner())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.xdbc.schema();
        self.metadata_info(query, &schema, req.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let results = self
            .run_handle(caller(&req)?, Kind::Ticket, &ticket.statement_handle)
            .await?;
        Ok(Response::new(
            results.into_messages(self.config.results.max_message_bytes),
        ))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let results = self
            .run_handle(caller(&req)?, Kind::PreparedStatement, &query.prepared_statement_handle)
            .await?;
        Ok(Response::new(
            results.into_messages(self.config.results.max_message_bytes),
        ))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&req)?;
        let mut builder = query.into_builder();
        builder.append(MESH_CATALOG);
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&req)?;
        let session = self.session(&caller.principal);
        let selects = Handlers::selects_mesh(query.catalog.as_deref());
        let mut builder = query.into_builder();
        if selects {
            for domain in session.domains() {
                builder.append(MESH_CATALOG, domain);
            }
        }
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&req)?;
        let session = self.session(&caller.principal);
        let selects = Handlers::selects_mesh(query.catalog.as_deref())
            && (query.table_types.is_empty() || query.table_types.iter().any(|t| t == "TABLE"));
        let schema_pattern = query.db_schema_filter_pattern.clone();
        let table_pattern = query.table_name_filter_pattern.clone();
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        if selects {
            for domain in filter_like(schema_pattern.as_deref(), session.domains())? {
                for table in filter_like(table_pattern.as_deref(), session.products(&domain))? {
                    let schema = if include_schema {
                        self.table_schema(&session, &domain, &table).await
                    } else {
                        Arc::new(Schema::empty())
                    };
                    builder
                        .append(MESH_CATALOG, &domain, &table, "TABLE", &schema)
                        .map_err(arrow_status)?;
                }
            }
        }
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&req)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&req)?;
        let batch = query.into_builder(&self.sql_info).build().map_err(arrow_status)?;
        Ok(batch_stream(batch))
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&req)?;
        let session = self.session(&caller.principal);
        // An omitted catalog or schema means any (Flight SQL): every domain the principal may
        // discover that has a table of that name.
        let domains = match query.db_schema.clone() {
            Some(domain) => vec![domain],
            None => session.domains(),
        };
        let definition = session.definition();
        let keys: Vec<_> = if Handlers::selects_mesh(query.catalog.as_deref()) {
            domains
                .iter()
                .flat_map(|d| metadata::primary_key(&session, &definition, d, &query.table))
                .collect()
        } else {
            Vec::new()
        };
        Ok(batch_stream(metadata::primary_keys_batch(&keys).map_err(arrow_status)?))
    }

    async fn do_get_exported_keys(
        &self,
        q: CommandGetExportedKeys,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let pk = KeyEnd::new(q.catalog, q.db_schema, q.table);
        self.foreign_key_rows(&caller(&req)?, Some(pk), None)
    }

    async fn do_get_imported_keys(
        &self,
        q: CommandGetImportedKeys,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let fk = KeyEnd::new(q.catalog, q.db_schema, q.table);
        self.foreign_key_rows(&caller(&req)?, None, Some(fk))
    }

    async fn do_get_cross_reference(
        &self,
        q: CommandGetCrossReference,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let pk = KeyEnd::new(q.pk_catalog, q.pk_db_schema, q.pk_table);
        let fk = KeyEnd::new(q.fk_catalog, q.fk_db_schema, q.fk_table);
        self.foreign_key_rows(&caller(&req)?, Some(pk), Some(fk))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        req: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&req)?;
        let batch = query.into_builder(&self.xdbc).build().map_err(arrow_status)?;
        Ok(batch_stream(batch))
    }

    async fn do_put_statement_update(
        &self,
        _q: CommandStatementUpdate,
        _r: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _q: CommandStatementIngest,
        _r: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _q: CommandPreparedStatementUpdate,
        _r: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_substrait_plan(
        &self,
        _q: CommandStatementSubstraitPlan,
        _r: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::unimplemented("Substrait plans are not supported: send SQL"))
    }

    /// Binds parameters: returns a new handle carrying them (stateless), which the client uses
    /// from then on.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        req: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = caller(&req)?;
        let mut stmt = self.open_statement(Kind::PreparedStatement, &query.prepared_statement_handle, &caller)?;
        let flight = req.into_inner().map_err(ArrowFlightError::from);
        // Read as it comes and stop at the second row: a query takes one row of values, and a
        // client must not make the server buffer an unbounded upload.
        let mut stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(flight);
        let mut row: Option<RecordBatch> = None;
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| Status::invalid_argument(format!("reading bound parameters: {e}")))?
        {
            if batch.num_rows() == 0 {
                continue;
            }
            if row.is_some() || batch.num_rows() > 1 {
                return Err(Status::invalid_argument(
                    "several parameter rows were bound to a query; bind one row per execution",
                ));
            }
            row = Some(batch);
        }
        stmt.parameters = match row {
            Some(batch) => encode_parameters(&batch).map_err(arrow_status)?,
            None => Vec::new(),
        };
        // Check now that the values fit the statement, rather than at execution.
        self.plan(&caller, &stmt).await?;
        self.bindings.bind(
            &query.prepared_statement_handle,
            stmt.parameters.clone(),
            stmt.expires_at,
            unix_now(),
        );
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(self.signer().seal(Kind::PreparedStatement, &stmt).into()),
        })
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        req: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = caller(&req)?;
        if query.transaction_id.is_some() {
            return Err(read_only());
        }
        let stmt = self.new_statement(&caller, query.query);
        let planned = self.plan(&caller, &stmt).await?;
        let dataset = self.shaper(&planned.schema()).schema();
        let parameters = Schema::new(
            planned
                .parameters()
                .map_err(status_of)?
                .into_iter()
                .map(|(name, t)| Field::new(name, t.unwrap_or(arrow::datatypes::DataType::Null), true))
                .collect::<Vec<_>>(),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.signer().seal(Kind::PreparedStatement, &stmt).into(),
            dataset_schema: schema_ipc(&dataset)?,
            parameter_schema: schema_ipc(&parameters)?,
        })
    }

    /// Handles live with the client: closing has nothing to free, so any handle this server
    /// sealed (even an expired one) closes.
    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        req: Request<Action>,
    ) -> Result<(), Status> {
        caller(&req)?;
        self.signer()
            .open::<proto::Statement>(Kind::PreparedStatement, &query.prepared_statement_handle)
            .map_err(|_| Status::invalid_argument("this prepared statement handle was not issued by this server"))?;
        self.bindings.forget(&query.prepared_statement_handle);
        Ok(())
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _q: ActionCreatePreparedSubstraitPlanRequest,
        _r: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(Status::unimplemented("Substrait plans are not supported: send SQL"))
    }

    async fn do_action_begin_transaction(
        &self,
        _q: ActionBeginTransactionRequest,
        _r: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(read_only())
    }

    async fn do_action_end_transaction(
        &self,
        _q: ActionEndTransactionRequest,
        _r: Request<Action>,
    ) -> Result<(), Status> {
        Err(read_only())
    }

    async fn do_action_begin_savepoint(
        &self,
        _q: ActionBeginSavepointRequest,
        _r: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(read_only())
    }

    async fn do_action_end_savepoint(&self, _q: ActionEndSavepointRequest, _r: Request<Action>) -> Result<(), Status> {
        Err(read_only())
    }

    /// The deprecated CancelQuery action, answered like CancelFlightInfo.
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        req: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let caller = caller(&req)?;
        let info = FlightInfo::decode(&*query.info).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.cancel_info(&caller, &info)?;
        Ok(ActionCancelQueryResult {
            // CANCEL_RESULT_CANCELLED (the enum is not exported by arrow-flight).
            result: 1,
        })
    }

    async fn do_action_fallback(
        &self,
        req: Request<Action>,
    ) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
        let caller = caller(&req)?;
        let action = req.into_inner();
        match action.r#type.as_str() {
            "CancelFlightInfo" => {
                let request = CancelFlightInfoRequest::decode(&*action.body)
                    .map_err(|e| Status::invalid_argument(format!("CancelFlightInfoRequest: {e}")))?;
                let info = request
                    .info
                    .ok_or_else(|| Status::invalid_argument("CancelFlightInfoRequest without info"))?;
                self.cancel_info(&caller, &info)?;
                let result = CancelFlightInfoResult {
                    status: CancelStatus::Cancelled as i32,
                };
                Ok(one_result(result.encode_to_vec()))
            }
            "SetSessionOptions" => self.set_session_options(&caller, &action.body),
            "GetSessionOptions" => {
                let mut options = HashMap::new();
                options.insert(
                    "catalog".to_string(),
                    crate::session_options::string_value(MESH_CATALOG),
                );
                // Always present (empty when no domain is chosen): clients read a missing key
                // as "current schema not supported".
                options.insert(
                    "schema".to_string(),
                    crate::session_options::string_value(caller.schema.as_deref().unwrap_or("")),
                );
                Ok(one_result(
                    GetSessionOptionsResult {
                        session_options: options,
                    }
                    .encode_to_vec(),
                ))
            }
            "CloseSession" => {
                let mut response = one_result(
                    CloseSessionResult {
                        status: crate::session_options::CloseStatus::Closed as i32,
                    }
                    .encode_to_vec(),
                );
                response.metadata_mut().insert(
                    "set-cookie",
                    MetadataValue::from_static("meshql_session=; Path=/; Max-Age=0"),
                );
                // Clients without cookies drop the session part of their token.
                if let Some(bearer) = caller.bearer.as_deref().and_then(|b| MetadataValue::try_from(b).ok()) {
                    response.metadata_mut().insert("authorization", bearer);
                }
                Ok(response)
            }
            other => Err(Status::invalid_argument(format!("unknown action {other:?}"))),
        }
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        let t = |name: &str, description: &str| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        };
        Some(vec![
            t("CancelFlightInfo", "Cancels the query of a FlightInfo"),
            t("SetSessionOptions", "Sets the session's current schema (domain)"),
            t("GetSessionOptions", "Returns the session's catalog and current schema"),
            t("CloseSession", "Forgets the session's options"),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// One side of a foreign key as a key RPC names it: catalog, domain (absent: the session's
/// current one, else any), table.
struct KeyEnd {
    catalog: Option<String>,
    schema: Option<String>,
    table: String,
}

impl KeyEnd {
    fn new(catalog: Option<String>, schema: Option<String>, table: String) -> KeyEnd {
        KeyEnd { catalog, schema, table }
    }

    fn matches(&self, key: &metadata::KeyColumn, current: Option<&str>) -> bool {
        Handlers::selects_mesh(self.catalog.as_deref())
            && key.table == self.table
            && self.schema.as_deref().or(current).is_none_or(|d| d == key.domain)
    }
}

impl Handlers {
    /// GetImportedKeys / GetExportedKeys / GetCrossReference: the foreign keys the caller may
    /// discover whose referenced (`pk`) and referencing (`fk`) sides match, ordered as the
    /// spec asks (by the other side's table, then key sequence).
    fn foreign_key_rows(
        &self,
        caller: &Caller,
        pk: Option<KeyEnd>,
        fk: Option<KeyEnd>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&caller.principal);
        let current = caller.schema.as_deref();
        let mut keys: Vec<_> = metadata::foreign_keys(&session, &session.definition())
            .into_iter()
            .filter(|k| pk.as_ref().is_none_or(|e| e.matches(&k.pk, current)))
            .filter(|k| fk.as_ref().is_none_or(|e| e.matches(&k.fk, current)))
            .collect();
        let exported = fk.is_none();
        keys.sort_by(|a, b| {
            let side = |k: &metadata::ForeignKey| {
                let other = if exported { &k.fk } else { &k.pk };
                (other.domain.clone(), other.table.clone(), k.fk.sequence)
            };
            side(a).cmp(&side(b))
        });
        Ok(batch_stream(metadata::foreign_keys_batch(&keys).map_err(arrow_status)?))
    }

    /// Cancels the queries of `info`'s endpoints (they must be the caller's).
    fn cancel_info(&self, caller: &Caller, info: &FlightInfo) -> Result<(), Status> {
        let until = unix_now().saturating_add(self.config.auth.handle_ttl.as_secs() as i64);
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else { continue };
            let any = Any::decode(&*ticket.ticket).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let Some(t) = any
                .unpack::<TicketStatementQuery>()
                .map_err(|e| Status::invalid_argument(e.to_string()))?
            else {
                // Metadata requests have nothing to cancel.
                continue;
            };
            let stmt = self.open_statement(Kind::Ticket, &t.statement_handle, caller)?;
            self.cancel(&stmt.query_id, until);
        }
        Ok(())
    }
}
