//! Reading policy files: `policies.yaml` at the mesh root (global) and in each domain directory.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use meshql_contract::MeshDefinition;
use serde::Deserialize;
use serde_yaml::Value;

use crate::error::PolicyError;
use crate::model::*;

/// The file name of a policy file, at the mesh root and in each domain directory.
pub const POLICY_FILE: &str = "policies.yaml";

/// Every policy of a mesh, checked and ready for decisions.
///
/// Loading never fails as a whole: a global file that does not load makes every product
/// unreadable and invisible (fail closed), a domain file that does not load does the same for
/// that domain's products; both are reported in [`PolicySet::problems`].
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub(crate) admins: Subjects,
    pub(crate) hash_keys: BTreeMap<String, HashKey>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) tag_rules: Vec<TagRule>,
    /// Set when the global file does not load: nothing is served.
    pub(crate) fatal: Option<String>,
    /// Domains whose policy file does not load, with the reason.
    pub(crate) broken_domains: BTreeMap<String, String>,
    problems: Vec<PolicyError>,
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileDoc {
    #[serde(default)]
    admins: Option<Value>,
    #[serde(default)]
    hash_keys: BTreeMap<String, SecretDoc>,
    #[serde(default)]
    rules: Vec<RuleDoc>,
    #[serde(default)]
    tag_rules: Vec<TagRuleDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretDoc {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleDoc {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    principals: Value,
    #[serde(default)]
    except: Option<Value>,
    resource: OneOrMany,
    #[serde(default)]
    grant: Option<Vec<Privilege>>,
    #[serde(default)]
    deny: Option<Vec<Privilege>>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    row_filter: Option<String>,
    #[serde(default)]
    masks: Option<BTreeMap<String, MaskSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TagRuleDoc {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    classification: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    principals: Option<Value>,
    #[serde(default)]
    except: Option<Value>,
    #[serde(default)]
    deny: Option<Vec<Privilege>>,
    #[serde(default)]
    row_filter: Option<String>,
    #[serde(default)]
    mask: Option<MaskSpec>,
}

impl PolicySet {
    /// Reads the global file and every domain's file of `mesh`.
    pub fn load(mesh: &MeshDefinition) -> PolicySet {
        let mut set = PolicySet::default();
        let mut hasher = DefaultHasher::new();
        let global = mesh.root.join(POLICY_FILE);
        match read_file(&global, &Layer::Global, &mesh.root, &mut hasher) {
            Ok(Some(file)) => {
                set.admins = file.admins;
                set.hash_keys = file.hash_keys;
                set.rules.extend(file.rules);
                set.tag_rules = file.tag_rules;
            }
            Ok(None) => tracing::warn!(
                path = %global.display(),
                "no global policy file: only what domain policy files grant is served"
            ),
            Err(e) => {
                tracing::error!(error = %e, "global policies do not load: nothing is served");
                set.fatal = Some(e.to_string());
                set.problems.push(e);
            }
        }
        for domain in &mesh.domains {
            let path = domain.dir.join(POLICY_FILE);
            match read_file(&path, &Layer::Domain(domain.name.clone()), &mesh.root, &mut hasher) {
                Ok(Some(file)) => set.rules.extend(file.rules),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(domain = %domain.name, error = %e, "domain policies do not load: its products are not served");
                    set.broken_domains.insert(domain.name.clone(), e.to_string());
                    set.problems.push(e);
                }
            }
        }
        set.version = hasher.finish();
        set
    }

    /// Builds a set from YAML texts, for tests and embedding: the global file and `(domain, text)`
    /// pairs. Unlike [`PolicySet::load`], any error is returned.
    pub fn from_yaml(global: &str, domains: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
        let mut set = PolicySet::default();
        let mut hasher = DefaultHasher::new();
        let root = PathBuf::from(".");
        let file = parse_file(global, Path::new(POLICY_FILE), &Layer::Global, &root)?;
        global.hash(&mut hasher);
        set.admins = file.admins;
        set.hash_keys = file.hash_keys;
        set.rules = file.rules;
        set.tag_rules = file.tag_rules;
        for (domain, text) in domains {
            let path = PathBuf::from(format!("domains/{domain}/{POLICY_FILE}"));
            let file = parse_file(text, &path, &Layer::Domain(domain.to_string()), &root)?;
            text.hash(&mut hasher);
            set.rules.extend(file.rules);
        }
        set.version = hasher.finish();
        Ok(set)
    }

    /// Policy files that did not load.
    pub fn problems(&self) -> &[PolicyError] {
        &self.problems
    }

    /// Changes whenever any policy file's content changes: part of every cache key.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Administrators: a separate role (EXPLAIN ANALYZE, physical plans). It grants no data.
    pub fn is_admin(&self, p: &crate::Principal) -> bool {
        self.fatal.is_none() && self.admins != Subjects::default() && self.admins.matches(p)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn tag_rules(&self) -> &[TagRule] {
        &self.tag_rules
    }

    /// The key for keyed-hash masks named `name`.
    pub fn hash_key(&self, name: &str) -> HashKey {
        self.hash_keys
            .get(name)
            .cloned()
            .unwrap_or_else(|| HashKey::Unavailable(format!("no hash key named '{name}' in the global policy file")))
    }
}

struct ParsedFile {
    admins: Subjects,
    hash_keys: BTreeMap<String, HashKey>,
    rules: Vec<Rule>,
    tag_rules: Vec<TagRule>,
}

fn read_file(
    path: &Path,
    layer: &Layer,
    root: &Path,
    hasher: &mut DefaultHasher,
) -> Result<Option<ParsedFile>, PolicyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PolicyError::Invalid {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    path.hash(hasher);
    text.hash(hasher);
    parse_file(&text, path, layer, root).map(Some)
}

fn invalid(path: &Path, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn parse_file(text: &str, path: &Path, layer: &Layer, root: &Path) -> Result<ParsedFile, PolicyError> {
    let doc: FileDoc = serde_yaml::from_str(text).map_err(|e| invalid(path, e.to_string()))?;
    let domain_file = matches!(layer, Layer::Domain(_));
    if domain_file && (doc.admins.is_some() || !doc.hash_keys.is_empty() || !doc.tag_rules.is_empty()) {
        return Err(invalid(
            path,
            "admins, hashKeys and tagRules are mesh-wide and belong in the global policy file",
        ));
    }
    let admins = match &doc.admins {
        Some(v) => subjects(v, path, "admins")?,
        None => Subjects::default(),
    };
    let hash_keys = doc
        .hash_keys
        .iter()
        .map(|(name, s)| Ok((name.clone(), secret(name, s, path, root)?)))
        .collect::<Result<_, PolicyError>>()?;
    let mut names = BTreeSet::new();
    let mut rules = Vec::new();
    for r in doc.rules {
        if !names.insert(r.name.clone()) {
            return Err(invalid(path, format!("two rules are named '{}'", r.name)));
        }
        rules.push(rule(r, path, layer)?);
    }
    let mut tag_rules = Vec::new();
    for t in doc.tag_rules {
        if !names.insert(t.name.clone()) {
            return Err(invalid(path, format!("two rules are named '{}'", t.name)));
        }
        tag_rules.push(tag_rule(t, path)?);
    }
    Ok(ParsedFile {
        admins,
        hash_keys,
        rules,
        tag_rules,
    })
}

fn secret(name: &str, doc: &SecretDoc, path: &Path, root: &Path) -> Result<HashKey, PolicyError> {
    let key = match (&doc.env, &doc.file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => HashKey::Available(Arc::from(v.into_bytes())),
            _ => HashKey::Unavailable(format!("hash key '{name}': environment variable {var} is not set")),
        },
        (None, Some(file)) => {
            let p = root.join(file);
            match std::fs::read(&p) {
                Ok(bytes) if !bytes.trim_ascii().is_empty() => HashKey::Available(Arc::from(bytes.trim_ascii())),
                Ok(_) => HashKey::Unavailable(format!("hash key '{name}': {} is empty", p.display())),
                Err(e) => HashKey::Unavailable(format!("hash key '{name}': cannot read {}: {e}", p.display())),
            }
        }
        _ => {
            return Err(invalid(
                path,
                format!(
                "hash key '{name}' needs exactly one of `env` or `file` (secrets are never written in policy files)"
            ),
            ))
        }
    };
    if let HashKey::Unavailable(why) = &key {
        tracing::warn!(%why, "masks that use this key fail the queries that read them");
    }
    Ok(key)
}

fn subjects(v: &Value, path: &Path, what: &str) -> Result<Subjects, PolicyError> {
    if v.as_str() == Some("*") {
        return Ok(Subjects::everyone());
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        users: Vec<String>,
        #[serde(default)]
        groups: Vec<String>,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
    }
    let doc: Doc = serde_yaml::from_value(v.clone()).map_err(|e| {
        invalid(
            path,
            format!("{what}: expected \"*\" or {{users, groups, attributes}}: {e}"),
        )
    })?;
    if doc.users.is_empty() && doc.groups.is_empty() && doc.attributes.is_empty() {
        return Err(invalid(path, format!("{what}: names nobody; write \"*\" for everyone")));
    }
    Ok(Subjects {
        everyone: false,
        users: doc.users.into_iter().collect(),
        groups: doc.groups.into_iter().collect(),
        attributes: doc.attributes,
    })
}

fn resource(text: &str, path: &Path, layer: &Layer, rule: &str) -> Result<Resource, PolicyError> {
    let bad = |why: String| invalid(path, format!("rule '{rule}': resource '{text}': {why}"));
    let lower = text.trim().to_ascii_lowercase();
    // `<domain>.<product>[:<port>[@<version>]]`: the port and version are split off first
    // (a version has dots of its own).
    let (path, port, version) = match lower.split_once(':') {
        Some((path, rest)) => match rest.split_once('@') {
            Some((port, version)) => (path, Some(port), Some(version)),
            None => (path, Some(rest), None),
        },
        None => (lower.as_str(), None, None),
    };
    if port.is_some_and(str::is_empty) || version.is_some_and(str::is_empty) {
        return Err(bad("an empty port or version after ':' or '@'".into()));
    }
    let expected = "expected \"*\", \"<domain>.*\", \"<domain>.<product>\", \"<domain>.<product>:<port>\" or \"<domain>.<product>:<port>@<version>\"";
    let parsed = match (path.split('.').collect::<Vec<_>>().as_slice(), port) {
        (["*"], None) => Resource::Mesh,
        ([d] | [d, "*"], None) if !d.is_empty() => Resource::Domain(d.to_string()),
        ([d, n], _) if !d.is_empty() && !n.is_empty() && *n != "*" => Resource::Product {
            domain: d.to_string(),
            name: n.to_string(),
            port: port.map(str::to_string),
            version: version.map(str::to_string),
        },
        _ => return Err(bad(expected.into())),
    };
    if let Layer::Domain(own) = layer {
        match parsed.domain() {
            None => {
                return Err(bad(format!(
                    "a domain policy file cannot speak about the whole mesh; write \"{own}.*\""
                )))
            }
            Some(d) if d != own => {
                return Err(bad(format!(
                    "belongs to domain '{d}'; the policies of domain '{own}' may only govern its own products"
                )))
            }
            _ => {}
        }
    }
    Ok(parsed)
}

fn rule(doc: RuleDoc, path: &Path, layer: &Layer) -> Result<Rule, PolicyError> {
    let name = doc.name;
    let bad = |why: &str| invalid(path, format!("rule '{name}': {why}"));
    let principals = subjects(&doc.principals, path, &format!("rule '{name}': principals"))?;
    let except = doc
        .except
        .as_ref()
        .map(|v| subjects(v, path, &format!("rule '{name}': except")))
        .transpose()?;
    let texts = match doc.resource {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if texts.is_empty() {
        return Err(bad("names no resource"));
    }
    let resources = texts
        .iter()
        .map(|t| resource(t, path, layer, &name))
        .collect::<Result<Vec<_>, _>>()?;
    let effect = match (doc.grant, doc.deny, doc.row_filter, doc.masks) {
        (Some(g), None, row_filter, None) => {
            if g.is_empty() {
                return Err(bad("grants nothing"));
            }
            if row_filter.as_deref().is_some_and(|f| f.trim().is_empty()) {
                return Err(bad("rowFilter is empty"));
            }
            Effect::Grant {
                privileges: g.into_iter().collect(),
                columns: doc.columns,
                row_filter,
            }
        }
        (None, Some(d), None, None) => {
            if d.is_empty() {
                return Err(bad("denies nothing"));
            }
            Effect::Deny {
                privileges: d.into_iter().collect(),
                columns: doc.columns,
            }
        }
        (None, None, Some(f), None) if doc.columns.is_none() => {
            if f.trim().is_empty() {
                return Err(bad("rowFilter is empty"));
            }
            Effect::Restrict { row_filter: f }
        }
        (None, None, None, Some(m)) if doc.columns.is_none() => {
            if m.is_empty() {
                return Err(bad("masks nothing"));
            }
            Effect::Mask { masks: m }
        }
        _ => {
            return Err(bad(
                "needs exactly one of `grant` (with optional `columns` and `rowFilter`), `deny` (with optional `columns`), `rowFilter` or `masks`",
            ))
        }
    };
    if let Effect::Grant { columns: Some(c), .. } | Effect::Deny { columns: Some(c), .. } = &effect {
        if c.is_empty() {
            return Err(bad("`columns` is empty"));
        }
    }
    Ok(Rule {
        name,
        source: path.to_path_buf(),
        layer: layer.clone(),
        principals,
        except,
        resources,
        effect,
    })
}

fn tag_rule(doc: TagRuleDoc, path: &Path) -> Result<TagRule, PolicyError> {
    let name = doc.name;
    let bad = |why: &str| invalid(path, format!("tag rule '{name}': {why}"));
    let matcher = match (doc.classification, doc.tag) {
        (Some(c), None) => TagMatch::Classification(c),
        (None, Some(t)) => TagMatch::Tag(t),
        _ => return Err(bad("needs exactly one of `classification` or `tag`")),
    };
    let principals = match &doc.principals {
        Some(v) => subjects(v, path, &format!("tag rule '{name}': principals"))?,
        None => Subjects::everyone(),
    };
    let except = doc
        .except
        .as_ref()
        .map(|v| subjects(v, path, &format!("tag rule '{name}': except")))
        .transpose()?;
    let action = match (doc.deny, doc.row_filter, doc.mask) {
        (Some(d), None, None) if !d.is_empty() => TagAction::Deny(d.into_iter().collect()),
        (None, Some(f), None) if !f.trim().is_empty() => TagAction::RowFilter(f),
        (None, None, Some(m)) => TagAction::Mask(m),
        _ => return Err(bad("needs exactly one of `deny`, `rowFilter` or `mask`")),
    };
    Ok(TagRule {
        name,
        source: path.to_path_buf(),
        matcher,
        principals,
        except,
        action,
    })
}

impl PolicySet {
    /// The restrictions `self` has and `next` no longer has, one line each: deny, row-filter and
    /// mask rules (and tag rules) that were removed or changed, row filters dropped from grants,
    /// administrators added. A reload that loosens access deserves a look (a policy file cut
    /// halfway by a crashed editor or a non-atomic copy loads as a valid, laxer prefix).
    pub fn removed_restrictions(&self, next: &PolicySet) -> Vec<String> {
        use crate::model::Effect;
        let same_rule = |a: &crate::model::Rule, b: &crate::model::Rule| {
            a.name == b.name
                && a.layer == b.layer
                && a.principals == b.principals
                && a.except == b.except
                && a.resources == b.resources
                && a.effect == b.effect
        };
        let mut out = Vec::new();
        for rule in &self.rules {
            let restricts = match &rule.effect {
                Effect::Deny { .. } | Effect::Restrict { .. } | Effect::Mask { .. } => true,
                Effect::Grant {
                    row_filter, columns, ..
                } => row_filter.is_some() || columns.is_some(),
            };
            if restricts && !next.rules.iter().any(|n| same_rule(rule, n)) {
                out.push(format!("rule '{}' ({})", rule.name, rule.source.display()));
            }
        }
        for tag in &self.tag_rules {
            let kept = next.tag_rules.iter().any(|n| {
                n.name == tag.name
                    && n.matcher == tag.matcher
                    && n.principals == tag.principals
                    && n.except == tag.except
                    && n.action == tag.action
            });
            if !kept {
                out.push(format!("tag rule '{}' ({})", tag.name, tag.source.display()));
            }
        }
        if next.admins != self.admins {
            out.push("the administrators changed".into());
        }
        out
    }
}
