//! Flight SQL's side of results: the column metadata clients read (type names, precision,
//! scale), and bound parameters carried inside handles. Shaping batches for the wire (plain
//! types, hydrated dictionaries, compacted views) is the facade's ([`meshql::results`]).

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use meshql::results::Shaper;

/// How results of `schema` leave the server: shaped as clients can read them (`plain`: without
/// view types), each column announced with its Flight SQL metadata.
pub fn shaper(schema: &Schema, plain: bool) -> Shaper {
    Shaper::annotated(schema, plain, type_metadata)
}

/// Flight SQL column metadata for a value of type `t`: the SQL type name, and precision and
/// scale where they mean something.
pub fn type_metadata(t: &DataType) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("ARROW:FLIGHT:SQL:TYPE_NAME".to_string(), sql_type_name(t).to_string());
    let precision_scale = match t {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => Some((i32::from(*p), i32::from(*s))),
        DataType::Int8 | DataType::UInt8 => Some((3, 0)),
        DataType::Int16 | DataType::UInt16 => Some((5, 0)),
        DataType::Int32 | DataType::UInt32 => Some((10, 0)),
        DataType::Int64 => Some((19, 0)),
        DataType::UInt64 => Some((20, 0)),
        DataType::Float32 => Some((7, 0)),
        DataType::Float64 => Some((15, 0)),
        DataType::Timestamp(unit, _) | DataType::Time64(unit) | DataType::Time32(unit) => {
            let digits = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            };
            Some((
                if matches!(t, DataType::Timestamp(..)) {
                    20 + digits
                } else {
                    9 + digits
                },
                digits,
            ))
        }
        DataType::Date32 | DataType::Date64 => Some((10, 0)),
        _ => None,
    };
    if let Some((p, s)) = precision_scale {
        m.insert("ARROW:FLIGHT:SQL:PRECISION".to_string(), p.to_string());
        m.insert("ARROW:FLIGHT:SQL:SCALE".to_string(), s.to_string());
    }
    m.insert("ARROW:FLIGHT:SQL:IS_READ_ONLY".to_string(), "1".to_string());
    m.insert("ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT".to_string(), "0".to_string());
    m.insert(
        "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE".to_string(),
        if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            "1"
        } else {
            "0"
        }
        .to_string(),
    );
    m.insert("ARROW:FLIGHT:SQL:IS_SEARCHABLE".to_string(), "1".to_string());
    m
}

/// The SQL name of an Arrow type, as `GetXdbcTypeInfo` lists it.
pub fn sql_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Null => "NULL",
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 => "TINYINT",
        DataType::Int16 | DataType::UInt8 => "SMALLINT",
        DataType::Int32 | DataType::UInt16 => "INTEGER",
        DataType::Int64 | DataType::UInt32 => "BIGINT",
        DataType::UInt64 => "DECIMAL",
        DataType::Float16 | DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            "DECIMAL"
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => "VARBINARY",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Time32(_) | DataType::Time64(_) => "TIME",
        DataType::Timestamp(_, None) => "TIMESTAMP",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE",
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL",
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..) => "ARRAY",
        DataType::Struct(_) => "STRUCT",
        DataType::Map(..) => "MAP",
        DataType::Dictionary(_, v) => sql_type_name(v),
        _ => "OTHER",
    }
}

/// One row of parameter values as Arrow IPC stream bytes (what a handle carries).
pub fn encode_parameters(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(out)
}

/// The parameter values in `bytes` (empty: none bound), in column order.
pub fn decode_parameters(bytes: &[u8]) -> Result<Vec<ScalarValue>, ArrowError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let reader = StreamReader::try_new(bytes, None)?;
    let mut values = Vec::new();
    for batch in reader {
        let batch = batch?;
        if batch.num_rows() != 1 {
            return Err(ArrowError::InvalidArgumentError("parameters must be one row".into()));
        }
        for column in batch.columns() {
            let value = ScalarValue::try_from_array(column, 0).map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
            values.push(without_union(value));
        }
    }
    Ok(values)
}

/// A parameter sent as a union (flightsql-dbapi sends every parameter as a dense union of the
/// types it may have) is the value of its chosen member: the planner cannot compare a union with
/// a column.
fn without_union(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Union(Some((_, member)), _, _) => without_union(*member),
        ScalarValue::Union(None, _, _) => ScalarValue::Null,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::ArrayRef;
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn union_parameters_are_their_members_values() {
        use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UnionArray};
        use arrow::buffer::ScalarBuffer;
        use arrow::datatypes::UnionFields;
        // As flightsql-dbapi sends them: one dense union column per parameter.
        let fields = UnionFields::try_new(
            vec![0, 1],
            vec![
                Field::new("int", DataType::Int64, true),
                Field::new("str", DataType::Utf8, true),
            ],
        )
        .unwrap();
        let union = |type_id: i8| -> ArrayRef {
            let ints: ArrayRef = Arc::new(Int64Array::from(vec![42]));
            let strs: ArrayRef = Arc::new(StringArray::from(vec!["EU"]));
            Arc::new(
                UnionArray::try_new(
                    fields.clone(),
                    ScalarBuffer::from(vec![type_id]),
                    Some(ScalarBuffer::from(vec![0i32])),
                    vec![ints, strs],
                )
                .unwrap(),
            )
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("p1", union(0).data_type().clone(), true),
            Field::new("p2", union(1).data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(schema.clone(), vec![union(0), union(1)]).unwrap();
        let mut bytes = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &schema).unwrap();
            w.write(&batch).unwrap();
            w.finish().unwrap();
        }
        assert_eq!(
            decode_parameters(&bytes).unwrap(),
            vec![ScalarValue::Int64(Some(42)), ScalarValue::Utf8(Some("EU".into()))]
        );
    }
    use arrow::array::{AsArray, Int64Array, StringViewArray};

    #[test]
    fn view_types_become_plain_and_metadata_is_attached() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new(
                "l",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true))),
                true,
            ),
            Field::new("d", DataType::Decimal128(12, 2), false),
        ]);
        let shaper = shaper(&schema, true);
        let out = shaper.schema();
        assert_eq!(out.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            out.field(1).data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let d = out.field(2).metadata();
        assert_eq!(d["ARROW:FLIGHT:SQL:TYPE_NAME"], "DECIMAL");
        assert_eq!(d["ARROW:FLIGHT:SQL:PRECISION"], "12");
        assert_eq!(d["ARROW:FLIGHT:SQL:SCALE"], "2");
        // Views kept when asked.
        assert_eq!(
            super::shaper(&schema, false).schema().field(0).data_type(),
            &DataType::Utf8View
        );
    }

    #[test]
    fn shapes_batches_and_round_trips_parameters() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringViewArray::from(vec!["a"])),
                Arc::new(Int64Array::from(vec![7])),
            ],
        )
        .unwrap();
        let shaped = shaper(&schema, true).shape(batch.clone()).unwrap();
        assert_eq!(shaped.column(0).data_type(), &DataType::Utf8);
        let bytes = encode_parameters(&batch).unwrap();
        assert_eq!(
            decode_parameters(&bytes).unwrap(),
            vec![ScalarValue::Utf8View(Some("a".into())), ScalarValue::Int64(Some(7))]
        );
        assert!(decode_parameters(&[]).unwrap().is_empty());
        assert!(decode_parameters(b"garbage").is_err());
    }

    #[test]
    fn views_holding_unused_buffer_bytes_are_sent_compacted() {
        let values: Vec<String> = (0..2000)
            .map(|i| format!("a value longer than twelve bytes {i}"))
            .collect();
        let whole = StringViewArray::from_iter_values(values.iter());
        let held = |a: &ArrayRef| -> usize { a.as_string_view().data_buffers().iter().map(|b| b.len()).sum() };
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, false)]));
        let shaper = shaper(&schema, false);
        let shape = |a: ArrayRef| {
            shaper
                .shape(RecordBatch::try_new(schema.clone(), vec![a]).unwrap())
                .unwrap()
        };

        // A slice of 10 rows that still references the buffers of all 2,000: compacted.
        let slice: ArrayRef = Arc::new(whole.slice(100, 10));
        let shaped = shape(slice.clone());
        assert_eq!(
            shaped.column(0).as_string_view().iter().collect::<Vec<_>>(),
            slice.as_string_view().iter().collect::<Vec<_>>()
        );
        assert!(
            held(shaped.column(0)) * 50 < held(&slice),
            "{} vs {}",
            held(shaped.column(0)),
            held(&slice)
        );

        // The whole array uses its buffers: sent as it is, not copied.
        let all: ArrayRef = Arc::new(whole.clone());
        let shaped = shape(all.clone());
        assert!(Arc::ptr_eq(shaped.column(0), &all));

        // Many views of the same bytes (as from a dictionary page): copying would grow them.
        let long = "x".repeat(100);
        let mut b = arrow::array::StringViewBuilder::new().with_deduplicate_strings();
        for _ in 0..5000 {
            b.append_value(&long);
        }
        let repeated: ArrayRef = Arc::new(b.finish());
        assert!(Arc::ptr_eq(shape(repeated.clone()).column(0), &repeated));
    }

    #[test]
    fn dictionaries_are_announced_and_sent_as_their_values() {
        use arrow::array::{DictionaryArray, StringArray};
        use arrow::datatypes::UInt16Type;
        let dict = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
        let schema = Schema::new(vec![Field::new("category", dict, true)]);
        for plain in [true, false] {
            let shaper = shaper(&schema, plain);
            assert_eq!(shaper.schema().field(0).data_type(), &DataType::Utf8);
            // what the physical plan produced: plain strings, or the dictionary itself
            let strings = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("category", DataType::Utf8, true)])),
                vec![Arc::new(StringArray::from(vec!["books"]))],
            )
            .unwrap();
            let keys: DictionaryArray<UInt16Type> = vec!["books", "toys"].into_iter().collect();
            let dictionary = RecordBatch::try_new(Arc::new(schema.clone()), vec![Arc::new(keys)]).unwrap();
            for batch in [strings, dictionary] {
                let shaped = shaper.shape(batch).unwrap();
                assert_eq!(shaped.schema(), shaper.schema());
            }
        }
    }
}
