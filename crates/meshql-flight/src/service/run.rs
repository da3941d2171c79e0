//! Running a statement: query slots, the query's own task on the query threads, cancellation,
//! the deadline, and the result stream its DoGet reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::{Any, TicketStatementQuery};
use arrow_flight::FlightInfo;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use meshql::results::Shaper;
use meshql::Session;
use prost::Message;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::Status;
use tracing::{Instrument, Span};

use super::auth_layer::Caller;
use super::statements::plan_statement;
use super::status::{arrow_status, planning_lost, status_of, status_of_df};
use super::{lock, DoGetResults, Handlers};
use crate::auth::unix_now;
use crate::priority;
use crate::proto;
use crate::signing::Kind;

impl Handlers {
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
    pub(super) async fn execute(&self, caller: Caller, stmt: proto::Statement) -> Result<DoGetResults, Status> {
        Span::current().record("query_id", stmt.query_id.as_str());
        if self.is_cancelled(&stmt.query_id) {
            return Err(crate::service::status::cancelled(format!(
                "query {} was cancelled",
                stmt.query_id
            )));
        }
        let limits = &self.config.limits;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + limits.query_timeout;
        let permit = match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(crate::service::status::unavailable("the server is shutting down")),
            Err(_) => {
                return Err(crate::service::status::busy(format!(
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
            return Err(crate::service::status::cancelled(format!(
                "query {} was cancelled",
                stmt.query_id
            )));
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

    /// Cancels the queries of `info`'s endpoints (they must be the caller's).
    pub(super) fn cancel_info(&self, caller: &Caller, info: &FlightInfo) -> Result<(), Status> {
        let until = unix_now().saturating_add(self.config.auth.handle_ttl.as_secs() as i64);
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else { continue };
            let any = Any::decode(&*ticket.ticket).map_err(|e| crate::service::status::bad_request(e.to_string()))?;
            let Some(t) = any
                .unpack::<TicketStatementQuery>()
                .map_err(|e| crate::service::status::bad_request(e.to_string()))?
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

/// Running executions by query id: the cancel signal and how many executions listen to it (a
/// ticket may be fetched more than once).
pub(super) type Running = Arc<Mutex<HashMap<String, (watch::Sender<bool>, usize)>>>;

/// Registers one execution of `query_id` and returns its cancel signal.
fn register(running: &Running, query_id: &str) -> watch::Receiver<bool> {
    let mut map = lock(running);
    let entry = map
        .entry(query_id.to_string())
        .or_insert_with(|| (watch::channel(false).0, 0));
    entry.1 += 1;
    entry.0.subscribe()
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
                let status = crate::service::status::deadline(format!(
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
            return Err(crate::service::status::precondition(
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
            _ = cancelled(&mut self.cancel) => Err(crate::service::status::cancelled(format!("query {query_id} was cancelled"))),
            _ = tokio::time::sleep_until(self.deadline) => Err(crate::service::status::deadline(format!(
                "query {query_id} exceeded the time limit of {} s", self.timeout_secs
            ))),
            next = self.inner.next() => match next {
                None if !self.completed.load(std::sync::atomic::Ordering::Acquire) => {
                    Err(crate::service::status::deadline(format!(
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
