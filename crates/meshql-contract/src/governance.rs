//! Mesh-wide governance standards (`governance:` in `mesh.yaml`), checked on every product.
//!
//! The governance council sets the standards once; every product is assessed against them when
//! the mesh loads, so a domain team learns what to fix from `meshql check`, `mesh.system.products`
//! and the error a consumer gets — not from a review meeting. Whether a non-compliant product is
//! still served (with a warning) or blocked is the council's choice (`enforcement`).
//!
//! ```yaml
//! governance:
//!   enforcement: warn            # or block: non-compliant products are not served
//!   naming: "^[a-z][a-z0-9_]*$"  # product names
//!   columnNaming: "^[a-z][a-z0-9_]*$"
//!   requiredMetadata: [owner, description, support, sla]
//!   allowedFormats: [delta, iceberg]
//!   requireClassification: true
//!   allowedClassifications: [public, internal, confidential, pii]
//!   contractVersion: semver       # MAJOR.MINOR.PATCH
//!   allowedStatuses: [active, deprecated]
//! ```
//!
//! Lifecycle rules hold whatever the settings say: a `retired` product (descriptor or contract)
//! is never served, a `deprecated` one is served and every reader is warned.

use serde::Deserialize;

use crate::mesh::{Domain, TableEntry};

/// What happens to a product that breaks a standard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Served; the failures are reported (check, system tables, log).
    #[default]
    Warn,
    /// Not served until it complies.
    Block,
}

/// Metadata a product must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RequiredMetadata {
    /// An owning team (`team.name` in the descriptor).
    Owner,
    /// A purpose or description (descriptor or contract).
    Description,
    /// A support channel (descriptor or contract).
    Support,
    /// At least one SLA property in the contract.
    Sla,
    /// At least one tag on the product.
    Tags,
    /// At least one quality rule in the contract.
    Quality,
    /// A description on every column.
    ColumnDescriptions,
}

impl RequiredMetadata {
    fn as_str(self) -> &'static str {
        match self {
            RequiredMetadata::Owner => "owner",
            RequiredMetadata::Description => "description",
            RequiredMetadata::Support => "support",
            RequiredMetadata::Sla => "sla",
            RequiredMetadata::Tags => "tags",
            RequiredMetadata::Quality => "quality",
            RequiredMetadata::ColumnDescriptions => "columnDescriptions",
        }
    }
}

/// How contract versions must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionScheme {
    /// `MAJOR.MINOR.PATCH` (pre-release and build suffixes allowed).
    Semver,
}

/// The standards, as written in `mesh.yaml`. Every field is optional: an absent standard is not
/// checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GovernanceStandards {
    #[serde(default)]
    pub enforcement: Enforcement,
    /// A regular expression every product name must match (the name as written).
    #[serde(default)]
    pub naming: Option<String>,
    /// A regular expression every contract column name must match.
    #[serde(default)]
    pub column_naming: Option<String>,
    #[serde(default)]
    pub required_metadata: Vec<RequiredMetadata>,
    /// Storage formats products may use (`parquet`, `delta`, `iceberg`).
    #[serde(default)]
    pub allowed_formats: Option<Vec<String>>,
    /// Every contract column must carry a `classification`.
    #[serde(default)]
    pub require_classification: bool,
    /// The classifications columns may carry.
    #[serde(default)]
    pub allowed_classifications: Option<Vec<String>>,
    #[serde(default)]
    pub contract_version: Option<VersionScheme>,
    /// Statuses a product and its contract may have (besides the lifecycle rules).
    #[serde(default)]
    pub allowed_statuses: Option<Vec<String>>,
}

/// Standards ready to apply: patterns compiled. Built once per mesh load.
#[derive(Debug, Clone, Default)]
pub struct CompiledStandards {
    pub settings: GovernanceStandards,
    naming: Option<regex::Regex>,
    column_naming: Option<regex::Regex>,
}

impl CompiledStandards {
    /// Compiles the patterns; a pattern that does not compile is an error in `mesh.yaml`.
    pub fn new(settings: GovernanceStandards) -> Result<Self, String> {
        let compile = |field: &str, p: &Option<String>| {
            p.as_deref()
                .map(|p| regex::Regex::new(p).map_err(|e| format!("governance.{field}: not a regular expression: {e}")))
                .transpose()
        };
        Ok(CompiledStandards {
            naming: compile("naming", &settings.naming)?,
            column_naming: compile("columnNaming", &settings.column_naming)?,
            settings,
        })
    }

    /// Assesses one product output port.
    pub fn assess(&self, entry: &TableEntry, domain: Option<&Domain>) -> Compliance {
        let s = &self.settings;
        let product = &entry.product;
        let binding = entry.binding.as_ref().ok();
        let contract = binding.map(|b| &b.contract);
        let mut failures = Vec::new();
        let mut fail = |rule: &str, message: String| {
            failures.push(RuleFailure {
                rule: rule.to_string(),
                message,
            })
        };

        if let Some(re) = &self.naming {
            let name = product.display_name();
            if !re.is_match(name) {
                fail(
                    "naming",
                    format!("product name {name:?} does not match {}", re.as_str()),
                );
            }
        }
        for required in &s.required_metadata {
            let present = match required {
                RequiredMetadata::Owner => product.owner().is_some(),
                RequiredMetadata::Description => {
                    product
                        .description
                        .as_ref()
                        .is_some_and(|d| d.purpose.is_some() || d.usage.is_some())
                        || contract.is_some_and(|c| {
                            c.description
                                .as_ref()
                                .is_some_and(|d| d.purpose.is_some() || d.usage.is_some())
                        })
                }
                RequiredMetadata::Support => {
                    !product.support.is_empty()
                        || contract.is_some_and(|c| !c.support.is_empty())
                        || domain.is_some_and(|d| d.descriptor.support.is_some())
                }
                RequiredMetadata::Sla => contract.is_some_and(|c| !c.sla_properties.is_empty()),
                RequiredMetadata::Tags => !product.tags.is_empty(),
                RequiredMetadata::Quality => binding.is_some_and(|b| {
                    !b.schema.quality.is_empty() || b.schema.properties.iter().any(|p| !p.quality.is_empty())
                }),
                RequiredMetadata::ColumnDescriptions => {
                    binding.is_some_and(|b| b.schema.properties.iter().all(|p| p.description.is_some()))
                }
            };
            if !present {
                let what = match required {
                    RequiredMetadata::Owner => "an owning team (team.name in the product descriptor)",
                    RequiredMetadata::Description => "a description (description.purpose or usage)",
                    RequiredMetadata::Support => "a support channel",
                    RequiredMetadata::Sla => "SLA properties (slaProperties in the contract)",
                    RequiredMetadata::Tags => "tags",
                    RequiredMetadata::Quality => "quality rules in the contract",
                    RequiredMetadata::ColumnDescriptions => "a description on every column",
                };
                fail(
                    &format!("requiredMetadata.{}", required.as_str()),
                    format!("the product has no {what}"),
                );
            }
        }
        if let (Some(allowed), Some(b)) = (&s.allowed_formats, binding) {
            let format = b.storage.format.as_str();
            if !allowed.iter().any(|f| f.eq_ignore_ascii_case(format)) {
                fail(
                    "allowedFormats",
                    format!("format {format} is not one of {}", allowed.join(", ")),
                );
            }
        }
        if let Some(b) = binding {
            let mut unclassified = Vec::new();
            let mut misclassified = Vec::new();
            let mut misnamed = Vec::new();
            for p in &b.schema.properties {
                match &p.classification {
                    None => unclassified.push(p.name.as_str()),
                    Some(c) => {
                        if let Some(allowed) = &s.allowed_classifications {
                            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(c)) {
                                misclassified.push(format!("{} ({c})", p.name));
                            }
                        }
                    }
                }
                if let Some(re) = &self.column_naming {
                    if !re.is_match(&p.name) {
                        misnamed.push(p.name.as_str());
                    }
                }
            }
            if s.require_classification && !unclassified.is_empty() {
                fail(
                    "requireClassification",
                    format!("columns without a classification: {}", unclassified.join(", ")),
                );
            }
            if let Some(allowed) = s.allowed_classifications.as_ref().filter(|_| !misclassified.is_empty()) {
                fail(
                    "allowedClassifications",
                    format!(
                        "columns with a classification not in {}: {}",
                        allowed.join(", "),
                        misclassified.join(", ")
                    ),
                );
            }
            if let Some(re) = self.column_naming.as_ref().filter(|_| !misnamed.is_empty()) {
                fail(
                    "columnNaming",
                    format!("column names not matching {}: {}", re.as_str(), misnamed.join(", ")),
                );
            }
        }
        if let (Some(VersionScheme::Semver), Some(c)) = (s.contract_version, contract) {
            if !is_semver(&c.version) {
                fail(
                    "contractVersion",
                    format!("contract version {:?} is not semantic (MAJOR.MINOR.PATCH)", c.version),
                );
            }
        }
        if let Some(allowed) = &s.allowed_statuses {
            let ok = |st: &str| allowed.iter().any(|a| a.eq_ignore_ascii_case(st));
            if !ok(&product.status) {
                fail(
                    "allowedStatuses",
                    format!(
                        "product status {:?} is not one of {}",
                        product.status,
                        allowed.join(", ")
                    ),
                );
            }
            if let Some(c) = contract.filter(|c| !ok(&c.status)) {
                fail(
                    "allowedStatuses",
                    format!("contract status {:?} is not one of {}", c.status, allowed.join(", ")),
                );
            }
        }

        let status_of = |st: &str| st.to_ascii_lowercase();
        let statuses = std::iter::once(status_of(&product.status)).chain(contract.map(|c| status_of(&c.status)));
        let mut lifecycle = Lifecycle::Active;
        for st in statuses {
            match st.as_str() {
                "retired" => lifecycle = Lifecycle::Retired,
                "deprecated" if lifecycle != Lifecycle::Retired => lifecycle = Lifecycle::Deprecated,
                _ => {}
            }
        }
        Compliance {
            failures,
            lifecycle,
            enforcement: s.enforcement,
        }
    }
}

fn is_semver(v: &str) -> bool {
    semver::Version::parse(v).is_ok()
}

/// Where a product is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifecycle {
    #[default]
    Active,
    /// Served; readers are warned.
    Deprecated,
    /// Not served.
    Retired,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Deprecated => "deprecated",
            Lifecycle::Retired => "retired",
        }
    }
}

/// One standard a product breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    /// The standard, as named in `mesh.yaml` (`naming`, `requiredMetadata.owner`, …).
    pub rule: String,
    pub message: String,
}

impl std::fmt::Display for RuleFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

/// A product's compliance with the mesh's standards and its lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compliance {
    pub failures: Vec<RuleFailure>,
    pub lifecycle: Lifecycle,
    pub enforcement: Enforcement,
}

impl Compliance {
    pub fn is_compliant(&self) -> bool {
        self.failures.is_empty()
    }

    /// Why the product is not served, if it is not: retired, or non-compliant under `block`.
    pub fn refusal(&self) -> Option<String> {
        if self.lifecycle == Lifecycle::Retired {
            return Some("the product is retired and no longer served".to_string());
        }
        if self.enforcement == Enforcement::Block && !self.failures.is_empty() {
            return Some(format!(
                "blocked by the mesh governance standards: {}",
                self.failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        None
    }

    /// What every reader of a served product is told: deprecation and broken standards.
    pub fn warnings(&self, table: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.lifecycle == Lifecycle::Deprecated {
            out.push(format!(
                "{table} is deprecated: plan to move to its successor (ask the product owner)"
            ));
        }
        if self.refusal().is_none() && !self.failures.is_empty() {
            out.push(format!(
                "{table} does not meet the mesh governance standards ({})",
                self.failures
                    .iter()
                    .map(|f| f.rule.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::is_semver;

    #[test]
    fn semver() {
        for ok in ["1.0.0", "0.1.2", "10.20.30-rc.1", "1.2.3+build"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.x.0", ""] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
