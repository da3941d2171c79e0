//! What the server says about itself and about the mesh's structure: GetSqlInfo (every key the
//! Arrow Flight SQL JDBC driver reads), GetXdbcTypeInfo, and primary/foreign keys from the
//! contracts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int32Builder, RecordBatch, StringBuilder, UInt8Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlSupportedCaseSensitivity, SqlSupportedTransaction, XdbcDataType,
    XdbcDatetimeSubcode,
};
use meshql::contract::MeshDefinition;
use meshql::Session;
use meshql::MESH_CATALOG;

/// The answers to GetSqlInfo. Values are what meshql actually does: read-only, no
/// transactions, DataFusion's SQL dialect.
pub fn sql_info(query_timeout: Duration) -> Result<SqlInfoData, arrow_flight::error::FlightError> {
    use SqlInfo::*;
    let mut b = SqlInfoDataBuilder::new();
    b.append(FlightSqlServerName, "meshql");
    b.append(FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(FlightSqlServerArrowVersion, "58");
    b.append(FlightSqlServerReadOnly, true);
    b.append(FlightSqlServerSql, true);
    b.append(FlightSqlServerSubstrait, false);
    b.append(FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
    b.append(FlightSqlServerCancel, true);
    b.append(FlightSqlServerBulkIngestion, false);
    b.append(FlightSqlServerIngestTransactionsSupported, false);
    b.append(
        FlightSqlServerStatementTimeout,
        i32::try_from(query_timeout.as_millis()).unwrap_or(i32::MAX),
    );
    b.append(FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlDdlCatalog, false);
    b.append(SqlDdlSchema, false);
    b.append(SqlDdlTable, false);
    // Unquoted identifiers are folded to lower case; quoted ones are kept as written.
    b.append(
        SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    // Access policies decide: not every listed table is readable by everyone.
    b.append(SqlAllTablesAreSelectable, false);
    // ASC puts NULLs last, DESC first: NULLs sort as the largest values.
    b.append(
        SqlNullOrdering,
        arrow_flight::sql::SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlKeywords, keywords());
    b.append(SqlNumericFunctions, strings(NUMERIC_FUNCTIONS));
    b.append(SqlStringFunctions, strings(STRING_FUNCTIONS));
    b.append(SqlSystemFunctions, strings(&["arrow_typeof", "version"]));
    b.append(SqlDatetimeFunctions, strings(DATETIME_FUNCTIONS));
    b.append(SqlSearchStringEscape, "\\");
    b.append(SqlExtraNameCharacters, "");
    b.append(SqlSupportsColumnAliasing, true);
    b.append(SqlNullPlusNullIsNull, true);
    b.append(SqlSupportsConvert, conversions());
    b.append(SqlSupportsTableCorrelationNames, true);
    b.append(SqlSupportsDifferentTableCorrelationNames, true);
    b.append(SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlSupportsOrderByUnrelated, true);
    // GROUP BY columns not in the SELECT list, and beyond it.
    b.append(SqlSupportedGroupBy, 0b11i32);
    b.append(SqlSupportsLikeEscapeClause, true);
    b.append(SqlSupportsNonNullableColumns, true);
    // Minimum and core grammar; ANSI-92 entry and intermediate.
    b.append(SqlSupportedGrammar, 0b011i32);
    b.append(SqlAnsi92SupportedLevel, 0b011i32);
    b.append(SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlOuterJoinsSupportLevel,
        arrow_flight::sql::SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlSchemaTerm, "domain");
    b.append(SqlProcedureTerm, "procedure");
    b.append(SqlCatalogTerm, "catalog");
    b.append(SqlCatalogAtStart, true);
    b.append(SqlSchemasSupportedActions, 0i32);
    b.append(SqlCatalogsSupportedActions, 0i32);
    b.append(SqlSupportedPositionedCommands, 0i32);
    b.append(SqlSelectForUpdateSupported, false);
    b.append(SqlStoredProceduresSupported, false);
    // Comparisons, EXISTS and IN subqueries.
    b.append(SqlSupportedSubqueries, 0b0111i32);
    b.append(SqlCorrelatedSubqueriesSupported, true);
    // UNION and UNION ALL.
    b.append(SqlSupportedUnions, 0b11i32);
    // 0: no fixed limit.
    for key in [
        SqlMaxBinaryLiteralLength,
        SqlMaxCharLiteralLength,
        SqlMaxColumnNameLength,
        SqlMaxColumnsInGroupBy,
        SqlMaxColumnsInIndex,
        SqlMaxColumnsInOrderBy,
        SqlMaxColumnsInSelect,
        SqlMaxColumnsInTable,
        SqlMaxConnections,
        SqlMaxCursorNameLength,
        SqlMaxIndexLength,
        SqlDbSchemaNameLength,
        SqlMaxProcedureNameLength,
        SqlMaxCatalogNameLength,
        SqlMaxRowSize,
        SqlMaxStatementLength,
        SqlMaxStatements,
        SqlMaxTableNameLength,
        SqlMaxTablesInSelect,
        SqlMaxUsernameLength,
    ] {
        b.append(key, 0i64);
    }
    b.append(SqlMaxRowSizeIncludesBlobs, false);
    b.append(SqlDefaultTransactionIsolation, 0i32);
    b.append(SqlTransactionsSupported, false);
    b.append(SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlDataDefinitionsInTransactionsIgnored, false);
    // Forward-only, read-only result sets.
    b.append(SqlSupportedResultSetTypes, 1i32 << 1);
    b.append(SqlSupportedConcurrenciesForResultSetUnspecified, 0i32);
    b.append(SqlSupportedConcurrenciesForResultSetForwardOnly, 1i32 << 1);
    b.append(SqlSupportedConcurrenciesForResultSetScrollSensitive, 0i32);
    b.append(SqlSupportedConcurrenciesForResultSetScrollInsensitive, 0i32);
    b.append(SqlBatchUpdatesSupported, false);
    b.append(SqlSavepointsSupported, false);
    b.append(SqlNamedParametersSupported, false);
    b.append(SqlLocatorsUpdateCopy, false);
    b.append(SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build()
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn keywords() -> Vec<String> {
    datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
        .iter()
        .map(|k| k.to_string())
        .collect()
}

const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "cbrt",
    "ceil",
    "cos",
    "cosh",
    "cot",
    "degrees",
    "exp",
    "factorial",
    "floor",
    "gcd",
    "isnan",
    "iszero",
    "lcm",
    "ln",
    "log",
    "log10",
    "log2",
    "nanvl",
    "pi",
    "pow",
    "power",
    "radians",
    "random",
    "round",
    "signum",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
];

const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "bit_length",
    "btrim",
    "char_length",
    "character_length",
    "chr",
    "concat",
    "concat_ws",
    "ends_with",
    "initcap",
    "left",
    "length",
    "levenshtein",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "octet_length",
    "overlay",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "to_hex",
    "translate",
    "trim",
    "upper",
];

const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_format",
    "date_part",
    "date_trunc",
    "datepart",
    "datetrunc",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_local_time",
    "to_timestamp",
    "to_timestamp_micros",
    "to_timestamp_millis",
    "to_timestamp_nanos",
    "to_timestamp_seconds",
    "to_unixtime",
];

/// CAST support, by the ODBC conversion codes of `SqlSupportsConvert`.
fn conversions() -> BTreeMap<i32, Vec<i32>> {
    use arrow_flight::sql::SqlSupportsConvert as C;
    let numeric = [
        C::SqlConvertBigint,
        C::SqlConvertBit,
        C::SqlConvertDecimal,
        C::SqlConvertFloat,
        C::SqlConvertInteger,
        C::SqlConvertNumeric,
        C::SqlConvertReal,
        C::SqlConvertSmallint,
        C::SqlConvertTinyint,
    ];
    let text = [C::SqlConvertChar, C::SqlConvertVarchar, C::SqlConvertLongvarchar];
    let mut m = BTreeMap::new();
    let ids = |v: &[C]| v.iter().map(|c| *c as i32).collect::<Vec<_>>();
    let numeric_to: Vec<C> = numeric.iter().chain(text.iter()).copied().collect();
    for n in numeric {
        m.insert(n as i32, ids(&numeric_to));
    }
    let text_to: Vec<C> = numeric
        .iter()
        .chain(text.iter())
        .chain([C::SqlConvertDate, C::SqlConvertTime, C::SqlConvertTimestamp].iter())
        .copied()
        .collect();
    for t in text {
        m.insert(t as i32, ids(&text_to));
    }
    m.insert(
        C::SqlConvertDate as i32,
        ids(&[
            C::SqlConvertDate,
            C::SqlConvertTimestamp,
            C::SqlConvertVarchar,
            C::SqlConvertChar,
        ]),
    );
    m.insert(
        C::SqlConvertTimestamp as i32,
        ids(&[
            C::SqlConvertDate,
            C::SqlConvertTime,
            C::SqlConvertTimestamp,
            C::SqlConvertVarchar,
            C::SqlConvertChar,
        ]),
    );
    m.insert(
        C::SqlConvertTime as i32,
        ids(&[C::SqlConvertTime, C::SqlConvertVarchar, C::SqlConvertChar]),
    );
    m.insert(
        C::SqlConvertBinary as i32,
        ids(&[C::SqlConvertBinary, C::SqlConvertVarbinary, C::SqlConvertLongvarbinary]),
    );
    m.insert(
        C::SqlConvertVarbinary as i32,
        ids(&[C::SqlConvertBinary, C::SqlConvertVarbinary, C::SqlConvertLongvarbinary]),
    );
    m
}

/// The SQL types meshql returns, for GetXdbcTypeInfo.
pub fn xdbc_type_info() -> Result<XdbcTypeInfoData, arrow_flight::error::FlightError> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let base = |name: &str, t: XdbcDataType| XdbcTypeInfo {
        type_name: name.to_string(),
        data_type: t,
        column_size: None,
        literal_prefix: None,
        literal_suffix: None,
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: false,
        searchable: Searchable::Full,
        unsigned_attribute: None,
        fixed_prec_scale: false,
        auto_increment: None,
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: t,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    };
    let numeric = |name: &str, t: XdbcDataType, size: i32, radix: i32| XdbcTypeInfo {
        column_size: Some(size),
        unsigned_attribute: Some(false),
        fixed_prec_scale: true,
        auto_increment: Some(false),
        minimum_scale: Some(0),
        maximum_scale: Some(0),
        num_prec_radix: Some(radix),
        ..base(name, t)
    };
    let datetime = |name: &str, t: XdbcDataType, size: i32, sub: XdbcDatetimeSubcode| XdbcTypeInfo {
        column_size: Some(size),
        literal_prefix: Some(format!("{} '", name.split(' ').next().unwrap_or(name))),
        literal_suffix: Some("'".into()),
        sql_data_type: XdbcDataType::XdbcDatetime,
        datetime_subcode: Some(sub),
        ..base(name, t)
    };
    let mut types = vec![
        XdbcTypeInfo {
            column_size: Some(1),
            ..base("BOOLEAN", XdbcDataType::XdbcBit)
        },
        numeric("TINYINT", XdbcDataType::XdbcTinyint, 3, 10),
        numeric("SMALLINT", XdbcDataType::XdbcSmallint, 5, 10),
        numeric("INTEGER", XdbcDataType::XdbcInteger, 10, 10),
        numeric("BIGINT", XdbcDataType::XdbcBigint, 19, 10),
        XdbcTypeInfo {
            fixed_prec_scale: false,
            ..numeric("REAL", XdbcDataType::XdbcReal, 24, 2)
        },
        XdbcTypeInfo {
            fixed_prec_scale: false,
            ..numeric("DOUBLE", XdbcDataType::XdbcDouble, 53, 2)
        },
        XdbcTypeInfo {
            create_params: Some(vec!["precision".into(), "scale".into()]),
            maximum_scale: Some(38),
            ..numeric("DECIMAL", XdbcDataType::XdbcDecimal, 38, 10)
        },
        XdbcTypeInfo {
            literal_prefix: Some("'".into()),
            literal_suffix: Some("'".into()),
            case_sensitive: true,
            ..base("VARCHAR", XdbcDataType::XdbcVarchar)
        },
        XdbcTypeInfo {
            literal_prefix: Some("X'".into()),
            literal_suffix: Some("'".into()),
            searchable: Searchable::Basic,
            ..base("VARBINARY", XdbcDataType::XdbcVarbinary)
        },
        datetime("DATE", XdbcDataType::XdbcDate, 10, XdbcDatetimeSubcode::XdbcSubcodeYear),
        datetime("TIME", XdbcDataType::XdbcTime, 18, XdbcDatetimeSubcode::XdbcSubcodeTime),
        datetime(
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            29,
            XdbcDatetimeSubcode::XdbcSubcodeTimestamp,
        ),
        datetime(
            "TIMESTAMP WITH TIME ZONE",
            XdbcDataType::XdbcTimestamp,
            35,
            XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone,
        ),
        XdbcTypeInfo {
            sql_data_type: XdbcDataType::XdbcInterval,
            searchable: Searchable::Basic,
            ..base("INTERVAL", XdbcDataType::XdbcInterval)
        },
    ];
    // GetXdbcTypeInfo rows are ordered by data type.
    types.sort_by_key(|t| (t.data_type as i32, t.type_name.clone()));
    for t in types {
        b.append(t);
    }
    b.build()
}

/// A primary key column of a product, from its contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub domain: String,
    pub table: String,
    pub column: String,
    pub sequence: i32,
}

/// One column of a foreign key: `fk` references `pk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub pk: KeyColumn,
    pub fk: KeyColumn,
}

/// The primary key of `domain.table` as the principal may see it: nothing if the product or
/// any key column is hidden from them (a partial key would mislead).
pub fn primary_key(session: &Session, definition: &MeshDefinition, domain: &str, table: &str) -> Vec<KeyColumn> {
    let Some(entry) = definition.table(domain, table) else {
        return Vec::new();
    };
    let Ok(binding) = &entry.binding else {
        return Vec::new();
    };
    let mut cols: Vec<(i64, String)> = binding
        .schema
        .properties
        .iter()
        .filter(|p| p.primary_key)
        .enumerate()
        .map(|(i, p)| {
            (
                p.primary_key_position.filter(|p| *p > 0).unwrap_or(1000 + i as i64),
                p.name.clone(),
            )
        })
        .collect();
    cols.sort();
    if cols.iter().any(|(_, c)| !session.column_visible(domain, table, c)) {
        return Vec::new();
    }
    cols.into_iter()
        .enumerate()
        .map(|(i, (_, column))| KeyColumn {
            domain: domain.to_string(),
            table: table.to_string(),
            column,
            sequence: i as i32 + 1,
        })
        .collect()
}

/// Every foreign key between products the principal may discover (both ends, all columns).
///
/// Contracts declare `relationships: [{type: foreignKey, to: <object>.<column>}]` on a column;
/// `<object>` is a schema object of the same contract, else of a product in the same domain,
/// else the one product in the mesh with that schema object name.
pub fn foreign_keys(session: &Session, definition: &MeshDefinition) -> Vec<ForeignKey> {
    let mut out = Vec::new();
    for entry in &definition.tables {
        let Ok(binding) = &entry.binding else { continue };
        for prop in &binding.schema.properties {
            for rel in prop.relationships.iter().filter(|r| r.is_foreign_key()) {
                let targets = rel.targets();
                for (seq, target) in targets.iter().enumerate() {
                    let Some((object, column)) = target.split_once('.') else {
                        continue;
                    };
                    let Some(pk_entry) = resolve_object(definition, entry, object) else {
                        continue;
                    };
                    let fk = KeyColumn {
                        domain: entry.domain.clone(),
                        table: entry.name.clone(),
                        column: prop.name.clone(),
                        sequence: seq as i32 + 1,
                    };
                    let pk = KeyColumn {
                        domain: pk_entry.domain.clone(),
                        table: pk_entry.name.clone(),
                        column: column.to_string(),
                        sequence: seq as i32 + 1,
                    };
                    if session.column_visible(&fk.domain, &fk.table, &fk.column)
                        && session.column_visible(&pk.domain, &pk.table, &pk.column)
                    {
                        out.push(ForeignKey { pk, fk });
                    }
                }
            }
        }
    }
    out
}

fn resolve_object<'a>(
    definition: &'a MeshDefinition,
    from: &'a meshql::contract::TableEntry,
    object: &str,
) -> Option<&'a meshql::contract::TableEntry> {
    let named = |e: &&meshql::contract::TableEntry| e.binding.as_ref().is_ok_and(|b| b.schema.name == object);
    let same_contract = |e: &&meshql::contract::TableEntry| match (&e.binding, &from.binding) {
        (Ok(a), Ok(b)) => Arc::ptr_eq(&a.contract, &b.contract),
        _ => false,
    };
    if let Some(e) = definition.tables.iter().filter(named).find(same_contract) {
        return Some(e);
    }
    if let Some(e) = definition.tables_in(&from.domain).find(named) {
        return Some(e);
    }
    let mut all = definition.tables.iter().filter(named);
    match (all.next(), all.next()) {
        (Some(e), None) => Some(e),
        _ => None,
    }
}

/// The GetPrimaryKeys result schema.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

pub fn primary_keys_batch(keys: &[KeyColumn]) -> Result<RecordBatch, ArrowError> {
    let mut catalog = StringBuilder::new();
    let mut schema = StringBuilder::new();
    let mut table = StringBuilder::new();
    let mut column = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut seq = Int32Builder::new();
    for k in keys {
        catalog.append_value(MESH_CATALOG);
        schema.append_value(&k.domain);
        table.append_value(&k.table);
        column.append_value(&k.column);
        name.append_value(format!("pk_{}", k.table));
        seq.append_value(k.sequence);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(catalog.finish()),
        Arc::new(schema.finish()),
        Arc::new(table.finish()),
        Arc::new(column.finish()),
        Arc::new(name.finish()),
        Arc::new(seq.finish()),
    ];
    RecordBatch::try_new(primary_keys_schema(), columns)
}

/// The schema of GetImportedKeys, GetExportedKeys and GetCrossReference results.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

pub fn foreign_keys_batch(keys: &[ForeignKey]) -> Result<RecordBatch, ArrowError> {
    let mut s: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    let mut seq = Int32Builder::new();
    let mut fk_name = StringBuilder::new();
    let mut pk_name = StringBuilder::new();
    let mut update = UInt8Builder::new();
    let mut delete = UInt8Builder::new();
    for k in keys {
        for (i, v) in [
            MESH_CATALOG,
            &k.pk.domain,
            &k.pk.table,
            &k.pk.column,
            MESH_CATALOG,
            &k.fk.domain,
            &k.fk.table,
            &k.fk.column,
        ]
        .into_iter()
        .enumerate()
        {
            s[i].append_value(v);
        }
        seq.append_value(k.fk.sequence);
        fk_name.append_value(format!("fk_{}_{}", k.fk.table, k.fk.column));
        pk_name.append_value(format!("pk_{}", k.pk.table));
        // NO_ACTION: the mesh is read-only, nothing cascades.
        update.append_value(3);
        delete.append_value(3);
    }
    let mut columns: Vec<ArrayRef> = s.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect();
    columns.push(Arc::new(seq.finish()));
    columns.push(Arc::new(fk_name.finish()));
    columns.push(Arc::new(pk_name.finish()));
    columns.push(Arc::new(update.finish()));
    columns.push(Arc::new(delete.finish()));
    RecordBatch::try_new(foreign_keys_schema(), columns)
}

/// The longest name pattern accepted in metadata calls (GetDbSchemas, GetTables).
pub const MAX_PATTERN_CHARS: usize = 1024;

/// The `names` matching an SQL `LIKE` `pattern` (`%`, `_`, `\` escapes), all of them without
/// one. Matched with arrow's `like` kernel, in time linear in the names' length whatever the
/// pattern (a hand-written recursive matcher took 55 s on `%%%%%%%%%%#` and overflowed its stack
/// on 5,000 `%`); a pattern longer than [`MAX_PATTERN_CHARS`] is refused.
pub fn filter_like(pattern: Option<&str>, names: Vec<String>) -> Result<Vec<String>, tonic::Status> {
    let Some(pattern) = pattern else {
        return Ok(names);
    };
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(crate::service::status::bad_request(format!(
            "a name pattern may have at most {MAX_PATTERN_CHARS} characters"
        )));
    }
    let candidates = arrow::array::StringArray::from_iter_values(names.iter());
    let pattern = arrow::array::Scalar::new(arrow::array::StringArray::from_iter_values([pattern]));
    let matched = arrow::compute::kernels::comparison::like(&candidates, &pattern)
        .map_err(|e| crate::service::status::bad_request(format!("name pattern: {e}")))?;
    Ok(names
        .into_iter()
        .zip(matched.iter())
        .filter_map(|(name, m)| m.unwrap_or(false).then_some(name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let m = |p: &str, v: &[&str]| filter_like(Some(p), names(v)).expect("pattern");
        assert_eq!(m("cust%", &["customer", "order"]), ["customer"]);
        assert_eq!(m("%", &["", "x"]), ["", "x"]);
        assert_eq!(m("c_stomer", &["customer", "cstomer"]), ["customer"]);
        assert_eq!(m("order", &["orders", "order"]), ["order"]);
        assert_eq!(m("%der%", &["orders"]), ["orders"]);
        assert_eq!(m("a\\_b", &["a_b", "axb"]), ["a_b"], "escaped underscore");
        assert_eq!(filter_like(None, names(&["a"])).expect("all"), ["a"]);
        // Hostile patterns (a recursive matcher took 55 s on the second and overflowed its
        // stack on the first): answered, no recursion; too long is refused.
        let long_name = "a".repeat(200);
        assert!(m(&format!("{}#", "%".repeat(1000)), &[long_name.as_str()]).is_empty());
        assert!(m("%%%%%%%%%%#", &[long_name.as_str()]).is_empty());
        let e = filter_like(Some(&"%".repeat(5000)), names(&["a"])).expect_err("too long");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn sql_info_and_types_build() {
        let info = sql_info(Duration::from_secs(60)).unwrap();
        let all = info.record_batch(Vec::<u32>::new()).unwrap();
        assert!(all.num_rows() >= 80, "{}", all.num_rows());
        let types = xdbc_type_info().unwrap();
        assert_eq!(types.record_batch(None).unwrap().num_rows(), 15);
        assert_eq!(
            types
                .record_batch(Some(XdbcDataType::XdbcVarchar as i32))
                .unwrap()
                .num_rows(),
            1
        );
    }
}
