//! The Flight SQL command dispatch: arrow-flight's `FlightSqlService` for [`Handlers`], with the
//! metadata helpers and session options only its commands use.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow_flight::error::FlightError as ArrowFlightError;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    ActionCreatePreparedSubstraitPlanRequest, ActionEndSavepointRequest, ActionEndTransactionRequest,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor, FlightInfo,
    Ticket,
};
use base64::Engine;
use futures::TryStreamExt;
use meshql::{Session, MESH_CATALOG};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::Span;

use super::auth_layer::{caller, Caller, SESSION_SEPARATOR};
use super::keys::KeyEnd;
use super::status::{arrow_status, read_only, status_of};
use super::{batch_stream, schema_ipc, BoxStream, DoGetStream, Handlers, SESSION_COOKIE};
use crate::auth::unix_now;
use crate::metadata::{self, filter_like};
use crate::proto::{self, SessionCookie};
use crate::results::encode_parameters;
use crate::session_options::{
    session_option_value, CloseSessionResult, GetSessionOptionsResult, SetSessionOptionsRequest,
    SetSessionOptionsResult,
};
use crate::signing::Kind;

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
        Err(crate::service::status::unsupported(
            "Substrait plans are not supported: send SQL",
        ))
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
        Err(crate::service::status::unsupported(
            "Substrait plans are not supported: send SQL",
        ))
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
            .map_err(|e| crate::service::status::bad_request(format!("reading bound parameters: {e}")))?
        {
            if batch.num_rows() == 0 {
                continue;
            }
            if row.is_some() || batch.num_rows() > 1 {
                return Err(crate::service::status::bad_request(
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
            .map_err(|_| {
                crate::service::status::bad_request("this prepared statement handle was not issued by this server")
            })?;
        self.bindings.forget(&query.prepared_statement_handle);
        Ok(())
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _q: ActionCreatePreparedSubstraitPlanRequest,
        _r: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(crate::service::status::unsupported(
            "Substrait plans are not supported: send SQL",
        ))
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
        let info = FlightInfo::decode(&*query.info).map_err(|e| crate::service::status::bad_request(e.to_string()))?;
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
                    .map_err(|e| crate::service::status::bad_request(format!("CancelFlightInfoRequest: {e}")))?;
                let info = request
                    .info
                    .ok_or_else(|| crate::service::status::bad_request("CancelFlightInfoRequest without info"))?;
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
            other => Err(crate::service::status::bad_request(format!("unknown action {other:?}"))),
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

impl Handlers {
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
    pub(super) fn selects_mesh(catalog: Option<&str>) -> bool {
        catalog.is_none_or(|c| c == MESH_CATALOG)
    }

    fn set_session_options(
        &self,
        caller: &Caller,
        body: &[u8],
    ) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
        let request = SetSessionOptionsRequest::decode(body)
            .map_err(|e| crate::service::status::bad_request(format!("SetSessionOptionsRequest: {e}")))?;
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
                .map_err(|_| crate::service::status::internal("cookie"))?;
            response.metadata_mut().insert("set-cookie", value);
            if let Some(bearer) = &caller.bearer {
                let value = MetadataValue::try_from(format!("{bearer}{SESSION_SEPARATOR}{sealed}"))
                    .map_err(|_| crate::service::status::internal("authorization"))?;
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
