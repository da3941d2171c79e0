"""An independent model of meshql's access-policy decisions, written from docs/policies.md only.

Given the policy documents (the dicts that are written as `policies.yaml` files), a principal and
a table, `decide` says whether the table exists for the principal, whether it can be read, what
happens to each column and which row filter applies. `governed_select` turns that decision into a
DuckDB SELECT over the raw data, which the differential test materialises and runs the same
queries on. Nothing here looks at meshql's implementation.

The documented rules this follows (docs/policies.md, "Rules" and "How rules combine"):
- a resource `<domain>.<product>` covers every table of the product (each port, each published
  version); `…:<port>` narrows it to a port, `…:<port>@<version>` to one version, and the table
  name of a port covers that port;
- deny by default: a product no rule grants is invisible and unreadable;
- any matching deny wins, in any layer; `deny: [discover]` without columns hides the product;
- `select` needs at least one grant and implies `discover`;
- `grant: [select]` with `columns` grants those columns only (the others stay in the schema but
  cannot be read); `deny: [select]` with `columns` denies them; `deny: [discover]` with `columns`
  hides them (absent from the schema);
- grant row filters combine with OR (a grant without a filter means every row); restrictions and
  tag row filters combine with AND on top (a tag row filter once per matching column);
- a grant's columns are readable on that grant's rows only: a column some row-granting grants do
  not give is NULL on the rows only those open;
- tags and classifications match ignoring case and surrounding spaces;
- one mask per column: global rules and tag rules (the global layer) win over domain rules; two
  different masks in the same layer are a conflict, and reading that column fails; a hash mask
  whose key is not configured makes its column unreadable;
- a rule that applies to the principal and names a column the product does not have (in
  `columns`, `masks` or its row filter) makes queries on that product fail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re

import pyarrow as pa

# Column access kinds.
PLAIN = "plain"
MASKED = "masked"
DENIED = "denied"  # in the schema, reading it fails (deny, not granted, tag deny)
CONFLICT = "conflict"  # two different masks in one layer: reading it fails
NO_KEY = "no-key"  # hash mask whose key is not configured: reading it fails
HIDDEN = "hidden"  # absent from the schema

# Table states.
MISSING = "missing"  # not discoverable: the table does not exist for the principal
BROKEN = "broken"  # a rule that applies names a missing column: every query on it fails
UNREADABLE = "unreadable"  # discoverable, no select (no grant, or a product-wide deny)
OK = "ok"

UNREADABLE_COLUMN = {DENIED, CONFLICT, NO_KEY}

# Words in row filters that are not column names.
_FILTER_WORDS = {
    "and", "or", "not", "in", "is", "null", "like", "date", "timestamp", "true", "false", "cast", "as",
    "bigint", "principal_in_group", "principal_attribute", "principal_id", "between",
}


@dataclasses.dataclass(frozen=True)
class Principal:
    id: str
    groups: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def attrs(self) -> dict[str, str]:
        return dict(self.attributes)

    def describe(self) -> str:
        attrs = ", ".join(f"{k}={v}" for k, v in self.attributes)
        return f"{self.id} groups=[{', '.join(self.groups)}] attributes={{{attrs}}}"


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str  # string | int64 | double | date | timestamp
    classification: str
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Table:
    domain: str
    product: str
    port: str
    version: str
    name: str  # the SQL table name (port / version suffixes included)
    port_table: str  # the table name of the port's newest version
    columns: tuple[Column, ...]
    raw: str  # DuckDB table holding the raw rows

    @property
    def qualified(self) -> str:
        return f"mesh.{self.domain}.{self.name}"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclasses.dataclass
class Decision:
    state: str
    columns: dict[str, tuple[str, dict | None]]  # name -> (access, mask spec)
    row_filter: str | None = None  # DuckDB SQL, principal values substituted; None: every row
    rules: list[str] = dataclasses.field(default_factory=list)  # names of the rules that apply
    broken_by: list[str] = dataclasses.field(default_factory=list)
    # Columns granted on some rows only: name -> the condition (DuckDB SQL) under which the
    # column is served; NULL on the other visible rows.
    column_filters: dict[str, str] = dataclasses.field(default_factory=dict)

    def access(self, column: str) -> str:
        return self.columns[column][0]

    @property
    def hidden(self) -> set[str]:
        return {n for n, (a, _) in self.columns.items() if a == HIDDEN}

    @property
    def fallible_filter(self) -> bool:
        """The row filter casts, which fails on some stored values: whether a query fails then
        depends on the order the engine evaluates the filter in."""
        return self.row_filter is not None and "CAST(" in self.row_filter

    @property
    def full_reader(self) -> bool:
        """Reads every row and every column of the table as stored."""
        return (
            self.state == OK
            and self.row_filter is None
            and not self.column_filters
            and all(a == PLAIN for a, _ in self.columns.values())
        )


def matches(subjects, p: Principal) -> bool:
    """`principals` / `except`: "*" or {users, groups, attributes}, every given key must match."""
    if subjects == "*":
        return True
    if "users" in subjects and p.id not in subjects["users"]:
        return False
    if "groups" in subjects and not set(subjects["groups"]) & set(p.groups):
        return False
    attrs = p.attrs
    return all(attrs.get(k) == v for k, v in subjects.get("attributes", {}).items())


def applies(rule: dict, p: Principal) -> bool:
    if not matches(rule.get("principals", "*"), p):
        return False
    return not ("except" in rule and matches(rule["except"], p))


def covers(resource, t: Table) -> bool:
    """`*`, `<domain>.*`, `<domain>.<product>` (every port and version), `<domain>.<product>:<port>`
    (every version of the port), `…:<port>@<version>`, or the table name of a port (that port)."""
    for r in resource if isinstance(resource, list) else [resource]:
        name, _, narrowing = r.partition(":")
        port, _, version = narrowing.partition("@")
        if r in ("*", f"{t.domain}.*", f"{t.domain}.{t.product}") or (not narrowing and name == f"{t.domain}.{t.port_table}"):
            return True
        if narrowing and name == f"{t.domain}.{t.product}" and port == t.port and version in ("", t.version):
            return True
    return False


def filter_columns(row_filter: str) -> set[str]:
    """The column names a row filter reads (string literals and principal references left out)."""
    text = re.sub(r"'[^']*'", " ", row_filter)
    text = re.sub(r"\$\{principal\.[a-z_]+\}", " ", text)
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    return {w for w in words if w.lower() not in _FILTER_WORDS}


def _literal(value) -> str:
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def substitute_principal(row_filter: str, p: Principal) -> str:
    """Principal references become literals (a missing attribute is NULL)."""
    attrs = p.attrs

    def attribute(name):
        return p.id if name == "id" else attrs.get(name)

    text = re.sub(r"\$\{principal\.([a-z_]+)\}", lambda m: _literal(attribute(m.group(1))), row_filter)
    text = re.sub(r"principal_attribute\('([^']*)'\)", lambda m: _literal(attrs.get(m.group(1))), text)
    text = re.sub(r"principal_id\(\)", lambda m: _literal(p.id), text)
    return re.sub(
        r"principal_in_group\('([^']*)'\)", lambda m: "TRUE" if m.group(1) in p.groups else "FALSE", text
    )


def _conj(parts: list[str]) -> str | None:
    return " AND ".join(f"({x})" for x in parts) if parts else None


def _columns_named(rule: dict) -> set[str]:
    named = set(rule.get("columns", [])) | set(rule.get("masks", {}))
    if "rowFilter" in rule:
        named |= filter_columns(rule["rowFilter"])
    return named


def decide(global_doc: dict, domain_docs: dict[str, dict], hash_keys: set[str], p: Principal, t: Table) -> Decision:
    """What principal `p` may do with table `t`. `hash_keys`: the hash keys that are configured."""
    global_rules = [r for r in global_doc.get("rules", []) if covers(r["resource"], t) and applies(r, p)]
    domain_rules = [r for r in domain_docs.get(t.domain, {}).get("rules", []) if covers(r["resource"], t) and applies(r, p)]
    rules = global_rules + domain_rules
    tag_rules = [r for r in global_doc.get("tagRules", []) if applies(r, p)]
    names = [r["name"] for r in rules] + [r["name"] for r in tag_rules if any(_tagged(r, c) for c in t.columns)]
    columns = {c.name: (PLAIN, None) for c in t.columns}

    grants = [set(r.get("grant", [])) for r in rules]
    product_denies = [set(r["deny"]) for r in rules if "deny" in r and "columns" not in r]
    if any("discover" in d for d in product_denies) or not any(g & {"select", "discover"} for g in grants):
        return Decision(MISSING, columns, rules=names)
    broken = [r["name"] for r in rules if _columns_named(r) - {c.name for c in t.columns}]
    if broken:
        return Decision(BROKEN, columns, rules=names, broken_by=broken)

    for r in rules:
        if "deny" in r and "columns" in r:
            kind = HIDDEN if "discover" in r["deny"] else DENIED
            for c in r["columns"]:
                if columns[c][0] != HIDDEN:
                    columns[c] = (kind, None)
    select_grants = [r for r in rules if "select" in r.get("grant", [])]
    if not select_grants or any("select" in d for d in product_denies):
        return Decision(UNREADABLE, columns, rules=names)

    if all("columns" in r for r in select_grants):
        granted = set().union(*(r["columns"] for r in select_grants))
        for c in columns:
            if c not in granted and columns[c][0] == PLAIN:
                columns[c] = (DENIED, None)
    for tr in tag_rules:
        for c in t.columns:
            if _tagged(tr, c) and "deny" in tr and columns[c.name][0] != HIDDEN:
                columns[c.name] = (DENIED, None)

    for c in t.columns:
        if columns[c.name][0] != PLAIN:
            continue
        global_masks = [r["masks"][c.name] for r in global_rules if c.name in r.get("masks", {})]
        global_masks += [tr["mask"] for tr in tag_rules if "mask" in tr and _tagged(tr, c)]
        domain_masks = [r["masks"][c.name] for r in domain_rules if c.name in r.get("masks", {})]
        layer = global_masks or domain_masks
        distinct = {json.dumps(m, sort_keys=True) for m in layer}
        if len(distinct) > 1:
            columns[c.name] = (CONFLICT, None)
        elif distinct:
            mask = layer[0]
            if mask["type"] == "hash" and mask.get("key", "default") not in hash_keys:
                columns[c.name] = (NO_KEY, mask)
            else:
                columns[c.name] = (MASKED, mask)

    grant_filters = [r.get("rowFilter") for r in select_grants]
    filters = []
    if None not in grant_filters:
        filters.append(" OR ".join(f"({f})" for f in grant_filters))
    filters += [r["rowFilter"] for r in rules if "rowFilter" in r and "grant" not in r]
    for tr in tag_rules:
        if "rowFilter" in tr:
            filters += [tr["rowFilter"].replace("{column}", c.name) for c in t.columns if _tagged(tr, c)]
    row_filter = _conj([substitute_principal(f, p) for f in filters])
    # A grant's columns are readable on that grant's rows only: a column that some of the
    # row-granting grants do not give is NULL on rows only those open.
    column_filters = {}
    for c in t.columns:
        if columns[c.name][0] not in (PLAIN, MASKED):
            continue
        giving = [g for g in select_grants if "columns" not in g or c.name in g["columns"]]
        if len(giving) == len(select_grants) or any("rowFilter" not in g for g in giving):
            continue
        column_filters[c.name] = " OR ".join(f"({substitute_principal(g['rowFilter'], p)})" for g in giving)
    return Decision(OK, columns, row_filter=row_filter, rules=names, column_filters=column_filters)


def _tagged(tag_rule: dict, c: Column) -> bool:
    """Tags and classifications match ignoring case and surrounding spaces."""
    same = lambda a, b: a.strip().lower() == b.strip().lower()  # noqa: E731
    if "tag" in tag_rule:
        return any(same(tag_rule["tag"], t) for t in c.tags)
    return same(tag_rule["classification"], c.classification)


# --- masks in DuckDB -------------------------------------------------------------------------

DUCK_TYPES = {"string": "VARCHAR", "int64": "BIGINT", "double": "DOUBLE", "date": "DATE", "timestamp": "TIMESTAMP"}


def register_hashes(con, hash_key: bytes, texts) -> None:
    """The keyed hash (HMAC-SHA256 of the value's text, hex) of every text a hash mask can meet,
    as a lookup table: DuckDB has no HMAC."""
    texts = sorted(set(texts))
    digests = [hmac.new(hash_key, t.encode(), hashlib.sha256).hexdigest() for t in texts]
    con.register("mq_hash_rows", pa.table({"text": pa.array(texts, pa.string()), "digest": pa.array(digests, pa.string())}))
    con.execute("CREATE TABLE mq_hashes AS SELECT * FROM mq_hash_rows")


def mask_sql(mask: dict, c: Column) -> str:
    """The DuckDB expression of a documented mask over column `c`."""
    col = c.name
    kind = mask["type"]
    if kind in ("nullify", "null"):
        return f"CAST(NULL AS {DUCK_TYPES[c.type]})"
    if kind == "redact":
        if "value" in mask:
            return f"CAST({_literal(mask['value'])} AS {DUCK_TYPES[c.type]})"
        return "'****'" if c.type == "string" else f"CAST(NULL AS {DUCK_TYPES[c.type]})"
    if kind == "hash":
        return f"(SELECT digest FROM mq_hashes WHERE text = CAST({col} AS VARCHAR))"
    n = int(mask.get("n", 0))
    if kind == "showFirst":  # the first n characters, the rest `*`
        return f"left({col}, {n}) || repeat('*', greatest(length({col}) - {n}, 0))"
    if kind == "showLast":
        return f"repeat('*', greatest(length({col}) - {n}, 0)) || right({col}, {n})"
    if kind == "year":
        return f"make_date(year({col}), 1, 1)" if c.type == "date" else f"date_trunc('year', {col})"
    if kind == "sql":
        return mask["expression"].replace("{column}", col)
    raise ValueError(f"unknown mask {mask}")


def governed_select(t: Table, d: Decision, failing: frozenset[str] = frozenset()) -> str:
    """The governed rows of an OK table as DuckDB SQL. Unreadable columns (and `failing` ones,
    whose mask raised an error) are NULL placeholders: a query that reads them is a refusal."""
    exprs = []
    for c in t.columns:
        access, mask = d.columns[c.name]
        if access == HIDDEN:
            continue
        if access in UNREADABLE_COLUMN or c.name in failing:
            exprs.append(f"CAST(NULL AS {DUCK_TYPES[c.type]}) AS {c.name}")
        else:
            served = mask_sql(mask, c) if access == MASKED else c.name
            if c.name in d.column_filters:
                served = f"CASE WHEN {d.column_filters[c.name].replace('CAST(', 'TRY_CAST(')} THEN {served} END"
            exprs.append(f"{served} AS {c.name}")
    # Where the filter's cast fails the row cannot be one the engine returns: TRY_CAST keeps the
    # rows an engine that does not fail returns.
    where = f" WHERE {d.row_filter.replace('CAST(', 'TRY_CAST(')}" if d.row_filter else ""
    return f"SELECT {', '.join(exprs)} FROM {t.raw}{where}"
