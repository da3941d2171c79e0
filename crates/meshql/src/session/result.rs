//! What a planned statement becomes: a [`QueryResult`] (the logical plan, its parameters and
//! warnings) and a [`Runnable`] (the physical plan, its independent partitions and fingerprint).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{displayable, execute_stream, ExecutionPlan, ExecutionPlanProperties};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::audited::{audited, Pending};
use crate::limits::isolated;
use crate::memory::{account_for, accounted, Account, QueryPool};
use crate::redact::Redactor;
use crate::Error;

/// A planned query.
pub struct QueryResult {
    pub(super) df: DataFrame,
    pub(super) audit: Option<Pending>,
    pub(super) warnings: Vec<String>,
    pub(super) redactor: Redactor,
}

impl QueryResult {
    /// The schema of the result.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.df.schema().as_arrow().clone())
    }

    /// What readers of the products should know: deprecated products, products that do not
    /// meet the mesh's governance standards.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The logical plan that will run.
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.df.logical_plan()
    }

    /// The plan after DataFusion's and meshql's optimiser rules: what would run. Fails if the
    /// query reads a column the principal may not read.
    pub fn into_optimized_plan(self) -> Result<LogicalPlan, Error> {
        let redactor = self.redactor;
        crate::bounded::while_folding(|| self.df.into_optimized_plan()).map_err(|e| redactor.error(e.into()))
    }

    /// Runs the query and gathers every batch.
    pub async fn collect(self) -> Result<Vec<RecordBatch>, Error> {
        let stream = self.stream().await?;
        Ok(stream.try_collect().await?)
    }

    /// Runs the query as a stream of batches; dropping the stream stops it.
    pub async fn stream(self) -> Result<SendableRecordBatchStream, Error> {
        self.execute(None).await
    }

    /// Runs the query as a stream whose operators may hold at most `memory_limit` bytes
    /// (sorts, joins and aggregations fail with "resources exhausted" beyond it). The limit is
    /// this query's own: other queries of the mesh do not count against it.
    pub async fn stream_with_memory_limit(self, memory_limit: usize) -> Result<SendableRecordBatchStream, Error> {
        self.execute(Some(memory_limit)).await
    }

    async fn execute(self, memory_limit: Option<usize>) -> Result<SendableRecordBatchStream, Error> {
        self.into_runnable(memory_limit).await?.stream()
    }

    /// Plans the query down to the plan that runs, without starting it: to look at its
    /// partitions, or to run only some of them ([`Runnable`]). `memory_limit` as for
    /// [`QueryResult::stream_with_memory_limit`].
    pub async fn into_runnable(self, memory_limit: Option<usize>) -> Result<Runnable, Error> {
        let QueryResult {
            df,
            mut audit,
            redactor,
            ..
        } = self;
        let planned = isolated(async {
            let (state, plan) = df.into_parts();
            let optimized = crate::bounded::while_folding(|| state.optimize(&plan))?;
            if let Some(p) = audit.as_mut() {
                p.observe(&optimized);
            }
            let physical = state.query_planner().create_physical_plan(&optimized, &state).await?;
            // The query's own pool, drawing on the process's budget too (crate::memory).
            let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
                .with_memory_pool(Arc::new(QueryPool::new(memory_limit.unwrap_or(usize::MAX))))
                .build_arc()?;
            let task = TaskContext::from(&state).with_runtime(runtime);
            Ok::<_, Error>((physical, Arc::new(task)))
        })
        .await;
        match planned {
            Ok((plan, task)) => Ok(Runnable {
                plan,
                task,
                account: Arc::new(account_for(memory_limit)),
                audit,
                redactor,
            }),
            Err(e) => {
                let e = redactor.error(e);
                if let Some(p) = audit {
                    p.fail(&e);
                }
                Err(e)
            }
        }
    }

    /// The query's placeholders (`$1`, `?`) in order, with the type the planner inferred for
    /// each (`None` when the context does not say).
    pub fn parameters(&self) -> Result<Vec<(String, Option<DataType>)>, Error> {
        let mut params: Vec<_> = self
            .df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| self.redactor.error(e.into()))?
            .into_iter()
            .collect();
        // `$10` after `$9`: order by the number, not the text.
        params.sort_by_key(|(name, _)| {
            (
                name.trim_start_matches('$').parse::<u64>().unwrap_or(u64::MAX),
                name.clone(),
            )
        });
        Ok(params)
    }

    /// Binds positional parameter values (`$1` is the first).
    pub fn with_params(self, values: Vec<ScalarValue>) -> Result<QueryResult, Error> {
        let QueryResult {
            df,
            audit,
            warnings,
            redactor,
        } = self;
        match df.with_param_values(ParamValues::List(values.into_iter().map(Into::into).collect())) {
            Ok(df) => Ok(QueryResult {
                df,
                audit,
                warnings,
                redactor,
            }),
            Err(e) => Err(redactor.error(e.into())),
        }
    }
}

/// A planned query that has not started: its result is the union of its partitions.
///
/// When every partition can run alone — a scan of files, filtered, projected and shaped by
/// policies, with no exchange, sort, aggregate, join or limit above it — a server can hand
/// out one stream per partition (Flight SQL endpoints) and clients fetch them in parallel.
/// The plan's [`fingerprint`](Runnable::fingerprint) names what each partition reads, so that
/// a partition planned again later (by another request, on another replica) can be checked to
/// read the same data and not a newer commit.
pub struct Runnable {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    /// Everything the query's operators allocate is counted here (crate::memory).
    account: Arc<Account>,
    audit: Option<Pending>,
    redactor: Redactor,
}

/// Operators that keep every row in the partition it came from.
const PARTITION_LOCAL: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "PolicyBarrierExec",
    "DeltaScanExec",
];
/// Sources whose partitions read disjoint parts of the data.
const PARTITIONED_SOURCES: &[&str] = &["DataSourceExec", "PartitionedIcebergScan"];

fn partition_local(plan: &dyn ExecutionPlan, partitions: usize) -> bool {
    if plan.output_partitioning().partition_count() != partitions {
        return false;
    }
    match plan.children().as_slice() {
        [] => PARTITIONED_SOURCES.contains(&plan.name()),
        [child] => PARTITION_LOCAL.contains(&plan.name()) && partition_local(child.as_ref(), partitions),
        _ => false,
    }
}

impl Runnable {
    /// The result's schema.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// The physical plan that will run (policies included).
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// How many partitions can be run separately ([`Runnable::stream_partitions`]): the
    /// plan's partitions when each reads its own part of the data, else 1.
    pub fn independent_partitions(&self) -> usize {
        let n = self.plan.output_partitioning().partition_count();
        if n > 1 && partition_local(self.plan.as_ref(), n) {
            n
        } else {
            1
        }
    }

    /// SHA-256 of the plan as EXPLAIN VERBOSE prints it — its operators, filters and masks,
    /// and every file with the byte range each partition reads — and of the size and
    /// modification time of every file scanned, so that a file rewritten in place changes it too.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        let text = displayable(self.plan.as_ref())
            .set_show_schema(true)
            .indent(true)
            .to_string();
        hash.update(text.as_bytes());
        let mut stack = vec![self.plan.clone()];
        while let Some(node) = stack.pop() {
            let files = node
                .as_any()
                .downcast_ref::<DataSourceExec>()
                .and_then(|d| d.data_source().as_any().downcast_ref::<FileScanConfig>());
            for file in files.iter().flat_map(|c| c.file_groups.iter()).flat_map(|g| g.iter()) {
                let meta = &file.object_meta;
                hash.update(format!(
                    "\n{} {} {}",
                    meta.location,
                    meta.size,
                    meta.last_modified.timestamp_micros()
                ));
            }
            stack.extend(node.children().into_iter().cloned());
        }
        hash.finalize().into()
    }

    /// Runs the whole query.
    pub fn stream(self) -> Result<SendableRecordBatchStream, Error> {
        let Runnable {
            plan,
            task,
            account,
            audit,
            redactor,
        } = self;
        let stream = accounted(plan, &account).and_then(|plan| execute_stream(plan, task));
        audited(stream.map_err(Error::from), audit, redactor)
    }

    /// Runs only the given partitions (numbers below [`Runnable::independent_partitions`]),
    /// each in its own task, their batches interleaved.
    pub fn stream_partitions(self, partitions: &[usize]) -> Result<SendableRecordBatchStream, Error> {
        let available = self.independent_partitions();
        if let Some(bad) = partitions.iter().find(|p| **p >= available) {
            return Err(Error::NotAllowed(format!(
                "partition {bad} of a query with {available} independent partitions"
            )));
        }
        let Runnable {
            plan,
            task,
            account,
            audit,
            redactor,
        } = self;
        let plan = match accounted(plan, &account) {
            Ok(plan) => plan,
            Err(e) => return audited(Err(e.into()), audit, redactor),
        };
        let stream = match partitions {
            [one] => plan.execute(*one, task).map_err(Error::from),
            many => {
                let mut builder = RecordBatchReceiverStream::builder(plan.schema(), many.len().max(1));
                for &p in many {
                    let (plan, task, tx) = (plan.clone(), task.clone(), builder.tx());
                    builder.spawn(async move {
                        let mut batches = plan.execute(p, task)?;
                        while let Some(batch) = batches.next().await {
                            if tx.send(batch).await.is_err() {
                                break; // the reader went away
                            }
                        }
                        Ok(())
                    });
                }
                Ok(builder.build())
            }
        };
        audited(stream, audit, redactor)
    }
}
