//! Finding products: which products someone can find, who owns them, and the search over
//! their descriptions. Every listing meshql gives goes through here — the system tables, the
//! catalog a session plans against (and with it Flight SQL's GetTables), `meshql catalog
//! list|search` — so "may this principal find this product?" and "who owns it?" have one
//! answer.
//!
//! Two viewers: a principal, who finds what the policies let it discover, and the operator of
//! a mesh directory (the CLI run where the files are), who finds every product, including the
//! ones that do not load. The operator view is explicit: nothing serving principals uses it.

use meshql_contract::{MeshDefinition, TableEntry};
use meshql_policy::Principal;

use crate::governed::AccessView;

/// Who is looking.
#[derive(Clone, Copy)]
pub(crate) enum Viewer<'a> {
    /// A principal, through its access view: only what it may discover.
    Principal(&'a AccessView),
    /// Whoever holds the mesh directory: everything.
    Operator,
}

impl Viewer<'_> {
    fn finds(&self, entry: &TableEntry) -> bool {
        match self {
            Viewer::Principal(view) => view.discoverable(&entry.domain, &entry.name),
            Viewer::Operator => true,
        }
    }
}

/// What to look for. Every given criterion must hold; text words match (case-insensitively) the
/// product's names, tags, descriptions and its columns' names, descriptions and business names.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub words: Vec<String>,
    pub domain: Option<String>,
    pub owner: Option<String>,
    pub tag: Option<String>,
    pub classification: Option<String>,
}

impl Search {
    /// Every product.
    pub fn all() -> Self {
        Search::default()
    }

    fn matches(&self, def: &MeshDefinition, t: &TableEntry) -> bool {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let p = &t.product;
        let binding = t.binding.as_ref().ok();
        let columns = binding.map(|b| b.schema.properties.as_slice()).unwrap_or_default();
        if self.domain.as_deref().is_some_and(|d| !eq(d, &t.domain))
            || self
                .owner
                .as_deref()
                .is_some_and(|o| !owner(def, t).is_some_and(|x| eq(o, x)))
            || self.tag.as_deref().is_some_and(|tag| {
                !p.tags.iter().any(|x| eq(x, tag)) && !columns.iter().any(|c| c.tags.iter().any(|x| eq(x, tag)))
            })
            || self.classification.as_deref().is_some_and(|cl| {
                !columns
                    .iter()
                    .any(|c| c.classification.as_deref().is_some_and(|x| eq(x, cl)))
            })
        {
            return false;
        }
        if self.words.is_empty() {
            return true;
        }
        let description = p.description.as_ref();
        let mut haystack = vec![
            t.qualified_name(),
            p.display_name().to_string(),
            p.id.clone(),
            p.tags.join(" "),
        ];
        haystack.extend(description.and_then(|d| d.purpose.clone()));
        haystack.extend(description.and_then(|d| d.usage.clone()));
        haystack.extend(description.and_then(|d| d.limitations.clone()));
        if let Some(b) = binding {
            haystack.extend(b.schema.description.clone());
            haystack.extend(b.contract.description.as_ref().and_then(|d| d.purpose.clone()));
            for c in columns {
                haystack.push(c.name.clone());
                haystack.extend(c.description.clone());
                haystack.extend(c.business_name.clone());
            }
        }
        let haystack = haystack.join("\n").to_lowercase();
        self.words.iter().all(|w| haystack.contains(&w.to_lowercase()))
    }
}

/// The products `viewer` finds that match `search`, in catalog order.
pub(crate) fn find<'a>(def: &'a MeshDefinition, viewer: Viewer<'_>, search: &Search) -> Vec<&'a TableEntry> {
    def.tables
        .iter()
        .filter(|t| viewer.finds(t) && search.matches(def, t))
        .collect()
}

/// Who owns a product: its own `owner`, else its domain's.
pub fn owner<'a>(def: &'a MeshDefinition, entry: &'a TableEntry) -> Option<&'a str> {
    entry
        .product
        .owner()
        .or_else(|| def.domain(&entry.domain).and_then(|d| d.descriptor.owner.as_deref()))
}

/// Whether `p` owns the product: it is, or is a member of, the product's owner or its domain's.
pub fn is_owner(p: &Principal, def: &MeshDefinition, entry: &TableEntry) -> bool {
    let domain_owner = def.domain(&entry.domain).and_then(|d| d.descriptor.owner.as_deref());
    entry
        .product
        .owner()
        .into_iter()
        .chain(domain_owner)
        .any(|o| p.in_group(o) || p.id() == o)
}
