//! The parts of an ODCS v3.1 data contract that meshql acts on.
//!
//! The model is deliberately partial: a document is first validated against the official JSON
//! Schema, then deserialized into these structs, which name only what meshql uses. Everything else
//! stays available in [`DataContract::raw`], so nothing a producer wrote is lost.

use serde::Deserialize;
use serde_json::Value;

/// An ODCS data contract (`kind: DataContract`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataContract {
    pub id: String,
    pub version: String,
    pub status: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub data_product: Option<String>,
    #[serde(default)]
    pub description: Option<ContractDescription>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(default)]
    pub schema: Vec<SchemaObject>,
    #[serde(default)]
    pub support: Vec<SupportItem>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub sla_properties: Vec<SlaProperty>,
    /// The whole document as it was read (after YAML → JSON), for fields meshql does not model.
    #[serde(skip)]
    pub raw: Value,
    /// The file the contract was read from.
    #[serde(skip)]
    pub source: std::path::PathBuf,
}

impl DataContract {
    /// The first support channel, for "whom to ask" messages.
    pub fn support_channel(&self) -> Option<&str> {
        self.support.first().map(|s| s.url.as_deref().unwrap_or(&s.channel))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractDescription {
    #[serde(default)]
    pub usage: Option<String>,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub limitations: Option<String>,
}

/// Where and how a port's data is stored (`servers[]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    #[serde(default)]
    pub server: Option<String>,
    #[serde(rename = "type")]
    pub server_type: String,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    /// `local` servers: a relative or absolute path.
    #[serde(default)]
    pub path: Option<String>,
    /// Object-store servers: a URL.
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// An Iceberg catalog defined in `mesh.yaml` (`icebergCatalogs`) holding the table.
    #[serde(default)]
    pub catalog: Option<String>,
    /// The catalog namespace (dotted for nested namespaces); `database` is accepted too.
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub custom_properties: Vec<CustomProperty>,
}

impl Server {
    /// The value of a custom property by name.
    pub fn custom_property(&self, name: &str) -> Option<&Value> {
        self.custom_properties
            .iter()
            .find(|p| p.property == name)
            .map(|p| &p.value)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CustomProperty {
    pub property: String,
    pub value: Value,
}

/// A table-like element of the contract's `schema`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaObject {
    pub name: String,
    #[serde(default)]
    pub physical_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub properties: Vec<SchemaProperty>,
    #[serde(default)]
    pub quality: Vec<crate::quality::QualityRule>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A column of a schema object.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaProperty {
    pub name: String,
    #[serde(default)]
    pub physical_name: Option<String>,
    #[serde(default)]
    pub logical_type: Option<LogicalType>,
    #[serde(default)]
    pub physical_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub business_name: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub primary_key: bool,
    #[serde(default)]
    pub primary_key_position: Option<i64>,
    #[serde(default)]
    pub partitioned: bool,
    #[serde(default)]
    pub classification: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub quality: Vec<crate::quality::QualityRule>,
    #[serde(default)]
    pub items: Option<Value>,
    #[serde(default)]
    pub properties: Vec<SchemaProperty>,
    /// Foreign keys from this column (`relationships`, property level: `from` is implicit).
    #[serde(default)]
    pub relationships: Vec<Relationship>,
}

/// A property-level relationship: this column references `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    /// `foreignKey` (the only type ODCS 3.1 defines, and the default).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `table.column` (shorthand), or a list of them for composite keys.
    #[serde(default)]
    pub to: Value,
}

impl Relationship {
    /// The referenced columns as `table.column` strings (one for a simple key).
    pub fn targets(&self) -> Vec<&str> {
        match &self.to {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether this is a foreign key (the default type).
    pub fn is_foreign_key(&self) -> bool {
        self.kind.as_deref().is_none_or(|k| k == "foreignKey")
    }
}

impl SchemaProperty {
    /// The column's name in storage: `physicalName` when given, else `name`.
    pub fn storage_name(&self) -> &str {
        self.physical_name.as_deref().unwrap_or(&self.name)
    }
}

/// ODCS logical types (`logicalType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogicalType {
    String,
    Date,
    Timestamp,
    Time,
    Number,
    Integer,
    Object,
    Array,
    Boolean,
}

impl std::fmt::Display for LogicalType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            LogicalType::String => "string",
            LogicalType::Date => "date",
            LogicalType::Timestamp => "timestamp",
            LogicalType::Time => "time",
            LogicalType::Number => "number",
            LogicalType::Integer => "integer",
            LogicalType::Object => "object",
            LogicalType::Array => "array",
            LogicalType::Boolean => "boolean",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportItem {
    pub channel: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub tool: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaProperty {
    pub property: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub element: Option<String>,
}
