//! Shaping results for the wire: plain types for clients that cannot read view types, Flight
//! SQL column metadata, and bound parameters carried inside handles.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use meshql::compact::compact_views;

/// `t` with view types replaced by their plain equivalents, recursively.
pub fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::ListView(f) | DataType::List(f) => DataType::List(plain_field(f)),
        DataType::LargeListView(f) | DataType::LargeList(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(plain_field).collect::<Fields>()),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(plain_type(v))),
        other => other.clone(),
    }
}

fn plain_field(f: &FieldRef) -> FieldRef {
    Arc::new(f.as_ref().clone().with_data_type(plain_type(f.data_type())))
}

/// How results leave the server: the schema clients are told, and how to make each batch match.
///
/// Dictionary-encoded columns (Delta and Hive partition values, for instance) are announced with
/// their value type: the Flight encoder sends them hydrated, and the schema in FlightInfo must be
/// the one the stream carries (clients such as ADBC check).
#[derive(Debug, Clone)]
pub struct Shaper {
    schema: SchemaRef,
}

/// The type a column of type `t` is announced and sent as.
fn announced_type(t: &DataType, plain: bool) -> DataType {
    match t {
        DataType::Dictionary(_, v) => announced_type(v, plain),
        other if plain => plain_type(other),
        other => other.clone(),
    }
}

impl Shaper {
    /// Shapes results of `schema`; `plain` replaces view types.
    pub fn new(schema: &Schema, plain: bool) -> Shaper {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                let target = announced_type(f.data_type(), plain);
                let mut metadata = f.metadata().clone();
                metadata.extend(type_metadata(&target));
                f.as_ref().clone().with_data_type(target).with_metadata(metadata)
            })
            .collect();
        Shaper {
            schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        }
    }

    /// The schema announced in FlightInfo and sent first in DoGet.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// `batch` in the announced schema: every column whose type differs is cast (the physical
    /// plan may produce a type other than the logical one, such as plain strings for a
    /// dictionary-typed partition column).
    pub fn shape(&self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    // IPC sends every buffer a view array references, and the Parquet reader's
                    // views point into whole decoded pages shared by the batches cut from them
                    // (TPC-H lineitem with `plainTypes: false`: 2.4 GB on the wire for 1.0 GB
                    // of values, before compaction).
                    Ok(compact_views(c))
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        RecordBatch::try_new(self.schema.clone(), columns)
    }
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

/// The rows a result message aims at: operators such as joins emit batches of a few dozen rows
/// (a 400,000-row cross join came as 6,200 batches of ~65 rows), each a message of its own with
/// its overhead; they are gathered into batches of this many rows before encoding.
pub const RESULT_BATCH_ROWS: usize = 8192;

/// `stream` with its small batches gathered into batches of about `rows` rows; batches at least
/// half that size pass as they are.
pub fn coalesced(
    stream: datafusion::execution::SendableRecordBatchStream,
    rows: usize,
) -> datafusion::execution::SendableRecordBatchStream {
    use futures::StreamExt;
    let schema = stream.schema();
    let coalescer =
        arrow::compute::BatchCoalescer::new(schema.clone(), rows).with_biggest_coalesce_batch_size(Some(rows / 2));
    let batches = futures::stream::unfold(
        (stream, coalescer, false),
        |(mut stream, mut coalescer, mut ended)| async move {
            if ended && coalescer.is_empty() && !coalescer.has_completed_batch() {
                return None;
            }
            loop {
                if let Some(batch) = coalescer.next_completed_batch() {
                    return Some((Ok(batch), (stream, coalescer, ended)));
                }
                if ended {
                    return None;
                }
                match stream.next().await {
                    Some(Ok(batch)) => {
                        if let Err(e) = coalescer.push_batch(batch) {
                            return Some((Err(e.into()), (stream, coalescer, true)));
                        }
                    }
                    // The result is cut: the rows gathered so far go with it.
                    Some(Err(e)) => return Some((Err(e), (stream, coalescer, true))),
                    None => {
                        if let Err(e) = coalescer.finish_buffered_batch() {
                            return Some((Err(e.into()), (stream, coalescer, true)));
                        }
                        ended = true;
                    }
                }
            }
        },
    );
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
        schema, batches,
    ))
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
    use super::*;

    #[tokio::test]
    async fn small_batches_are_gathered_and_large_ones_pass() {
        use arrow::array::{Int64Array, RecordBatch};
        use futures::TryStreamExt;
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = |from: i64, n: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(from..from + n))],
            )
            .unwrap()
        };
        let mut input: Vec<datafusion::error::Result<RecordBatch>> = (0..100).map(|i| Ok(batch(i * 65, 65))).collect();
        input.push(Ok(batch(6500, 20_000)));
        let stream = Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::iter(input),
        ));
        let out: Vec<RecordBatch> = coalesced(stream, 1000).try_collect().await.unwrap();
        let rows: Vec<usize> = out.iter().map(|b| b.num_rows()).collect();
        assert_eq!(rows.iter().sum::<usize>(), 26_500);
        assert!(out.len() <= 30, "{rows:?}");
        // Every value, in order.
        let values: Vec<i64> = out
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(values, (0..26_500).collect::<Vec<i64>>());
        // An error ends the stream.
        let failing = Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::iter(vec![
                Ok(batch(0, 10)),
                Err(datafusion::error::DataFusionError::Execution("boom".into())),
            ]),
        ));
        let e = coalesced(failing, 1000).try_collect::<Vec<_>>().await.unwrap_err();
        assert!(e.to_string().contains("boom"));
    }

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
        let shaper = Shaper::new(&schema, true);
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
            Shaper::new(&schema, false).schema().field(0).data_type(),
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
        let shaped = Shaper::new(&schema, true).shape(batch.clone()).unwrap();
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
        let shaper = Shaper::new(&schema, false);
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
            let shaper = Shaper::new(&schema, plain);
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
