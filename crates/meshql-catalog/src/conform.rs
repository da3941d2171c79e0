//! Does the storage match the contract?
//!
//! The contract is the product's interface: the table meshql serves has exactly the contract's
//! columns, in the contract's order, under the contract's names (a column's `physicalName`, when
//! given, is its name in storage). Storage columns the contract does not mention are not served.
//!
//! Rules:
//! - a contract column missing from storage, or stored with a type that does not fit its
//!   `logicalType`, is an **error**: the product is unavailable until the producer fixes it;
//! - a `required` column that storage declares nullable, and storage columns outside the
//!   contract, are **warnings**: the data may still keep the promise (nulls are a quality check).

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use meshql_contract::{LogicalType, SchemaObject, SchemaProperty};

/// The outcome of comparing a storage schema with a contract schema.
#[derive(Debug, Clone, Default)]
pub struct Conformance {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// For each contract column, in contract order: (storage column name, contract column name).
    pub columns: Vec<(String, String)>,
    /// Contract columns that an older version read by time travel did not have yet: served as
    /// NULLs (only columns the contract lets be NULL).
    pub absent: Vec<String>,
}

impl Conformance {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Compares `storage` with the contract's schema object.
pub fn check(storage: &Schema, contract: &SchemaObject) -> Conformance {
    check_version(storage, contract, false)
}

/// Compares `storage` with the contract's schema object; for an older version read by time
/// travel (`older`), a column added to the table since then is served as NULLs when the
/// contract allows NULL (the rule the writers' own readers follow).
pub fn check_version(storage: &Schema, contract: &SchemaObject, older: bool) -> Conformance {
    let mut out = Conformance::default();
    for prop in &contract.properties {
        let wanted = prop.storage_name();
        let field = storage
            .fields()
            .iter()
            .find(|f| f.name() == wanted)
            .or_else(|| storage.fields().iter().find(|f| f.name().eq_ignore_ascii_case(wanted)));
        let Some(field) = field else {
            if older && !prop.required {
                out.warnings.push(format!(
                    "column `{}` did not exist in this version: served as NULL",
                    prop.name
                ));
                out.absent.push(prop.name.clone());
                out.columns.push((prop.name.clone(), prop.name.clone()));
                continue;
            }
            let available: Vec<&str> = storage.fields().iter().map(|f| f.name().as_str()).collect();
            out.errors.push(format!(
                "column `{}` is in the contract but not in storage (storage has: {})",
                prop.name,
                available.join(", ")
            ));
            continue;
        };
        if let Some(lt) = prop.logical_type {
            if !fits(lt, field.data_type()) {
                out.errors.push(format!(
                    "column `{}`: the contract says {lt}, storage has {}",
                    prop.name,
                    field.data_type()
                ));
            }
        }
        if prop.required && field.is_nullable() {
            out.warnings.push(format!(
                "column `{}` is required by the contract but nullable in storage",
                prop.name
            ));
        }
        out.columns.push((field.name().clone(), prop.name.clone()));
    }
    for f in storage.fields() {
        let used = out.columns.iter().any(|(s, _)| s == f.name());
        if !used {
            out.warnings.push(format!(
                "storage column `{}` is not in the contract and is not served",
                f.name()
            ));
        }
    }
    out
}

/// Does an Arrow type carry values of an ODCS logical type?
pub fn fits(lt: LogicalType, dt: &DataType) -> bool {
    use DataType::*;
    let dt = match dt {
        Dictionary(_, v) => v.as_ref(),
        RunEndEncoded(_, v) => v.data_type(),
        other => other,
    };
    // A column that is all NULL (pandas writes `Null` for all-`None` columns) carries any type;
    // the view serves it as NULLs of the contract's type.
    if matches!(dt, Null) {
        return true;
    }
    match lt {
        // A UUID is served as its text (crate::convert).
        LogicalType::String => matches!(dt, Utf8 | LargeUtf8 | Utf8View | FixedSizeBinary(16)),
        LogicalType::Integer => {
            dt.is_integer()
                || matches!(
                    dt,
                    Decimal32(_, 0) | Decimal64(_, 0) | Decimal128(_, 0) | Decimal256(_, 0)
                )
        }
        LogicalType::Number => dt.is_numeric(),
        LogicalType::Boolean => matches!(dt, Boolean),
        LogicalType::Date => matches!(dt, Date32 | Date64),
        LogicalType::Timestamp => matches!(dt, Timestamp(_, _)),
        LogicalType::Time => matches!(dt, Time32(_) | Time64(_)),
        LogicalType::Object => matches!(dt, Struct(_) | Map(_, _)),
        LogicalType::Array => matches!(
            dt,
            List(_) | LargeList(_) | FixedSizeList(_, _) | ListView(_) | LargeListView(_)
        ),
    }
}

/// The Arrow type meshql uses for a contract column when there is no storage to ask (partition
/// columns, and the schema shown for a product that is unavailable).
pub fn arrow_type(prop: &SchemaProperty) -> DataType {
    match prop.logical_type {
        Some(LogicalType::Integer) => DataType::Int64,
        Some(LogicalType::Number) => DataType::Float64,
        Some(LogicalType::Boolean) => DataType::Boolean,
        Some(LogicalType::Date) => DataType::Date32,
        Some(LogicalType::Timestamp) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Some(LogicalType::Time) => DataType::Time64(TimeUnit::Microsecond),
        _ => DataType::Utf8,
    }
}

/// The contract's schema as Arrow, with [`arrow_type`] for every column.
pub fn contract_schema(contract: &SchemaObject) -> Schema {
    Schema::new(
        contract
            .properties
            .iter()
            .map(|p| Field::new(&p.name, arrow_type(p), !p.required))
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(name: &str, lt: LogicalType, required: bool) -> SchemaProperty {
        serde_json::from_value(serde_json::json!({
            "name": name, "logicalType": lt.to_string(), "required": required
        }))
        .unwrap()
    }

    fn object(props: Vec<SchemaProperty>) -> SchemaObject {
        let mut o: SchemaObject = serde_json::from_value(serde_json::json!({"name": "t"})).unwrap();
        o.properties = props;
        o
    }

    #[test]
    fn matching_schema_conforms() {
        let storage = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, true),
            Field::new("extra", DataType::Float64, true),
        ]);
        let c = check(
            &storage,
            &object(vec![
                prop("id", LogicalType::Integer, true),
                prop("name", LogicalType::String, true),
            ]),
        );
        assert!(c.is_ok(), "{:?}", c.errors);
        assert_eq!(c.columns.len(), 2);
        // nullable `name` vs required, and `extra` not in the contract
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    }

    #[test]
    fn drift_is_an_error() {
        let storage = Schema::new(vec![Field::new("id", DataType::Utf8, false)]);
        let c = check(
            &storage,
            &object(vec![
                prop("id", LogicalType::Integer, true),
                prop("gone", LogicalType::String, false),
            ]),
        );
        assert_eq!(c.errors.len(), 2, "{:?}", c.errors);
        assert!(c.errors[0].contains("contract says integer"));
        assert!(c.errors[1].contains("`gone`"));
    }

    #[test]
    fn type_fit() {
        assert!(fits(LogicalType::Number, &DataType::Decimal128(12, 2)));
        assert!(fits(LogicalType::Integer, &DataType::Decimal128(10, 0)));
        assert!(!fits(LogicalType::Integer, &DataType::Float64));
        assert!(fits(
            LogicalType::String,
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        ));
        assert!(fits(
            LogicalType::Timestamp,
            &DataType::Timestamp(TimeUnit::Nanosecond, None)
        ));
        assert!(!fits(LogicalType::Date, &DataType::Utf8));
    }
}
