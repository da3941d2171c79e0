use std::collections::{BTreeMap, BTreeSet};

/// An authenticated identity with its groups and attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    id: String,
    groups: BTreeSet<String>,
    attributes: BTreeMap<String, String>,
}

impl Principal {
    /// A principal with no groups and no attributes.
    pub fn new(id: impl Into<String>) -> Self {
        Principal {
            id: id.into(),
            groups: BTreeSet::new(),
            attributes: BTreeMap::new(),
        }
    }

    /// Adds a group membership.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.groups.insert(group.into());
        self
    }

    /// Adds several group memberships.
    pub fn with_groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// Sets an attribute (a later value for the same key replaces the earlier one).
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn groups(&self) -> &BTreeSet<String> {
        &self.groups
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder() {
        let p = Principal::new("alice")
            .with_groups(["analysts", "eu"])
            .with_attribute("region", "EU")
            .with_attribute("region", "US");
        assert_eq!(p.id(), "alice");
        assert!(p.in_group("eu") && !p.in_group("admins"));
        assert_eq!(p.attribute("region"), Some("US"));
    }
}
