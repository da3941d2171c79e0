//! Tables written by other writers (pyarrow, deltalake, pyiceberg) — see
//! `testdata/interop/generate.py` — read back and compared with the formula that defines them.

use std::collections::BTreeMap;

use crate::common::*;

const KINDS: [&str; 3] = ["view", "click", "buy"];
/// 2024-03-01T00:00:00Z
const BASE_TS: i64 = 1_709_251_200;

#[tokio::test]
async fn every_writer_reads_back_exactly() {
    // kind → (count, sum of amount in cents, min unix time, max user)
    let mut expected: BTreeMap<&str, (i64, i64, i64, i64)> = BTreeMap::new();
    for i in 0..600i64 {
        let e = expected.entry(KINDS[(i % 3) as usize]).or_insert((0, 0, i64::MAX, 0));
        e.0 += 1;
        e.1 += (i * 7919) % 10000;
        e.2 = e.2.min(BASE_TS + 97 * i);
        e.3 = e.3.max((i * 7) % 53);
    }
    let expected: Vec<Vec<String>> = expected
        .into_iter()
        .map(|(k, (n, cents, ts, user))| {
            vec![
                k.to_string(),
                n.to_string(),
                money(cents),
                ts.to_string(),
                user.to_string(),
            ]
        })
        .collect();
    let mesh = sample_mesh();
    for table in ["pyarrow_events", "deltars_events_latest", "pyiceberg_events_latest"] {
        let got = query(
            &mesh,
            &format!(
                "SELECT kind, count(*), sum(amount), min(to_unixtime(event_ts)), max(user_id)
                 FROM mesh.interop.{table} GROUP BY kind ORDER BY kind"
            ),
        )
        .await;
        assert_eq!(got, expected, "{table}");
    }
}

#[tokio::test]
async fn partition_columns_of_other_writers_filter_and_prune() {
    let mesh = sample_mesh();
    let buys = (0..600).filter(|i| i % 3 == 2).count().to_string();
    for table in ["deltars_events_latest", "pyiceberg_events_latest"] {
        let got = query(
            &mesh,
            &format!("SELECT count(*) FROM mesh.interop.{table} WHERE kind = 'buy'"),
        )
        .await;
        assert_eq!(got, vec![vec![buys.clone()]], "{table}");
    }
    let plan = explain(
        &mesh,
        "SELECT event_id FROM mesh.interop.deltars_events_latest WHERE kind = 'buy'",
    )
    .await;
    assert!(plan.contains("kind=buy") && !plan.contains("kind=view"), "{plan}");
}
