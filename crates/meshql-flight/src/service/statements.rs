//! Statements, handles and tickets: a statement sealed for its caller, opened again, planned with
//! its bound parameters, and fanned out to one endpoint per group of independent partitions.

use arrow::datatypes::Schema;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, SchemaResult, Ticket};
use meshql::results::Shaper;
use meshql::{QueryResult, Session, SqlOptions};
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span};

use super::auth_layer::{caller, Caller};
use super::status::{arrow_status, planning_lost, status_of};
use super::{schema_ipc, DoGetResults, Handlers};
use crate::auth::unix_now;
use crate::proto;
use crate::results::decode_parameters;
use crate::signing::Kind;

impl Handlers {
    pub(super) fn new_statement(&self, caller: &Caller, sql: String) -> proto::Statement {
        self.fresh_run(proto::Statement {
            principal: caller.principal.id().to_string(),
            sql,
            default_schema: caller.schema.clone().unwrap_or_default(),
            ..Default::default()
        })
    }

    /// `stmt` as a new execution: its own query id (logs, cancellation) and a fresh expiry.
    pub(super) fn fresh_run(&self, stmt: proto::Statement) -> proto::Statement {
        proto::Statement {
            query_id: hex::encode(rand::random::<[u8; 8]>()),
            expires_at: unix_now().saturating_add(self.config.auth.handle_ttl.as_secs() as i64),
            ..stmt
        }
    }

    /// Opens a handle or ticket: sealed by this server, not expired, and the caller's own.
    pub(super) fn open_statement(&self, kind: Kind, bytes: &[u8], caller: &Caller) -> Result<proto::Statement, Status> {
        let what = if kind == Kind::Ticket {
            "ticket"
        } else {
            "prepared statement handle"
        };
        let stmt: proto::Statement = self.signer().open(kind, bytes).map_err(|_| {
            crate::service::status::bad_request(format!("this {what} was not issued by this server, or was altered"))
        })?;
        if stmt.expires_at <= unix_now() {
            return Err(crate::service::status::bad_request(format!(
                "this {what} has expired: run or prepare the statement again"
            )));
        }
        if stmt.principal != caller.principal.id() {
            tracing::warn!(owner = %stmt.principal, "a {what} was presented by another principal");
            return Err(crate::service::status::denied(format!(
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
    pub(super) async fn plan(&self, caller: &Caller, stmt: &proto::Statement) -> Result<QueryResult, Status> {
        let session = self.session(&caller.principal);
        let stmt = stmt.clone();
        let deadline = tokio::time::Instant::now() + self.config.limits.query_timeout;
        let work = async move { plan_statement(&session, &stmt).await }.instrument(Span::current());
        self.threads
            .run(work, deadline, || self.planning_too_long(), planning_lost)
            .await
    }

    pub(super) fn planning_too_long(&self) -> Status {
        crate::service::status::deadline(format!(
            "planning the query took longer than the time limit of {} s",
            self.config.limits.query_timeout.as_secs()
        ))
    }

    pub(super) fn shaper(&self, schema: &Schema) -> Shaper {
        crate::results::shaper(schema, self.config.results.plain_types)
    }

    /// The FlightInfo for `stmt`, planned as `planned`: one endpoint running the whole query,
    /// or, when `results.maxEndpoints` allows and the plan's partitions are independent (a
    /// scan), one endpoint per group of partitions, in no particular order. Each endpoint's
    /// ticket is `stmt` sealed with its share of the plan and the plan's fingerprint.
    pub(super) async fn statement_info(
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
    pub(super) fn metadata_info(
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

    /// What a DoGet answers: a statement's or prepared statement's batches, or the messages of
    /// any other ticket (metadata results) as the Flight SQL dispatch gives them.
    pub(super) async fn results(&self, req: Request<Ticket>) -> Result<DoGetResults, Status> {
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
    pub(super) async fn run_handle(&self, caller: Caller, kind: Kind, handle: &[u8]) -> Result<DoGetResults, Status> {
        let stmt = self.open_statement(kind, handle, &caller)?;
        let stmt = if kind == Kind::PreparedStatement {
            self.fresh_run(stmt)
        } else {
            stmt
        };
        self.execute(caller, stmt).await
    }

    pub(super) async fn get_schema(&self, req: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let caller = caller(&req)?;
        let any = Any::decode(&*req.get_ref().cmd).map_err(|e| crate::service::status::bad_request(e.to_string()))?;
        let stmt = match Command::try_from(any).map_err(|e| crate::service::status::bad_request(e.to_string()))? {
            Command::CommandStatementQuery(q) => self.new_statement(&caller, q.query),
            Command::CommandPreparedStatementQuery(q) => {
                self.open_statement(Kind::PreparedStatement, &q.prepared_statement_handle, &caller)?
            }
            other => {
                return Err(crate::service::status::bad_request(format!(
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
}

/// Plans `stmt` in `session`, with its bound parameters.
pub(super) async fn plan_statement(session: &Session, stmt: &proto::Statement) -> Result<QueryResult, Status> {
    let schema = (!stmt.default_schema.is_empty()).then_some(stmt.default_schema.as_str());
    let options = SqlOptions {
        default_schema: schema.map(str::to_string),
        query_id: (!stmt.query_id.is_empty()).then(|| stmt.query_id.clone()),
    };
    let query = session.sql_with(&stmt.sql, &options).await.map_err(status_of)?;
    let values = decode_parameters(&stmt.parameters)
        .map_err(|e| crate::service::status::bad_request(format!("bound parameters: {e}")))?;
    if values.is_empty() {
        Ok(query)
    } else {
        query.with_params(values).map_err(status_of)
    }
}
