//! Writing query results: a text table, CSV, JSON, Arrow IPC or Parquet.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use meshql::results::Shaper;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
    /// Newline-delimited JSON, one object per row.
    Ndjson,
    /// An Arrow IPC file (needs --output).
    Arrow,
    /// A Parquet file (needs --output).
    Parquet,
}

impl OutputFormat {
    pub fn is_binary(self) -> bool {
        matches!(self, OutputFormat::Arrow | OutputFormat::Parquet)
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Arrow => "arrow",
            OutputFormat::Parquet => "parquet",
        }
    }
}

/// One writer per format; batches are written as they arrive except for the text table, which
/// needs every row to size its columns.
enum Sink {
    Table(Vec<RecordBatch>, Box<dyn Write>),
    Csv(arrow::csv::Writer<Box<dyn Write>>),
    Json(arrow::json::ArrayWriter<Box<dyn Write>>),
    Ndjson(arrow::json::LineDelimitedWriter<Box<dyn Write>>),
    Arrow(arrow::ipc::writer::FileWriter<Box<dyn Write>>, Shaper),
    Parquet(parquet::arrow::ArrowWriter<File>),
}

pub async fn write(
    mut stream: SendableRecordBatchStream,
    schema: SchemaRef,
    format: OutputFormat,
    output: Option<&Path>,
) -> Result<()> {
    let open = || -> Result<Box<dyn Write>> {
        Ok(match output {
            Some(p) => Box::new(BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => Box::new(BufWriter::new(std::io::stdout())),
        })
    };
    let mut sink = match format {
        OutputFormat::Table => Sink::Table(Vec::new(), open()?),
        OutputFormat::Csv => Sink::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(open()?)),
        OutputFormat::Json => Sink::Json(arrow::json::ArrayWriter::new(open()?)),
        OutputFormat::Ndjson => Sink::Ndjson(arrow::json::LineDelimitedWriter::new(open()?)),
        OutputFormat::Arrow => {
            // An Arrow IPC file holds one dictionary per column, while a result read in parallel
            // partitions (a Delta partition column, say) brings a new one with each batch: the
            // file gets the values, as the Flight SQL server sends them.
            let shaper = Shaper::new(&schema, false);
            Sink::Arrow(
                arrow::ipc::writer::FileWriter::try_new(open()?, &shaper.schema())?,
                shaper,
            )
        }
        OutputFormat::Parquet => {
            let path = output.context("parquet output needs --output")?;
            let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
            Sink::Parquet(parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?)
        }
    };
    while let Some(batch) = stream.next().await {
        // A session's error (already redacted), not DataFusion's wrapper of it.
        let batch = batch.map_err(meshql::Error::from)?;
        match &mut sink {
            Sink::Table(all, _) => all.push(batch),
            Sink::Csv(w) => w.write(&batch)?,
            Sink::Json(w) => w.write(&batch)?,
            Sink::Ndjson(w) => w.write(&batch)?,
            Sink::Arrow(w, shaper) => w.write(&shaper.shape(batch)?)?,
            Sink::Parquet(w) => w.write(&batch)?,
        }
    }
    match sink {
        Sink::Table(all, mut out) => {
            if all.iter().all(|b| b.num_rows() == 0) {
                let empty = RecordBatch::new_empty(schema);
                writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&[empty])?)?;
            } else {
                writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&all)?)?;
            }
            let rows: usize = all.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
            out.flush()?;
        }
        Sink::Csv(w) => w.into_inner().flush()?,
        Sink::Json(mut w) => {
            w.finish()?;
            w.into_inner().flush()?;
        }
        Sink::Ndjson(mut w) => {
            w.finish()?;
            w.into_inner().flush()?;
        }
        Sink::Arrow(mut w, _) => {
            w.finish()?;
            w.into_inner()?.flush()?;
        }
        Sink::Parquet(w) => {
            w.close()?;
        }
    }
    Ok(())
}
