//! The authenticating layer: [`MeshFlightService`], the gRPC `FlightService` clients talk to,
//! which authenticates every call and attaches its [`Caller`] before handing it to the handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use base64::Engine;
use meshql::{Mesh, Principal};
use tokio::sync::Semaphore;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use tracing::{field, Instrument, Span};

use super::{BoxStream, DoGetResults, DoGetStream, Handlers, SESSION_COOKIE};
use crate::auth::{is_basic, unix_now, Authenticator};
use crate::auth::{GateRefusal, LoginGate};
use crate::config::ServerConfig;
use crate::metadata;
use crate::priority::QueryThreads;
use crate::proto::SessionCookie;
use crate::signing::Kind;
use crate::FlightError;

/// Query threads per core (see `MeshFlightService::new`).
const QUERY_THREADS_PER_CORE: usize = 4;
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
pub(super) const SESSION_SEPARATOR: char = '~';

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
    crate::service::status::unauthenticated("authentication failed")
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
                        GateRefusal::Busy => crate::service::status::unavailable(why.to_string()),
                    }
                })?;
                // argon2 is deliberately slow: keep it off the async workers.
                let basic = basic.to_string();
                let outcome = tokio::task::spawn_blocking(move || {
                    let _turn = permit;
                    h.auth.login_basic(&basic)
                })
                .await
                .map_err(|_| crate::service::status::internal("login failed"))?
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
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| crate::service::status::internal("token"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn list_flights(&self, req: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        let _ = self.authed(req, "ListFlights")?;
        Err(crate::service::status::unsupported(
            "ListFlights is not supported: list products with Flight SQL GetTables, or query information_schema",
        ))
    }

    async fn get_flight_info(&self, req: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let (req, span) = self.authed(req, "GetFlightInfo")?;
        FlightService::get_flight_info(&*self.h, req).instrument(span).await
    }

    async fn poll_flight_info(&self, req: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        let _ = self.authed(req, "PollFlightInfo")?;
        Err(crate::service::status::unsupported(
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
        Err(crate::service::status::unsupported("DoExchange is not supported"))
    }
}

pub(super) fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    // Set by `MeshFlightService::authed`; absent only if a handler were reached another way.
    req.extensions().get::<Caller>().cloned().ok_or_else(unauthenticated)
}

impl Handlers {
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
}
