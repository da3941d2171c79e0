//! Writers for the sample mesh: Parquet (arrow-rs), Delta Lake (delta-rs), Iceberg (iceberg-rust).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use iceberg::io::LocalFsStorageFactory;
use iceberg::memory::{MemoryCatalogBuilder, MEMORY_CATALOG_WAREHOUSE};
use iceberg::spec::{
    DataFileFormat, Literal, NestedField, PartitionKey, PrimitiveType, Schema as IcebergSchema, Struct, Transform,
    Type, UnboundPartitionSpec,
};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use url::Url;

use crate::sample::{CampaignDay, Customer, Inventory, Order, Product, Shipment};

const UTC: &str = "UTC";

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

fn money(cents: impl Iterator<Item = i64>, precision: u8) -> Result<ArrayRef> {
    Ok(Arc::new(
        Decimal128Array::from_iter_values(cents.map(i128::from)).with_precision_and_scale(precision, 2)?,
    ))
}

fn strings<'a>(it: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(it))
}

fn timestamps(it: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(it).with_timezone(UTC))
}

pub fn customers_batch(rows: &[Customer]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("full_name", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, false),
        Field::new("phone", DataType::Utf8, true),
        Field::new("birth_date", DataType::Date32, true),
        Field::new("region", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("signup_ts", ts_type(), false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.customer_id))),
            strings(rows.iter().map(|r| r.full_name.as_str())),
            strings(rows.iter().map(|r| r.email.as_str())),
            strings(rows.iter().map(|r| r.phone.as_str())),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.birth_date))),
            strings(rows.iter().map(|r| r.region.as_str())),
            strings(rows.iter().map(|r| r.country.as_str())),
            strings(rows.iter().map(|r| r.segment.as_str())),
            timestamps(rows.iter().map(|r| r.signup_ts)),
        ],
    )?)
}

pub fn products_batch(rows: &[Product]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("product_id", DataType::Int64, false),
        Field::new("sku", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("unit_price", DataType::Decimal128(10, 2), false),
        Field::new("active", DataType::Boolean, false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.product_id))),
            strings(rows.iter().map(|r| r.sku.as_str())),
            strings(rows.iter().map(|r| r.name.as_str())),
            strings(rows.iter().map(|r| r.category.as_str())),
            money(rows.iter().map(|r| r.unit_price_cents), 10)?,
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.active)))),
        ],
    )?)
}

/// Orders without `order_date`, which lives in the hive partition directory name.
pub fn orders_batch(rows: &[Order]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("product_id", DataType::Int64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("unit_price", DataType::Decimal128(10, 2), false),
        Field::new("amount", DataType::Decimal128(12, 2), false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("order_ts", ts_type(), false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.order_id))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.customer_id))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.product_id))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.quantity))),
            money(rows.iter().map(|r| r.unit_price_cents), 10)?,
            money(rows.iter().map(|r| r.amount_cents), 12)?,
            strings(rows.iter().map(|r| r.channel.as_str())),
            timestamps(rows.iter().map(|r| r.order_ts)),
        ],
    )?)
}

pub fn shipments_batch(rows: &[Shipment]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("carrier", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("shipped_date", DataType::Date32, true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.order_id))),
            strings(rows.iter().map(|r| r.carrier.as_str())),
            strings(rows.iter().map(|r| r.status.as_str())),
            Arc::new(Date32Array::from_iter(rows.iter().map(|r| r.shipped_date))),
        ],
    )?)
}

pub fn inventory_batch(rows: &[Inventory]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("product_id", DataType::Int64, false),
        Field::new("warehouse", DataType::Utf8, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("updated_at", ts_type(), false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.product_id))),
            strings(rows.iter().map(|r| r.warehouse.as_str())),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.quantity))),
            timestamps(rows.iter().map(|r| r.updated_at)),
        ],
    )?)
}

pub fn campaigns_batch(rows: &[CampaignDay]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("day", DataType::Date32, false),
        Field::new("impressions", DataType::Int64, false),
        Field::new("clicks", DataType::Int64, false),
        Field::new("conversions", DataType::Int64, false),
        Field::new("spend", DataType::Decimal128(12, 2), false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            strings(rows.iter().map(|r| r.campaign_id.as_str())),
            strings(rows.iter().map(|r| r.channel.as_str())),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.day))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.impressions))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.clicks))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.conversions))),
            money(rows.iter().map(|r| r.spend_cents), 12)?,
        ],
    )?)
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1024))
        .build()
}

/// One Parquet file.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

/// Orders as a hive-partitioned directory: `dir/order_date=YYYY-MM-DD/part-0.parquet`.
pub fn write_orders_hive(dir: &Path, orders: &[Order]) -> Result<()> {
    let mut by_day: BTreeMap<i32, Vec<Order>> = BTreeMap::new();
    for o in orders {
        by_day.entry(o.order_date).or_default().push(o.clone());
    }
    for (day, rows) in by_day {
        let path = dir.join(format!("order_date={}", iso_date(day))).join("part-0.parquet");
        write_parquet(&path, &orders_batch(&rows)?)?;
    }
    Ok(())
}

/// A Delta table with one commit per batch (append), partitioned by `partition_by`.
pub async fn write_delta(dir: &Path, commits: Vec<RecordBatch>, partition_by: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let url = Url::from_directory_path(std::path::absolute(dir)?)
        .map_err(|()| anyhow::anyhow!("not an absolute path: {}", dir.display()))?;
    let mut table = DeltaTable::try_from_url(url).await?;
    for batch in commits {
        table = table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(partition_by.iter().map(|s| s.to_string()))
            .await?;
    }
    Ok(())
}

/// An Iceberg table at `dir` with one snapshot (fast append) per batch; if `identity_partition`
/// names a column, the table is partitioned by it.
pub async fn write_iceberg(dir: &Path, commits: Vec<RecordBatch>, identity_partition: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let abs = std::path::absolute(dir)?;
    let location = Url::from_directory_path(&abs)
        .map_err(|()| anyhow::anyhow!("not an absolute path: {}", dir.display()))?
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let first = commits.first().context("at least one commit")?;
    let schema = iceberg_schema(&first.schema())?;
    let catalog = MemoryCatalogBuilder::default()
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load(
            "meshql-testdata",
            HashMap::from([(MEMORY_CATALOG_WAREHOUSE.to_string(), location.clone())]),
        )
        .await?;
    let namespace = NamespaceIdent::new("sample".to_string());
    catalog.create_namespace(&namespace, HashMap::new()).await?;
    let mut spec = UnboundPartitionSpec::builder();
    if let Some(col) = identity_partition {
        let field = schema.field_by_name(col).context("partition column")?;
        spec = spec.add_partition_field(field.id, col, Transform::Identity)?;
    }
    let name = abs
        .file_name()
        .and_then(|n| n.to_str())
        .context("table directory name")?
        .to_string();
    let creation = TableCreation::builder()
        .name(name)
        .location(location)
        .schema(schema)
        .partition_spec(spec.build())
        .build();
    let mut table = catalog.create_table(&namespace, creation).await?;
    let arrow_schema: SchemaRef = Arc::new(iceberg::arrow::schema_to_arrow_schema(
        table.metadata().current_schema(),
    )?);

    for (n, batch) in commits.into_iter().enumerate() {
        let batch = conform_batch(&batch, &arrow_schema)?;
        let location_gen = DefaultLocationGenerator::new(table.metadata())?;
        let parts: Vec<(Option<PartitionKey>, RecordBatch)> = match identity_partition {
            None => vec![(None, batch)],
            Some(col) => split_by(&batch, col)?
                .into_iter()
                .map(|(value, part)| {
                    let key = PartitionKey::new(
                        table.metadata().default_partition_spec().as_ref().clone(),
                        table.metadata().current_schema().clone(),
                        Struct::from_iter([Some(Literal::string(value))]),
                    );
                    (Some(key), part)
                })
                .collect(),
        };
        let mut files = Vec::new();
        for (key, part) in parts {
            let names = DefaultFileNameGenerator::new(format!("s{n}"), None, DataFileFormat::Parquet);
            let parquet = ParquetWriterBuilder::new(writer_properties(), table.metadata().current_schema().clone());
            let rolling = RollingFileWriterBuilder::new_with_default_file_size(
                parquet,
                table.file_io().clone(),
                location_gen.clone(),
                names,
            );
            let mut writer = DataFileWriterBuilder::new(rolling).build(key).await?;
            writer.write(part).await?;
            files.extend(writer.close().await?);
        }
        let tx = Transaction::new(&table);
        let tx = tx.fast_append().add_data_files(files).apply(tx)?;
        table = tx.commit(&catalog).await?;
    }
    Ok(())
}

/// Iceberg schema from an Arrow schema, field ids 1.. in order.
fn iceberg_schema(schema: &Schema) -> Result<IcebergSchema> {
    let fields = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let id = i32::try_from(i + 1)?;
            let t = match f.data_type() {
                DataType::Int32 => PrimitiveType::Int,
                DataType::Int64 => PrimitiveType::Long,
                DataType::Utf8 => PrimitiveType::String,
                DataType::Date32 => PrimitiveType::Date,
                DataType::Boolean => PrimitiveType::Boolean,
                DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => PrimitiveType::Timestamptz,
                DataType::Decimal128(p, s) => PrimitiveType::Decimal {
                    precision: u32::from(*p),
                    scale: u32::try_from(*s)?,
                },
                other => anyhow::bail!("no Iceberg type for {other}"),
            };
            let field = if f.is_nullable() {
                NestedField::optional(id, f.name(), Type::Primitive(t))
            } else {
                NestedField::required(id, f.name(), Type::Primitive(t))
            };
            Ok(Arc::new(field))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(IcebergSchema::builder().with_fields(fields).build()?)
}

/// Casts a batch to the Iceberg-derived Arrow schema (same columns, with field ids).
fn conform_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| Ok(cast(c, f.data_type())?))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Splits a batch by the values of a string column, in value order.
fn split_by(batch: &RecordBatch, col: &str) -> Result<Vec<(String, RecordBatch)>> {
    let idx = batch.schema().index_of(col)?;
    let values = batch
        .column(idx)
        .as_any()
        .downcast_ref::<StringArray>()
        .context("partition column must be a string")?;
    let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, v) in values.iter().enumerate() {
        groups
            .entry(v.unwrap_or_default().to_string())
            .or_default()
            .push(u32::try_from(i)?);
    }
    groups
        .into_iter()
        .map(|(v, rows)| {
            let indices = arrow::array::UInt32Array::from(rows);
            let cols = batch
                .columns()
                .iter()
                .map(|c| Ok(arrow::compute::take(c, &indices, None)?))
                .collect::<Result<Vec<_>>>()?;
            Ok((v, RecordBatch::try_new(batch.schema(), cols)?))
        })
        .collect()
}

/// Days since the epoch as `YYYY-MM-DD` (proleptic Gregorian).
pub fn iso_date(days: i32) -> String {
    // Howard Hinnant's civil_from_days.
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_dates() {
        assert_eq!(super::iso_date(0), "1970-01-01");
        assert_eq!(super::iso_date(crate::sample::FIRST_ORDER_DAY), "2024-03-01");
        assert_eq!(super::iso_date(-1), "1969-12-31");
    }
}
