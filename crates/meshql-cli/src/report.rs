//! `meshql check` reports: for people, as JSON, and as JUnit XML for the domain teams' CI.

use meshql::{CheckReport, ProductCheck, ProductStatus, QualityOutcome, QualityResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Human,
    Json,
    Junit,
}

pub fn render(report: &CheckReport, format: ReportFormat) -> String {
    match format {
        ReportFormat::Human => human(report),
        ReportFormat::Json => serde_json::to_string_pretty(&json(report)).unwrap_or_default() + "\n",
        ReportFormat::Junit => junit(report),
    }
}

fn human(report: &CheckReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let (mut ok, mut failed) = (0, 0);
    let mut counts = [0usize; 4];
    for p in &report.products {
        let head = if p.is_ok() {
            ok += 1;
            "ok     "
        } else {
            failed += 1;
            "FAILED "
        };
        let detail = match &p.status {
            ProductStatus::Ok { version, .. } => {
                let v = version.map(|v| format!(" @ {v}")).unwrap_or_default();
                format!("{}{v}", p.format.map(|f| f.to_string()).unwrap_or_default())
            }
            ProductStatus::Unavailable(_) => "unavailable".to_string(),
        };
        let _ = writeln!(out, "{head} {} ({detail})", p.table);
        if let ProductStatus::Unavailable(reason) = &p.status {
            let _ = writeln!(out, "        {reason}");
        }
        if let ProductStatus::Ok { warnings, .. } = &p.status {
            for w in warnings {
                let _ = writeln!(out, "        warning: {w}");
            }
        }
        if p.lifecycle != meshql::contract::Lifecycle::Active {
            let _ = writeln!(out, "        lifecycle: {}", p.lifecycle.as_str());
        }
        for f in &p.compliance {
            let _ = writeln!(out, "        governance: {f}");
        }
        for q in &p.quality {
            counts[outcome_index(q.outcome)] += 1;
            let mark = match q.outcome {
                QualityOutcome::Passed => "passed ",
                QualityOutcome::Failed => "FAILED ",
                QualityOutcome::Error => "ERROR  ",
                QualityOutcome::Skipped => "skipped",
            };
            let _ = writeln!(
                out,
                "        quality {mark} [{}] {}: {}",
                q.severity.as_str(),
                q.check,
                q.message
            );
        }
        if !p.is_ok() {
            if let Some(c) = &p.contact {
                let _ = writeln!(out, "        ask: {c}");
            }
        }
    }
    for problem in &report.problems {
        let _ = writeln!(out, "FAILED  {problem}");
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "WARNING {warning}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{ok} products ok, {failed} failed, {} documents not loaded; quality checks: {} passed, {} failed, {} errors, {} skipped",
        report.problems.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    out
}

fn outcome_index(o: QualityOutcome) -> usize {
    match o {
        QualityOutcome::Passed => 0,
        QualityOutcome::Failed => 1,
        QualityOutcome::Error => 2,
        QualityOutcome::Skipped => 3,
    }
}

fn json(report: &CheckReport) -> serde_json::Value {
    let product = |p: &ProductCheck| {
        let (status, reason, warnings, version) = match &p.status {
            ProductStatus::Ok { warnings, version } => ("ok", None, warnings.clone(), *version),
            ProductStatus::Unavailable(r) => ("unavailable", Some(r.clone()), Vec::new(), None),
        };
        serde_json::json!({
            "table": p.table,
            "ok": p.is_ok(),
            "status": status,
            "reason": reason,
            "format": p.format.map(|f| f.to_string()),
            "location": p.location,
            "version": version,
            "warnings": warnings,
            "lifecycle": p.lifecycle.as_str(),
            "compliance": p.compliance.iter().map(|f| serde_json::json!({"rule": f.rule, "message": f.message})).collect::<Vec<_>>(),
            "quality": p.quality,
            "contact": p.contact,
        })
    };
    serde_json::json!({
        "ok": report.is_ok(),
        "problems": report.problems,
        "warnings": report.warnings,
        "products": report.products.iter().map(product).collect::<Vec<_>>(),
    })
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| matches!(c, '\t' | '\n' | '\r') || *c >= ' ')
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// One `<testsuite>` per product: a `storage` case, a `governance` case and one case per quality
/// check; mesh-wide problems form a `mesh` suite. Quality failures of severity `warning`/`info`
/// are reported as passing cases with the message in `system-out`.
fn junit(report: &CheckReport) -> String {
    let mut suites = Vec::new();
    let case = |name: &str, class: &str, failure: Option<(&str, &str)>, skipped: Option<&str>, out: Option<&str>| {
        let mut s = format!("    <testcase name=\"{}\" classname=\"{}\">", xml(name), xml(class));
        if let Some((kind, msg)) = failure {
            s += &format!(
                "<failure type=\"{}\" message=\"{}\">{}</failure>",
                xml(kind),
                xml(msg),
                xml(msg)
            );
        }
        if let Some(why) = skipped {
            s += &format!("<skipped message=\"{}\"/>", xml(why));
        }
        if let Some(o) = out {
            s += &format!("<system-out>{}</system-out>", xml(o));
        }
        s += "</testcase>";
        s
    };
    let mut total = (0, 0, 0);
    for p in &report.products {
        let mut cases = Vec::new();
        let storage = match &p.status {
            ProductStatus::Ok { .. } => None,
            ProductStatus::Unavailable(r) => Some(r.as_str()),
        };
        cases.push((
            storage.map(|r| ("unavailable", r.to_string())),
            None,
            None,
            "storage".to_string(),
        ));
        let gov = (!p.compliance.is_empty()).then(|| {
            (
                "governance",
                p.compliance
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        });
        cases.push((gov, None, None, "governance".to_string()));
        for q in &p.quality {
            let (failure, skipped, out) = quality_case(q);
            cases.push((failure, skipped, out, format!("quality: {}", q.check)));
        }
        let failures = cases.iter().filter(|c| c.0.is_some()).count();
        let skipped = cases.iter().filter(|c| c.1.is_some()).count();
        total.0 += cases.len();
        total.1 += failures;
        total.2 += skipped;
        let body: Vec<String> = cases
            .iter()
            .map(|(f, s, o, name)| {
                case(
                    name,
                    &p.table,
                    f.as_ref().map(|(k, m)| (*k, m.as_str())),
                    s.as_deref(),
                    o.as_deref(),
                )
            })
            .collect();
        suites.push(format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">\n{}\n  </testsuite>",
            xml(&p.table),
            cases.len(),
            body.join("\n")
        ));
    }
    if !report.problems.is_empty() {
        let body: Vec<String> = report
            .problems
            .iter()
            .enumerate()
            .map(|(i, pr)| {
                case(
                    &format!("document {}", i + 1),
                    "mesh",
                    Some(("not loaded", pr)),
                    None,
                    None,
                )
            })
            .collect();
        total.0 += body.len();
        total.1 += body.len();
        suites.push(format!(
            "  <testsuite name=\"mesh\" tests=\"{n}\" failures=\"{n}\" errors=\"0\" skipped=\"0\">\n{}\n  </testsuite>",
            body.join("\n"),
            n = report.problems.len()
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"meshql check\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n{}\n</testsuites>\n",
        total.0,
        total.1,
        total.2,
        suites.join("\n")
    )
}

type Case = (Option<(&'static str, String)>, Option<String>, Option<String>);

fn quality_case(q: &QualityResult) -> Case {
    match q.outcome {
        QualityOutcome::Skipped => (None, Some(q.message.clone()), None),
        QualityOutcome::Passed => (None, None, None),
        _ if !q.is_blocking() => (None, None, Some(format!("[{}] {}", q.severity.as_str(), q.message))),
        QualityOutcome::Error => (Some(("error", q.message.clone())), None, None),
        QualityOutcome::Failed => (Some(("failed", q.message.clone())), None, None),
    }
}
