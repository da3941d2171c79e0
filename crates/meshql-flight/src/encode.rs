//! Result batches as gRPC-framed `FlightData` messages, without copying column data.
//!
//! Why not arrow-flight's `FlightDataEncoder` and tonic's codec: together they copy every
//! byte of a result three times before the kernel copies it once more — arrow-ipc appends
//! each buffer to a growing body `Vec` (a copy, plus the copies of the `Vec` growing), and
//! prost copies the body into tonic's encode buffer. On TPC-H `lineitem` that was 15% of the
//! server's CPU per transfer. Here a message is a list of chunks: a small head (gRPC frame
//! prefix, protobuf tags, the IPC header) and then the column buffers themselves, shared with
//! the batch (reference-counted), which hyper hands to the socket as they are. Only small
//! buffers (below [`COPY_BELOW`]) and padding are copied, into the chunk before them.
//!
//! Flat columns (primitive, boolean, byte, view, fixed-size binary, null) are framed this way;
//! a batch with a nested column is encoded by arrow-ipc (its body still sent without prost's
//! copy). Schemas with dictionary columns are not handled here (see [`supports`]).

use std::collections::VecDeque;

use arrow::array::{Array, ArrayData, ArrayRef, RecordBatch};
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use arrow::ipc::writer::{CompressionContext, DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow::ipc::{self, MessageHeader, MetadataVersion};
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;

/// Buffers shorter than this are copied into the chunk before them rather than sent as chunks
/// of their own: every chunk is a DATA frame of its own for hyper, h2 and the client's gRPC to
/// handle. Measured on `lineitem` (8 KiB to all-copied): 8 KiB cost the client 10% more CPU than
/// one chunk per message; 64 KiB and 128 KiB cost it nothing and kept the server's saving.
pub const COPY_BELOW: usize = 64 * 1024;
/// Every buffer starts at a multiple of this in the message body (arrow-rs's default; the IPC
/// format requires 8).
const ALIGNMENT: usize = 64;
static PADDING: [u8; ALIGNMENT] = [0; ALIGNMENT];
/// protobuf tags of `FlightData.data_header` (field 2) and `FlightData.data_body` (field 1000),
/// both length-delimited.
const DATA_HEADER_TAG: &[u8] = &[0x12];
const DATA_BODY_TAG: &[u8] = &[0xC2, 0x3E];

/// Whether batches of `schema` can be encoded here: anything but dictionary-encoded columns,
/// which need dictionary messages (the Shaper already sends top-level ones hydrated).
pub fn supports(schema: &Schema) -> bool {
    fn plain(t: &DataType) -> bool {
        match t {
            DataType::Dictionary(..) => false,
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => plain(f.data_type()),
            DataType::Struct(fields) => fields.iter().all(|f| plain(f.data_type())),
            DataType::Union(fields, _) => fields.iter().all(|(_, f)| plain(f.data_type())),
            DataType::RunEndEncoded(r, v) => plain(r.data_type()) && plain(v.data_type()),
            _ => true,
        }
    }
    schema.fields().iter().all(|f| plain(f.data_type()))
}

/// Encodes one result stream: the schema, then its batches, each cut into messages of at most
/// about `max_message_bytes` (gRPC clients refuse messages above 4 MiB by default).
pub struct Encoder {
    max_message_bytes: usize,
    options: IpcWriteOptions,
    generator: IpcDataGenerator,
    dictionaries: DictionaryTracker,
}

impl Encoder {
    pub fn new(max_message_bytes: usize) -> Encoder {
        Encoder {
            max_message_bytes: max_message_bytes.max(1),
            options: IpcWriteOptions::default(),
            generator: IpcDataGenerator::default(),
            dictionaries: DictionaryTracker::new(false),
        }
    }

    /// The schema message, which opens every DoGet stream.
    pub fn schema(&self, schema: &Schema, out: &mut VecDeque<Bytes>) {
        let data = FlightData::from(SchemaAsIpc::new(schema, &self.options));
        out.push_back(frame_prost(&data));
    }

    /// The messages of `batch`, appended to `out` as chunks to send in order.
    pub fn batch(&mut self, batch: &RecordBatch, out: &mut VecDeque<Bytes>) -> Result<(), ArrowError> {
        let size: usize = batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size())
            .sum::<Result<usize, ArrowError>>()?;
        let parts = size.div_ceil(self.max_message_bytes).max(1);
        if parts == 1 || batch.num_rows() <= 1 {
            return self.message(batch, out);
        }
        let rows = batch.num_rows().div_ceil(parts);
        let mut start = 0;
        while start < batch.num_rows() {
            let len = rows.min(batch.num_rows() - start);
            // A slice of a view column still references all the batch's data buffers.
            let slice = batch.slice(start, len);
            let columns = slice.columns().iter().map(meshql::compact::compact_views).collect();
            self.message(&RecordBatch::try_new(slice.schema(), columns)?, out)?;
            start += len;
        }
        Ok(())
    }

    fn message(&mut self, batch: &RecordBatch, out: &mut VecDeque<Bytes>) -> Result<(), ArrowError> {
        let mut body = Body::default();
        if batch.columns().iter().all(|c| body.flat(c)) {
            let header = body.header(batch.num_rows());
            frame(&header, body.len, body.buffers, out)
        } else {
            let (dictionaries, encoded) = self.generator.encode(
                batch,
                &mut self.dictionaries,
                &self.options,
                &mut CompressionContext::default(),
            )?;
            if !dictionaries.is_empty() {
                return Err(ArrowError::InvalidArgumentError(
                    "dictionary-encoded columns reached the zero-copy encoder".into(),
                ));
            }
            let len = encoded.arrow_data.len();
            frame(
                &encoded.ipc_message,
                len,
                vec![Buffer::from_vec(encoded.arrow_data)],
                out,
            )
        }
    }
}

/// A record batch message's body being laid out: its buffers in order, where each starts, and
/// the IPC field nodes.
#[derive(Default)]
struct Body {
    buffers: Vec<Buffer>,
    /// (offset, length) of each buffer in the body.
    layout: Vec<ipc::Buffer>,
    nodes: Vec<ipc::FieldNode>,
    variadic_counts: Vec<i64>,
    len: usize,
}

impl Body {
    fn push(&mut self, buffer: Buffer) {
        self.layout.push(ipc::Buffer::new(self.len as i64, buffer.len() as i64));
        self.len += buffer.len().next_multiple_of(ALIGNMENT);
        self.buffers.push(buffer);
    }

    /// Lays out column `c` if it is flat (no children); false, having laid out nothing that
    /// matters, if the batch must go through arrow-ipc.
    fn flat(&mut self, c: &ArrayRef) -> bool {
        let data = c.to_data();
        let (offset, len) = (data.offset(), data.len());
        let width = match data.data_type() {
            DataType::Null => {
                self.nodes.push(ipc::FieldNode::new(len as i64, len as i64));
                return true;
            }
            DataType::FixedSizeBinary(w) => Some(*w as usize),
            t => t.primitive_width(),
        };
        let value_buffers: Vec<Buffer> = match (data.data_type(), width) {
            (_, Some(w)) => vec![data.buffers()[0].slice_with_length(offset * w, len * w)],
            (DataType::Boolean, _) => vec![data.buffers()[0].bit_slice(offset, len)],
            (DataType::Utf8 | DataType::Binary, _) => byte_buffers::<i32>(&data),
            (DataType::LargeUtf8 | DataType::LargeBinary, _) => byte_buffers::<i64>(&data),
            (DataType::Utf8View | DataType::BinaryView, _) => {
                let mut buffers = vec![data.buffers()[0].slice_with_length(offset * 16, len * 16)];
                buffers.extend(data.buffers()[1..].iter().cloned());
                self.variadic_counts.push(data.buffers().len() as i64 - 1);
                buffers
            }
            _ => return false,
        };
        self.nodes
            .push(ipc::FieldNode::new(len as i64, data.null_count() as i64));
        // A column without nulls may send an empty validity buffer (Message.fbs, FieldNode).
        let validity = match data.nulls() {
            Some(n) if n.null_count() > 0 => n.inner().sliced(),
            _ => MutableBuffer::new(0).into(),
        };
        self.push(validity);
        for b in value_buffers {
            self.push(b);
        }
        true
    }

    /// The IPC `Message` flatbuffer announcing this body.
    fn header(&self, rows: usize) -> Vec<u8> {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let nodes = fbb.create_vector(&self.nodes);
        let buffers = fbb.create_vector(&self.layout);
        let variadic = (!self.variadic_counts.is_empty()).then(|| fbb.create_vector(&self.variadic_counts));
        let batch = {
            let mut b = ipc::RecordBatchBuilder::new(&mut fbb);
            b.add_length(rows as i64);
            b.add_nodes(nodes);
            b.add_buffers(buffers);
            if let Some(v) = variadic {
                b.add_variadicBufferCounts(v);
            }
            b.finish()
        };
        let mut message = ipc::MessageBuilder::new(&mut fbb);
        message.add_version(MetadataVersion::V5);
        message.add_header_type(MessageHeader::RecordBatch);
        message.add_bodyLength(self.len as i64);
        message.add_header(batch.as_union_value());
        let root = message.finish();
        fbb.finish(root, None);
        fbb.finished_data().to_vec()
    }
}

/// Offsets and values of a byte array, sliced to its rows; offsets are rebased (copied) only
/// when the slice does not start at the first value.
fn byte_buffers<O: arrow::datatypes::ArrowNativeType + Into<i64> + std::ops::Sub<Output = O>>(
    data: &ArrayData,
) -> Vec<Buffer> {
    let len = data.len();
    if len == 0 {
        return vec![MutableBuffer::new(0).into(), MutableBuffer::new(0).into()];
    }
    let width = std::mem::size_of::<O>();
    let offsets = &data.buffer::<O>(0)[..=len];
    let (first, last) = (offsets[0], offsets[len]);
    let (first_at, last_at) = (first.into() as usize, last.into() as usize);
    let offsets = if first_at == 0 {
        data.buffers()[0].slice_with_length(data.offset() * width, (len + 1) * width)
    } else {
        Buffer::from_vec(offsets.iter().map(|o| *o - first).collect::<Vec<O>>())
    };
    vec![
        offsets,
        data.buffers()[1].slice_with_length(first_at, last_at - first_at),
    ]
}

/// An arrow buffer as a `Bytes`, sharing its memory.
struct Shared(Buffer);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// One gRPC message holding `FlightData { data_header: header, data_body: buffers (each padded
/// to the alignment) }`, as chunks appended to `out`.
fn frame(header: &[u8], body_len: usize, buffers: Vec<Buffer>, out: &mut VecDeque<Bytes>) -> Result<(), ArrowError> {
    let mut message_len = DATA_HEADER_TAG.len() + encoded_len_varint(header.len() as u64) + header.len();
    if body_len > 0 {
        message_len += DATA_BODY_TAG.len() + encoded_len_varint(body_len as u64) + body_len;
    }
    let message_len = u32::try_from(message_len).map_err(|_| {
        ArrowError::InvalidArgumentError(format!("a result message of {message_len} bytes is too large for gRPC"))
    })?;
    let mut head = BytesMut::with_capacity(header.len() + 32 + COPY_BELOW);
    head.put_u8(0); // not compressed
    head.put_u32(message_len);
    head.put_slice(DATA_HEADER_TAG);
    encode_varint(header.len() as u64, &mut head);
    head.put_slice(header);
    if body_len > 0 {
        head.put_slice(DATA_BODY_TAG);
        encode_varint(body_len as u64, &mut head);
    }
    let mut written = 0;
    for b in buffers {
        let padding = b.len().next_multiple_of(ALIGNMENT) - b.len();
        written += b.len() + padding;
        if b.len() < COPY_BELOW {
            head.put_slice(b.as_slice());
        } else {
            if !head.is_empty() {
                out.push_back(head.split().freeze());
            }
            out.push_back(Bytes::from_owner(Shared(b)));
        }
        head.put_slice(&PADDING[..padding]);
    }
    debug_assert_eq!(written, body_len, "the body announced is the body sent");
    if !head.is_empty() {
        out.push_back(head.freeze());
    }
    Ok(())
}

/// A message encoded by prost (schema and metadata results: small), gRPC-framed.
pub fn frame_prost(data: &FlightData) -> Bytes {
    let len = data.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer with room for the message cannot fail.
    let _ = data.encode(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::*;
    use arrow::buffer::{NullBuffer, OffsetBuffer};
    use arrow::datatypes::{Field, Fields, IntervalDayTime, IntervalUnit, SchemaRef, TimeUnit};

    use super::*;

    /// The messages in `chunks`, as a client decodes them: the schema, then the batches.
    fn decode(chunks: &VecDeque<Bytes>) -> (SchemaRef, Vec<RecordBatch>, Vec<usize>) {
        let wire: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut at = 0;
        let mut messages = vec![];
        while at < wire.len() {
            assert_eq!(wire[at], 0, "uncompressed");
            let len = u32::from_be_bytes(wire[at + 1..at + 5].try_into().unwrap()) as usize;
            messages.push(FlightData::decode(&wire[at + 5..at + 5 + len]).expect("a FlightData"));
            at += 5 + len;
        }
        assert_eq!(at, wire.len(), "the chunks are whole messages");
        let schema = Arc::new(Schema::try_from(&messages[0]).expect("the schema first"));
        let sizes = messages[1..].iter().map(|m| m.data_body.len()).collect();
        let batches = messages[1..]
            .iter()
            .map(|m| arrow_flight::utils::flight_data_to_arrow_batch(m, schema.clone(), &HashMap::new()).unwrap())
            .collect();
        (schema, batches, sizes)
    }

    fn round_trip(batch: &RecordBatch, max_message_bytes: usize) -> (Vec<RecordBatch>, Vec<usize>, VecDeque<Bytes>) {
        let mut out = VecDeque::new();
        let mut encoder = Encoder::new(max_message_bytes);
        encoder.schema(&batch.schema(), &mut out);
        encoder.batch(batch, &mut out).unwrap();
        let (schema, batches, sizes) = decode(&out);
        assert_eq!(schema, batch.schema());
        (batches, sizes, out)
    }

    fn long(i: usize) -> String {
        format!("value number {i} is longer than twelve bytes")
    }

    /// One column of every flat type, with nulls, 3,000 rows.
    fn flat_batch() -> RecordBatch {
        let n = 3000;
        let valid = |i: usize| i % 7 != 3;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("null", Arc::new(NullArray::new(n))),
            (
                "bool",
                Arc::new((0..n).map(|i| valid(i).then_some(i % 3 == 0)).collect::<BooleanArray>()),
            ),
            (
                "i8",
                Arc::new((0..n).map(|i| valid(i).then_some(i as i8)).collect::<Int8Array>()),
            ),
            ("i16", Arc::new((0..n).map(|i| Some(i as i16)).collect::<Int16Array>())),
            (
                "i32",
                Arc::new((0..n).map(|i| valid(i).then_some(i as i32)).collect::<Int32Array>()),
            ),
            (
                "i64",
                Arc::new(
                    (0..n)
                        .map(|i| valid(i).then_some(i as i64 * 1_000_003))
                        .collect::<Int64Array>(),
                ),
            ),
            ("u64", Arc::new((0..n).map(|i| Some(i as u64)).collect::<UInt64Array>())),
            (
                "f64",
                Arc::new(
                    (0..n)
                        .map(|i| valid(i).then_some(i as f64 / 3.0))
                        .collect::<Float64Array>(),
                ),
            ),
            (
                "dec",
                Arc::new(
                    (0..n)
                        .map(|i| valid(i).then_some(i as i128 * 100 + 7))
                        .collect::<Decimal128Array>()
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
            ),
            (
                "date",
                Arc::new((0..n).map(|i| Some(i as i32)).collect::<Date32Array>()),
            ),
            (
                "ts",
                Arc::new(
                    (0..n)
                        .map(|i| valid(i).then_some(i as i64))
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone("UTC"),
                ),
            ),
            (
                "interval",
                Arc::new(
                    (0..n)
                        .map(|i| Some(IntervalDayTime::new(i as i32, 5)))
                        .collect::<IntervalDayTimeArray>(),
                ),
            ),
            (
                "utf8",
                Arc::new((0..n).map(|i| valid(i).then(|| long(i))).collect::<StringArray>()),
            ),
            (
                "large_utf8",
                Arc::new((0..n).map(|i| Some(long(i))).collect::<LargeStringArray>()),
            ),
            (
                "binary",
                Arc::new(
                    (0..n)
                        .map(|i| valid(i).then(|| long(i).into_bytes()))
                        .collect::<BinaryArray>(),
                ),
            ),
            (
                "view",
                Arc::new(
                    (0..n)
                        .map(|i| valid(i).then(|| if i % 2 == 0 { "short".to_string() } else { long(i) }))
                        .collect::<StringViewArray>(),
                ),
            ),
            (
                "binary_view",
                Arc::new((0..n).map(|i| Some(long(i).into_bytes())).collect::<BinaryViewArray>()),
            ),
            (
                "fixed",
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                        (0..n).map(|i| valid(i).then(|| (i as u32).to_le_bytes())),
                        4,
                    )
                    .unwrap(),
                ),
            ),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn flat_columns_arrive_as_they_were_sent() {
        let batch = flat_batch();
        let (batches, sizes, _) = round_trip(&batch, 64 << 20);
        assert_eq!(batches, vec![batch.clone()]);
        assert_eq!(sizes.len(), 1);
        // Slices at offsets that are not multiples of 8 (validity and boolean bits move) and
        // that start inside the byte arrays' values (offsets are rebased).
        for (start, len) in [(1, 10), (13, 1000), (2999, 1), (500, 0)] {
            let slice = batch.slice(start, len);
            let (batches, _, _) = round_trip(&slice, 64 << 20);
            assert_eq!(batches, vec![slice], "slice {start}+{len}");
        }
    }

    #[test]
    fn large_buffers_are_sent_without_copying() {
        let values: Vec<i64> = (0..100_000).collect();
        let column = Int64Array::from(values);
        let at = column.values().inner().as_ptr();
        let batch = RecordBatch::try_from_iter([("v", Arc::new(column) as ArrayRef)]).unwrap();
        let (batches, _, chunks) = round_trip(&batch, 64 << 20);
        assert_eq!(batches, vec![batch]);
        assert!(
            chunks.iter().any(|c| c.as_ptr() == at && c.len() == 800_000),
            "the column's buffer is one of the chunks"
        );
        // Small buffers are copied into a neighbouring chunk instead.
        let small = RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef)]).unwrap();
        let (_, _, chunks) = round_trip(&small, 64 << 20);
        assert_eq!(chunks.len(), 2, "schema and one batch message, one chunk each");
    }

    #[test]
    fn batches_above_the_message_size_are_cut_into_several_messages() {
        let batch = flat_batch();
        let (batches, sizes, _) = round_trip(&batch, 64 * 1024);
        assert!(batches.len() > 4, "{} messages", batches.len());
        assert!(sizes.iter().all(|s| *s < 2 * 64 * 1024), "{sizes:?}");
        let parts: Vec<RecordBatch> = batches.into_iter().collect();
        assert_eq!(arrow::compute::concat_batches(&batch.schema(), &parts).unwrap(), batch);
    }

    #[test]
    fn nested_columns_go_through_arrow_ipc() {
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(3), Some(4)]));
        let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "bb", "ccc", "dddd"]));
        let fields = Fields::from(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, false),
        ]);
        let structs = StructArray::new(
            fields,
            vec![ints.clone(), names],
            Some(NullBuffer::from(vec![true, true, false, true])),
        );
        let lists = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Int32, true)),
            OffsetBuffer::from_lengths([1, 0, 2, 1]),
            ints,
            None,
        );
        let batch = RecordBatch::try_from_iter([
            ("st", Arc::new(structs) as ArrayRef),
            ("l", Arc::new(lists) as ArrayRef),
            ("flat", Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef),
        ])
        .unwrap();
        let (batches, _, _) = round_trip(&batch, 64 << 20);
        assert_eq!(batches, vec![batch.clone()]);
        let (batches, _, _) = round_trip(&batch.slice(1, 2), 64 << 20);
        assert_eq!(batches, vec![batch.slice(1, 2)]);
    }

    #[test]
    fn only_schemas_without_dictionaries_are_encoded_here() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert!(supports(&Schema::new(vec![Field::new("a", DataType::Utf8View, true)])));
        assert!(!supports(&Schema::new(vec![Field::new("a", dict.clone(), true)])));
        let nested = DataType::Struct(Fields::from(vec![Field::new("d", dict, true)]));
        assert!(!supports(&Schema::new(vec![Field::new("a", nested, true)])));
        let _ = (TimeUnit::Second, IntervalUnit::DayTime);
    }
}
