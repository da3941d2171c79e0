//! The parts of an ODPS v1.0 data product descriptor that meshql acts on.
//!
//! As with [`crate::odcs`], the document is validated against the official JSON Schema first and
//! the full document is kept in [`DataProduct::raw`].

use serde::Deserialize;
use serde_json::Value;

/// An ODPS data product (`kind: DataProduct`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProduct {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub description: Option<ProductDescription>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub input_ports: Vec<InputPort>,
    #[serde(default)]
    pub output_ports: Vec<OutputPort>,
    #[serde(default)]
    pub support: Vec<ProductSupport>,
    #[serde(default)]
    pub team: Option<ProductTeam>,
    #[serde(skip)]
    pub raw: Value,
    /// The file the descriptor was read from.
    #[serde(skip)]
    pub source: std::path::PathBuf,
}

impl DataProduct {
    /// The product's display name: `name` if given, else `id`.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// Stands in for a descriptor that failed to load, so the failure can be reported under the
    /// name the product tried to have.
    pub fn placeholder(source: &std::path::Path, name: String) -> DataProduct {
        DataProduct {
            id: name.clone(),
            status: "invalid".to_string(),
            name: Some(name),
            version: None,
            domain: None,
            description: None,
            tags: Vec::new(),
            input_ports: Vec::new(),
            output_ports: Vec::new(),
            support: Vec::new(),
            team: None,
            raw: Value::Null,
            source: source.to_path_buf(),
        }
    }

    /// The first support channel's URL, for "whom to ask" messages.
    pub fn support_channel(&self) -> Option<&str> {
        self.support.first().map(|s| s.url.as_str())
    }

    /// The owning team's name, if the descriptor names one.
    pub fn owner(&self) -> Option<&str> {
        self.team.as_ref().and_then(|t| t.name.as_deref())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductDescription {
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub limitations: Option<String>,
    #[serde(default)]
    pub usage: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputPort {
    pub name: String,
    pub version: String,
    pub contract_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputPort {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "type")]
    pub port_type: Option<String>,
    #[serde(default)]
    pub contract_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductSupport {
    pub channel: String,
    pub url: String,
    #[serde(default)]
    pub tool: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductTeam {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}
