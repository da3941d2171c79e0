//! Results as they leave meshql for a client or a file: the schema announced and each batch
//! made to match it (plain types for clients that cannot read view types, dictionaries
//! hydrated, views compacted), and small batches gathered before they are encoded. Protocols
//! add their own column metadata ([`Shaper::annotated`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::compact::compact_views;

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
        Shaper::annotated(schema, plain, |_| HashMap::new())
    }

    /// Shapes results of `schema`, each field announced with the metadata `metadata` gives for
    /// its announced type (a protocol's column metadata).
    pub fn annotated(schema: &Schema, plain: bool, metadata: impl Fn(&DataType) -> HashMap<String, String>) -> Shaper {
        let announced = metadata;
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                let target = announced_type(f.data_type(), plain);
                let mut metadata = f.metadata().clone();
                metadata.extend(announced(&target));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Schema};

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
}
