//! Metadata RPCs, as the JDBC and ADBC drivers call them, and what each principal sees in them.

use arrow::array::{Array, AsArray, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::Schema;
use arrow::ipc::convert::try_schema_from_ipc_buffer;
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo, XdbcDataType,
};

use crate::common::*;

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let c = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column}"));
    let c = c.as_any().downcast_ref::<StringArray>().expect("utf8");
    (0..c.len()).map(|i| c.value(i).to_string()).collect()
}

fn concat(batches: Vec<RecordBatch>) -> RecordBatch {
    let schema = batches[0].schema();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

#[tokio::test]
async fn catalogs_schemas_and_tables_show_what_the_principal_may_discover() {
    let server = start(config("", "")).await;
    let mut alice = login(&server, "alice").await;
    let mut carl = login(&server, "carl").await;

    let info = alice.get_catalogs().await.unwrap();
    assert_eq!(
        strings(&concat(fetch(&mut alice, info).await.unwrap()), "catalog_name"),
        ["mesh"]
    );

    let all = CommandGetDbSchemas {
        catalog: None,
        db_schema_filter_pattern: None,
    };
    let info = alice.get_db_schemas(all.clone()).await.unwrap();
    let domains = strings(&concat(fetch(&mut alice, info).await.unwrap()), "db_schema_name");
    assert_eq!(domains, ["customer", "interop", "marketing", "order", "product"]);
    // Contractors may not discover the interop fixtures.
    let info = carl.get_db_schemas(all).await.unwrap();
    let domains = strings(&concat(fetch(&mut carl, info).await.unwrap()), "db_schema_name");
    assert!(!domains.contains(&"interop".to_string()), "{domains:?}");
    let info = alice
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("mesh".into()),
            db_schema_filter_pattern: Some("%der".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        strings(&concat(fetch(&mut alice, info).await.unwrap()), "db_schema_name"),
        ["order"]
    );
    let info = alice
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("other".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    assert_eq!(
        fetch(&mut alice, info)
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        0
    );

    // GetTables without a catalog: every catalog (ADBC get_objects does this).
    let tables = |schema: Option<&str>, table: Option<&str>, include_schema: bool| CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: schema.map(Into::into),
        table_name_filter_pattern: table.map(Into::into),
        table_types: vec![],
        include_schema,
    };
    let info = alice.get_tables(tables(None, None, false)).await.unwrap();
    let batch = concat(fetch(&mut alice, info).await.unwrap());
    let names: Vec<String> = strings(&batch, "db_schema_name")
        .into_iter()
        .zip(strings(&batch, "table_name"))
        .map(|(d, t)| format!("{d}.{t}"))
        .collect();
    let expected: Vec<String> = {
        let mesh = sample_mesh();
        let mut v: Vec<String> = mesh.definition().tables.iter().map(|t| t.qualified_name()).collect();
        v.sort();
        v
    };
    assert_eq!(names, expected);
    assert!(strings(&batch, "table_type").iter().all(|t| t == "TABLE"));

    // include_schema: the schema the principal would read, with column metadata.
    let mut sam = login(&server, "sam").await;
    let info = sam
        .get_tables(tables(Some("customer"), Some("prof%"), true))
        .await
        .unwrap();
    let batch = concat(fetch(&mut sam, info).await.unwrap());
    assert_eq!(strings(&batch, "table_name"), ["profiles"]);
    let bytes = batch
        .column_by_name("table_schema")
        .unwrap()
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    let schema: Schema = try_schema_from_ipc_buffer(bytes.value(0)).unwrap();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert!(
        !columns.contains(&"birth_date"),
        "support may not discover birth_date: {columns:?}"
    );
    let id = schema.field_with_name("customer_id").unwrap().metadata();
    assert_eq!(id["ARROW:FLIGHT:SQL:REMARKS"], "Surrogate key of the customer.");
    assert_eq!(id["ARROW:FLIGHT:SQL:TYPE_NAME"], "BIGINT");
    assert_eq!(id["ARROW:FLIGHT:SQL:DB_SCHEMA_NAME"], "customer");
    let wire = sql(&mut sam, "SELECT * FROM mesh.customer.profiles LIMIT 0").await;
    assert!(wire.is_ok());
    server.shutdown().await.unwrap();
}

/// The SqlInfo ids the Arrow Flight SQL JDBC driver's DatabaseMetaData reads.
const JDBC_SQL_INFO: &[SqlInfo] = &[
    SqlInfo::FlightSqlServerName,
    SqlInfo::FlightSqlServerVersion,
    SqlInfo::FlightSqlServerArrowVersion,
    SqlInfo::FlightSqlServerReadOnly,
    SqlInfo::SqlDdlCatalog,
    SqlInfo::SqlDdlSchema,
    SqlInfo::SqlDdlTable,
    SqlInfo::SqlIdentifierCase,
    SqlInfo::SqlIdentifierQuoteChar,
    SqlInfo::SqlQuotedIdentifierCase,
    SqlInfo::SqlAllTablesAreSelectable,
    SqlInfo::SqlNullOrdering,
    SqlInfo::SqlKeywords,
    SqlInfo::SqlNumericFunctions,
    SqlInfo::SqlStringFunctions,
    SqlInfo::SqlSystemFunctions,
    SqlInfo::SqlDatetimeFunctions,
    SqlInfo::SqlSearchStringEscape,
    SqlInfo::SqlExtraNameCharacters,
    SqlInfo::SqlSupportsColumnAliasing,
    SqlInfo::SqlNullPlusNullIsNull,
    SqlInfo::SqlSupportsConvert,
    SqlInfo::SqlSupportsTableCorrelationNames,
    SqlInfo::SqlSupportsDifferentTableCorrelationNames,
    SqlInfo::SqlSupportsExpressionsInOrderBy,
    SqlInfo::SqlSupportsOrderByUnrelated,
    SqlInfo::SqlSupportedGroupBy,
    SqlInfo::SqlSupportsLikeEscapeClause,
    SqlInfo::SqlSupportsNonNullableColumns,
    SqlInfo::SqlSupportedGrammar,
    SqlInfo::SqlAnsi92SupportedLevel,
    SqlInfo::SqlSupportsIntegrityEnhancementFacility,
    SqlInfo::SqlOuterJoinsSupportLevel,
    SqlInfo::SqlSchemaTerm,
    SqlInfo::SqlProcedureTerm,
    SqlInfo::SqlCatalogTerm,
    SqlInfo::SqlCatalogAtStart,
    SqlInfo::SqlSchemasSupportedActions,
    SqlInfo::SqlCatalogsSupportedActions,
    SqlInfo::SqlSupportedPositionedCommands,
    SqlInfo::SqlSelectForUpdateSupported,
    SqlInfo::SqlStoredProceduresSupported,
    SqlInfo::SqlSupportedSubqueries,
    SqlInfo::SqlCorrelatedSubqueriesSupported,
    SqlInfo::SqlSupportedUnions,
    SqlInfo::SqlMaxBinaryLiteralLength,
    SqlInfo::SqlMaxCharLiteralLength,
    SqlInfo::SqlMaxColumnNameLength,
    SqlInfo::SqlMaxColumnsInGroupBy,
    SqlInfo::SqlMaxColumnsInIndex,
    SqlInfo::SqlMaxColumnsInOrderBy,
    SqlInfo::SqlMaxColumnsInSelect,
    SqlInfo::SqlMaxColumnsInTable,
    SqlInfo::SqlMaxConnections,
    SqlInfo::SqlMaxCursorNameLength,
    SqlInfo::SqlMaxIndexLength,
    SqlInfo::SqlDbSchemaNameLength,
    SqlInfo::SqlMaxProcedureNameLength,
    SqlInfo::SqlMaxCatalogNameLength,
    SqlInfo::SqlMaxRowSize,
    SqlInfo::SqlMaxRowSizeIncludesBlobs,
    SqlInfo::SqlMaxStatementLength,
    SqlInfo::SqlMaxStatements,
    SqlInfo::SqlMaxTableNameLength,
    SqlInfo::SqlMaxTablesInSelect,
    SqlInfo::SqlMaxUsernameLength,
    SqlInfo::SqlDefaultTransactionIsolation,
    SqlInfo::SqlTransactionsSupported,
    SqlInfo::SqlSupportedTransactionsIsolationLevels,
    SqlInfo::SqlDataDefinitionCausesTransactionCommit,
    SqlInfo::SqlDataDefinitionsInTransactionsIgnored,
    SqlInfo::SqlSupportedResultSetTypes,
    SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
    SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
    SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
    SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
    SqlInfo::SqlBatchUpdatesSupported,
    SqlInfo::SqlSavepointsSupported,
    SqlInfo::SqlNamedParametersSupported,
    SqlInfo::SqlLocatorsUpdateCopy,
    SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported,
];

#[tokio::test]
async fn sql_info_answers_every_key_the_jdbc_driver_reads() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "carl").await;
    let info = client.get_sql_info(JDBC_SQL_INFO.to_vec()).await.unwrap();
    let batch = concat(fetch(&mut client, info).await.unwrap());
    let ids = batch.column(0).as_primitive::<arrow::datatypes::UInt32Type>();
    let mut got: Vec<u32> = ids.values().to_vec();
    got.sort();
    let mut want: Vec<u32> = JDBC_SQL_INFO.iter().map(|i| *i as u32).collect();
    want.sort();
    assert_eq!(got, want, "every requested key, once");
    // Spot-check values a driver acts on.
    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::SqlIdentifierQuoteChar,
        ])
        .await
        .unwrap();
    let batch = concat(fetch(&mut client, info).await.unwrap());
    let values = rows(&[batch]);
    let text: Vec<String> = values.iter().map(|r| r.join("=")).collect();
    assert!(
        text.iter().any(|r| r.starts_with("0=") && r.contains("meshql")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|r| r.starts_with("3=") && r.contains("true")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|r| r.starts_with("504=") && r.contains('"')),
        "{text:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn xdbc_type_info_and_table_types() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let batch = concat(fetch(&mut client, info).await.unwrap());
    let names = strings(&batch, "type_name");
    for t in [
        "BOOLEAN",
        "BIGINT",
        "DOUBLE",
        "DECIMAL",
        "VARCHAR",
        "DATE",
        "TIMESTAMP",
        "TIMESTAMP WITH TIME ZONE",
    ] {
        assert!(names.contains(&t.to_string()), "{t} missing from {names:?}");
    }
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo {
            data_type: Some(XdbcDataType::XdbcVarchar as i32),
        })
        .await
        .unwrap();
    assert_eq!(
        strings(&concat(fetch(&mut client, info).await.unwrap()), "type_name"),
        ["VARCHAR"]
    );
    let info = client.get_table_types().await.unwrap();
    assert_eq!(
        strings(&concat(fetch(&mut client, info).await.unwrap()), "table_type"),
        ["TABLE"]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn keys_come_from_the_contracts() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: Some("mesh".into()),
            db_schema: Some("order".into()),
            table: "transactions".into(),
        })
        .await
        .unwrap();
    let pk = concat(fetch(&mut client, info).await.unwrap());
    assert_eq!(strings(&pk, "column_name"), ["order_id"]);
    // Catalog and schema omitted mean "any" (clients that know only the table name).
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "transactions".into(),
        })
        .await
        .unwrap();
    let pk = concat(fetch(&mut client, info).await.unwrap());
    assert_eq!(strings(&pk, "column_name"), ["order_id"]);
    assert_eq!(strings(&pk, "db_schema_name"), ["order"]);

    let fk_rows = |b: RecordBatch| {
        strings(&b, "pk_db_schema_name")
            .into_iter()
            .zip(strings(&b, "pk_table_name"))
            .zip(strings(&b, "pk_column_name"))
            .zip(
                strings(&b, "fk_db_schema_name")
                    .into_iter()
                    .zip(strings(&b, "fk_table_name"))
                    .zip(strings(&b, "fk_column_name")),
            )
            .map(|(((a, b), c), ((d, e), f))| format!("{a}.{b}.{c} <- {d}.{e}.{f}"))
            .collect::<Vec<_>>()
    };
    let edge = "customer.profiles.customer_id <- order.transactions.customer_id".to_string();
    let info = client
        .get_imported_keys(CommandGetImportedKeys {
            catalog: None,
            db_schema: Some("order".into()),
            table: "transactions".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        fk_rows(concat(fetch(&mut client, info).await.unwrap())),
        std::slice::from_ref(&edge)
    );
    let info = client
        .get_exported_keys(CommandGetExportedKeys {
            catalog: None,
            db_schema: Some("customer".into()),
            table: "profiles".into(),
        })
        .await
        .unwrap();
    assert!(fk_rows(concat(fetch(&mut client, info).await.unwrap())).contains(&edge));
    let info = client
        .get_cross_reference(CommandGetCrossReference {
            pk_catalog: None,
            pk_db_schema: Some("customer".into()),
            pk_table: "profiles".into(),
            fk_catalog: None,
            fk_db_schema: Some("order".into()),
            fk_table: "transactions".into(),
        })
        .await
        .unwrap();
    assert_eq!(fk_rows(concat(fetch(&mut client, info).await.unwrap())), [edge]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn hostile_name_patterns_fail_alone_and_fast() {
    let server = start(config("", "")).await;
    let mut alice = login(&server, "alice").await;
    let tables = |schema: Option<String>, table: Option<String>| CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: schema,
        table_name_filter_pattern: table,
        table_types: vec![],
        include_schema: false,
    };
    // Many `%` before a character no name has: matched in linear time (this took 55 s).
    let backtracking = format!("{}#", "%".repeat(1000));
    for (schema, table) in [
        (None, Some(backtracking.clone())),
        (Some(backtracking.clone()), None),
        (Some("%%%%%%%%%%#".to_string()), Some("%%%%%%%%%%#".to_string())),
    ] {
        let info = alice.get_tables(tables(schema, table)).await.expect("planned");
        let batches = fetch(&mut alice, info).await.expect("answered");
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }
    // Beyond the documented length: a clear refusal (this overflowed the server's stack).
    let long = "%".repeat(5000);
    let refused = match alice.get_tables(tables(None, Some(long))).await {
        Err(e) => e.to_string(),
        Ok(info) => fetch(&mut alice, info).await.expect_err("refused").to_string(),
    };
    assert!(refused.contains("at most"), "{refused}");
    // The server keeps answering.
    let info = alice.get_tables(tables(None, Some("prof%".into()))).await.unwrap();
    let batch = concat(fetch(&mut alice, info).await.unwrap());
    assert_eq!(strings(&batch, "table_name"), ["profiles"]);
    server.shutdown().await.unwrap();
}
