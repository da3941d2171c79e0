//! Compact string views before a hash join keeps them.
//!
//! A `Utf8View`/`BinaryView` array points into data buffers it may share with many other
//! arrays: the Parquet reader's decoded pages, or — after a join's `take` — every buffer of the
//! batch the rows were taken from. DataFusion charges a hash join's build side batch by batch
//! (`get_record_batch_memory_size` counts each batch's buffers in full), so a build side made of
//! such batches is charged the same shared buffers again and again. TPC-H Q18 at scale factor 10
//! was charged more than 20 GiB for a join whose process peaked at 4.75 GB, so a server with a
//! per-query memory limit refused it, and Q10 spilled its aggregate under a 10 GiB limit and ran
//! 3–7× slower than embedded.
//!
//! [`CompactBuildSides`] puts a [`CompactViewsExec`] under the build side of every hash join:
//! view columns that reference at least twice the bytes they use (and 64 KiB more) are copied
//! into buffers of their own ([`compact_views`]); everything else passes through untouched.
//! The copy is of the bytes the rows use, once; the memory charged is then the memory held.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, GenericByteViewArray, RecordBatch};
use arrow::datatypes::{ByteViewType, DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, Result as DFResult, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// `c`, with a view array that holds far more buffer bytes than its values use copied
/// compactly; any other array as it is.
///
/// Skipped unless the copy at least halves the buffers: views of dictionary pages repeat the
/// same bytes, and copying those would grow them.
pub fn compact_views(c: &ArrayRef) -> ArrayRef {
    fn wasteful<T: ByteViewType + ?Sized>(a: &GenericByteViewArray<T>) -> bool {
        let held: usize = a.data_buffers().iter().map(|b| b.len()).sum();
        let used = a.total_buffer_bytes_used();
        held > 2 * used && held - used > 64 * 1024
    }
    match c.data_type() {
        DataType::Utf8View if wasteful(c.as_string_view()) => Arc::new(c.as_string_view().gc()),
        DataType::BinaryView if wasteful(c.as_binary_view()) => Arc::new(c.as_binary_view().gc()),
        _ => c.clone(),
    }
}

fn has_views(schema: &SchemaRef) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
}

/// Physical optimiser rule: every hash join's build side with view columns reads through a
/// [`CompactViewsExec`]. Runs after DataFusion's rules, so after the build side is chosen.
#[derive(Debug, Default)]
pub struct CompactBuildSides;

impl PhysicalOptimizerRule for CompactBuildSides {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DFResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.as_any().downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let build = join.left();
            if !has_views(&build.schema()) || build.as_any().is::<CompactViewsExec>() {
                return Ok(Transformed::no(node));
            }
            let compacted: Arc<dyn ExecutionPlan> = Arc::new(CompactViewsExec::new(build.clone()));
            let probe = join.right().clone();
            Ok(Transformed::yes(node.with_new_children(vec![compacted, probe])?))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "compact_build_sides"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input's batches on with their view columns compacted ([`compact_views`]).
#[derive(Debug)]
pub struct CompactViewsExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl CompactViewsExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = input.properties().clone();
        CompactViewsExec { input, properties }
    }
}

impl DisplayAs for CompactViewsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CompactViewsExec")
    }
}

impl ExecutionPlan for CompactViewsExec {
    fn name(&self) -> &str {
        "CompactViewsExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return plan_err!("CompactViewsExec takes one child");
        }
        Ok(Arc::new(CompactViewsExec::new(children.swap_remove(0))))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DFResult<SendableRecordBatchStream> {
        let schema = self.input.schema();
        let batches = self.input.execute(partition, context)?.map(|batch| {
            let batch = batch?;
            let columns = batch.columns().iter().map(compact_views).collect();
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn partition_statistics(&self, partition: Option<usize>) -> DFResult<Statistics> {
        self.input.partition_statistics(partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringViewArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::common::{JoinType, NullEquality};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::collect;
    use datafusion::physical_plan::joins::PartitionMode;

    /// 10 batches of 100 rows whose names all point into one 8 MB buffer of 10,000 names (as
    /// rows taken from a big batch by a join do), joined to 100 probe rows.
    fn join() -> Arc<dyn ExecutionPlan> {
        let rows = 10_000;
        let names: StringViewArray = (0..rows).map(|i| Some(format!("{i:0>800}"))).collect();
        let ids = Int64Array::from_iter_values(0..rows as i64);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, false),
        ]));
        let all = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(names)]).expect("batch");
        let build: Vec<RecordBatch> = (0..10).map(|k| all.slice(k * 100, 100)).collect();
        let probe_schema = Arc::new(Schema::new(vec![Field::new("key", DataType::Int64, false)]));
        let keys = Int64Array::from_iter_values((0..1_000).step_by(10));
        let probe = RecordBatch::try_new(probe_schema.clone(), vec![Arc::new(keys)]).expect("batch");
        let left = MemorySourceConfig::try_new_exec(&[build], schema, None).expect("build side");
        let right = MemorySourceConfig::try_new_exec(&[vec![probe]], probe_schema, None).expect("probe side");
        Arc::new(
            HashJoinExec::try_new(
                left,
                right,
                vec![(Arc::new(Column::new("id", 0)), Arc::new(Column::new("key", 0)))],
                None,
                &JoinType::Inner,
                None,
                PartitionMode::CollectLeft,
                NullEquality::NullEqualsNothing,
                false,
            )
            .expect("join"),
        )
    }

    /// The join under a 4 MB memory limit: 10 build batches each charged the whole 8 MB buffer
    /// would be 80 MB; compacted, each is charged its 80 KB.
    async fn run(plan: Arc<dyn ExecutionPlan>) -> DFResult<usize> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(4 << 20)))
            .build_arc()?;
        let task = Arc::new(TaskContext::default().with_runtime(runtime));
        Ok(collect(plan, task).await?.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn a_build_side_sharing_one_buffer_is_charged_what_it_holds() {
        let refused = run(join()).await.expect_err("charged the shared buffer per batch");
        assert!(refused.to_string().contains("Resources exhausted"), "{refused}");

        let plan = CompactBuildSides
            .optimize(join(), &ConfigOptions::default())
            .expect("rule");
        let build = plan.children()[0].clone();
        assert_eq!(build.name(), "CompactViewsExec");
        assert_eq!(run(plan.clone()).await.expect("runs within the limit"), 100);
        // Applied twice, the rule does not stack a second compaction.
        let again = CompactBuildSides
            .optimize(plan, &ConfigOptions::default())
            .expect("rule");
        assert_eq!(again.children()[0].children()[0].name(), "DataSourceExec");
    }

    #[test]
    fn only_wasteful_view_arrays_are_copied() {
        let names: StringViewArray = (0..2_000).map(|i| Some(format!("{i:0>100}"))).collect();
        let all: ArrayRef = Arc::new(names);
        // The whole array uses all its bytes: returned as is (same buffers).
        assert!(Arc::ptr_eq(&compact_views(&all), &all));
        // A slice of 10 rows still references the 200 KB of all 2,000: copied.
        let slice = all.slice(5, 10);
        let compacted = compact_views(&slice);
        assert_eq!(
            compacted
                .as_string_view()
                .data_buffers()
                .iter()
                .map(|b| b.len())
                .sum::<usize>(),
            1_000
        );
        assert_eq!(compacted.as_ref(), slice.as_ref());
    }
}
